"""Touchpoints applied as one fetched batch in one transaction behave as if applied one by one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from servicekit.clock import MovableClock
from servicekit.db import make_engine
from servicekit.ids import new_id
from servicekit.outbox import Outbox
from servicekit.testing.apps import running_app
from servicekit.testing.plugin import eventually
from services.followups.app import create_app
from services.followups.models import Followup, KnownContact, SeenTouch, inbox_table, outbox_table
from services.followups.settings import FollowupsSettings
from services.followups.tests.conftest import logged_event
from services.followups.touches import TouchBatches

MONDAY_10 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


async def _known_contacts(url: str, count: int) -> list[str]:
    """Contacts the service already knows (as if their created events came long ago)."""
    ids = [new_id() for _ in range(count)]
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.execute(insert(KnownContact), [
            {"id": c, "status": "active", "tier": "standard", "timezone": "UTC", "preferred_channel": "email",
             "consent": {}, "tags": [], "version": 1, "known_since": MONDAY_10, "updated_at": MONDAY_10}
            for c in ids
        ])  # fmt: skip
    await engine.dispose()
    return [str(c) for c in ids]


@pytest.fixture
async def stored(followups_db: str) -> AsyncIterator[Any]:
    engine = make_engine(followups_db)

    async def count(what: Any, *where: Any) -> int:
        async with engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(what).where(*where)) or 0)

    yield count
    await engine.dispose()


async def test_a_reply_in_the_same_batch_as_its_inbound_cancels_the_sla_followup(
    followups_settings: FollowupsSettings, clock: MovableClock, js: Any, stored: Any
) -> None:
    """The inbound and its reply are in the stream before the service starts, so its first fetch holds both."""
    clock.set(MONDAY_10)
    (contact,) = await _known_contacts(followups_settings.database_url, 1)
    inbound = logged_event(contact, at=MONDAY_10, direction="inbound", channel="live_chat", thread_id="chat-1")
    reply = logged_event(
        contact, at=MONDAY_10 + timedelta(minutes=2), direction="outbound", channel="live_chat", thread_id="chat-1"
    )
    for event in (inbound, reply):
        await js.publish(f"crm.interactions.logged.{contact}", event.to_json(), headers={"Nats-Msg-Id": event.id})
    app = create_app(followups_settings, clock=clock)
    async with running_app(app) as client:

        async def both_applied() -> bool:
            return await stored(inbox_table, inbox_table.c.event_id.in_([inbound.id, reply.id])) == 2

        await eventually(both_applied, timeout=15)
        items = (await client.get("/v1/followups", params={"contact_id": contact})).json()["items"]
        assert [(f["policy"], f["status"], f["cancel_reason"]) for f in items] == [
            ("response-sla", "cancelled", "answered")
        ]
        assert items[0]["interaction_id"] == reply.data["id"]


async def test_a_batch_of_touchpoints_makes_one_followup_each_and_one_event_each(
    followups_settings: FollowupsSettings, clock: MovableClock, js: Any, stored: Any
) -> None:
    """Many touchpoints waiting in the stream are applied in batches: every one makes its follow-up, its event
    and its inbox row, exactly once, and a redelivered copy of each makes nothing more."""
    clock.set(MONDAY_10)
    contacts = await _known_contacts(followups_settings.database_url, 40)
    # Each on its own thread: one reply owed each (a second message on a thread is covered by the first's SLA).
    touches = [
        logged_event(contacts[n % 40], at=MONDAY_10, direction="inbound", channel="email", thread_id=f"t-{n}")
        for n in range(300)
    ]
    for event in touches:
        await js.publish(f"crm.interactions.logged.{event.subject}", event.to_json(), headers={"Nats-Msg-Id": event.id})
    app = create_app(followups_settings, clock=clock)
    async with running_app(app):

        async def all_announced() -> bool:
            return await stored(outbox_table, outbox_table.c.published_at.is_not(None)) >= 300

        await eventually(all_announced, timeout=30)
        # The same events again (past JetStream's duplicate window, as after a replay): the inbox drops them.
        for event in touches:
            await js.publish(f"crm.interactions.logged.{event.subject}", event.to_json())

        async def replay_seen() -> bool:
            info = await js.consumer_info("CRM_INTERACTIONS", "followups-interactions")
            return bool(info.num_pending == 0 and info.num_ack_pending == 0)

        await eventually(replay_seen, timeout=30)
    assert await stored(Followup, col(Followup.policy) == "response-sla") == 300
    assert await stored(SeenTouch) == 300
    assert await stored(inbox_table) == 300
    assert await stored(outbox_table, outbox_table.c.type == "crm.followup.scheduled.v1") == 300
    trigger_ids = {event.id for event in touches}
    engine = make_engine(followups_settings.database_url)
    async with engine.connect() as conn:
        made = (await conn.execute(select(col(Followup.trigger_event_id), col(Followup.contact_id)))).all()
    await engine.dispose()
    assert {row.trigger_event_id for row in made} == trigger_ids
    by_event = {event.id: event.subject for event in touches}
    assert all(str(row.contact_id) == by_event[row.trigger_event_id] for row in made)


def test_a_new_followup_names_every_column_once() -> None:
    """Batches write follow-ups as rows, not ORM objects: a column added to the model must be given here too."""
    from services.followups.rules import Decision
    from services.followups.service import new_followup

    decision = Decision(
        policy="p", policy_version=1, step="s", reason="r", anchor_at=MONDAY_10, due_at=MONDAY_10, channel=None,
        priority="normal", assignee=None, team=None, thread_id=None, plan={"overdue_after_s": 60},
    )  # fmt: skip
    row = new_followup(decision=decision, contact_id=new_id(), trigger_event_id="e", now=MONDAY_10)
    assert set(row) == {column.name for column in Followup.__table__.columns}  # type: ignore[attr-defined]
    assert (row["status"], row["skip_reason"], row["next_action_at"]) == ("skipped", "opted_out", None)


async def test_a_batch_keeps_each_contacts_latest_touch_and_never_moves_it_back(
    followups_settings: FollowupsSettings, clock: MovableClock, js: Any
) -> None:
    """last_touch_at (what the premium-quiet sweep reads) is written once per batch: each contact's latest touch in
    it, out of order or not; a later touch already stored stays."""
    clock.set(MONDAY_10)
    first, second, ahead = await _known_contacts(followups_settings.database_url, 3)
    later_stored = MONDAY_10 + timedelta(days=1)
    engine = make_engine(followups_settings.database_url)
    async with engine.begin() as conn:
        await conn.execute(
            KnownContact.__table__.update()  # type: ignore[attr-defined]
            .where(col(KnownContact.id) == uuid.UUID(ahead))
            .values(last_touch_at=later_stored)
        )
    minutes = {first: [5, 30, 10], second: [1], ahead: [20]}
    touches = [
        logged_event(contact, at=MONDAY_10 + timedelta(minutes=m), direction="inbound", channel="email")
        for contact, offsets in minutes.items()
        for m in offsets
    ]
    for event in touches:
        await js.publish(f"crm.interactions.logged.{event.subject}", event.to_json(), headers={"Nats-Msg-Id": event.id})
    app = create_app(followups_settings, clock=clock)
    async with running_app(app):

        async def all_applied() -> bool:
            async with engine.connect() as conn:
                return int(await conn.scalar(select(func.count()).select_from(inbox_table)) or 0) == len(touches)

        await eventually(all_applied, timeout=15)
    async with engine.connect() as conn:
        got = dict((await conn.execute(select(col(KnownContact.id), col(KnownContact.last_touch_at)))).all())
    await engine.dispose()
    assert got[uuid.UUID(first)] == MONDAY_10 + timedelta(minutes=30)
    assert got[uuid.UUID(second)] == MONDAY_10 + timedelta(minutes=1)
    assert got[uuid.UUID(ahead)] == later_stored


async def test_the_startup_heap_is_frozen_out_of_the_collectors_generations(
    followups_settings: FollowupsSettings, clock: MovableClock
) -> None:
    """A full collection must not walk the start-up objects (a stall of tens of ms in the touchpoint pipeline)."""
    import gc

    async with running_app(create_app(followups_settings, clock=clock)):
        assert gc.get_freeze_count() > 10_000


@pytest.mark.parametrize("db_backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_replicas_take_turns_on_a_contact_they_have_no_row_for(followups_settings: FollowupsSettings) -> None:
    """Two replicas opening batches about a contact neither has seen: the second waits for the first to commit
    (then finds what it made), as it does for a known contact whose row it locks. Without the per-contact lock both
    read 'nothing open' at once and each made the follow-up."""
    unknown = str(new_id())
    engine = make_engine(followups_settings.database_url)
    batches = TouchBatches(outbox=Outbox(outbox_table))
    first_events = [logged_event(unknown, at=MONDAY_10, type="purchase")]
    second_events = [logged_event(unknown, at=MONDAY_10, type="purchase")]
    try:
        async with AsyncSession(engine) as first, AsyncSession(engine) as second, engine.connect() as observer:
            await first.begin()
            await batches.open(first, first_events)
            await second.begin()
            second_opened = asyncio.create_task(batches.open(second, second_events))

            async def waiting_on_a_lock() -> bool:
                granted = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
                return second_opened.done() or bool((await observer.execute(granted)).scalar())

            await eventually(waiting_on_a_lock, timeout=10.0)
            assert not second_opened.done(), "the second replica read the contact while the first held it"
            await first.commit()
            await asyncio.wait_for(second_opened, timeout=10.0)
            await second.rollback()
    finally:
        await engine.dispose()
