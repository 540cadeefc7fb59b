"""The gateway in front of the real contacts service (its app in-process, real NATS and database):
roles on contacts, merge and erase through the gateway, the contact events on the timeline, the audit."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app as create_gateway
from gateway.settings import DEV_ADMIN_KEY, GatewaySettings
from servicekit.clock import MovableClock
from servicekit.testing.apps import running_app
from servicekit.testing.nats import NatsServer
from servicekit.testing.plugin import eventually
from services.contacts.app import create_app as create_contacts
from services.contacts.settings import ContactsSettings

ROOT = Path(__file__).resolve().parents[1]
ADMIN = {"Authorization": f"Bearer {DEV_ADMIN_KEY}"}


@pytest.fixture
def databases(database_factory: Callable[[Path], str]) -> dict[str, str]:
    return {name: database_factory(ROOT / ini) for name, ini in (
        ("contacts", "services/contacts/alembic.ini"), ("gateway", "gateway/alembic.ini"))}  # fmt: skip


@pytest.fixture
async def gateway(
    databases: dict[str, str], nats_server: NatsServer, clock: MovableClock, unused_tcp_port: int
) -> AsyncIterator[httpx.AsyncClient]:
    contacts_settings = ContactsSettings(
        database_url=databases["contacts"], nats_url=nats_server.url,
        log_json=False, outbox_poll_s=0.05,
    )  # fmt: skip
    down = f"http://127.0.0.1:{unused_tcp_port}"  # interactions and follow-ups are not part of this test
    settings = GatewaySettings(
        database_url=databases["gateway"], nats_url=nats_server.url, dev_mode=True,
        log_json=False, interactions_url=down, followups_url=down, upstream_read_retries=0,
    )  # fmt: skip
    contacts = create_contacts(contacts_settings, clock=clock)
    async with running_app(contacts):
        transports = {"contacts": httpx.ASGITransport(app=contacts)}
        async with running_app(create_gateway(settings, clock=clock, transports=transports)) as client:
            yield client


async def key(client: httpx.AsyncClient, role: str) -> dict[str, str]:
    response = await client.post("/api/v1/api-keys", json={"name": role, "role": role}, headers=ADMIN)
    assert response.status_code == 201
    return {"Authorization": f"Bearer {response.json()['key']}"}


def person() -> dict[str, Any]:
    n = uuid.uuid4().hex[:8]
    return {"name": f"Ada {n}", "emails": [f"ada.{n}@example.com"], "phones": ["+12025550143"]}


async def test_roles_on_contacts_merge_erase_and_the_contact_events_on_the_timeline(
    gateway: httpx.AsyncClient,
) -> None:
    ingest, agent, reader = await key(gateway, "ingest"), await key(gateway, "agent"), await key(gateway, "readonly")
    profile = person()
    resolved = await gateway.post(
        "/api/v1/contacts/resolve", json={"email": profile["emails"][0], "create": {"name": profile["name"]}},
        headers=ingest,
    )  # fmt: skip
    assert resolved.status_code == 201, resolved.text
    source = resolved.json()
    assert (await gateway.post("/api/v1/contacts/resolve", json={"email": profile["emails"][0]},
                               headers=ingest)).status_code == 200  # fmt: skip
    assert (await gateway.get(f"/api/v1/contacts/{source['id']}", headers=ingest)).status_code == 403
    assert (await gateway.post("/api/v1/contacts/resolve", json={"email": "x@example.com"},
                               headers=reader)).status_code == 403  # fmt: skip

    target = await gateway.post("/api/v1/contacts", json={"name": "Ada Main"}, headers=agent)
    assert target.status_code == 201
    target_id = target.json()["id"]
    read = await gateway.get(f"/api/v1/contacts/{target_id}", headers=reader)
    assert read.status_code == 200 and read.headers["etag"]
    stale = await gateway.patch(
        f"/api/v1/contacts/{target_id}", json={"stage": "customer"}, headers={**agent, "If-Match": '"old"'}
    )
    assert stale.status_code == 412
    changed = await gateway.patch(
        f"/api/v1/contacts/{target_id}", json={"stage": "customer", "consent": {"sms": False}},
        headers={**agent, "If-Match": read.headers["etag"]},
    )  # fmt: skip
    assert changed.status_code == 200 and changed.json()["stage"] == "customer"
    invalid = await gateway.post("/api/v1/contacts", json={"tier": "gold"}, headers=agent)
    assert invalid.status_code == 422

    merged = await gateway.post(f"/api/v1/contacts/{target_id}/merge", json={"source_id": source["id"]}, headers=agent)
    assert merged.status_code == 200, merged.text
    moved = await gateway.get(f"/api/v1/contacts/{source['id']}", headers=reader)
    assert moved.status_code == 308 and moved.headers["location"] == f"/api/v1/contacts/{target_id}"

    async def contact_events() -> list[str]:
        page = await gateway.get(f"/api/v1/contacts/{source['id']}/timeline?kinds=contact_event", headers=reader)
        assert page.status_code == 200, page.text
        types = [i["type"] for i in page.json()["items"]]
        return types if len(types) == 4 else []

    # The merged-away contact's timeline is the target's, and holds the events of both.
    assert await eventually(contact_events, timeout=15) == ["merged", "stage_changed", "created", "created"]
    assert (await gateway.get(f"/api/v1/contacts/{target_id}/timeline?kinds=contact_event",
                              headers=ingest)).status_code == 403  # fmt: skip

    # Interactions and follow-ups are down here: the timeline is the gateway's own projection and needs neither.
    full = await gateway.get(f"/api/v1/contacts/{target_id}/timeline", headers=reader)
    assert full.status_code == 200, full.text
    assert [i["type"] for i in full.json()["items"]] == ["merged", "stage_changed", "created", "created"]

    assert (await gateway.delete(f"/api/v1/contacts/{target_id}", headers=agent)).status_code == 403
    assert (await gateway.delete(f"/api/v1/contacts/{target_id}", headers=ADMIN)).status_code == 204
    gone = await gateway.get(f"/api/v1/contacts/{target_id}", headers=reader)
    assert gone.status_code == 410
    assert profile["name"] not in gone.text

    audit = (await gateway.get("/api/v1/audit", headers=ADMIN)).json()["items"]
    actions = [(a["action"], a["target"], a["outcome"]) for a in audit]
    assert ("contact.erase", target_id, 204) in actions and ("contact.merge", target_id, 200) in actions
    assert profile["name"] not in str(audit) and profile["emails"][0] not in str(audit)


async def test_the_request_id_and_traceparent_reach_the_service_and_its_events(
    gateway: httpx.AsyncClient, nats_server: NatsServer
) -> None:
    import nats

    from servicekit.testing.apps import EventTap

    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    created = await gateway.post(
        "/api/v1/contacts",
        json=person(),
        headers={**ADMIN, "X-Request-ID": "req-journey-1", "traceparent": traceparent},
    )
    assert created.status_code == 201, created.text
    assert created.headers["x-request-id"] == "req-journey-1"
    contact_id = created.json()["id"]
    nc = await nats.connect(nats_server.url)
    try:
        tap = await EventTap(
            nc.jetstream(), "CRM_CONTACTS", f"crm.contacts.created.{contact_id}", durable=f"t{uuid.uuid4().hex}"
        ).start()
        (event,) = await tap.take(1)
    finally:
        await nc.close()
    assert event.requestid == "req-journey-1" and event.traceparent == traceparent


async def test_search_through_the_gateway_phone_formats_typos_and_every_page(gateway: httpx.AsyncClient) -> None:
    agent, reader = await key(gateway, "agent"), await key(gateway, "readonly")
    made = await gateway.post("/api/v1/contacts", json={"name": "Fatima Ortega", "phones": ["+34612992580"]},
                              headers=agent)  # fmt: skip
    assert made.status_code == 201, made.text
    fatima = made.json()["id"]
    for q in ("612 992 580", "0034612992580", "+34 612 992 580", "(612) 992-580", "fatma", "ortga"):
        found = await gateway.get("/api/v1/contacts", params={"q": q}, headers=reader)
        assert found.status_code == 200, found.text
        assert [c["id"] for c in found.json()["items"]] == [fatima], q
    many = []
    for n in range(27):
        response = await gateway.post("/api/v1/contacts", json={"name": f"Fatima Number{n}"}, headers=agent)
        many.append(response.json()["id"])
    seen: list[str] = []
    params: dict[str, Any] = {"q": "fatima", "limit": 25}
    while True:
        page = (await gateway.get("/api/v1/contacts", params=params, headers=reader)).json()
        seen += [c["id"] for c in page["items"]]
        if not page.get("next_cursor"):
            break
        params = {**params, "cursor": page["next_cursor"]}
    assert seen == [*reversed(many), fatima]
