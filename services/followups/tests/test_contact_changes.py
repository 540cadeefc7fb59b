"""The contact's side: opted-out channels, consent and time-zone changes, merges, erasure, idempotency and the
first-time lookup of a contact in the contacts service (run for real, in-process)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from servicekit.clock import MovableClock
from servicekit.testing.apps import running_app
from servicekit.testing.storage import StorageScan
from services.contacts.app import create_app as create_contacts_app
from services.contacts.settings import ContactsSettings
from services.contacts.tests.conftest import ALEMBIC_INI as CONTACTS_ALEMBIC_INI
from services.followups.app import create_app
from services.followups.models import Followup, outbox_table
from services.followups.settings import FollowupsSettings
from services.followups.tests.conftest import Harness, contact_event, logged_event

MONDAY_10 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


async def test_an_opted_out_channel_falls_back_and_none_left_skips(harness: Harness) -> None:
    harness.clock.set(MONDAY_10)
    falls_back = await harness.contact(preferred_channel="email", consent={"email": False, "phone": True})
    nothing_left = await harness.contact(
        preferred_channel="sms", consent={"sms": False, "email": False, "phone": False}
    )
    for contact in (falls_back, nothing_left):
        await harness.touch(contact["id"], type="purchase", direction="inbound", channel="in_person")
    fallback = await harness.wait_for(3, contact_id=falls_back["id"], policy="purchase-2-2-2")
    assert {f["channel"] for f in fallback} == {"phone"} and {f["status"] for f in fallback} == {"scheduled"}
    skipped = await harness.wait_for(3, contact_id=nothing_left["id"], policy="purchase-2-2-2")
    assert {(f["status"], f["skip_reason"], f["channel"]) for f in skipped} == {("skipped", "opted_out", None)}
    assert {datetime.fromisoformat(f["timeline_at"]) for f in skipped} == {MONDAY_10}
    announced = await (await harness.tap(nothing_left["id"])).take(3)
    assert {e.type for e in announced} == {"crm.followup.skipped.v1"}

    # Skipped ones never fall due.
    harness.clock.advance(days=3)
    assert await harness.scheduler.tick() == 1  # only the fall-back contact's thank-you


async def test_consent_withdrawn_later_moves_or_skips_open_followups(harness: Harness) -> None:
    harness.clock.set(MONDAY_10)
    contact = await harness.contact(preferred_channel="email", timezone="UTC")
    await harness.touch(contact["id"], type="purchase", direction="inbound", channel="in_person")
    await harness.wait_for(3, contact_id=contact["id"], policy="purchase-2-2-2", channel="email")
    tap = await harness.tap(contact["id"])

    async def update(version: int, changed: dict[str, Any], previous: dict[str, Any]) -> None:
        data = {"contact_id": contact["id"], "version": version, "changed": changed, "previous": previous}
        event = contact_event("updated", contact["id"], data, harness.clock.now())
        await harness.publish(event, f"crm.contacts.updated.{contact['id']}")
        await harness.applied(event.id)

    await update(2, {"consent": {"email": False}}, {"consent": {}})
    moved = await harness.followups(contact_id=contact["id"], policy="purchase-2-2-2")
    assert {f["channel"] for f in moved} == {"phone"}  # the policy's next fallback
    # 10:00 UTC is 19:00 in Tokyo, outside the policy's quiet hours (20:00-09:00): the due times stay.
    await update(3, {"timezone": "Asia/Tokyo"}, {"timezone": "UTC"})
    tokyo = {f["step"]: f for f in await harness.followups(contact_id=contact["id"], policy="purchase-2-2-2")}
    assert datetime.fromisoformat(tokyo["thank-you"]["due_at"]) == datetime(2026, 1, 7, 10, 0, tzinfo=UTC)
    await update(4, {"consent": {"email": False, "phone": False, "sms": False}}, {"consent": {"email": False}})
    gone = await harness.followups(contact_id=contact["id"], policy="purchase-2-2-2")
    assert {(f["status"], f["skip_reason"]) for f in gone} == {("skipped", "opted_out")}
    # A stale update (an older version) changes nothing.
    await update(3, {"consent": {"email": True}}, {"consent": {"email": False}})
    got = await tap.take(9)
    assert [e.type for e in got].count("crm.followup.skipped.v1") == 3


async def test_an_evening_followup_moves_out_of_quiet_hours_when_the_time_zone_changes(harness: Harness) -> None:
    harness.clock.set(datetime(2026, 1, 5, 18, 0, tzinfo=UTC))  # 18:00 UTC
    contact = await harness.contact(timezone="UTC")
    await harness.touch(contact["id"], type="purchase", direction="inbound", channel="in_person")
    await harness.wait_for(3, contact_id=contact["id"], policy="purchase-2-2-2")
    data = {"contact_id": contact["id"], "version": 2, "changed": {"timezone": "Europe/Athens"}, "previous": {}}
    event = contact_event("updated", contact["id"], data, harness.clock.now())
    await harness.publish(event, f"crm.contacts.updated.{contact['id']}")
    await harness.applied(event.id)
    steps = {f["step"]: f for f in await harness.followups(contact_id=contact["id"], policy="purchase-2-2-2")}
    # 18:00 UTC is 20:00 in Athens, quiet until 09:00 local = 07:00 UTC the next day.
    assert datetime.fromisoformat(steps["thank-you"]["due_at"]) == datetime(2026, 1, 8, 7, 0, tzinfo=UTC)


async def test_a_merge_rekeys_followups_to_the_surviving_contact(harness: Harness) -> None:
    harness.clock.set(MONDAY_10)
    source = await harness.contact(preferred_channel="sms")
    target = await harness.contact(preferred_channel="sms")
    await harness.touch(source["id"], type="purchase", direction="inbound", channel="in_person")
    moved = await harness.wait_for(3, contact_id=source["id"])
    merged_contact = {**target, "consent": {"sms": False}, "version": 2}
    data = {"source_id": source["id"], "target_id": target["id"], "contact": merged_contact}
    event = contact_event("merged", target["id"], data, harness.clock.now())
    await harness.publish(event, f"crm.contacts.merged.{target['id']}")
    await harness.applied(event.id)
    assert await harness.followups(contact_id=source["id"]) == []
    after = await harness.followups(contact_id=target["id"])
    assert {f["id"] for f in after} == {f["id"] for f in moved}
    # The opt-out carried by the merged contact applies to what moved.
    assert {f["channel"] for f in after} == {"email"}
    # A touchpoint still logged for the merged-away id lands on the survivor.
    late = await harness.touch(source["id"], type="complaint", direction="inbound", channel="phone")
    await harness.applied(late.id)
    assert len(await harness.followups(contact_id=target["id"], policy="complaint-callback")) == 1


async def test_an_erase_leaves_no_reason_outcome_or_thread_of_the_person_or_their_merged_duplicate(
    harness: Harness, followups_settings: FollowupsSettings
) -> None:
    """Issue 18.2 and 18.4: manual follow-ups' reasons and outcomes, thread ids holding an identity and the
    events in the outbox (the cancelled ones at erase too) keep nothing about the person, for the follow-ups of
    the duplicate merged into the erased contact too; the database files (WAL included) hold none of it."""
    harness.clock.set(MONDAY_10)
    tag = uuid.uuid4().hex[:8]
    zelda, dupe = await harness.contact(), await harness.contact()
    personal = [f"Call back Zelda{tag}", f"Call back Zed{tag}", f"Spoke to Zed{tag}", f"zelda.{tag}@example.org",
                f"zed.{tag}@example.org"]  # fmt: skip
    made = {}
    for who, name, contact in (("zelda", "Zelda", zelda), ("zed", "Zed", dupe)):
        body = {"contact_id": contact["id"], "reason": f"Call back {name}{tag}", "due_at": "2026-01-06T10:00:00Z",
                "thread_id": f"mail:{who}.{tag}@example.org"}  # fmt: skip
        response = await harness.client.post("/v1/followups", json=body)
        assert response.status_code == 201, response.text
        made[who] = response.json()
    done = await harness.client.post(
        f"/v1/followups/{made['zed']['id']}/complete", json={"outcome": f"Spoke to Zed{tag}"}
    )
    assert done.status_code == 200, done.text
    data = {"source_id": dupe["id"], "target_id": zelda["id"], "contact": {**zelda, "version": 2}}
    merged = contact_event("merged", zelda["id"], data, MONDAY_10)
    await harness.publish(merged, f"crm.contacts.merged.{zelda['id']}")
    await harness.applied(merged.id)
    data = {"contact_id": zelda["id"], "erased_at": MONDAY_10.isoformat(), "merged_ids": [dupe["id"]]}
    erased = contact_event("erased", zelda["id"], data, MONDAY_10)
    await harness.publish(erased, f"crm.contacts.erased.{zelda['id']}")
    await harness.applied(erased.id)
    after = {f["id"]: f for f in await harness.followups(contact_id=zelda["id"])}
    assert {after[made[who]["id"]]["reason"] for who in made} == {"(erased)"}
    assert all(f["thread_id"] is None and f["outcome"] is None for f in after.values())
    assert after[made["zelda"]["id"]]["status"] == "cancelled"
    scan = StorageScan()
    scan.add_database(followups_settings.database_url)
    await scan.assert_clean(personal)


async def test_an_erase_cancels_every_open_followup(harness: Harness) -> None:
    harness.clock.set(MONDAY_10)
    contact = await harness.contact()
    await harness.touch(contact["id"], type="purchase", direction="inbound", channel="email")
    found = await harness.wait_for(4, contact_id=contact["id"])
    done = await harness.client.post(f"/v1/followups/{found[0]['id']}/complete", json={"outcome": "Called: happy"})
    assert done.status_code == 200
    event = contact_event(
        "erased", contact["id"], {"contact_id": contact["id"], "erased_at": MONDAY_10.isoformat()}, MONDAY_10
    )
    await harness.publish(event, f"crm.contacts.erased.{contact['id']}")
    await harness.applied(event.id)
    after = {f["id"]: f for f in await harness.followups(contact_id=contact["id"])}
    assert after[found[0]["id"]]["status"] == "completed" and after[found[0]["id"]]["outcome"] is None
    cancelled = [f for f in after.values() if f["status"] == "cancelled"]
    assert len(cancelled) == 3 and {f["cancel_reason"] for f in cancelled} == {"erased"}
    async with harness.app.state.runtime.sessionmaker() as session:
        payloads = (await session.scalars(select(outbox_table.c.payload))).all()
    assert payloads and not any("Called: happy" in payload for payload in payloads)
    # Nothing new is promised to an erased person.
    later = await harness.touch(contact["id"], type="complaint", direction="inbound", channel="phone")
    await harness.applied(later.id)
    assert len(await harness.followups(contact_id=contact["id"])) == 4
    harness.clock.advance(days=90)
    assert await harness.scheduler.tick() == 0


async def test_the_same_event_delivered_three_times_makes_one_followup(harness: Harness) -> None:
    harness.clock.set(MONDAY_10)
    contact = await harness.contact()
    event = logged_event(contact["id"], at=MONDAY_10, type="complaint", direction="inbound", channel="phone")
    # Three deliveries with different Nats-Msg-Ids, so JetStream's duplicate window does not hide them.
    for n in range(3):
        await harness.publish(event, f"crm.interactions.logged.{contact['id']}", msg_id=f"{event.id}-{n}")
    await harness.applied(event.id)
    marker = await harness.touch(contact["id"], type="note", direction="internal", channel="phone")
    await harness.applied(marker.id)  # consumed in order: the three copies were handled before it
    found = await harness.followups(contact_id=contact["id"])
    assert sorted(f["policy"] for f in found) == ["complaint-callback", "response-sla"]
    async with harness.app.state.runtime.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Followup)) == 2


@pytest.fixture
def contacts_db(database_factory: Callable[[Path], str]) -> str:
    return database_factory(CONTACTS_ALEMBIC_INI)


async def test_a_contact_never_heard_of_is_asked_from_the_contacts_service_and_retried_while_down(
    contacts_db: str, followups_settings: FollowupsSettings, clock: MovableClock, js: Any, nats_server: Any
) -> None:
    clock.set(MONDAY_10)
    # The contacts service publishes on another NATS: the follow-ups service never reads its events, so it must ask.
    contacts_settings = ContactsSettings(database_url=contacts_db, nats_url=nats_server.url, log_json=False)
    contacts_app = create_contacts_app(contacts_settings, clock=clock)
    async with running_app(contacts_app) as contacts:
        premium = (await contacts.post("/v1/contacts", json={"name": "Ada", "tier": "premium", "owner": "grace",
                                                              "preferred_channel": "phone"})).json()  # fmt: skip
        reachable = _Switch(httpx.ASGITransport(app=contacts_app))
        app = create_app(followups_settings.model_copy(update={"contacts_url": "http://contacts"}), clock=clock,
                         contacts_transport=reachable)  # fmt: skip
        async with running_app(app) as client:
            harness = Harness(app, client, js, clock)
            reachable.down = True
            event = await harness.touch(premium["id"], type="purchase", direction="inbound", channel="in_person")
            await _wait_attempts(reachable, 2)
            assert await harness.followups(contact_id=premium["id"]) == []
            reachable.down = False
            found = await harness.wait_for(3, contact_id=premium["id"])
            assert {(f["assignee"], f["channel"]) for f in found} == {("grace", "phone")}
            assert {f["trigger_event_id"] for f in found} == {event.id}
            # Unknown to the contacts service too: dead-lettered, never retried forever.
            ghost = await harness.touch(str(uuid.uuid4()), type="purchase", direction="inbound")
            await _dead_lettered(js, ghost.id)


class _Switch(httpx.AsyncBaseTransport):
    """The real contacts app behind a switch that makes it unreachable (as a stopped process would be)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.down = False
        self.attempts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


async def _wait_attempts(switch: _Switch, count: int) -> None:
    from servicekit.testing.plugin import eventually

    await eventually(lambda: switch.attempts >= count, timeout=20)


async def _dead_lettered(js: Any, event_id: str) -> None:
    from servicekit.testing.apps import EventTap

    tap = await EventTap(js, "CRM_DEADLETTER", "crm.deadletter.>", durable=f"dl{uuid.uuid4().hex}").start()
    letter = json.loads(await _first_message(tap))
    assert letter["payload"]["id"] == event_id and "knows no contact" in letter["reason"]


async def _first_message(tap: Any) -> bytes:
    from servicekit.testing.plugin import eventually

    got: list[bytes] = []

    async def fetched() -> bool:
        try:
            got.extend(m.data for m in await tap.sub.fetch(1, timeout=0.5))
        except Exception:
            return False
        return bool(got)

    await eventually(fetched, timeout=20)
    return got[0]
