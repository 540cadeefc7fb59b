"""The interactions service over HTTP with the real contacts service answering on a real port
(SQLite and PostgreSQL, real nats-server)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import nats
import pytest
import sqlalchemy as sa
from starlette.types import ASGIApp, Receive, Scope, Send

from servicekit.clock import MovableClock
from servicekit.db import make_engine
from servicekit.identities import Identity
from servicekit.testing.apps import EventTap, running_app, served
from servicekit.testing.nats import NatsServer
from servicekit.testing.plugin import eventually
from servicekit.testing.ports import free_port
from servicekit.testing.storage import StorageScan
from services.contacts.app import create_app as create_contacts_app
from services.contacts.settings import ContactsSettings
from services.interactions.app import create_app
from services.interactions.identities import LEARNED_AT, IdentityCopy
from services.interactions.models import KnownIdentity
from services.interactions.settings import InteractionsSettings
from services.interactions.tests.conftest import ALEMBIC_INI, at, touchpoint_factory

CONTACTS_ALEMBIC_INI = Path(__file__).resolve().parents[1] / "services/contacts/alembic.ini"
PROBLEM = "application/problem+json"
# Waits for what happens in the background: short when it works, generous on a busy shared machine.
SLOW = 60.0


class Gate:
    """Holds the contacts service's resolve calls while closed: a request stays in flight as long as a test wants."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.open = asyncio.Event()
        self.open.set()
        self.waiting = 0
        self.calls: list[str] = []  # the path of every call that reached the contacts service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.calls.append(scope["path"])
        resolving = scope["type"] == "http" and scope["path"] in ("/v1/contacts/resolve", "/v1/contacts/resolve-many")
        if resolving and not self.open.is_set():
            self.waiting += 1
            await self.open.wait()
        await self.app(scope, receive, send)


@dataclass
class ContactsService:
    url: str
    gate: Gate
    http: httpx.AsyncClient

    async def create(self, **fields: Any) -> dict[str, Any]:
        body = {"name": "Ada Lovelace", "emails": [f"ada.{uuid.uuid4().hex[:10]}@example.com"], **fields}
        response = await self.http.post("/v1/contacts", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())


@pytest.fixture
def contacts_db(database_factory: Callable[[Path], str]) -> str:
    return database_factory(CONTACTS_ALEMBIC_INI)


@pytest.fixture
def interactions_db(database_factory: Callable[[Path], str]) -> str:
    return database_factory(ALEMBIC_INI)


@pytest.fixture
async def contacts(contacts_db: str, nats_server: NatsServer, clock: MovableClock) -> AsyncIterator[ContactsService]:
    settings = ContactsSettings(database_url=contacts_db, nats_url=nats_server.url, log_json=False, outbox_poll_s=0.05)
    gate = Gate(create_contacts_app(settings, clock=clock))
    async with served(gate) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        yield ContactsService(url, gate, http)


@pytest.fixture
def settings(interactions_db: str, nats_server: NatsServer, contacts: ContactsService) -> InteractionsSettings:
    return InteractionsSettings(
        database_url=interactions_db,
        nats_url=nats_server.url,
        contacts_url=contacts.url,
        log_json=False,
        outbox_poll_s=0.05,
        contacts_timeout_s=2,
        retry_after_s=3,
    )


@pytest.fixture
async def client(settings: InteractionsSettings, clock: MovableClock) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(create_app(settings, clock=clock)) as client:
        yield client


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[Any]:
    nc = await nats.connect(nats_server.url)
    yield nc.jetstream()
    await nc.close()


async def log(
    client: httpx.AsyncClient, status: int = 201, headers: dict[str, str] | None = None, **fields: Any
) -> dict[str, Any]:
    response = await client.post("/v1/interactions", json=touchpoint_factory(**fields), headers=headers)
    assert response.status_code == status, response.text
    return dict(response.json())


async def test_log_by_contact_id_stores_reads_and_announces_without_body(
    client: httpx.AsyncClient, contacts: ContactsService, js: Any
) -> None:
    contact = await contacts.create()
    response = await client.post(
        "/v1/interactions",
        json=touchpoint_factory(
            contact_id=contact["id"],
            csat=5,
            agent="Grace",
            team="support",
            attributes={"order": "A-17"},
            subject="Thank you, great help!",
            body="Wonderful service, thanks a lot.",
        ),
        headers={"X-Request-ID": "req-tp-1"},
    )
    assert response.status_code == 201, response.text
    touchpoint = response.json()
    assert response.headers["location"] == f"/v1/interactions/{touchpoint['id']}"
    assert touchpoint["contact_id"] == touchpoint["original_contact_id"] == contact["id"]
    assert touchpoint["sentiment"] > 0.5 and touchpoint["received_at"] == "2026-01-05T09:00:00Z"
    assert uuid.UUID(touchpoint["id"]).version == 7
    assert (await client.get(f"/v1/interactions/{touchpoint['id']}")).json() == touchpoint
    tap = await EventTap(
        js, "CRM_INTERACTIONS", f"crm.interactions.*.{contact['id']}", durable=f"t{uuid.uuid4().hex}"
    ).start()
    (event,) = await tap.take(1, timeout=SLOW)
    await tap.assert_no_more(wait=0.5)
    assert event.type == "crm.interaction.logged.v1" and event.subject == contact["id"]
    assert event.requestid == "req-tp-1" and "body" not in event.data
    assert event.data == {k: v for k, v in touchpoint.items() if k != "body" and (v is not None or k in event.data)}


async def test_log_by_identity_resolves_or_creates_the_contact(
    client: httpx.AsyncClient, contacts: ContactsService
) -> None:
    email = f"new.{uuid.uuid4().hex[:8]}@example.com"
    first = await log(client, contact_id=None, contact={"email": email, "name": "Hedy Lamarr", "language": "de"})
    again = await log(client, contact_id=None, contact={"email": email.upper()})
    assert first["contact_id"] == again["contact_id"]
    created = (await contacts.http.get(f"/v1/contacts/{first['contact_id']}")).json()
    assert created["name"] == "Hedy Lamarr" and created["emails"] == [email]
    bad = await client.post("/v1/interactions", json=touchpoint_factory(contact_id=None, contact={"email": "nope"}))
    assert bad.status_code == 422 and bad.headers["content-type"] == PROBLEM
    assert bad.json()["type"].endswith("/contact-rejected")
    # A new contact the contacts service refuses only once it is whole (a 21st email): its 422, not a 503 that
    # a client (or the ingest consumer) would retry for ever; it was a 500 there (issue 18, item 15).
    n = uuid.uuid4().hex[:6]
    crowded = {"email": f"one.{n}@example.com", "emails": [f"more.{n}.{i}@example.com" for i in range(20)]}
    refused = await client.post("/v1/interactions", json=touchpoint_factory(contact_id=None, contact=crowded))
    assert refused.status_code == 422 and refused.json()["type"].endswith("/contact-rejected"), refused.text


async def test_invalid_touchpoints_and_unknown_contacts_are_422_problems(client: httpx.AsyncClient) -> None:
    for bad in (
        {"channel": "fax"},
        {"direction": "sideways"},
        {"type": "gossip"},
        {"occurred_at": "2026-01-05T08:00:00"},  # no offset
        {"occurred_at": at(60 * 24 * 3)},  # days in the future
        {"csat": 6},
        {"nps": 11},
        {"amount": "10.00"},  # no currency
        {"source": "shop"},  # no external_id
        {"body": "x" * 40_000},
        {"attributes": {"blob": "x" * 20_000}},
        {"contact": {"email": "a@example.com"}},  # both contact_id and contact
        {"nickname": "unknown field"},
    ):
        response = await client.post("/v1/interactions", json=touchpoint_factory(**bad))
        assert response.status_code == 422, (bad, response.text)
        assert response.headers["content-type"] == PROBLEM
    unknown = await client.post("/v1/interactions", json=touchpoint_factory())
    assert unknown.status_code == 422 and unknown.json()["type"].endswith("/unknown-contact")
    assert (await client.get(f"/v1/interactions/{uuid.uuid4()}")).status_code == 404


async def test_resent_touchpoint_with_same_source_and_external_id_is_200_with_the_first(
    client: httpx.AsyncClient, contacts: ContactsService
) -> None:
    contact = await contacts.create()
    first = await log(
        client,
        contact_id=contact["id"],
        source="shop",
        external_id="order-9",
        type="purchase",
        amount=42.5,
        currency="EUR",
    )
    again = await log(
        client,
        200,
        contact_id=contact["id"],
        source="shop",
        external_id="order-9",
        type="purchase",
        amount=42.5,
        currency="EUR",
        subject="resent",
    )
    assert again == first and first["amount"] == 42.5


async def test_idempotency_key_replays_conflicts_and_is_scoped_per_caller(
    client: httpx.AsyncClient, contacts: ContactsService
) -> None:
    contact = await contacts.create()
    body = touchpoint_factory(contact_id=contact["id"])
    headers = {"Idempotency-Key": "k-1", "X-Touchpoint-Caller": "key-shop"}
    first = await client.post("/v1/interactions", json=body, headers=headers)
    replay = await client.post("/v1/interactions", json=dict(reversed(list(body.items()))), headers=headers)
    assert first.status_code == replay.status_code == 201
    assert replay.content == first.content and replay.headers["idempotency-replayed"] == "true"
    assert replay.headers["location"] == first.headers["location"] == f"/v1/interactions/{first.json()['id']}"
    other_body = await client.post("/v1/interactions", json={**body, "csat": 3}, headers=headers)
    assert other_body.status_code == 422 and other_body.json()["type"].endswith("/idempotency-key-reused")
    other_caller = await client.post(
        "/v1/interactions", json=body, headers={**headers, "X-Touchpoint-Caller": "key-phone"}
    )
    assert other_caller.status_code == 201 and other_caller.json()["id"] != first.json()["id"]
    too_long = await client.post("/v1/interactions", json=body, headers={"Idempotency-Key": "k" * 256})
    assert too_long.status_code == 400 and too_long.headers["content-type"] == PROBLEM
    page = (await client.get("/v1/interactions", params={"contact_id": contact["id"]})).json()
    assert len(page["items"]) == 2


async def test_idempotency_key_in_flight_is_409_then_replays(
    client: httpx.AsyncClient, contacts: ContactsService
) -> None:
    body = touchpoint_factory(contact_id=None, contact={"email": f"slow.{uuid.uuid4().hex[:8]}@example.com"})
    headers = {"Idempotency-Key": "slow-1"}
    contacts.gate.open.clear()
    first = asyncio.create_task(client.post("/v1/interactions", json=body, headers=headers))
    await eventually(lambda: contacts.gate.waiting == 1, timeout=SLOW)
    in_flight = await client.post("/v1/interactions", json=body, headers=headers)
    assert in_flight.status_code == 409 and in_flight.headers["retry-after"] == "1"
    assert in_flight.json()["type"].endswith("/idempotency-key-in-flight")
    contacts.gate.open.set()
    done = await first
    assert done.status_code == 201
    replay = await client.post("/v1/interactions", json=body, headers=headers)
    assert (replay.status_code, replay.content) == (201, done.content)


async def test_batch_stores_valid_items_and_reports_each_one(
    client: httpx.AsyncClient, contacts: ContactsService
) -> None:
    contact = await contacts.create()
    erased = await contacts.create()
    assert (await contacts.http.delete(f"/v1/contacts/{erased['id']}")).status_code == 204
    items = [
        touchpoint_factory(contact_id=contact["id"], source="shop", external_id="b-1"),
        touchpoint_factory(contact_id=contact["id"], csat=9),  # invalid
        touchpoint_factory(),  # unknown contact
        touchpoint_factory(contact_id=None, contact={"email": f"b.{uuid.uuid4().hex[:8]}@example.com"}),
        touchpoint_factory(contact_id=contact["id"], source="shop", external_id="b-1"),  # same as the first
        touchpoint_factory(contact_id=erased["id"]),
        "not an object",
    ]
    response = await client.post("/v1/interactions/batch", json={"items": items})
    assert response.status_code == 422  # "not an object" breaks the envelope itself
    response = await client.post("/v1/interactions/batch", json={"items": items[:-1]})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == list(range(6))
    assert [r["status"] for r in results] == [201, 422, 422, 201, 200, 422]
    assert results[4]["id"] == results[0]["id"]
    assert results[1]["problem"]["errors"][0]["loc"] == ["csat"]
    assert results[2]["problem"]["type"].endswith("/unknown-contact")
    assert results[5]["problem"]["type"].endswith("/contact-erased")
    for result in results:
        assert ("id" in result) == (result["status"] < 300)
    stored = await client.get(f"/v1/interactions/{results[3]['id']}")
    assert stored.status_code == 200
    too_many = await client.post("/v1/interactions/batch", json={"items": [touchpoint_factory()] * 1001})
    assert too_many.status_code == 413 and too_many.json()["max_items"] == 1000
    assert (await client.post("/v1/interactions/batch", json={"items": []})).status_code == 422


async def test_contacts_down_is_503_with_retry_after(
    interactions_db: str, nats_server: NatsServer, clock: MovableClock
) -> None:
    settings = InteractionsSettings(
        database_url=interactions_db,
        nats_url=nats_server.url,
        log_json=False,
        contacts_url=f"http://127.0.0.1:{free_port()}",
        contacts_timeout_s=0.5,
        retry_after_s=7,
    )
    async with running_app(create_app(settings, clock=clock)) as client:
        for body in (touchpoint_factory(), touchpoint_factory(contact_id=None, contact={"phone": "+12025550100"})):
            response = await client.post("/v1/interactions", json=body, headers={"Idempotency-Key": "down"})
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "7" and response.headers["content-type"] == PROBLEM
        batch = await client.post("/v1/interactions/batch", json={"items": [touchpoint_factory(), {"channel": "x"}]})
        assert [r["status"] for r in batch.json()["results"]] == [503, 422]
        # The key was released: once contacts is back, the retry is processed, not refused.
        assert (await client.get("/v1/interactions")).json()["items"] == []


async def test_timeline_pages_by_cursor_and_before_with_filters(
    client: httpx.AsyncClient, contacts: ContactsService
) -> None:
    contact = await contacts.create()
    batch = [
        touchpoint_factory(contact_id=contact["id"], occurred_at=at(n), channel="phone" if n % 2 else "email")
        for n in range(7)
    ]
    assert (await client.post("/v1/interactions/batch", json={"items": batch})).status_code == 200
    pages: list[list[str]] = []
    params: dict[str, Any] = {"contact_id": contact["id"], "limit": 3}
    while True:
        page = (await client.get("/v1/interactions", params=params)).json()
        pages.append([item["occurred_at"] for item in page["items"]])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert pages == [[at(6), at(5), at(4)], [at(3), at(2), at(1)], [at(0)]]
    first = (await client.get("/v1/interactions", params={"contact_id": contact["id"], "limit": 2})).json()
    older = (
        await client.get("/v1/interactions", params={"contact_id": contact["id"], "before": first["next_before"]})
    ).json()
    assert [i["occurred_at"] for i in older["items"]] == [at(n) for n in (4, 3, 2, 1, 0)]
    phone = (
        await client.get(
            "/v1/interactions", params={"contact_id": contact["id"], "channel": "phone", "since": at(2), "until": at(6)}
        )
    ).json()
    assert [i["occurred_at"] for i in phone["items"]] == [at(5), at(3)]
    for bad in ({"cursor": "garbage"}, {"before": "yesterday|x"}, {"limit": 201}, {"channel": "fax"}):
        assert (await client.get("/v1/interactions", params=bad)).status_code in (400, 422), bad


async def test_a_page_shows_each_touchpoint_as_reading_it_alone_does(
    client: httpx.AsyncClient, contacts: ContactsService
) -> None:
    """The page is validated from plain rows in one call, a single read from the ORM object: the same document
    (amounts, scores, attributes, threads, times in UTC); and a touchpoint stored a moment ago is on it (the
    page reads in autocommit on PostgreSQL, each statement seeing the latest commit)."""
    contact = await contacts.create()
    logged = [
        await log(client, contact_id=contact["id"], occurred_at=at(0), type="purchase", amount="19.90",
                  currency="EUR", attributes={"order": "A-17", "lines": [1, 2]}, thread_id="t-page"),
        await log(client, contact_id=contact["id"], occurred_at="2026-01-05T10:00:00+02:00", type="survey_response",
                  csat=4, nps=9, duration_s=65, agent="Grace", team="support", source="shop", external_id="e-1"),
        await log(client, contact_id=contact["id"], occurred_at=at(2), subject=None, body=None),
    ]  # fmt: skip
    page = (await client.get("/v1/interactions", params={"contact_id": contact["id"]})).json()
    alone = [(await client.get(f"/v1/interactions/{item['id']}")).json() for item in page["items"]]
    assert page["items"] == alone
    assert sorted(i["id"] for i in page["items"]) == sorted(t["id"] for t in logged)
    assert {i["occurred_at"] for i in page["items"]} == {at(0), at(2), "2026-01-05T08:00:00Z"}
    assert page["next_cursor"] is None and page["next_before"] is None


async def test_patch_updates_outcome_attributes_and_resolves_the_thread(
    client: httpx.AsyncClient, contacts: ContactsService, js: Any
) -> None:
    contact = await contacts.create()
    opened = await log(
        client,
        contact_id=contact["id"],
        type="complaint",
        thread_id="case-7",
        channel="phone",
        occurred_at=at(0),
        attributes={"a": 1, "b": 2},
    )
    await log(
        client, contact_id=contact["id"], type="support", thread_id="case-7", direction="outbound", occurred_at=at(30)
    )
    response = await client.patch(
        f"/v1/interactions/{opened['id']}",
        json={"outcome": "refund sent", "attributes": {"a": None, "c": 3}, "thread_status": "resolved"},
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["outcome"] == "refund sent" and changed["attributes"] == {"b": 2, "c": 3} and changed["version"] == 2
    thread = (await client.get("/v1/threads/case-7")).json()
    assert thread["status"] == "resolved" and thread["first_response_s"] == 1800 and len(thread["items"]) == 2
    assert thread["complaint"] is True and thread["channel"] == "phone"
    tap = await EventTap(
        js, "CRM_INTERACTIONS", f"crm.interactions.*.{contact['id']}", durable=f"t{uuid.uuid4().hex}"
    ).start()
    got = await tap.take(4, timeout=SLOW)
    assert [e.type for e in got] == [
        "crm.interaction.logged.v1",
        "crm.interaction.logged.v1",
        "crm.interaction.updated.v1",
        "crm.thread.resolved.v1",
    ]
    assert got[2].data["changed"] == ["outcome", "attributes"]
    assert got[3].data["thread_id"] == "case-7" and got[3].data["complaint"] is True
    lonely = await log(client, contact_id=contact["id"])
    assert (
        await client.patch(f"/v1/interactions/{lonely['id']}", json={"thread_status": "resolved"})
    ).status_code == 422
    assert (await client.patch(f"/v1/interactions/{lonely['id']}", json={})).status_code == 422
    assert (await client.patch(f"/v1/interactions/{uuid.uuid4()}", json={"outcome": "x"})).status_code == 404
    assert (await client.get("/v1/threads/nope")).status_code == 404


async def test_stats_report_counts_scores_response_times_retention_and_pareto(
    client: httpx.AsyncClient, contacts: ContactsService, clock: MovableClock
) -> None:
    people = [await contacts.create() for _ in range(5)]
    items = []
    for n, person in enumerate(people):  # purchases: the first spends most and comes back within 90 days
        items.append(
            touchpoint_factory(
                contact_id=person["id"],
                type="purchase",
                amount=1000 if n == 0 else 50,
                currency="EUR",
                occurred_at=at(-60 * 24 * 50),
                channel="self_service",
            )
        )
    items.append(
        touchpoint_factory(
            contact_id=people[0]["id"],
            type="purchase",
            amount=200,
            currency="EUR",
            occurred_at=at(-60 * 24 * 10),
            channel="self_service",
        )
    )
    items += [
        touchpoint_factory(
            contact_id=people[1]["id"],
            csat=csat,
            nps=nps,
            occurred_at=at(-n),
            channel="phone",
            type="survey_response",
            team="support",
        )
        for n, (csat, nps) in enumerate([(5, 10), (4, 9), (2, 3), (5, 8)])
    ]
    items += [
        touchpoint_factory(contact_id=people[2]["id"], type="complaint", thread_id="c-1", occurred_at=at(-120)),
        touchpoint_factory(
            contact_id=people[2]["id"],
            type="support",
            thread_id="c-1",
            direction="outbound",
            occurred_at=at(-100),
            team="support",
        ),
        touchpoint_factory(contact_id=people[3]["id"], type="inquiry", thread_id="q-1", occurred_at=at(-30)),
        touchpoint_factory(
            contact_id=people[3]["id"],
            type="support",
            thread_id="q-1",
            direction="outbound",
            occurred_at=at(-28),
            team="sales",
            agent="ben.sales",
        ),
    ]
    results = (await client.post("/v1/interactions/batch", json={"items": items})).json()["results"]
    assert all(r["status"] == 201 for r in results), results
    complaint_id = results[-4]["id"]
    assert (
        await client.patch(f"/v1/interactions/{complaint_id}", json={"thread_status": "resolved"})
    ).status_code == 200
    clock.advance(minutes=1)  # the window ends now (exclusive): the resolution is inside it
    stats = (await client.get("/v1/stats", params={"since": at(-60 * 24 * 60)})).json()
    assert stats["total"] == len(items)
    assert stats["by_channel"] == {"self_service": 6, "phone": 4, "email": 4}
    assert stats["by_type"]["purchase"] == 6 and stats["by_direction"] == {"inbound": 12, "outbound": 2}
    assert stats["csat"] == {"responses": 4, "average": 4.0, "distribution": {"1": 0, "2": 1, "3": 0, "4": 1, "5": 2}}
    assert stats["nps"] == {"responses": 4, "promoters": 2, "passives": 1, "detractors": 1, "score": 25.0}
    assert stats["first_response"] == {"email": {"n": 2, "p50_s": 120.0, "p90_s": 1200.0}}
    assert stats["complaints"] == {"opened": 1, "resolved": 1}
    # Resolved at 09:00, the thread opened at 06:00.
    assert stats["time_to_resolution"] == {"n": 1, "p50_s": 10800.0, "p90_s": 10800.0}
    assert stats["retention"] == {"purchasers": 5, "repeat_within_90_days": 1, "share": 0.2}
    assert stats["pareto"]["contacts"] == 5 and stats["pareto"]["top_contacts"] == 1
    assert stats["pareto"]["top_share"] == round(1200 / 1400, 4)
    by_team = (await client.get("/v1/stats", params={"since": at(-60 * 24 * 60), "team": "sales"})).json()
    assert by_team["total"] == 1 and by_team["first_response"] == {"email": {"n": 1, "p50_s": 120.0, "p90_s": 120.0}}
    by_agent = (await client.get("/v1/stats", params={"since": at(-60 * 24 * 60), "agent": "ben.sales"})).json()
    assert by_agent["agent"] == "ben.sales" and by_agent["total"] == 1 and by_agent["by_type"] == {"support": 1}
    assert by_agent["first_response"] == {"email": {"n": 1, "p50_s": 120.0, "p90_s": 120.0}}
    nobody = (await client.get("/v1/stats", params={"since": at(-60 * 24 * 60), "agent": "nobody"})).json()
    assert nobody["total"] == 0 and nobody["first_response"] == {}


async def test_a_batch_s_events_name_the_request_that_sent_it(
    client: httpx.AsyncClient, contacts: ContactsService, js: Any
) -> None:
    contact = await contacts.create()
    items = [touchpoint_factory(contact_id=contact["id"]) for _ in range(3)] + [touchpoint_factory(csat=9)]
    response = await client.post("/v1/interactions/batch", json={"items": items}, headers={"X-Request-ID": "batch-1"})
    assert [r["status"] for r in response.json()["results"]] == [201, 201, 201, 422]
    tap = await EventTap(
        js, "CRM_INTERACTIONS", f"crm.interactions.logged.{contact['id']}", durable=f"t{uuid.uuid4().hex}"
    ).start()
    logged = await tap.take(3, timeout=SLOW)
    assert {e.data["id"] for e in logged} == {r["id"] for r in response.json()["results"][:3]}
    assert {e.requestid for e in logged} == {"batch-1"}
    await tap.assert_no_more(wait=0.5)


async def test_concurrent_single_posts_each_get_their_own_outcome(
    client: httpx.AsyncClient, contacts: ContactsService, js: Any
) -> None:
    """Concurrent requests are written together (group commit); each still gets its own answer."""
    contact = await contacts.create()
    erased = await contacts.create()
    await client.post("/v1/interactions", json=touchpoint_factory(contact_id=erased["id"]))  # known live
    assert (await contacts.http.delete(f"/v1/contacts/{erased['id']}")).status_code == 204
    await eventually(lambda: _refused(client, erased["id"]), timeout=SLOW)
    bodies = [touchpoint_factory(contact_id=contact["id"], source="web", external_id=f"g-{n % 30}") for n in range(40)]
    bodies += [touchpoint_factory(contact_id=erased["id"]) for _ in range(3)]
    responses = await asyncio.gather(
        *(client.post("/v1/interactions", json=b, headers={"X-Request-ID": f"r-{n}"}) for n, b in enumerate(bodies))
    )
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 30 and statuses.count(200) == 10 and statuses[40:] == [422, 422, 422]
    by_key: dict[str, set[str]] = {}
    for response in responses[:40]:
        by_key.setdefault(response.json()["external_id"], set()).add(response.json()["id"])
    assert len(by_key) == 30 and all(len(ids) == 1 for ids in by_key.values())
    tap = await EventTap(
        js, "CRM_INTERACTIONS", f"crm.interactions.logged.{contact['id']}", durable=f"t{uuid.uuid4().hex}"
    ).start()
    logged = await tap.take(30, timeout=SLOW)
    assert len({e.data["id"] for e in logged}) == 30
    # Written together, each event still names the request that sent its touchpoint.
    sent_by = {r.json()["id"]: r.request.headers["x-request-id"] for r in responses if r.status_code == 201}
    assert {e.data["id"]: e.requestid for e in logged} == sent_by
    await tap.assert_no_more(wait=0.5)


async def _refused(client: httpx.AsyncClient, contact_id: str) -> bool:
    response = await client.post("/v1/interactions", json=touchpoint_factory(contact_id=contact_id))
    return response.status_code == 422


async def test_edges_of_time_and_free_text_thread_ids_are_answers_not_crashes(
    client: httpx.AsyncClient, contacts: ContactsService
) -> None:
    contact = await contacts.create()
    for edge in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"):
        response = await client.post(
            "/v1/interactions", json=touchpoint_factory(contact_id=contact["id"], occurred_at=edge)
        )
        assert response.status_code == 422 and response.headers["content-type"] == PROBLEM, response.text
    for params in (
        {"since": "0001-01-01T00:00:00+14:00"},
        {"until": "9999-12-31T23:59:59-12:00"},
        {"before": f"0001-01-01T00:00:00+14:00|{uuid.uuid4()}"},
    ):
        response = await client.get("/v1/interactions", params=params)
        assert response.status_code in (400, 422) and response.headers["content-type"] == PROBLEM, response.text
    stats = await client.get("/v1/stats", params={"until": "0001-01-01T00:00:01Z"})
    assert stats.status_code == 422 and stats.headers["content-type"] == PROBLEM
    thread = "case 7/b'); DROP TABLE threads;-- é"
    made = await log(client, contact_id=contact["id"], thread_id=thread)
    response = await client.get(f"/v1/threads/{quote(thread, safe='')}")
    assert response.status_code == 200, response.text
    assert response.json()["thread_id"] == thread and [i["id"] for i in response.json()["items"]] == [made["id"]]


async def test_an_erase_leaves_no_replayable_response_thread_or_external_id(
    client: httpx.AsyncClient, contacts: ContactsService, interactions_db: str
) -> None:
    """Issue 18.1 and 18.4: a replay of an Idempotency-Key after the contact was erased answers 410 (not the
    erased subject and body); thread ids and external ids, which may hold an identity, are gone from the
    touchpoints of the contact and of the duplicate merged into it, and from the stored rows."""
    tag = uuid.uuid4().hex[:8]
    zelda = await contacts.create(name="Zelda Quist", emails=[f"zelda.{tag}@example.org"])
    dupe = await contacts.create(name="Zed Dupe", emails=[f"zed.{tag}@example.org"])
    personal = [f"zelda.{tag}@example.org", f"zed.{tag}@example.org", f"Refund{tag} subject", f"Body{tag} text"]
    headers = {"Idempotency-Key": f"erase-{tag}", "X-Touchpoint-Caller": "key-mail"}
    body = touchpoint_factory(
        contact_id=zelda["id"], subject=f"Refund{tag} subject", body=f"Body{tag} text",
        thread_id=f"mail:zelda.{tag}@example.org", source="mailer", external_id=f"mail:zelda.{tag}@example.org/1",
    )  # fmt: skip
    first = await client.post("/v1/interactions", json=body, headers=headers)
    assert first.status_code == 201, first.text
    resolved = await client.patch(f"/v1/interactions/{first.json()['id']}", json={"thread_status": "resolved"})
    assert resolved.status_code == 200, resolved.text  # a threads row, and a thread_resolved event
    dupe_touch = await log(
        client, contact_id=dupe["id"], thread_id=f"mail:zed.{tag}@example.org", source="mailer",
        external_id=f"mail:zed.{tag}@example.org/1", subject=f"Refund{tag} subject",
    )  # fmt: skip
    merged = await contacts.http.post(f"/v1/contacts/{zelda['id']}/merge", json={"source_id": dupe["id"]})
    assert merged.status_code == 200

    async def moved() -> bool:
        got = await client.get(f"/v1/interactions/{dupe_touch['id']}")
        return bool(got.json()["contact_id"] == zelda["id"])

    await eventually(moved, timeout=SLOW)
    assert (await contacts.http.delete(f"/v1/contacts/{zelda['id']}")).status_code == 204

    async def redacted() -> bool:
        got = [(await client.get(f"/v1/interactions/{i}")).json() for i in (first.json()["id"], dupe_touch["id"])]
        return all(t["redacted_at"] is not None for t in got)

    await eventually(redacted, timeout=SLOW)
    replay = await client.post("/v1/interactions", json=body, headers=headers)
    assert replay.status_code == 410, replay.text
    assert replay.headers["content-type"] == PROBLEM
    assert replay.json()["type"].endswith("/idempotent-response-erased")
    assert not [p for p in personal if p.lower() in replay.text.lower()]
    other = await client.post("/v1/interactions", json={**body, "csat": 3}, headers=headers)
    assert other.status_code == 410  # the fingerprint is gone too: the key answers one thing
    for touch_id in (first.json()["id"], dupe_touch["id"]):
        touch = (await client.get(f"/v1/interactions/{touch_id}")).json()
        assert touch["thread_id"].startswith("erased-") and touch["external_id"] is None, touch
    scan = StorageScan()
    scan.add_database(interactions_db)
    await scan.assert_clean(personal)


# --- the copy of the identity directory: known identities are filed without a call, unknown ones go to contacts in
# one resolve-many call per batch; updates, merges and erasures reach the copy, which holds no personal data.

RESOLVING = ("/v1/contacts/resolve", "/v1/contacts/resolve-many")


class Copy:
    """Reads the copy's table as the service wrote it."""

    def __init__(self, settings: InteractionsSettings) -> None:
        self.identities = IdentityCopy(key=settings.identity_key.get_secret_value().encode())
        self.engine = make_engine(settings.database_url)

    async def holder(self, identity: Identity) -> tuple[str | None, Any]:
        """(contact id holding it, the row's time), or (None, None) when nobody does."""
        table = KnownIdentity.__table__  # type: ignore[attr-defined]
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(table.c.contact_id, table.c.changed_at).where(
                        table.c.digest == self.identities.digest(identity), table.c.held.is_(True)
                    )
                )
            ).first()
        return (str(row.contact_id), row.changed_at) if row is not None else (None, None)

    async def rows_of(self, *contact_ids: str) -> int:
        table = KnownIdentity.__table__  # type: ignore[attr-defined]
        async with self.engine.connect() as conn:
            ids = [uuid.UUID(c) for c in contact_ids]
            return int(await conn.scalar(sa.select(sa.func.count()).where(table.c.contact_id.in_(ids))) or 0)

    async def held_by(self, identity: Identity, contact_id: str | None) -> bool:
        return (await self.holder(identity))[0] == contact_id

    async def close(self) -> None:
        await self.engine.dispose()


def resolving(contacts: ContactsService) -> list[str]:
    return [path for path in contacts.gate.calls if path in RESOLVING]


async def log_by_identity(client: httpx.AsyncClient, contact: dict[str, Any], status: int = 201) -> dict[str, Any]:
    response = await client.post("/v1/interactions", json=touchpoint_factory(contact_id=None, contact=contact))
    assert response.status_code == status, response.text
    return dict(response.json())


async def test_known_identities_are_filed_without_asking_contacts_and_kept_hashed(
    client: httpx.AsyncClient, contacts: ContactsService, settings: InteractionsSettings, interactions_db: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    email, phone = f"ada.{tag}@example.com", "+12025550188"
    ada = await contacts.create(emails=[email], phones=[phone], handles={"twitter": f"@Ada{tag}"},
                                external_ids={"shop": f"C-{tag}"})  # fmt: skip
    copy = Copy(settings)
    try:
        # From crm.contact.created.v1: every identity of the contact.
        await eventually(lambda: copy.held_by(("external:shop", f"C-{tag}"), ada["id"]), timeout=SLOW)
        assert await copy.rows_of(ada["id"]) == 4
        before = len(resolving(contacts))
        for named in (
            {"email": email.upper()},  # normalised as the contacts service does
            {"phone": "+1 (202) 555-0188"},
            {"handle": {"channel": "twitter", "value": f"@ADA{tag}"}},
            {"external_id": {"source": "shop", "value": f"C-{tag}"}},
            {"email": email, "name": "Not used: the contact exists"},
        ):
            touchpoint = await log_by_identity(client, named)
            assert touchpoint["contact_id"] == ada["id"], named
        assert resolving(contacts)[before:] == []  # not one call to the contacts service
        # A phone written without its country code: only contacts knows the region, so it is asked.
        assert (await log_by_identity(client, {"phone": "202-555-0188"}))["contact_id"] == ada["id"]
        assert resolving(contacts)[before:] == ["/v1/contacts/resolve-many"]
    finally:
        await copy.close()
    # The copy holds digests: neither the address, nor the number, nor the ids are anywhere in the database.
    scan = StorageScan()
    scan.add_database(interactions_db)
    await scan.assert_clean([email, phone, f"@ada{tag}", f"C-{tag}"])


async def test_a_batch_of_unknown_identities_is_one_resolve_many_call_and_its_answers_are_kept(
    client: httpx.AsyncClient, contacts: ContactsService, settings: InteractionsSettings
) -> None:
    tag = uuid.uuid4().hex[:8]
    emails = [f"new{n}.{tag}@example.com" for n in range(50)]
    # 500 touchpoints of 50 new customers: each five times as given and five times written otherwise (the same
    # identity, told apart only once normalised: the call holds 100 items).
    sent = emails * 5 + [e.upper() for e in emails] * 5
    items = [touchpoint_factory(contact_id=None, contact={"email": e}) for e in sent]
    before = len(resolving(contacts))
    response = await client.post("/v1/interactions/batch", json={"items": items})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201] * 500
    assert resolving(contacts)[before:] == ["/v1/contacts/resolve-many"]
    by_email: dict[str, str] = {}
    for email, result in zip(sent, results, strict=True):
        touchpoint = (await client.get(f"/v1/interactions/{result['id']}")).json()
        assert by_email.setdefault(email.lower(), touchpoint["contact_id"]) == touchpoint["contact_id"]
    assert len(set(by_email.values())) == 50
    # Learned from the answer: the same customers again make no call, even before their created events are in.
    again = await client.post("/v1/interactions/batch", json={"items": items[:100]})
    assert [r["status"] for r in again.json()["results"]] == [201] * 100
    assert resolving(contacts)[before:] == ["/v1/contacts/resolve-many"]
    copy = Copy(settings)
    try:
        # The created event, arriving after, agrees with the answer and takes over the row (its time, not the
        # learned one).
        async def from_event() -> bool:
            holder, at = await copy.holder(("email", emails[0]))
            return holder == by_email[emails[0]] and at != LEARNED_AT

        await eventually(from_event, timeout=SLOW)
    finally:
        await copy.close()


async def test_updates_merges_and_erasures_reach_the_copy(
    client: httpx.AsyncClient, contacts: ContactsService, settings: InteractionsSettings
) -> None:
    tag = uuid.uuid4().hex[:8]
    a1, a2, b1 = (f"{name}.{tag}@example.com" for name in ("a1", "a2", "b1"))
    ada = await contacts.create(emails=[a1])
    bob = await contacts.create(emails=[b1])
    copy = Copy(settings)
    try:
        await eventually(lambda: copy.held_by(("email", b1), bob["id"]), timeout=SLOW)
        await eventually(lambda: copy.held_by(("email", a1), ada["id"]), timeout=SLOW)
        # An update that replaces the address: the old one is no longer Ada's, the new one is.
        patched = await contacts.http.patch(f"/v1/contacts/{ada['id']}", json={"emails": [a2]})
        assert patched.status_code == 200, patched.text
        await eventually(lambda: copy.held_by(("email", a2), ada["id"]), timeout=SLOW)
        assert await copy.held_by(("email", a1), None)
        someone_else = await log_by_identity(client, {"email": a1})
        assert someone_else["contact_id"] != ada["id"]  # contacts made a new contact for the freed address
        # A merge: Bob's address is Ada's now, and is filed under her without a call.
        merged = await contacts.http.post(f"/v1/contacts/{ada['id']}/merge", json={"source_id": bob["id"]})
        assert merged.status_code == 200, merged.text
        await eventually(lambda: copy.held_by(("email", b1), ada["id"]), timeout=SLOW)
        before = len(resolving(contacts))
        assert (await log_by_identity(client, {"email": b1}))["contact_id"] == ada["id"]
        assert resolving(contacts)[before:] == []
        # An erasure: every row of Ada and of Bob (merged into her) goes; her addresses are anybody's again.
        assert (await contacts.http.delete(f"/v1/contacts/{ada['id']}")).status_code == 204
        await eventually(lambda: _no_rows(copy, ada["id"], bob["id"]), timeout=SLOW)
        fresh = await log_by_identity(client, {"email": a2})
        assert fresh["contact_id"] not in (ada["id"], bob["id"])
    finally:
        await copy.close()


async def _no_rows(copy: Copy, *contact_ids: str) -> bool:
    return await copy.rows_of(*contact_ids) == 0
