"""Backups: Kubernetes (CloudNativePG ScheduledBackup, WAL archiving, a restore manifest) read from the files;
compose's backup and restore scripts run for real against the session's PostgreSQL cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from servicekit.migrations import upgrade
from servicekit.processes import spawn
from servicekit.testing import missing_tool
from servicekit.testing.postgres import PostgresCluster, postgres_bin_dir
from tests.deploy_support import compose
from tests.test_deploy_kubernetes import K8S, KUBERNETES_VERSIONS, find, generated

BACKUP = compose.ROOT / "deploy" / "backup"
ALEMBIC = {"contacts": "services/contacts/alembic.ini", "interactions": "services/interactions/alembic.ini"}


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

    documents = list(yaml.safe_load_all((K8S / "restore" / "cluster-from-backup.yaml").read_text()))
    [restored] = [d for d in documents if d["kind"] == "Cluster"]
    # The namespace denies ingress by default: the new instances get their own policy, valid Kubernetes.
    [policy] = [d for d in documents if d["kind"] == "NetworkPolicy"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {"cnpg.io/cluster": restored["metadata"]["name"]}
    kubernetes_validate.validate(policy, KUBERNETES_VERSIONS[-1], strict=True)
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


# ---- compose: the scripts, run


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    """A cluster of its own: the test drops databases named as the services' (roles are cluster-wide)."""
    if postgres_bin_dir() is None:
        missing_tool("PostgreSQL", "apt-get install postgresql")
    cluster = PostgresCluster().init().start()
    yield cluster
    cluster.destroy()


def run(cluster: PostgresCluster, script: str, *args: str, backups: Path, **env: str) -> str:
    """A script as compose's backup container runs it: libpq variables, the superuser, PostgreSQL's tools."""
    result = subprocess.run(
        ["/bin/sh", str(BACKUP / script), *args],
        env={
            "PATH": f"{cluster.bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGUSER": cluster.user, "BACKUP_DIR": str(backups),
            **env,
        },
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def snapshot(cluster: PostgresCluster, database: str) -> dict[str, str]:
    return {
        "owner": cluster.psql(f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{database}'"),
        "public may connect": cluster.psql(f"SELECT has_database_privilege('public', '{database}', 'CONNECT')"),
        "migrated to": cluster.psql("SELECT version_num FROM alembic_version", database),
        "tables": cluster.psql(
            "SELECT string_agg(tablename || ':' || tableowner, ',' ORDER BY tablename) FROM pg_tables "
            "WHERE schemaname = 'public'",
            database,
        ),
        "rows": cluster.psql("SELECT count(*) || ':' || md5(string_agg(note, ',' ORDER BY n)) FROM probe", database),
    }


def test_backup_then_restore_brings_every_database_back(cluster: PostgresCluster, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    before = {}
    for database, alembic_ini in ALEMBIC.items():
        # As deploy/postgres/initdb makes them: a role owning its database, which the public may not enter.
        cluster.psql(f"CREATE ROLE {database} LOGIN")
        cluster.psql(f"CREATE DATABASE {database} OWNER {database}")
        cluster.psql(f"REVOKE ALL ON DATABASE {database} FROM PUBLIC")
        upgrade(compose.ROOT / alembic_ini, cluster.url(database))
        cluster.psql(
            f"SET ROLE {database}; CREATE TABLE probe (n int PRIMARY KEY, note text); "
            "INSERT INTO probe SELECT n, md5(n::text) FROM generate_series(1, 5000) AS n",
            database,
        )
        before[database] = snapshot(cluster, database)
    assert before["contacts"]["migrated to"] and before["contacts"]["owner"] == "contacts"

    # An old set past its days goes at the next backup; a new one is made whole.
    expired = backups / "20250101T030000Z"
    expired.mkdir(parents=True)
    old = time.time() - 20 * 86_400
    os.utime(expired, (old, old))
    out = run(cluster, "backup.sh", "once", backups=backups,
              BACKUP_DATABASES="contacts interactions", BACKUP_KEEP_DAYS="14")  # fmt: skip
    [made] = [p for p in backups.iterdir()]
    assert f"backup {made.name}" in out and not expired.exists()
    assert sorted(p.name for p in made.iterdir()) == ["contacts.dump", "interactions.dump"]
    assert oct(made.stat().st_mode & 0o777) == "0o700", "only the backup user reads the dumps"
    run(cluster, "backup.sh", "check", backups=backups)

    # The databases are lost (and something written after the backup with them) ...
    cluster.psql("INSERT INTO probe VALUES (0, 'after the backup')", "contacts")
    for database in ALEMBIC:
        cluster.psql(f"DROP DATABASE {database} WITH (FORCE)")
    # ... the newest set comes back, as it was at the backup.
    out = run(cluster, "restore.sh", backups=backups)
    assert out.splitlines() == [f"restored {db} from {made.name}" for db in sorted(ALEMBIC)]
    for database in ALEMBIC:
        assert snapshot(cluster, database) == before[database], database

    # One database of a named set, over one that exists (its connections ended).
    cluster.psql("DELETE FROM probe", "interactions")
    run(cluster, "restore.sh", made.name, "interactions", backups=backups)
    assert snapshot(cluster, "interactions") == before["interactions"]


def test_the_healthcheck_fails_without_a_recent_set_and_restore_refuses_a_missing_one(
    cluster: PostgresCluster, tmp_path: Path
) -> None:
    backups = tmp_path / "backups"
    stale = backups / "20250101T030000Z"
    stale.mkdir(parents=True)
    old = time.time() - 3 * 86_400
    os.utime(stale, (old, old))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "BACKUP_DIR": str(backups), "BACKUP_INTERVAL_S": "86400",
    }  # fmt: skip
    check = subprocess.run(["/bin/sh", str(BACKUP / "backup.sh"), "check"], env=env, timeout=30)
    assert check.returncode != 0
    missing = subprocess.run(["/bin/sh", str(BACKUP / "restore.sh"), "20990101T000000Z"], env=env,
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    assert missing.returncode == 66 and "no backup set" in missing.stderr


def test_a_failed_round_of_the_loop_makes_no_set_and_the_loop_stops_on_sigterm(tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    env = {
        "PATH": f"{postgres_bin_dir() or '/usr/bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "BACKUP_DIR": str(backups), "BACKUP_DATABASES": "contacts", "PGHOST": "127.0.0.1", "PGPORT": "1",
    }  # fmt: skip
    log = tmp_path / "backup.log"
    with log.open("wb") as stderr:
        # SIGTERM on this process's death too: the loop's own trap ends it (servicekit.processes).
        loop = spawn(["/bin/sh", str(BACKUP / "backup.sh"), "loop"], death_signal=signal.SIGTERM, env=env,
                     stderr=stderr)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "backup failed" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        loop.terminate()
        loop.wait(timeout=20)
    finally:
        loop.kill()
    assert loop.returncode == 0, "SIGTERM stops the loop (PID 1 of its container) cleanly"
    assert "backup failed: the next attempt in 86400s" in log.read_text()
    assert not list(backups.glob("20*")), "a set whose dump failed is never made"


def test_compose_runs_the_backup_loop_with_the_servers_tools_onto_a_volume_of_its_own() -> None:
    services = compose.load(compose.read_env_file(compose.ENV_EXAMPLE))["services"]
    backup = services["backup"]
    assert backup["image"] == services["postgres"]["image"], "pg_dump of the server's major version"
    env = compose.environment_of(backup)
    assert (env["PGHOST"], env["PGPORT"], env["PGUSER"]) == ("postgres", "5432", "postgres")
    assert env["PGPASSWORD"] == compose.read_env_file(compose.ENV_EXAMPLE)["POSTGRES_PASSWORD"]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in backup["volumes"]}
    assert mounts[env["BACKUP_DIR"]] == "backups" and "backups" in compose.load_raw()["volumes"]
    script = backup["entrypoint"][1]
    assert (compose.ROOT / mounts[str(Path(script).parent)] / Path(script).name).resolve() == BACKUP / "backup.sh"
    assert backup["command"] == ["loop"] and backup["healthcheck"]["test"] == ["CMD", *backup["entrypoint"], "check"]
    assert backup["depends_on"]["postgres"]["condition"] == "service_healthy"
