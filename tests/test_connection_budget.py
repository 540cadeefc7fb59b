"""The PostgreSQL connection budget, read from the deploy files: every pool of every replica at the
autoscalers' maxima fits what the pooler accepts, and the pooler's server connections fit PostgreSQL's
max_connections less a reserve. docs/deploy.md writes the same figures out; this test recomputes them."""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from typing import Any

import pytest

from servicekit.db import make_engine
from tests.deploy_support import compose
from tests.test_deploy_kubernetes import APPS, env_of, find

# Connections PostgreSQL keeps for what does not come through the pooler: the four one-shot migrations,
# superuser_reserved_connections (3), replication and the operator's own (CloudNativePG: up to 10 WAL
# senders and its status checks), a base backup, an operator's psql; 60 leaves room to spare.
RESERVE = 60
# Beyond the runtime's engine, what each app module makes of its own (the gateway: its timeline reads' pool).
APP_MODULES = {"contacts": "services/contacts/app.py", "interactions": "services/interactions/app.py",
               "followups": "services/followups/app.py", "gateway": "gateway/app.py"}  # fmt: skip


def engines_per_process(app: str) -> int:
    return 1 + (compose.ROOT / APP_MODULES[app]).read_text().count("make_engine(")


def connections_per_engine(pool_size: int) -> int:
    """The most one engine opens: its pool and its overflow, as servicekit.db.make_engine sets them."""
    pool: Any = make_engine("postgresql+asyncpg://u@127.0.0.1:1/d", pool_size=pool_size).sync_engine.pool
    return int(pool.size() + pool._max_overflow)


def pool_size_of(app: str, env: dict[str, str]) -> int:
    prefix = compose.SETTINGS[app].prefix
    default = compose.settings_class(app).model_fields["db_pool_size"].default
    return int(env.get(f"{prefix}DB_POOL_SIZE", default))


@dataclass
class Budget:
    clients: dict[str, int]
    max_client_conn: int
    server_connections: int
    max_connections: int

    def check(self) -> None:
        assert sum(self.clients.values()) <= self.max_client_conn, self
        assert self.server_connections <= self.max_connections - RESERVE, self


def kubernetes_budget() -> Budget:
    clients = {}
    for app in APPS:
        container = find("Deployment", app)["spec"]["template"]["spec"]["containers"][0]
        env = {name: item.get("value", "") for name, item in env_of(container).items()}
        assert env[f"{compose.SETTINGS[app].prefix}DB_POOLER"] == "transaction", app
        replicas = find("HorizontalPodAutoscaler", app)["spec"]["maxReplicas"]
        clients[app] = replicas * engines_per_process(app) * connections_per_engine(pool_size_of(app, env))
    pooler = find("Pooler", "touchpoint-db-pooler-rw")["spec"]
    assert pooler["pgbouncer"]["poolMode"] == "transaction" and pooler["type"] == "rw"
    assert pooler["cluster"]["name"] == "touchpoint-db"
    parameters = pooler["pgbouncer"]["parameters"]
    cluster = find("Cluster", "touchpoint-db")["spec"]
    return Budget(
        clients=clients,
        # Per instance: either may take every client while the other restarts.
        max_client_conn=int(parameters["max_client_conn"]),
        # A server pool per database and user, on each instance.
        server_connections=pooler["instances"] * len(APPS) * int(parameters["default_pool_size"]),
        max_connections=int(cluster["postgresql"]["parameters"]["max_connections"]),
    )


def test_kubernetes_fits_at_the_autoscalers_maxima() -> None:
    budget = kubernetes_budget()
    # docs/deploy.md's table says these figures.
    assert budget.clients == {"contacts": 200, "interactions": 200, "followups": 120, "gateway": 400}
    assert (sum(budget.clients.values()), budget.max_client_conn) == (920, 1000)
    assert (budget.server_connections, budget.max_connections) == (320, 500)
    budget.check()


def test_the_check_refuses_a_budget_that_does_not_fit() -> None:
    budget = kubernetes_budget()
    budget.clients["gateway"] *= 2
    with pytest.raises(AssertionError):
        budget.check()
    budget = kubernetes_budget()
    budget.server_connections = budget.max_connections
    with pytest.raises(AssertionError):
        budget.check()


def compose_budget() -> Budget:
    services = compose.load(compose.read_env_file(compose.ENV_EXAMPLE))["services"]
    clients = {}
    for app in APPS:
        env = compose.environment_of(services[app])
        assert env[f"{compose.SETTINGS[app].prefix}DB_POOLER"] == "transaction", app
        replicas = int(services[app].get("deploy", {}).get("replicas", 1))
        clients[app] = replicas * engines_per_process(app) * connections_per_engine(pool_size_of(app, env))
    config = configparser.ConfigParser(interpolation=None)
    config.read_string((compose.ROOT / "deploy" / "pgbouncer" / "pgbouncer.ini").read_text())
    pgbouncer = config["pgbouncer"]
    assert pgbouncer["pool_mode"] == "transaction"
    command = services["postgres"]["command"]
    [max_connections] = [int(c.split("=")[1]) for c in command if c.startswith("max_connections=")]
    return Budget(
        clients=clients,
        max_client_conn=int(pgbouncer["max_client_conn"]),
        server_connections=int(services["pgbouncer"].get("deploy", {}).get("replicas", 1))
        * len(APPS)
        * int(pgbouncer["default_pool_size"]),
        max_connections=max_connections,
    )


def test_compose_fits() -> None:
    budget = compose_budget()
    # docs/deploy.md's table says these figures.
    assert (sum(budget.clients.values()), budget.max_client_conn) == (100, 200)
    assert (budget.server_connections, budget.max_connections) == (80, 200)
    budget.check()
