"""An upgrade from the previous release (servicekit.releases.PREVIOUS_RELEASE), as an operator runs it.

Each service's database is migrated to the previous release's revision and filled with plain SQL, as that
release wrote it (contacts with identities and search terms, touchpoints on every channel, a thread, follow-ups,
a policy of the team's own, API keys, staff users, the gateway's contact events). Then the migrations to head
run while a reader keeps running the previous release's reads (every column it knew, on another connection):
none may fail nor miss a row. Then the new apps start on the upgraded databases and everything is read back
through the gateway's public API: the old API key and the old staff password still sign in. Last, the previous
release's inserts, as its replicas go on making them until the rollout ends, still go in.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from pwdlib import PasswordHash
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway import events as gateway_events
from gateway.app import create_app as gateway_app
from gateway.auth import sha256
from gateway.rebuild_timeline import Rebuilt, rebuild_timeline
from gateway.settings import GatewaySettings
from gateway.upstream import ServiceClient
from servicekit.catalogue.interactions import INTERACTION_LOGGED
from servicekit.channels import CHANNELS
from servicekit.clock import SystemClock
from servicekit.db import make_engine, make_sessionmaker
from servicekit.events import CloudEvent
from servicekit.migrations import upgrade
from servicekit.releases import ALEMBIC_INI, PREVIOUS_RELEASE
from servicekit.testing.apps import running_app
from servicekit.testing.nats import NatsServer
from servicekit.testing.plugin import eventually
from servicekit.testing.postgres import PostgresCluster
from services.contacts.app import create_app as contacts_app
from services.contacts.settings import ContactsSettings
from services.followups.app import create_app as followups_app
from services.followups.settings import FollowupsSettings
from services.interactions.app import create_app as interactions_app
from services.interactions.settings import InteractionsSettings

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
PASSWORD = "correct horse battery staple"
OLD_KEY = "tp_0123456789ab_previous-release-admin-key-kept-across-the-upgrade"


def column_value(value: Any, dialect: str) -> Any:
    """A Python value as the previous release's SQLAlchemy stored it, for a plain SQL statement."""
    if isinstance(value, dict | list):
        return json.dumps(value)
    if dialect == "sqlite":
        if isinstance(value, uuid.UUID):
            return value.hex  # SQLAlchemy's Uuid on SQLite: 32 hex digits
        if isinstance(value, datetime):  # naive UTC, as SQLAlchemy's DateTime writes it on SQLite
            return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
        if isinstance(value, Decimal):
            return str(value)
    return value


async def insert(connection: AsyncConnection, table: str, rows: list[dict[str, Any]]) -> None:
    dialect = connection.dialect.name
    for row in rows:
        columns = ", ".join(row)
        statement = sa.text(f"INSERT INTO {table} ({columns}) VALUES ({', '.join(f':{c}' for c in row)})")
        await connection.execute(statement, {c: column_value(v, dialect) for c, v in row.items()})


@dataclass
class PreviousRelease:
    """What the previous release wrote, per service and table (the rows as inserted)."""

    rows: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)

    def add(self, service: str, table: str, *rows: dict[str, Any]) -> None:
        self.rows.setdefault(service, {}).setdefault(table, []).extend(rows)


def previous_release_data() -> PreviousRelease:
    data = PreviousRelease()
    ada, grace, grace_duplicate = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    contact: dict[str, Any] = {
        "company": None, "handles": {}, "external_ids": {}, "preferred_channel": None, "language": None,
        "timezone": None, "attributes": {}, "consent": {}, "owner": None, "status": "active", "merged_into": None,
        "created_at": T0, "updated_at": T0, "erased_at": None, "version": 1, "tags": [], "stage": "customer",
        "phones": [],
    }  # fmt: skip
    data.add(
        "contacts", "contacts",
        {**contact, "id": ada, "name": "Ada Lovelace", "company": "Analytical Engines",
         "emails": ["ada@example.com"], "phones": ["+442071838750"], "handles": {"twitter": "@ada"},
         "external_ids": {"shop": "C-1815"}, "tier": "premium", "preferred_channel": "email", "language": "en",
         "timezone": "Europe/London", "tags": ["vip"], "attributes": {"plan": "gold"},
         "consent": {"email": True, "sms": False}, "owner": "sam", "version": 3},
        {**contact, "id": grace, "name": "Grace Hopper", "emails": ["grace@example.com"], "tier": "standard",
         "stage": "lead"},
        {**contact, "id": grace_duplicate, "name": "G. Hopper", "emails": [], "tier": "standard",
         "status": "merged", "merged_into": grace, "version": 2},
    )  # fmt: skip
    data.add(
        "contacts", "identities",
        {"kind": "email", "value": "ada@example.com", "contact_id": ada},
        {"kind": "phone", "value": "+442071838750", "contact_id": ada},
        {"kind": "handle:twitter", "value": "@ada", "contact_id": ada},
        {"kind": "external:shop", "value": "C-1815", "contact_id": ada},
        {"kind": "email", "value": "grace@example.com", "contact_id": grace},
    )  # fmt: skip
    terms = [("q", "ada lovelace"), ("q", "ada"), ("q", "lovelace"), ("q", "analytical"), ("q", "engines"),
             ("q", "analytical engines"), ("q", "ada@example.com"), ("q", "+442071838750"), ("q", "442071838750"),
             ("tag", "vip")]  # fmt: skip
    data.add("contacts", "search_terms", *({"contact_id": ada, "field": f, "term": t} for f, t in terms))
    grace_terms = ("grace hopper", "grace", "hopper", "grace@example.com")
    data.add("contacts", "search_terms", *({"contact_id": grace, "field": "q", "term": t} for t in grace_terms))
    data.add("contacts", "inbox", {"event_id": str(uuid.uuid4()), "type": "crm.staff.changed.v1", "processed_at": T0})

    touchpoints = []
    for n, channel in enumerate(CHANNELS):
        at = T0 + timedelta(hours=n)
        touchpoints.append({
            "id": uuid.uuid4(), "contact_id": ada, "original_contact_id": ada, "channel": channel,
            "direction": "outbound" if n % 2 else "inbound",
            "type": "purchase" if channel == "in_person" else "inquiry",
            "occurred_at": at, "received_at": at, "agent": "sam" if n % 2 else None, "team": "support",
            "subject": f"About the order ({channel})", "body": f"Where is my order? ({channel})",
            "thread_id": "chat-42" if channel == "live_chat" else None, "outcome": None,
            "csat": 5 if channel == "phone" else None, "nps": None, "duration_s": 300 if channel == "phone" else None,
            "amount": Decimal("49.9000") if channel == "in_person" else None,
            "currency": "EUR" if channel == "in_person" else None, "source": "crm", "external_id": f"ext-{n}",
            "ingest_key": None, "attributes": {"order": "A-1"}, "sentiment": -0.25, "version": 1,
            "updated_at": at, "redacted_at": None,
        })  # fmt: skip
    data.add("interactions", "interactions", *touchpoints)
    thread = {"thread_id": "chat-42", "contact_id": ada, "status": "open", "resolved_at": None, "updated_at": T0}
    data.add("interactions", "threads", thread)
    data.add("interactions", "contact_fates",
             {"contact_id": grace_duplicate, "fate": "merged", "merged_into": grace, "at": T0})  # fmt: skip
    stored = json.dumps({"id": str(touchpoints[0]["id"]), "contact_id": str(ada)})
    data.add(
        "interactions", "idempotency_keys",
        {"caller": "admin", "key": "order-A-1", "fingerprint": "f" * 64, "status": 201, "response": stored,
         "created_at": T0, "expires_at": T0 + timedelta(days=1)},
    )  # fmt: skip

    followup: dict[str, Any] = {
        "policy": None, "policy_version": None, "step": None, "channel": "phone", "status": "scheduled",
        "priority": "normal", "priority_rank": 2, "assignee": "sam", "team": "support", "trigger_event_id": None,
        "thread_id": None, "completed_at": None, "outcome": None, "interaction_id": None, "escalation_level": 0,
        "cancel_reason": None, "skip_reason": None, "closed_at": None, "anchor_at": None, "plan": {},
        "overdue_at": None, "overdue": False, "next_action_at": None, "fired_at": None, "fired_by": None,
        "created_at": T0, "updated_at": T0, "version": 1,
    }  # fmt: skip
    due = T0 + timedelta(days=2)
    data.add(
        "followups", "followups",
        {**followup, "id": uuid.uuid4(), "contact_id": ada, "policy": "purchase-2-2-2", "policy_version": 1,
         "step": "thank-you", "reason": "Thank the customer for their purchase.", "due_at": due, "timeline_at": due,
         "trigger_event_id": str(uuid.uuid4()), "anchor_at": T0, "next_action_at": due},
        {**followup, "id": uuid.uuid4(), "contact_id": ada, "reason": "Call back about the order", "due_at": T0,
         "timeline_at": T0 + timedelta(hours=3), "status": "completed", "completed_at": T0 + timedelta(hours=3),
         "closed_at": T0 + timedelta(hours=3), "outcome": "Sorted", "interaction_id": touchpoints[0]["id"],
         "version": 2},
        {**followup, "id": uuid.uuid4(), "contact_id": grace, "reason": "Introduce the premium plan",
         "channel": "email", "priority": "high", "priority_rank": 1, "due_at": due, "timeline_at": due},
    )  # fmt: skip
    policy = {
        "id": "vip-welcome", "name": "VIP welcome", "description": "A call a day after a VIP's first purchase.",
        "trigger": {"event": "interaction.logged", "all": {"type": ["purchase"]}},
        "steps": [{"id": "welcome-call", "offset": "P1D", "reason": "Welcome the new VIP customer."}],
        "priority": "high", "channel": {"use": "preferred", "fallback": ["phone", "email"]},
    }  # fmt: skip
    data.add("followups", "policies", {"id": "vip-welcome", "version": 2, "enabled": False, "deleted_at": None,
                                       "updated_at": T0})  # fmt: skip
    data.add(
        "followups", "policy_versions",
        {"id": "vip-welcome", "version": 1, "document": policy, "created_at": T0 - timedelta(days=1)},
        {"id": "vip-welcome", "version": 2, "document": {**policy, "priority": "urgent"}, "created_at": T0},
    )  # fmt: skip
    data.add(
        "followups", "known_contacts",
        {"id": ada, "status": "active", "merged_into": None, "tier": "premium", "timezone": "Europe/London",
         "preferred_channel": "email", "consent": {"email": True}, "owner": "sam", "tags": ["vip"], "version": 3,
         "known_since": T0, "last_touch_at": T0, "updated_at": T0},
    )  # fmt: skip

    data.add(
        "gateway", "api_keys",
        {"id": uuid.uuid4(), "name": "shop integration", "role": "admin", "prefix": OLD_KEY[3:15],
         "key_hash": sha256(OLD_KEY), "created_at": T0, "created_by": "admin", "expires_at": None, "revoked_at": None},
        {"id": uuid.uuid4(), "name": "old import", "role": "ingest", "prefix": "fedcba987654",
         "key_hash": sha256("tp_fedcba987654_revoked"), "created_at": T0, "created_by": "admin", "expires_at": None,
         "revoked_at": T0 + timedelta(days=1)},
    )  # fmt: skip
    password_hash = PasswordHash.recommended().hash(PASSWORD)
    data.add(
        "gateway", "staff_users",
        {"id": uuid.uuid4(), "email": "sam@example.com", "name": "Sam Agent", "role": "agent",
         "password_hash": password_hash, "created_at": T0, "disabled_at": None},
        {"id": uuid.uuid4(), "email": "sam@example.org", "name": "Sam Other", "role": "readonly",
         "password_hash": password_hash, "created_at": T0, "disabled_at": None},
        {"id": uuid.uuid4(), "email": "lee@example.com", "name": "Lee Left", "role": "admin",
         "password_hash": password_hash, "created_at": T0, "disabled_at": T0 + timedelta(days=1)},
    )  # fmt: skip
    data.add(
        "gateway", "contact_events",
        {"id": uuid.uuid4(), "contact_id": grace, "original_contact_id": grace_duplicate, "at": T0,
         "type": "contact.merged", "title": "Merged", "summary": "G. Hopper merged into Grace Hopper",
         "detail": {"source_id": str(grace_duplicate)}},
    )  # fmt: skip
    data.add("gateway", "contact_aliases", {"source_id": grace_duplicate, "target_id": grace})
    data.add("gateway", "touch_summaries",
             {"contact_id": ada, "channel": "phone", "first_at": T0, "last_at": T0, "touches": 1, "csat_sum": 5,
              "csat_count": 1})  # fmt: skip
    return data


# What makes a copy of a row written above a new row (its primary and unique keys), per table.
FRESH: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "contacts": lambda row: {"id": uuid.uuid4()},
    "identities": lambda row: {"value": f"new-{row['value']}"},
    "search_terms": lambda row: {"term": f"new-{row['term']}"},
    "inbox": lambda row: {"event_id": str(uuid.uuid4())},
    "interactions": lambda row: {"id": uuid.uuid4(), "external_id": f"new-{row['external_id']}"},
    "threads": lambda row: {"thread_id": "new-thread"},
    "contact_fates": lambda row: {"contact_id": uuid.uuid4()},
    "idempotency_keys": lambda row: {"key": "new-key"},
    "followups": lambda row: {"id": uuid.uuid4(), "trigger_event_id": str(uuid.uuid4())},
    "policies": lambda row: {"id": "new-policy"},
    "policy_versions": lambda row: {"id": "new-policy"},
    "known_contacts": lambda row: {"id": uuid.uuid4()},
    "api_keys": lambda row: {"id": uuid.uuid4(), "prefix": row["prefix"][::-1]},
    "staff_users": lambda row: {"id": uuid.uuid4(), "email": f"new-{row['email']}"},
    "contact_events": lambda row: {"id": uuid.uuid4()},
    "contact_aliases": lambda row: {"source_id": uuid.uuid4()},
    "touch_summaries": lambda row: {"contact_id": uuid.uuid4()},
}
# The previous release's inserts the upgraded schema refuses, each a migration marked contract = True
# (tests/test_expand_contract.py) with its reason there. None today: 7c3e5a1f9b02 made staff_users.handle and
# teams NOT NULL, and 9d41b7e2c6a3 gave them server defaults, so the previous gateway adds staff users again.
OLD_WRITES_REFUSED: set[tuple[str, str]] = set()
# Tables the previous release reads only part of, and that part (its code's own WHERE). Its search reads the
# search terms of fields q (by prefix) and tag (the tag filter) and no other: terms a later release adds under
# fields of its own (name, national: 15a8c45397c0) it never sees, and its answers stay as they were. A row added
# to these fields would change them, so they must keep their count.
PREVIOUS_READS_WHERE: dict[str, str] = {"search_terms": "WHERE field IN ('q', 'tag')"}
# The handle the database draws for a staff user the previous release adds mid-upgrade (9d41b7e2c6a3).
DRAWN_HANDLE = re.compile(r"^staff-[0-9a-f]{12}$")


@dataclass
class Reader:
    """The previous release's reads: every column it knew of every table it wrote, again and again."""

    url: str
    selects: dict[str, tuple[sa.TextClause, int]]
    reads: list[tuple[float, float]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        engine = make_engine(self.url)
        clock = asyncio.get_running_loop().time
        try:
            while not stop.is_set():
                for table, (select, expected) in self.selects.items():
                    started = clock()
                    try:
                        async with engine.connect() as connection:
                            rows = (await connection.execute(select)).all()
                        assert len(rows) == expected, f"{table}: {len(rows)} rows, {expected} written"
                    except Exception as error:  # every failure is the finding: kept, then asserted empty
                        self.errors.append(error)
                    self.reads.append((started, clock()))
                await asyncio.sleep(0)
        finally:
            await engine.dispose()


async def previous_columns(url: str) -> dict[str, list[str]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: {t: [c["name"] for c in sa.inspect(sync).get_columns(t)]
                              for t in sa.inspect(sync).get_table_names() if t != "alembic_version"}
            )  # fmt: skip
    finally:
        await engine.dispose()


@pytest.fixture
def database_url(db_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    def make(service: str) -> str:
        if db_backend == "sqlite":
            return f"sqlite+aiosqlite:///{tmp_path / service}.db"
        cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
        return cluster.create_database(f"up_{service}_{uuid.uuid4().hex[:12]}")

    return make


def service_apps(urls: dict[str, str], nats_url: str) -> dict[str, FastAPI]:
    """The three services of the new code on these databases (not started)."""
    common: dict[str, Any] = {"nats_url": nats_url, "log_json": False, "outbox_poll_s": 0.05}
    nowhere: dict[str, Any] = {"contacts_url": "http://127.0.0.1:9", "contacts_timeout_s": 0.5}
    return {
        "contacts": contacts_app(ContactsSettings(database_url=urls["contacts"], **common)),
        "interactions": interactions_app(InteractionsSettings(database_url=urls["interactions"], **common, **nowhere)),
        "followups": followups_app(
            FollowupsSettings(database_url=urls["followups"], scheduler_enabled=False, **common, **nowhere)
        ),
    }


@asynccontextmanager
async def new_release(
    urls: dict[str, str], nats_url: str, apps: dict[str, FastAPI] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The new code on the upgraded databases (``apps``: its services, when the caller made them); the gateway
    reaches the services in-process."""
    common: dict[str, Any] = {"nats_url": nats_url, "log_json": False, "outbox_poll_s": 0.05}
    apps = apps or service_apps(urls, nats_url)
    async with AsyncExitStack() as stack:
        for app in apps.values():
            await stack.enter_async_context(running_app(app))
        gateway = gateway_app(
            GatewaySettings(database_url=urls["gateway"], dev_mode=True, upstream_read_retries=0, **common),
            transports={name: httpx.ASGITransport(app=app) for name, app in apps.items()},
        )
        yield await stack.enter_async_context(running_app(gateway))


async def settled_projection(url: str) -> dict[str, dict[str, tuple[Any, ...]]]:
    """The projection's rows once two reads half a second apart agree (no event is still being applied)."""
    previous = await projection_rows(url)

    async def unchanged() -> bool:
        nonlocal previous
        current = await projection_rows(url)
        same = current == previous
        previous = current
        return same

    await eventually(unchanged, timeout=30, interval=0.5)
    return previous


async def projection_rows(url: str) -> dict[str, dict[str, tuple[Any, ...]]]:
    """The gateway's projection tables, row by row (keyed by their primary key)."""
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            items = await connection.execute(sa.text("SELECT id, version, document FROM timeline_items"))
            touches = await connection.execute(
                sa.text(
                    "SELECT contact_id, channel, touches, csat_sum, csat_count, first_at, last_at FROM touch_summaries"
                )
            )
            states = await connection.execute(sa.text("SELECT id, status, overdue, due_at FROM followup_states"))
            return {
                "timeline_items": {str(uuid.UUID(str(r[0]))): tuple(r[1:]) for r in items.all()},
                "touch_summaries": {f"{uuid.UUID(str(r[0]))}/{r[1]}": tuple(r[2:]) for r in touches.all()},
                "followup_states": {str(uuid.UUID(str(r[0]))): tuple(r[1:]) for r in states.all()},
            }
    finally:
        await engine.dispose()


async def rebuild_from(url: str, apps: dict[str, FastAPI], prune_received_before: datetime | None = None) -> Rebuilt:
    """``python -m gateway.rebuild_timeline`` against the running services (in-process)."""
    engine = make_engine(url)
    clients = {
        name: ServiceClient(name, "http://test", timeout_s=10, connect_timeout_s=10, read_retries=0,
                            transport=httpx.ASGITransport(app=apps[name]))
        for name in ("interactions", "followups")
    }  # fmt: skip
    try:
        return await rebuild_timeline(
            sessionmaker=make_sessionmaker(engine),
            interactions=clients["interactions"],
            followups=clients["followups"],
            clock=SystemClock(),
            page_size=3,  # small pages: the paging runs too
            prune_received_before=prune_received_before,
        )
    finally:
        for client in clients.values():
            await client.close()
        await engine.dispose()


async def test_upgrade_keeps_every_record_while_the_previous_release_reads(
    database_url: Callable[[str], str], nats_server: NatsServer
) -> None:
    urls = {service: database_url(service) for service in PREVIOUS_RELEASE}
    data = previous_release_data()
    readers: dict[str, Reader] = {}
    for service, revision in PREVIOUS_RELEASE.items():
        await asyncio.to_thread(upgrade, ALEMBIC_INI[service], urls[service], revision)
        engine = make_engine(urls[service])
        async with engine.begin() as connection:
            for table, rows in data.rows[service].items():
                await insert(connection, table, rows)
        await engine.dispose()
        columns = await previous_columns(urls[service])
        selects = {
            table: (
                sa.text(f"SELECT {', '.join(columns[table])} FROM {table} {PREVIOUS_READS_WHERE.get(table, '')}"),
                len(rows),
            )
            for table, rows in data.rows[service].items()
        }
        readers[service] = Reader(urls[service], selects)

    stop = asyncio.Event()
    clock = asyncio.get_running_loop().time
    reading = [asyncio.create_task(reader.run(stop)) for reader in readers.values()]
    try:
        # The readers are reading before the first migration starts, and read on after the last one.
        await eventually(lambda: all(reader.reads for reader in readers.values()))
        windows: dict[str, tuple[float, float]] = {}
        for service in PREVIOUS_RELEASE:
            began = clock()
            await asyncio.to_thread(upgrade, ALEMBIC_INI[service], urls[service], "head")
            windows[service] = (began, clock())
        ended = clock()
        await eventually(lambda: all(reader.reads[-1][0] > ended for reader in readers.values()))
    finally:
        stop.set()
        await asyncio.gather(*reading)
    for service, reader in readers.items():
        failed = reader.errors
        assert not failed, f"{service}: {len(failed)} of the previous release's reads failed, first {failed[:1]}"
        began, ended = windows[service]
        assert any(began <= started <= ended for started, _ in reader.reads), f"{service}: no read during its upgrade"

    # The backfills: a stored response names its touchpoint (the id the erasure finds it by).
    [first, *_] = data.rows["interactions"]["interactions"]
    engine = make_engine(urls["interactions"])
    async with engine.connect() as connection:
        backfilled = (await connection.execute(sa.text("SELECT touchpoint_id FROM idempotency_keys"))).scalar_one()
    await engine.dispose()
    assert uuid.UUID(str(backfilled)) == first["id"]

    ada = data.rows["contacts"]["contacts"][0]
    grace, merged = data.rows["contacts"]["contacts"][1:]
    apps = service_apps(urls, nats_server.url)
    async with new_release(urls, nats_server.url, apps) as gateway:
        old_key = {"Authorization": f"Bearer {OLD_KEY}"}

        async def get(path: str, **params: Any) -> Any:
            response = await gateway.get(f"/api/v1{path}", params=params, headers=old_key)
            assert response.status_code == 200, (path, response.status_code, response.text)
            return response.json()

        # Contacts: every field, found by id, by search and by identity; the merged one still leads to its target.
        read = await get(f"/contacts/{ada['id']}")
        for name in ("name", "company", "emails", "phones", "handles", "external_ids", "tier", "preferred_channel",
                     "language", "timezone", "tags", "attributes", "consent", "owner", "stage", "version"):  # fmt: skip
            assert read[name] == ada[name], name
        assert {c["id"] for c in (await get("/contacts", q="lovelace"))["items"]} == {str(ada["id"])}
        assert {c["id"] for c in (await get("/contacts", tag="vip"))["items"]} == {str(ada["id"])}
        assert {c["id"] for c in (await get("/contacts", q="grace"))["items"]} == {str(grace["id"])}
        moved = await gateway.get(f"/api/v1/contacts/{merged['id']}", headers=old_key)
        assert moved.status_code in (200, 308) and str(grace["id"]) in moved.text, moved.text
        resolved = await gateway.post("/api/v1/contacts/resolve", json={"email": "ada@example.com"}, headers=old_key)
        assert resolved.status_code == 200 and resolved.json()["id"] == str(ada["id"]), resolved.text

        # Touchpoints: one on every channel, every field the previous release stored.
        written = {str(t["id"]): t for t in data.rows["interactions"]["interactions"]}
        touchpoints = (await get("/interactions", contact_id=str(ada["id"]), limit=50))["items"]
        assert {t["id"] for t in touchpoints} == set(written)
        assert {t["channel"] for t in touchpoints} == set(CHANNELS)
        for touchpoint in touchpoints:
            old = written[touchpoint["id"]]
            for name in ("channel", "direction", "type", "agent", "team", "subject", "body", "thread_id", "csat",
                         "duration_s", "external_id", "attributes", "sentiment", "version"):  # fmt: skip
                assert touchpoint[name] == old[name], (old["channel"], name)
            assert datetime.fromisoformat(touchpoint["occurred_at"]) == old["occurred_at"]
            assert touchpoint["followup_id"] is None  # the new column, empty for what came before
        [purchase] = [t for t in touchpoints if t["channel"] == "in_person"]
        assert (purchase["amount"], purchase["currency"]) == (49.9, "EUR")
        thread = await get("/threads/chat-42")
        assert thread["status"] == "open" and [t["id"] for t in thread["items"]] == [
            str(t["id"]) for t in data.rows["interactions"]["interactions"] if t["thread_id"] == "chat-42"
        ]

        # Follow-ups: the queue and each contact's, with what they answer empty for the old ones.
        written_followups = {str(f["id"]): f for f in data.rows["followups"]["followups"]}
        found: dict[str, Any] = {}
        for contact in (ada, grace):
            for item in (await get("/followups", contact_id=str(contact["id"]), limit=200))["items"]:
                found[item["id"]] = item
        # The new code may already have made follow-ups of its own (the quiet-premium sweep runs at start, and
        # the test's stream holds other tests' events): each of those came from a policy; none of ours is lost.
        made_since = {i: f for i, f in found.items() if i not in written_followups}
        assert set(written_followups) <= set(found)
        assert all(f["policy"] is not None for f in made_since.values()), made_since
        for followup_id, old in written_followups.items():
            item = found[followup_id]
            for name in ("policy", "step", "reason", "channel", "status", "priority", "assignee", "team", "outcome"):
                assert item[name] == old[name], name
            assert item["triggers"] == [] and item["trigger_interaction_id"] is None and item["close_reason"] is None
        queue = (await get("/followups", status="scheduled", limit=200))["items"]
        assert all(f["policy"] is not None for f in queue if f["id"] not in written_followups)
        assert {f["id"] for f in queue if f["id"] in written_followups} == {
            i for i, f in written_followups.items() if f["status"] == "scheduled"
        }

        # The team's own policy, at its current version and still off, beside the shipped ones.
        policy = await get("/policies/vip-welcome")
        assert (policy["version"], policy["enabled"], policy["document"]["priority"]) == (2, False, "urgent"), policy
        assert "vip-welcome" in {p["id"] for p in (await get("/policies"))["items"]}

        # Staff and keys: every user with a handle made from their email; the old key works (this whole test
        # ran on it), the revoked one does not; the old password signs in.
        users = {u["email"]: u for u in (await get("/users"))["items"]}
        assert set(users) == {u["email"] for u in data.rows["gateway"]["staff_users"]}
        assert {u["handle"] for u in users.values()} == {"sam", "sam-2", "lee"}
        assert users["lee@example.com"]["disabled_at"] is not None
        keys = {k["name"]: k for k in (await get("/api-keys"))["items"]}
        assert set(keys) == {"shop integration", "old import"} and keys["old import"]["revoked_at"] is not None
        revoked = await gateway.get("/api/v1/users", headers={"Authorization": "Bearer tp_fedcba987654_revoked"})
        assert revoked.status_code == 401, revoked.text
        login = await gateway.post("/api/v1/auth/login", json={"email": "sam@example.com", "password": PASSWORD})
        assert login.status_code == 200, login.text

        # Mid-upgrade an admin adds two staff users through a replica of the previous release (its insert: the
        # columns it knew, no handle nor teams): both go in, each with a handle of its own, and sign in on the new.
        engine = make_engine(urls["gateway"])
        old_user = data.rows["gateway"]["staff_users"][0]
        added = [{**old_user, **FRESH["staff_users"](old_user), "email": f"mid-{n}@example.com"} for n in (1, 2)]
        async with engine.begin() as connection:
            await insert(connection, "staff_users", added)
        await engine.dispose()
        users = {u["email"]: u for u in (await get("/users"))["items"]}
        handles = {users[u["email"]]["handle"] for u in added}
        assert len(handles) == 2 and all(DRAWN_HANDLE.match(h) for h in handles), handles
        assert all(users[u["email"]]["teams"] == [] for u in added)
        mid_login = await gateway.post("/api/v1/auth/login", json={"email": "mid-1@example.com", "password": PASSWORD})
        assert mid_login.status_code == 200, mid_login.text

        # The contact events the gateway held are on the merged contact's timeline (the projection's backfill).
        timeline = await get(f"/contacts/{grace['id']}/timeline")
        [event] = data.rows["gateway"]["contact_events"]
        assert str(event["id"]) in {item["id"] for item in timeline["items"]}, timeline

        # The previous release's touchpoints and follow-ups are in no stream this test publishes: the timeline
        # gets them from the services' lists (python -m gateway.rebuild_timeline, docs/operations.md), while
        # the new release serves, with the touch counts of the header; a second run changes nothing.
        projection = await projection_rows(urls["gateway"])
        assert not set(written) & set(projection["timeline_items"]), "nothing of them before the rebuild"
        rebuilt = await rebuild_from(urls["gateway"], apps)
        assert rebuilt.touchpoints >= len(written) and rebuilt.followups >= len(written_followups)
        timeline = await get(f"/contacts/{ada['id']}/timeline", limit=100)
        shown = {item["id"]: item for item in timeline["items"]}
        assert set(written) <= set(shown) and all(shown[i]["kind"] == "interaction" for i in written)
        ada_followups = {i for i, f in written_followups.items() if f["contact_id"] == ada["id"]}
        assert ada_followups <= set(shown), ada_followups - set(shown)
        # The header: each channel touched once (the previous release's summaries held phone's, also once).
        per_channel = {c["channel"]: c["touches"] for c in timeline["contact"]["last_touch_per_channel"]}
        assert per_channel == dict.fromkeys(CHANNELS, 1), per_channel
        assert timeline["contact"]["open_followups"] == 1  # the thank-you; the call-back was completed
        # Compared once the consumers are quiet: the new release makes follow-ups at start, and their events
        # still reach the projection after the first rebuild (CI saw one land between the two reads).
        again = await settled_projection(urls["gateway"])
        await rebuild_from(urls["gateway"], apps)
        assert await settled_projection(urls["gateway"]) == again, "a second rebuild changed the projection"

        # Safe while serving: a touchpoint the rebuild lists before the gateway's consumer applies its event is
        # on the timeline once and counted once (by its event: the rebuild leaves the recent ones to them).
        now = datetime.now(UTC)
        [first_written] = data.rows["interactions"]["interactions"][:1]
        fresh = {**first_written, **FRESH["interactions"](first_written), "channel": "email", "occurred_at": now,
                 "received_at": now, "updated_at": now, "thread_id": None, "csat": None,
                 "external_id": "during-the-rebuild"}  # fmt: skip
        engine = make_engine(urls["interactions"])
        async with engine.begin() as connection:
            await insert(connection, "interactions", [fresh])
        await engine.dispose()
        await rebuild_from(urls["gateway"], apps)
        doc = await get(f"/interactions/{fresh['id']}")
        engine = make_engine(urls["gateway"])
        async with make_sessionmaker(engine)() as session, session.begin():
            logged = CloudEvent(id=str(uuid.uuid4()), source="interactions", type=INTERACTION_LOGGED,
                                subject=str(ada["id"]), time=now, data=doc)  # fmt: skip
            await gateway_events.apply(session, [logged])  # as the consumer applies it, after the rebuild
        await engine.dispose()

        async def counted_once() -> bool:  # the header and pages are cached a moment (GATEWAY_*_CACHE_S)
            timeline = await get(f"/contacts/{ada['id']}/timeline", limit=100)
            ids = [item["id"] for item in timeline["items"]]
            assert len(ids) == len(set(ids)), "an item twice"
            per_channel = {c["channel"]: c["touches"] for c in timeline["contact"]["last_touch_per_channel"]}
            assert per_channel["email"] <= 2, f"counted twice: {per_channel}"
            return per_channel["email"] == 2 and str(fresh["id"]) in ids

        await eventually(counted_once, timeout=10)

        # After a restore the replay can bring touchpoints the restored service no longer holds: the prune
        # removes those received before the restart (and their touch), and keeps one received since.
        restarted = datetime.now(UTC)
        orphans = [{**doc, "id": str(uuid.uuid4()), "received_at": (restarted + timedelta(minutes=m)).isoformat()}
                   for m in (-30, 1)]  # fmt: skip
        engine = make_engine(urls["gateway"])
        async with make_sessionmaker(engine)() as session, session.begin():
            await gateway_events.apply(session, [
                CloudEvent(id=str(uuid.uuid4()), source="interactions", type=INTERACTION_LOGGED,
                           subject=str(ada["id"]), time=restarted, data=orphan)
                for orphan in orphans
            ])  # fmt: skip
        await engine.dispose()
        before_prune = await projection_rows(urls["gateway"])
        assert {o["id"] for o in orphans} <= set(before_prune["timeline_items"])
        rebuilt = await rebuild_from(urls["gateway"], apps, prune_received_before=restarted)
        assert rebuilt.pruned == 1
        after_prune = await projection_rows(urls["gateway"])
        assert (
            orphans[0]["id"] not in after_prune["timeline_items"] and orphans[1]["id"] in after_prune["timeline_items"]
        )
        email = f"{ada['id']}/email"
        assert after_prune["touch_summaries"][email][0] == before_prune["touch_summaries"][email][0] - 1

    # The previous release's replicas keep writing until the rollout replaces them: each of their inserts (the
    # columns they knew, nothing else) still goes in, but those a marked contract refuses.
    refused: set[tuple[str, str]] = set()
    for service, tables in data.rows.items():
        engine = make_engine(urls[service])
        for table, rows in tables.items():
            try:
                async with engine.begin() as connection:
                    await insert(connection, table, [{**rows[0], **FRESH[table](rows[0])}])
            except sa.exc.IntegrityError:
                refused.add((service, table))
        await engine.dispose()
    assert refused == OLD_WRITES_REFUSED
