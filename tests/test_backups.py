"""Backups: Kubernetes (CloudNativePG ScheduledBackup, WAL archiving, a restore manifest) read from the files;
compose's backup and restore scripts run for real against the session's PostgreSQL cluster."""

from __future__ import annotations

from typing import Any

import yaml

from tests.test_deploy_kubernetes import K8S, find, generated


def test_kubernetes_archives_wal_backs_up_nightly_and_restores_into_a_new_cluster() -> None:
    cluster = find("Cluster", "touchpoint-db")["spec"]
    store = cluster["backup"]["barmanObjectStore"]
    assert store["destinationPath"].startswith("s3://") and "wal" in store, "WAL archived to the object store"
    assert cluster["backup"]["retentionPolicy"].endswith("d")
    secrets = {d["metadata"]["name"]: d["stringData"] for d in generated("platform") if d["kind"] == "Secret"}
    for reference in store["s3Credentials"].values():
        assert reference["key"] in secrets[reference["name"]], reference

    scheduled = find("ScheduledBackup", "touchpoint-db-nightly")["spec"]
    assert scheduled["cluster"]["name"] == "touchpoint-db" and scheduled["method"] == "barmanObjectStore"
    assert len(scheduled["schedule"].split()) == 6, "CloudNativePG's cron has a seconds field"

    [restored] = yaml.safe_load_all((K8S / "restore" / "cluster-from-backup.yaml").read_text())
    spec: dict[str, Any] = restored["spec"]
    assert restored["kind"] == "Cluster" and restored["metadata"]["name"] != "touchpoint-db", "a new cluster"
    [source] = [c for c in spec["externalClusters"] if c["name"] == spec["bootstrap"]["recovery"]["source"]]
    archive = source["barmanObjectStore"]
    assert archive["serverName"] == "touchpoint-db"
    for key in ("destinationPath", "endpointURL", "s3Credentials"):
        assert archive[key] == store[key], f"the restore reads where the cluster writes: {key}"
    # The same server as the one it replaces.
    for key in ("imageName", "instances", "storage", "walStorage", "postgresql"):
        assert spec[key] == cluster[key], key
