"""Least privilege for automated systems (issue 18, item 11): an ingest key writes, and what it gets back is ids and
statuses only, never a contact's profile or a touchpoint's content, not even another system's touchpoint it
collided with. The gateway in front of the real contacts service (on a real port) and the real interactions app;
also the Idempotency-Replayed header docs/api.md promises, relayed end to end (issue 22, item 7)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from gateway.api import endpoint_actions
from gateway.app import create_app as create_gateway
from gateway.auth import Role, allowed
from gateway.settings import DEV_ADMIN_KEY, GatewaySettings
from servicekit.clock import MovableClock
from servicekit.testing.apps import running_app
from servicekit.testing.nats import NatsServer
from services.interactions.app import create_app as create_interactions
from services.interactions.settings import InteractionsSettings
from services.interactions.tests.conftest import touchpoint_factory
from tests import test_interactions_api as api
from tests.test_interactions_api import ContactsService

contacts, contacts_db, interactions_db, settings = api.contacts, api.contacts_db, api.interactions_db, api.settings
ROOT = Path(__file__).resolve().parents[1]
ADMIN = {"Authorization": f"Bearer {DEV_ADMIN_KEY}"}
CONTENT = "zq-private-" + uuid.uuid4().hex[:8]  # what another system wrote, which an ingest key must not read


@pytest.fixture
def gateway_db(database_factory: Callable[[Path], str]) -> str:
    return database_factory(ROOT / "gateway/alembic.ini")


@pytest.fixture
async def gateway(
    gateway_db: str,
    nats_server: NatsServer,
    clock: MovableClock,
    contacts: ContactsService,
    settings: InteractionsSettings,
) -> AsyncIterator[httpx.AsyncClient]:
    gateway_settings = GatewaySettings(
        database_url=gateway_db, nats_url=nats_server.url, dev_mode=True,
        log_json=False, contacts_url=contacts.url, followups_url=contacts.url, upstream_read_retries=0,
    )  # fmt: skip
    interactions = create_interactions(settings, clock=clock)
    async with running_app(interactions):
        transports = {"interactions": httpx.ASGITransport(app=interactions)}
        async with running_app(create_gateway(gateway_settings, clock=clock, transports=transports)) as client:
            yield client


async def _key(client: httpx.AsyncClient, role: str) -> dict[str, str]:
    made = await client.post("/api/v1/api-keys", json={"name": f"{role} key", "role": role}, headers=ADMIN)
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['key']}"}


def test_the_routes_an_ingest_key_reaches_are_the_ones_checked_here() -> None:
    """A new route an ingest key may call fails this test until its answer is reviewed for what it shows."""
    reachable = {
        (method, path)
        for method, path, action in endpoint_actions()
        if action is None or allowed(Role.ingest, action)  # type: ignore[arg-type]
    }
    assert reachable == {
        ("POST", "/api/v1/contacts/resolve"),  # ids and statuses only: below
        ("POST", "/api/v1/interactions"),  # ids only: below
        ("POST", "/api/v1/interactions/batch"),  # index, status, id and the item's own problem: below
        ("POST", "/api/v1/auth/login"),  # staff only (an ingest key has no user)
        ("POST", "/api/v1/auth/logout"),  # nothing
        ("GET", "/api/v1/auth/me"),  # the key's own id, role and name
        ("GET", "/api/v1/asyncapi.json"),  # the event catalogue: the events' shape, no data
        # Public: the one-time token is the credential; a key without one gets 404/410 and learns nothing.
        ("POST", "/api/v1/auth/password-link"),
        ("POST", "/api/v1/auth/password"),
    }


async def test_an_ingest_key_gets_ids_and_statuses_from_resolve_and_touchpoints(gateway: httpx.AsyncClient) -> None:
    agent, shop, other_shop = await _key(gateway, "agent"), await _key(gateway, "ingest"), await _key(gateway, "ingest")
    email = f"private.{uuid.uuid4().hex[:8]}@example.com"
    profile = {"name": f"Zelda {CONTENT}", "phones": ["+12025550143"], "attributes": {"note": CONTENT}}
    made = await gateway.post("/api/v1/contacts/resolve", json={"email": email, "create": profile}, headers=shop)
    assert made.status_code == 201, made.text
    assert made.json() == {"id": made.json()["id"], "status": "active"}
    again = await gateway.post("/api/v1/contacts/resolve", json={"email": email}, headers=other_shop)
    assert again.status_code == 200 and again.json() == made.json() and CONTENT not in again.text
    assert "etag" not in again.headers
    # Staff still get the whole contact.
    staff = await gateway.post("/api/v1/contacts/resolve", json={"email": email}, headers=agent)
    assert staff.status_code == 200 and staff.json()["name"] == f"Zelda {CONTENT}"

    contact_id = made.json()["id"]
    order = f"order-{uuid.uuid4().hex[:8]}"
    written = touchpoint_factory(contact_id=contact_id, source="shop", external_id=order, subject=CONTENT,
                                 body=f"Body {CONTENT}")  # fmt: skip
    first = await gateway.post("/api/v1/interactions", json=written, headers={**shop, "Idempotency-Key": order})
    assert first.status_code == 201, first.text
    assert set(first.json()) == {"id", "contact_id"} and first.headers["location"].startswith("/api/v1/")
    # Another system re-using the source and external_id meets the stored touchpoint: its ids, not its content.
    collided = touchpoint_factory(contact_id=contact_id, source="shop", external_id=order, subject="mine")
    answers = [
        await gateway.post("/api/v1/interactions", json=collided, headers=other_shop),
        await gateway.post("/api/v1/interactions/batch", json={"items": [collided]}, headers=other_shop),
    ]
    assert answers[0].status_code == 200 and answers[0].json() == first.json()
    assert answers[1].status_code == 200 and answers[1].json()["results"][0]["status"] == 200
    assert set(answers[1].json()["results"][0]) <= {"index", "status", "id", "problem"}
    # The same Idempotency-Key replays the first answer, said so by the header docs/api.md promises.
    replay = await gateway.post("/api/v1/interactions", json=written, headers={**shop, "Idempotency-Key": order})
    assert replay.status_code == 201 and replay.headers["idempotency-replayed"] == "true"
    answers.append(replay)
    for answer in answers:
        assert CONTENT not in answer.text and "subject" not in answer.text and "body" not in answer.text
    # Staff read it in full.
    read = await gateway.get(f"/api/v1/interactions/{first.json()['id']}", headers=agent)
    assert read.status_code == 200 and read.json()["subject"] == CONTENT
