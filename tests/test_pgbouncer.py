"""A service through a real PgBouncer in transaction mode (deploy/: compose's pgbouncer, Kubernetes' Pooler).

asyncpg prepares each statement under a name counted per client connection; in transaction mode the next
transaction may run on a server connection where another client prepared that name already. The services set
``<PREFIX>_DB_POOLER=transaction`` there (servicekit.db.make_engine): no statement cache, unique names."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from servicekit.clock import MovableClock
from servicekit.db import make_engine
from servicekit.testing import missing_tool
from servicekit.testing.apps import running_app
from servicekit.testing.nats import NatsServer
from servicekit.testing.pgbouncer import PgBouncer, pgbouncer_binary
from servicekit.testing.postgres import PostgresCluster
from services.contacts.app import create_app as create_contacts_app
from services.contacts.settings import ContactsSettings
from services.followups.app import create_app as create_followups_app
from services.followups.settings import FollowupsSettings

# PgBouncer stands before PostgreSQL only.
pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("db_backend", ["postgres"], indirect=True)]
CONTACTS_ALEMBIC_INI = Path(__file__).resolve().parents[1] / "services/contacts/alembic.ini"
FOLLOWUPS_ALEMBIC_INI = Path(__file__).resolve().parents[1] / "services/followups/alembic.ini"


@pytest.fixture
def pgbouncer(pg_cluster: PostgresCluster) -> Iterator[PgBouncer]:
    if pgbouncer_binary() is None:
        missing_tool("PgBouncer", "apt-get install pgbouncer")
    # Two server connections per database: every client connection shares them, as hundreds of replicas' pools
    # share the Pooler's few.
    bouncer = PgBouncer(pg_cluster, default_pool_size=2).start()
    yield bouncer
    bouncer.destroy()


@pytest.fixture
def contacts_db(database_factory: Callable[[Path], str]) -> str:
    return database_factory(CONTACTS_ALEMBIC_INI).rsplit("/", 1)[1]


async def a_statement_again_on_another_server_connection(url: str, pooler: str) -> None:
    """The same statement twice on one client connection, the second time on another server connection (the
    first one held by another client's open transaction): what a busy pooler does all day."""
    engine = make_engine(url, pool_size=2, pooler=pooler)
    try:
        async with engine.connect() as first, engine.connect() as second:
            await first.execute(text("SELECT 1"))
            await first.commit()
            await second.execute(text("SELECT 2"))  # holds the server connection ``first`` used
            await first.execute(text("SELECT 1"))
            await first.commit()
            await second.commit()
    finally:
        await engine.dispose()


async def test_without_the_setting_a_cached_statement_is_missing_on_another_server_connection(
    pgbouncer: PgBouncer, contacts_db: str
) -> None:
    # The failure the setting prevents, on this very PgBouncer: so the test below proves something.
    with pytest.raises(DBAPIError, match="prepared statement"):
        await a_statement_again_on_another_server_connection(pgbouncer.url(contacts_db), pooler="none")
    await a_statement_again_on_another_server_connection(pgbouncer.url(contacts_db), pooler="transaction")


async def test_a_read_only_engine_runs_in_transactions_behind_the_pooler(
    pgbouncer: PgBouncer, contacts_db: str
) -> None:
    # In autocommit PgBouncer may run a statement's Bind on another server connection than its Parse: behind a
    # transaction pooler the gateway's reading engine keeps its transactions (one id for both statements).
    for pooler, same_transaction in (("none", False), ("transaction", True)):
        engine = make_engine(pgbouncer.url(contacts_db), read_only=True, pooler=pooler)
        try:
            async with engine.connect() as connection:
                ids = [(await connection.execute(text("SELECT txid_current()"))).scalar() for _ in range(2)]
        finally:
            await engine.dispose()
        assert (ids[0] == ids[1]) is same_transaction, (pooler, ids)


@pytest.fixture
async def contacts(
    pgbouncer: PgBouncer, contacts_db: str, nats_server: NatsServer, clock: MovableClock
) -> AsyncIterator[httpx.AsyncClient]:
    settings = ContactsSettings(
        database_url=pgbouncer.url(contacts_db),
        db_pooler="transaction",
        db_pool_size=8,
        nats_url=nats_server.url,
        log_json=False,
        outbox_poll_s=0.05,
    )
    async with running_app(create_contacts_app(settings, clock=clock)) as client:
        yield client


async def test_a_service_writes_and_reads_through_transaction_pooling(contacts: httpx.AsyncClient) -> None:
    async def create_and_read(n: int) -> tuple[str, str]:
        email = f"pooled.{n}.{uuid.uuid4().hex[:8]}@example.com"
        created = await contacts.post("/v1/contacts", json={"name": f"Pooled {n}", "emails": [email]})
        assert created.status_code == 201, created.text
        contact_id = created.json()["id"]
        read = await contacts.get(f"/v1/contacts/{contact_id}")
        assert read.status_code == 200, read.text
        return contact_id, read.json()["name"]

    # Sixteen at once over a pool of 8 (+8 overflow) client connections and two server connections: every
    # statement name would be reused across clients without the setting.
    for _round in range(3):
        results = await asyncio.gather(*(create_and_read(n) for n in range(16)))
        assert sorted(name for _, name in results) == sorted(f"Pooled {n}" for n in range(16))
    listed = await contacts.get("/v1/contacts", params={"limit": 100})
    assert listed.status_code == 200, listed.text
    assert len(listed.json()["items"]) == 48


@pytest.fixture
def followups_db(database_factory: Callable[[Path], str]) -> str:
    return database_factory(FOLLOWUPS_ALEMBIC_INI).rsplit("/", 1)[1]


@pytest.fixture
async def followups(
    pgbouncer: PgBouncer, followups_db: str, nats_server: NatsServer, clock: MovableClock
) -> AsyncIterator[httpx.AsyncClient]:
    settings = FollowupsSettings(
        database_url=pgbouncer.url(followups_db),
        db_pooler="transaction",
        db_pool_size=8,
        nats_url=nats_server.url,
        log_json=False,
        outbox_poll_s=0.05,
        contacts_url="http://127.0.0.1:9",  # nothing listens: listing a contact's follow-ups never calls it
    )
    async with running_app(create_followups_app(settings, clock=clock)) as client:
        yield client


async def test_reading_routes_work_through_transaction_pooling(followups: httpx.AsyncClient) -> None:
    # A reading route (ReadSessionDep) runs without BEGIN when no pooler stands between: here its statements
    # would be parsed on one server connection and bound on another ("prepared statement ... does not exist").
    async def list_for_a_contact() -> None:
        response = await followups.get("/v1/followups", params={"contact_id": str(uuid.uuid4())})
        assert response.status_code == 200, response.text
        assert response.json()["items"] == []

    for _round in range(5):
        await asyncio.gather(*(list_for_a_contact() for _ in range(16)))
