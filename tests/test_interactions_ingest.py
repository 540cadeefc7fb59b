"""Touchpoints straight onto NATS (crm.ingest.interactions), and the contacts service's merge and erase
events reaching the interactions service; real nats-server, real contacts service, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy
from sqlalchemy import func, select

from servicekit.clock import MovableClock
from servicekit.db import make_engine
from servicekit.devstack import SERVICES, ServiceProcess
from servicekit.testing.apps import EventTap, running_app
from servicekit.testing.nats import NatsServer
from servicekit.testing.plugin import eventually
from servicekit.testing.ports import free_port
from services.interactions.app import create_app
from services.interactions.models import Touchpoint
from services.interactions.settings import InteractionsSettings
from services.interactions.tests.conftest import touchpoint_factory
from tests import test_interactions_api as api
from tests.test_interactions_api import ContactsService

# The fixtures of the HTTP tests: the real contacts service on a real port, the interactions app, JetStream.
client, contacts, contacts_db, interactions_db, js, settings = (
    api.client,
    api.contacts,
    api.contacts_db,
    api.interactions_db,
    api.js,
    api.settings,
)

INGEST = "crm.ingest.interactions"
SLOW = api.SLOW


async def dead_letters(js: Any, marker: str, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    """The dead letters whose original payload carries ``marker`` (the stream is shared by the session)."""
    config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, filter_subject="crm.ingest.deadletter")
    sub = await js.pull_subscribe("crm.ingest.deadletter", stream="CRM_DEADLETTER", config=config)
    found: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(found) < count and asyncio.get_running_loop().time() < deadline:
        try:
            msgs = await sub.fetch(50, timeout=0.5)
        except Exception:
            continue
        for msg in msgs:
            await msg.ack()
            if marker in msg.data.decode(errors="replace"):
                found.append(json.loads(msg.data))
    await sub.unsubscribe()
    return found


async def test_nats_ingest_stores_once_and_dead_letters_what_can_never_be_valid(
    client: httpx.AsyncClient, contacts: ContactsService, js: Any
) -> None:
    contact = await contacts.create()
    marker = uuid.uuid4().hex
    good = touchpoint_factory(contact_id=contact["id"], source="pbx", external_id=f"call-{marker}", channel="phone")
    by_identity = touchpoint_factory(contact_id=None, contact={"phone": "+1 202 555 0199"}, subject=marker)
    await js.publish(INGEST, json.dumps(good).encode(), headers={"Nats-Msg-Id": f"a-{marker}"})
    # The same touchpoint sent again under another message id: stored once.
    await js.publish(INGEST, json.dumps(good).encode(), headers={"Nats-Msg-Id": f"b-{marker}"})
    await js.publish(INGEST, json.dumps(by_identity).encode())
    await js.publish(INGEST, f"{{not json {marker}".encode())
    await js.publish(INGEST, json.dumps(touchpoint_factory(channel="fax", subject=marker)).encode())
    await js.publish(INGEST, json.dumps(touchpoint_factory(subject=marker)).encode())  # unknown contact

    parked = await dead_letters(js, marker, 3)
    assert len(parked) == 3
    reasons = sorted(letter["reason"] for letter in parked)
    assert any("invalid touchpoint" in r and "channel" in r for r in reasons)
    assert any("invalid touchpoint" in r and "json" in r.lower() for r in reasons)
    assert any("No such contact" in r for r in reasons)
    assert all(letter["origin"] == INGEST and letter["consumer"] == "interactions" for letter in parked)
    assert any(letter["payload"] == f"{{not json {marker}" for letter in parked)  # the original, as it came

    async def stored() -> list[dict[str, Any]]:
        page = (await client.get("/v1/interactions", params={"limit": 200})).json()
        return [i for i in page["items"] if i["external_id"] == good["external_id"] or i["subject"] == marker]

    items = await eventually(lambda: _at_least(stored, 2), timeout=SLOW)
    assert isinstance(items, list) and len(items) == 2
    by_phone = next(i for i in items if i["subject"] == marker)
    resolved = (await contacts.http.get(f"/v1/contacts/{by_phone['contact_id']}")).json()
    assert resolved["phones"] == ["+12025550199"]
    # Every message was acknowledged or parked: the work queue is empty.
    await eventually(lambda: _stream_empty(js), timeout=SLOW)
    assert "workqueue" in str((await js.stream_info("CRM_INGEST")).config.retention)


async def test_a_batch_message_stores_its_valid_items_and_parks_each_invalid_one(
    client: httpx.AsyncClient, contacts: ContactsService, js: Any
) -> None:
    contact = await contacts.create()
    marker = uuid.uuid4().hex
    items = [touchpoint_factory(contact_id=contact["id"], subject=f"{marker} {n}") for n in range(5)]
    items[1] = touchpoint_factory(contact_id=contact["id"], channel="fax", subject=f"{marker} fax")
    items[3] = touchpoint_factory(contact_id=str(uuid.uuid4()), subject=f"{marker} nobody")  # unknown contact
    await js.publish(INGEST, json.dumps({"items": items}).encode(), headers={"Nats-Msg-Id": f"batch-{marker}"})
    one = touchpoint_factory(contact_id=contact["id"], subject=marker)
    await js.publish(INGEST, json.dumps({"items": [one] * 1001}).encode())  # over the limit: parked whole
    await js.publish(INGEST, json.dumps({"items": []}).encode(), headers={"Nats-Msg-Id": f"empty-{marker}"})

    parked = await dead_letters(js, marker, 4)
    reasons = sorted(letter["reason"] for letter in parked)
    assert reasons[0].startswith("a batch message holds at most 1000 touchpoints; this one has 1001"), reasons
    assert reasons[1].startswith('a batch message holds {"items": [...]} with at least one'), reasons
    assert reasons[2].startswith("item 1 of a batch message: invalid touchpoint") and "channel" in reasons[2]
    assert reasons[3].startswith("item 3 of a batch message: No such contact"), reasons
    fax = next(letter for letter in parked if letter["reason"].startswith("item 1"))
    assert fax["payload"] == items[1]  # the item itself, as it came
    assert fax["headers"]["Nats-Msg-Id"] == f"batch-{marker}"

    async def stored() -> list[dict[str, Any]]:
        page = (await client.get("/v1/interactions", params={"contact_id": contact["id"], "limit": 200})).json()
        return [i for i in page["items"] if (i["subject"] or "").startswith(marker)]

    found = await eventually(lambda: _at_least(stored, 3), timeout=SLOW)
    assert isinstance(found, list)
    assert sorted(i["subject"] for i in found) == [f"{marker} 0", f"{marker} 2", f"{marker} 4"]
    await eventually(lambda: _stream_empty(js), timeout=SLOW)


async def _at_least(fetch: Callable[[], Any], count: int) -> Any:
    items = await fetch()
    return items if len(items) >= count else None


async def _stream_empty(js: Any) -> bool:
    return int((await js.stream_info("CRM_INGEST")).state.messages) == 0


async def test_an_ingested_touchpoint_s_event_carries_the_trace_context_of_its_message(
    client: httpx.AsyncClient, contacts: ContactsService, js: Any
) -> None:
    contact = await contacts.create()
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    tap = await EventTap(js, "CRM_INTERACTIONS", f"crm.interactions.logged.{contact['id']}",
                         durable=f"t{uuid.uuid4().hex}").start()  # fmt: skip
    traced = touchpoint_factory(contact_id=contact["id"], subject="traced")
    untraced = touchpoint_factory(contact_id=contact["id"], subject="untraced")
    await js.publish(INGEST, json.dumps(traced).encode(), headers={"traceparent": traceparent, "tracestate": "pbx=1"})
    await js.publish(INGEST, json.dumps(untraced).encode(), headers={"traceparent": "forged"})
    events = {event.data["subject"]: event for event in await tap.take(2, timeout=SLOW)}
    assert events["traced"].traceparent == traceparent and events["traced"].tracestate == "pbx=1"
    assert events["untraced"].traceparent is None


async def test_merge_and_erase_reach_the_touchpoints(
    client: httpx.AsyncClient, contacts: ContactsService, js: Any
) -> None:
    source, target = await contacts.create(), await contacts.create()
    first = (await client.post("/v1/interactions", json=touchpoint_factory(contact_id=source["id"]))).json()
    merged = await contacts.http.post(f"/v1/contacts/{target['id']}/merge", json={"source_id": source["id"]})
    assert merged.status_code == 200, merged.text

    async def rekeyed() -> bool:
        row = (await client.get(f"/v1/interactions/{first['id']}")).json()
        return bool(row["contact_id"] == target["id"])

    await eventually(rekeyed, timeout=SLOW)
    row = (await client.get(f"/v1/interactions/{first['id']}")).json()
    assert row["original_contact_id"] == source["id"]
    # Logged later for the merged-away contact: filed under the survivor.
    late = (await client.post("/v1/interactions", json=touchpoint_factory(contact_id=source["id"]))).json()
    assert late["contact_id"] == target["id"] and late["original_contact_id"] == source["id"]
    timeline = (await client.get("/v1/interactions", params={"contact_id": target["id"]})).json()["items"]
    assert {i["id"] for i in timeline} == {first["id"], late["id"]}

    # Subscribed before the erase: once every consumer has the erasure, the contact's events leave the stream.
    tap = await EventTap(
        js, "CRM_INTERACTIONS", f"crm.interactions.redacted.{target['id']}", durable=f"t{uuid.uuid4().hex}"
    ).start()
    assert (await contacts.http.delete(f"/v1/contacts/{target['id']}")).status_code == 204

    async def redacted() -> bool:
        items = (await client.get("/v1/interactions", params={"contact_id": target["id"]})).json()["items"]
        return all(i["redacted_at"] is not None for i in items)

    await eventually(redacted, timeout=SLOW)
    items = (await client.get("/v1/interactions", params={"contact_id": target["id"]})).json()["items"]
    assert all(i["subject"] is None and i["body"] is None and i["channel"] == "email" for i in items)
    (event,) = await tap.take(1, timeout=SLOW)
    assert event.data["interactions"] == 2
    refused = await client.post("/v1/interactions", json=touchpoint_factory(contact_id=target["id"]))
    assert refused.status_code == 422 and refused.json()["type"].endswith("/contact-erased")


# --- 1,000 touchpoints while the contacts service stops and starts ---------------------------------------------


@pytest.fixture
def contacts_process(
    contacts_db: str, nats_factory: Callable[[], NatsServer], tmp_path: Path
) -> Iterator[ServiceProcess]:
    """The real contacts service as its own uvicorn process (stopped and started by the test)."""
    spec = next(s for s in SERVICES if s.name == "contacts")
    server = nats_factory()
    env = {
        **os.environ,
        "CONTACTS_PORT": str(free_port()),
        "CONTACTS_DATABASE_URL": contacts_db,
        "CONTACTS_NATS_URL": server.url,
        "CONTACTS_LOG_LEVEL": "WARNING",
    }
    process = ServiceProcess(spec, env, tmp_path / "contacts.log")
    process.start()
    yield process
    process.stop()


async def test_a_thousand_touchpoints_while_contacts_is_down_for_part_of_the_run(
    contacts_process: ServiceProcess, interactions_db: str, clock: MovableClock
) -> None:
    nats_url = contacts_process.env["CONTACTS_NATS_URL"]
    settings = InteractionsSettings(
        database_url=interactions_db,
        nats_url=nats_url,
        contacts_url=contacts_process.url,
        log_json=False,
        log_level="WARNING",
        outbox_poll_s=0.05,
        contacts_timeout_s=0.5,
        ingest_retry_max_s=1.0,
    )
    async with httpx.AsyncClient(base_url=contacts_process.url) as http:
        known = []
        for n in range(10):
            response = await http.post(
                "/v1/contacts", json={"name": f"Known {n}", "emails": [f"known.{n}@example.com"]}
            )
            known.append(response.json()["id"])

    def message(n: int) -> bytes:
        # Buyers of the first 300 come back; those sent while contacts is down are new (an identity the service
        # learned needs no call, so only new ones have to wait for contacts).
        buyer = n % 40 if n < 300 or n >= 700 else n
        who: dict[str, Any] = (
            {"contact_id": known[n % 10]}
            if n % 2
            else {"contact_id": None, "contact": {"email": f"buyer.{buyer}@example.com"}}
        )
        return json.dumps(
            touchpoint_factory(
                **who, source="shop", external_id=f"order-{n}", type="purchase", amount=n, currency="EUR"
            )
        ).encode()

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    engine = make_engine(interactions_db)

    async def stored() -> int:
        async with engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(Touchpoint))).scalar_one())

    try:
        async with running_app(create_app(settings, clock=clock)):
            tap = await EventTap(js, "CRM_INTERACTIONS", "crm.interactions.logged.>", durable="downstream").start()
            for n in range(300):
                await js.publish(INGEST, message(n), headers={"Nats-Msg-Id": f"order-{n}"})
            await eventually(lambda: _stored_at_least(stored, 1), timeout=SLOW)

            await asyncio.to_thread(contacts_process.stop)
            # Meanwhile, as batch messages of 20 (the JSON of POST /v1/interactions/batch): each is redelivered
            # whole until its contacts can be resolved, and no touchpoint of it is stored twice.
            for start in range(300, 700, 20):
                batch = {"items": [json.loads(message(n)) for n in range(start, start + 20)]}
                await js.publish(INGEST, json.dumps(batch).encode(), headers={"Nats-Msg-Id": f"orders-{start}"})
            await asyncio.sleep(3)  # real time: the consumer retries against a stopped service
            while_down = await stored()
            assert while_down < 700
            waiting = (await js.stream_info("CRM_INGEST")).state.messages
            # Nothing is lost or parked meanwhile: what is not stored waits in the work queue (20 to a message).
            assert waiting > 0 and while_down + 20 * waiting >= 700
            assert (await js.stream_info("CRM_DEADLETTER")).state.messages == 0

            await asyncio.to_thread(contacts_process.start)
            for n in range(700, 1000):
                await js.publish(INGEST, message(n), headers={"Nats-Msg-Id": f"order-{n}"})
            await eventually(lambda: _stored_at_least(stored, 1000), timeout=2 * SLOW)
            events = await tap.take(1000, timeout=2 * SLOW)
            await tap.assert_no_more(wait=2)
            assert await stored() == 1000
            assert await _stream_empty(js)
        assert len({e.data["id"] for e in events}) == 1000
        assert sorted(e.data["external_id"] for e in events) == sorted(f"order-{n}" for n in range(1000))
        assert all(e.type == "crm.interaction.logged.v1" for e in events)
        dead = (await js.stream_info("CRM_DEADLETTER")).state.messages
        assert dead == 0
    finally:
        await nc.close()
        await engine.dispose()


async def _stored_at_least(count: Callable[[], Any], wanted: int) -> bool:
    return bool(await count() >= wanted)
