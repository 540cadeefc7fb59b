"""The gateway's projections of contact, touchpoint and follow-up events (consumed from JetStream
through the inbox), as the timeline and its header show them."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import nats
import pytest
from nats.js.api import StreamConfig
from nats.js.errors import BadRequestError
from sqlalchemy import Delete, select
from sqlmodel import col

from gateway.events import apply, on_contact_merged
from gateway.models import ContactEvent, TouchSummary
from gateway.tests.conftest import ADMIN, StubServices
from servicekit.clock import MovableClock
from servicekit.db import make_engine, make_sessionmaker
from servicekit.events import CloudEvent, make_event
from servicekit.testing.nats import NatsServer
from servicekit.testing.plugin import eventually

STREAMS = {
    "CRM_CONTACTS": "crm.contacts.>",
    "CRM_INTERACTIONS": "crm.interactions.>",
    "CRM_FOLLOWUPS": "crm.followups.>",
}


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[Any]:
    """JetStream with the producers' streams (the gateway only reads them)."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    for name, subject in STREAMS.items():
        try:
            await js.add_stream(StreamConfig(name=name, subjects=[subject]))
        except BadRequestError:
            pass
    yield js
    await nc.close()


async def publish(js: Any, subject: str, event: CloudEvent) -> None:
    await js.publish(subject, event.to_json(), headers={"Nats-Msg-Id": event.id})


def contact_doc(contact: dict[str, Any]) -> dict[str, Any]:
    return {k: contact[k] for k in ("id", "name", "emails", "stage", "tier")}


async def test_contact_events_become_timeline_items_and_a_merge_rekeys_them(
    gateway: httpx.AsyncClient, stub: StubServices, js: Any, clock: MovableClock
) -> None:
    a = stub.add_contact(name="Ada Secretname", emails=["ada.secret@example.com"])
    b = stub.add_contact(name="Bob Hidden", emails=["bob.hidden@example.com"])
    t = clock.now()
    created_a = make_event(type="crm.contact.created.v1", source="test", subject=a["id"],
                           data={"contact": contact_doc(a)}, time=t)  # fmt: skip
    await publish(js, f"crm.contacts.created.{a['id']}", created_a)
    await publish(js, f"crm.contacts.created.{a['id']}", created_a)  # delivered twice: applied once
    await publish(js, f"crm.contacts.created.{b['id']}", make_event(
        type="crm.contact.created.v1", source="test", subject=b["id"], data={"contact": contact_doc(b)},
        time=t + timedelta(seconds=1)))  # fmt: skip
    await publish(js, f"crm.contacts.updated.{a['id']}", make_event(
        type="crm.contact.updated.v1", source="test", subject=a["id"], time=t + timedelta(minutes=1),
        data={"contact_id": a["id"], "version": 2, "changed": {"stage": "customer", "consent": {"sms": False}},
              "previous": {"stage": "lead", "consent": {}}}))  # fmt: skip
    await publish(js, f"crm.contacts.updated.{a['id']}", make_event(
        type="crm.contact.updated.v1", source="test", subject=a["id"], time=t + timedelta(minutes=2),
        data={"contact_id": a["id"], "version": 3, "changed": {"name": "Ada New"},
              "previous": {"name": "Ada"}}))  # fmt: skip
    # Touchpoints and follow-ups of both, then B merged into A.
    await publish(js, f"crm.interactions.logged.{a['id']}", make_event(
        type="crm.interaction.logged.v1", source="test", subject=a["id"], time=t,
        data={"id": str(uuid.uuid4()), "contact_id": a["id"], "channel": "email", "csat": 2,
              "occurred_at": (t - timedelta(days=3)).isoformat()}))  # fmt: skip
    await publish(js, f"crm.interactions.logged.{b['id']}", make_event(
        type="crm.interaction.logged.v1", source="test", subject=b["id"], time=t,
        data={"id": str(uuid.uuid4()), "contact_id": b["id"], "channel": "sms", "csat": 4,
              "occurred_at": (t - timedelta(days=1)).isoformat()}))  # fmt: skip
    followup_id = str(uuid.uuid4())
    await publish(js, f"crm.followups.scheduled.{b['id']}", make_event(
        type="crm.followup.scheduled.v1", source="test", subject=b["id"], time=t,
        data={"followup": {"id": followup_id, "contact_id": b["id"], "status": "scheduled",
                           "due_at": (t + timedelta(hours=1)).isoformat()}}))  # fmt: skip
    await publish(js, f"crm.followups.due.{b['id']}", make_event(
        type="crm.followup.due.v1", source="test", subject=b["id"], time=t + timedelta(hours=1),
        data={"followup": {"id": followup_id, "contact_id": b["id"], "status": "due",
                           "due_at": (t + timedelta(hours=1)).isoformat()}}))  # fmt: skip
    await publish(js, f"crm.contacts.merged.{a['id']}", make_event(
        type="crm.contact.merged.v1", source="test", subject=a["id"], time=t + timedelta(minutes=3),
        data={"source_id": b["id"], "target_id": a["id"], "contact": contact_doc(a)}))  # fmt: skip
    stub.contacts[b["id"]].update(status="merged", merged_into=a["id"])
    clock.advance(hours=2)  # the follow-up is due and now overdue

    async def events_of_a() -> list[dict[str, Any]]:
        page = await gateway.get(f"/api/v1/contacts/{a['id']}/timeline?kinds=contact_event", headers=ADMIN)
        items: list[dict[str, Any]] = page.json()["items"]
        return items if len(items) == 4 else []

    items = await eventually(events_of_a, timeout=15)
    assert isinstance(items, list)
    assert [i["type"] for i in items] == ["merged", "stage_changed", "created", "created"]
    assert {i["original_contact_id"] for i in items} == {a["id"], b["id"]}
    stage = items[1]
    assert stage["detail"]["stage"] == {"from": "lead", "to": "customer"} and "sms off" in stage["summary"]

    # B's timeline is A's; A's header counts both contacts' touchpoints and B's overdue follow-up.
    async def header() -> dict[str, Any]:
        page = (await gateway.get(f"/api/v1/contacts/{b['id']}/timeline", headers=ADMIN)).json()
        found: dict[str, Any] = page["contact"]
        return found if found["csat_responses"] == 2 and found["overdue_followups"] == 1 else {}

    found = await eventually(header, timeout=15)
    assert isinstance(found, dict)
    assert found["profile"]["id"] == a["id"] and found["csat_average"] == 3.0
    assert [c["channel"] for c in found["last_touch_per_channel"]] == ["sms", "email"]
    assert found["open_followups"] == 1
    assert datetime.fromisoformat(found["first_touch_at"]) == t - timedelta(days=3)

    # Erased: an item that says so; the projection never held the name or the email.
    await publish(js, f"crm.contacts.erased.{a['id']}", make_event(
        type="crm.contact.erased.v1", source="test", subject=a["id"], time=t + timedelta(minutes=5),
        data={"contact_id": a["id"], "erased_at": (t + timedelta(minutes=5)).isoformat()}))  # fmt: skip

    async def erased() -> bool:
        page = await gateway.get(f"/api/v1/contacts/{a['id']}/timeline?kinds=contact_event", headers=ADMIN)
        return page.json()["items"][0]["type"] == "erased"

    await eventually(erased, timeout=15)
    app_runtime = gateway._transport.app.state.runtime  # type: ignore[attr-defined]
    async with app_runtime.sessionmaker() as session:
        rows = (await session.scalars(select(ContactEvent))).all()
    stored = json.dumps([[r.title, r.summary, r.detail] for r in rows])
    for secret in ("Secretname", "ada.secret", "Hidden", "bob.hidden", "Ada New"):
        assert secret not in stored


def test_timeline_item_times_are_utc() -> None:
    from gateway.projection import interaction_item

    item = interaction_item({"id": str(uuid.uuid4()), "occurred_at": "2026-03-01T13:00:00+01:00", "type": "note"})
    assert item["at"] == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class _CommitsFirst:
    """A session that lets another transaction commit just before it deletes from ``touch_summaries``:
    the moment the merge's read of the source's rows and its delete of them used to disagree."""

    def __init__(self, session: Any, other: Any) -> None:
        self._session, self._other = session, other

    async def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        if (
            isinstance(statement, Delete)
            and getattr(statement.table, "name", "") == "touch_summaries"
            and self._other.in_transaction()
        ):
            await self._other.commit()
        return await self._session.execute(statement, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def _touch(contact_id: uuid.UUID, channel: str, csat: int, at: datetime) -> CloudEvent:
    return make_event(type="crm.interaction.logged.v1", source="test", subject=str(contact_id), time=at,
                      data={"id": str(uuid.uuid4()), "contact_id": str(contact_id), "channel": channel,
                            "csat": csat, "occurred_at": at.isoformat()})  # fmt: skip


def _merge(source: uuid.UUID, target: uuid.UUID, at: datetime) -> CloudEvent:
    return make_event(type="crm.contact.merged.v1", source="test", subject=str(target), time=at,
                      data={"source_id": str(source), "target_id": str(target)})  # fmt: skip


async def _family_touches(sessionmaker: Any, *contact_ids: uuid.UUID) -> tuple[int, int]:
    async with sessionmaker() as session:
        rows = (await session.scalars(select(TouchSummary).where(col(TouchSummary.contact_id).in_(contact_ids)))).all()
    return sum(r.touches for r in rows), sum(r.csat_count for r in rows)


@pytest.mark.parametrize("db_backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_touches_written_while_their_contact_is_merged_are_all_counted(gateway_db: str) -> None:
    """Only PostgreSQL runs two writers at once (SQLite's single writer serialises them)."""
    engine = make_engine(gateway_db)
    sessionmaker = make_sessionmaker(engine)
    target, source, t = uuid.uuid4(), uuid.uuid4(), datetime(2026, 3, 1, tzinfo=UTC)
    try:
        async with sessionmaker() as session, session.begin():
            await apply(session, [_touch(target, "sms", 2, t)])
        # The source's touch commits between the merge's start and its delete of the source's rows.
        async with sessionmaker() as touching, sessionmaker() as merging:
            await touching.begin()
            await apply(touching, [_touch(source, "sms", 4, t + timedelta(hours=1))])
            async with merging.begin():
                await on_contact_merged(_CommitsFirst(merging, touching), _merge(source, target, t))  # type: ignore[arg-type]
        assert await _family_touches(sessionmaker, target, source) == (2, 2)

        # The target's own touch is written while the merge adds the source's rows to the same row.
        other = uuid.uuid4()
        async with sessionmaker() as session, session.begin():
            await apply(session, [_touch(other, "sms", 5, t)])
        async with sessionmaker() as touching, sessionmaker() as merging:
            await touching.begin()
            await apply(touching, [_touch(target, "sms", 1, t + timedelta(hours=2))])
            merge = asyncio.ensure_future(_merge_in(merging, _merge(other, target, t)))
            await asyncio.sleep(0.3)  # the merge reaches the target's row and waits for its lock
            await touching.commit()
            await merge
        assert await _family_touches(sessionmaker, target, source, other) == (4, 4)
    finally:
        await engine.dispose()


async def _merge_in(session: Any, event: CloudEvent) -> None:
    async with session.begin():
        await on_contact_merged(session, event)
