"""CSV through the gateway: contacts import and export with the real contacts service behind it (SQLite and
PostgreSQL, real NATS), touchpoints export paging through an interactions list that keeps the keyset contract."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlmodel import col

from gateway.app import create_app as create_gateway
from gateway.settings import DEV_ADMIN_KEY, GatewaySettings
from servicekit.clock import MovableClock
from servicekit.db import make_engine, make_sessionmaker
from servicekit.testing.apps import running_app
from servicekit.testing.nats import NatsServer
from servicekit.testing.plugin import eventually
from services.contacts.app import create_app as create_contacts
from services.contacts.models import StaffHandle
from services.contacts.settings import ContactsSettings

ROOT = Path(__file__).resolve().parents[1]
ADMIN = {"Authorization": f"Bearer {DEV_ADMIN_KEY}"}
CSV = {"Content-Type": "text/csv"}
START = datetime(2026, 3, 1, tzinfo=UTC)


def interactions_list(items: list[dict[str, Any]]) -> FastAPI:
    """``GET /v1/interactions`` as the interactions service pages it: newest first, occurred_at in [since, until),
    an opaque cursor for the next page."""
    app = FastAPI()
    app.state.calls = 0

    @app.get("/v1/interactions")
    async def page(
        limit: int, since: str | None = None, until: str | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        app.state.calls += 1
        rows = sorted(items, key=lambda i: (i["occurred_at"], i["id"]), reverse=True)
        if since:
            rows = [r for r in rows if datetime.fromisoformat(r["occurred_at"]) >= datetime.fromisoformat(since)]
        if until:
            rows = [r for r in rows if datetime.fromisoformat(r["occurred_at"]) < datetime.fromisoformat(until)]
        offset = int(cursor or 0)
        chunk = rows[offset : offset + limit]
        more = offset + limit < len(rows)
        return {"items": chunk, "next_cursor": str(offset + limit) if more else None, "next_before": None}

    return app


def touchpoint(n: int) -> dict[str, Any]:
    at = (START + timedelta(hours=n)).isoformat()
    return {
        "id": str(uuid.uuid4()), "contact_id": str(uuid.uuid4()), "original_contact_id": str(uuid.uuid4()),
        "channel": "email", "direction": "inbound", "type": "inquiry", "occurred_at": at, "received_at": at,
        "agent": None, "team": "support", "subject": f"Order {n}", "body": "=HYPERLINK(\"http://x\")" if n == 7 else
        "Where is it?\nStill waiting, \"urgently\".", "thread_id": None, "outcome": None, "csat": None, "nps": None,
        "duration_s": None, "amount": -12.5 if n == 8 else None, "currency": None, "source": None,
        "external_id": None, "attributes": {"n": n}, "sentiment": None, "version": 1, "updated_at": at,
        "redacted_at": None,
    }  # fmt: skip


@pytest.fixture
def touchpoints() -> list[dict[str, Any]]:
    return [touchpoint(n) for n in range(450)]


@pytest.fixture
def databases(database_factory: Callable[[Path], str]) -> dict[str, str]:
    return {name: database_factory(ROOT / ini) for name, ini in (
        ("contacts", "services/contacts/alembic.ini"), ("gateway", "gateway/alembic.ini"))}  # fmt: skip


@pytest.fixture
async def gateway(
    databases: dict[str, str], nats_server: NatsServer, clock: MovableClock, touchpoints: list[dict[str, Any]]
) -> AsyncIterator[httpx.AsyncClient]:
    # Each service connects as its own NATS user, as in every deployment: the contacts service may read the staff
    # changes the gateway publishes only through what servicekit.natsauth grants it.
    contacts_settings = ContactsSettings(
        database_url=databases["contacts"], nats_url=nats_server.anonymous_url, log_json=False, outbox_poll_s=0.05,
        nats_user="contacts", nats_password=nats_server.passwords["contacts"],
    )  # fmt: skip
    settings = GatewaySettings(
        database_url=databases["gateway"], nats_url=nats_server.anonymous_url, dev_mode=True, log_json=False,
        upstream_read_retries=0, import_max_bytes=20_000,
        nats_user="gateway", nats_password=nats_server.passwords["gateway"],
    )  # fmt: skip
    contacts = create_contacts(contacts_settings, clock=clock)
    interactions = interactions_list(touchpoints)
    async with running_app(contacts):
        transports = {
            "contacts": httpx.ASGITransport(app=contacts),
            "interactions": httpx.ASGITransport(app=interactions),
        }
        async with running_app(create_gateway(settings, clock=clock, transports=transports)) as client:
            client.interactions = interactions  # type: ignore[attr-defined]
            yield client


async def key(client: httpx.AsyncClient, role: str) -> dict[str, str]:
    response = await client.post("/api/v1/api-keys", json={"name": role, "role": role}, headers=ADMIN)
    assert response.status_code == 201
    return {"Authorization": f"Bearer {response.json()['key']}"}


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


async def test_import_by_the_roles_that_create_contacts_and_export_round_trip(gateway: httpx.AsyncClient) -> None:
    agent, reader, ingest = await key(gateway, "agent"), await key(gateway, "readonly"), await key(gateway, "ingest")
    text = (
        "name,email,phone,tier,tags\n"
        "=Ada,ada@example.com,+44 20 7946 0958,premium,vip;béta\n"
        "Grace,grace@example.com,,gold,\n"
        "Alan,alan@example.com,,,\n"
    )
    for refused in (reader, ingest):
        response = await gateway.post("/api/v1/contacts/import", content=text.encode(), headers={**CSV, **refused})
        assert response.status_code == 403, response.text
    dry = await gateway.post("/api/v1/contacts/import?dry_run=true", content=text.encode(), headers={**CSV, **agent})
    assert dry.status_code == 200, dry.text
    assert (dry.json()["created"], dry.json()["dry_run"]) == (2, True)
    assert (await gateway.get("/api/v1/contacts", headers=agent)).json()["items"] == []
    real = await gateway.post("/api/v1/contacts/import", content=text.encode(), headers={**CSV, **agent})
    assert real.status_code == 200, real.text
    report = real.json()
    assert (report["created"], report["updated"], report["unchanged"]) == (2, 0, 0)
    assert report["errors"] == [{"row": 3, "field": "tier", "message": report["errors"][0]["message"]}]

    # A bulk copy of personal data: contacts:export (admin), and it is audited.
    assert (await gateway.get("/api/v1/contacts/export.csv", headers=agent)).status_code == 403
    export = await gateway.get("/api/v1/contacts/export.csv", headers=ADMIN)
    assert export.status_code == 200 and export.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in export.headers["content-disposition"]
    rows = rows_of(export.text)
    assert [r["name"] for r in rows] == ["Alan", "'=Ada"]
    assert rows[1]["phones"] == "'+442079460958" and rows[1]["tags"] == "vip;béta"
    premium = rows_of((await gateway.get("/api/v1/contacts/export.csv?tier=premium", headers=ADMIN)).text)
    assert [r["name"] for r in premium] == ["'=Ada"]
    # An empty filter is what the document says it is, not a pattern: refused by the service, not dropped.
    empty_stage = await gateway.get("/api/v1/contacts/export.csv?stage=", headers=ADMIN)
    assert empty_stage.status_code == 422, empty_stage.text
    again = await gateway.post("/api/v1/contacts/import", content=export.content, headers={**CSV, **agent})
    assert (again.json()["unchanged"], again.json()["created"], again.json()["updated"]) == (2, 0, 0)
    audit = (await gateway.get("/api/v1/audit", headers=ADMIN)).json()
    assert "contacts.export_csv" in {entry["action"] for entry in audit["items"]}


async def staff_copy(contacts_db: str) -> dict[str, bool]:
    """The contacts service's copy of the staff handles, read from its database."""
    engine = make_engine(contacts_db)
    try:
        async with make_sessionmaker(engine)() as session:
            rows = (await session.execute(select(col(StaffHandle.handle), col(StaffHandle.active)))).all()
    finally:
        await engine.dispose()
    return {handle: active for handle, active in rows}


async def test_an_import_names_owners_the_contacts_service_learnt_of_from_staff_events(
    gateway: httpx.AsyncClient, databases: dict[str, str]
) -> None:
    # Handles of this test only: the session's nats-server keeps other tests' staff events on CRM_STAFF.
    suffix = uuid.uuid4().hex[:8]
    ana, leaver = f"ana.{suffix}", f"leaver.{suffix}"
    for handle in (ana, leaver):
        body = {"email": f"{handle}@example.com", "password": "correct horse battery", "role": "agent"}
        created = await gateway.post("/api/v1/users", json=body, headers=ADMIN)
        assert created.status_code == 201, created.text
    disabled = await gateway.delete(f"/api/v1/users/{created.json()['id']}", headers=ADMIN)
    assert disabled.status_code == 204, disabled.text

    # The copy is filled from crm.staff.changed.v1 through the contacts-staff consumer: await its state.
    async def copy_is_current() -> bool:
        copy = await staff_copy(databases["contacts"])
        return copy.get(ana) is True and copy.get(leaver) is False

    await eventually(copy_is_current)
    text = (
        "name,email,owner\n"
        f"Ada,ada.{suffix}@example.com,{ana}\n"
        f"Bob,bob.{suffix}@example.com,nobody.here\n"
        f"Cy,cy.{suffix}@example.com,{leaver}\n"
    )
    agent = await key(gateway, "agent")
    for dry_run in ("true", "false"):
        response = await gateway.post(f"/api/v1/contacts/import?dry_run={dry_run}", content=text.encode(),
                                      headers={**CSV, **agent})  # fmt: skip
        assert response.status_code == 200, response.text
        report = response.json()
        assert (report["created"], report["error_count"]) == (1, 2)
        errors = {e["row"]: (e["field"], e["message"]) for e in report["errors"]}
        assert errors == {
            3: ("owner", "owner 'nobody.here' is not a staff handle."),
            4: ("owner", f"owner '{leaver}' is disabled: give the contact to an active colleague."),
        }
    items = (await gateway.get("/api/v1/contacts", params={"owner": ana}, headers=agent)).json()["items"]
    assert [(c["name"], c["owner"]) for c in items] == [("Ada", ana)]
    assert len((await gateway.get("/api/v1/contacts", headers=agent)).json()["items"]) == 1


async def test_import_body_over_the_route_limit_is_a_413(gateway: httpx.AsyncClient) -> None:
    body = b"name\n" + b"x" * 30_000 + b"\n"
    response = await gateway.post("/api/v1/contacts/import", content=body, headers={**CSV, **ADMIN})
    assert response.status_code == 413 and response.json()["max_body_bytes"] == 20_000


async def test_interactions_export_pages_through_the_range_with_formulas_neutralised(
    gateway: httpx.AsyncClient, touchpoints: list[dict[str, Any]]
) -> None:
    reader = await key(gateway, "readonly")
    response = await gateway.get("/api/v1/interactions/export.csv", headers=reader)
    assert response.status_code == 200 and response.headers["content-type"] == "text/csv; charset=utf-8"
    rows = rows_of(response.text)
    assert len(rows) == 450 and gateway.interactions.state.calls == 3  # type: ignore[attr-defined]
    assert [r["id"] for r in rows] == [t["id"] for t in reversed(touchpoints)]
    by_subject = {r["subject"]: r for r in rows}
    assert by_subject["Order 7"]["body"] == '\'=HYPERLINK("http://x")'
    assert by_subject["Order 8"]["amount"] == "'-12.5"
    assert by_subject["Order 1"]["body"] == 'Where is it?\nStill waiting, "urgently".'
    assert by_subject["Order 1"]["attributes"] == '{"n": 1}'
    since, until = (START + timedelta(hours=10)).isoformat(), (START + timedelta(hours=20)).isoformat()
    window = await gateway.get("/api/v1/interactions/export.csv", params={"since": since, "until": until},
                               headers=reader)  # fmt: skip
    assert [r["subject"] for r in rows_of(window.text)] == [f"Order {n}" for n in range(19, 9, -1)]
    assert (await gateway.get("/api/v1/interactions/export.csv?since=yesterday", headers=reader)).status_code == 422
