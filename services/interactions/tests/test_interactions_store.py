"""The service layer on a real database (SQLite and PostgreSQL): storing, merging, erasing, reading."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.clock import MovableClock, as_utc
from services.interactions import service
from services.interactions.models import Touchpoint, outbox_table
from services.interactions.schemas import TouchpointPage, page_json
from services.interactions.service import TouchpointService
from services.interactions.tests.conftest import at, store, touchpoint_factory


async def outbox_events(sessionmaker: async_sessionmaker[AsyncSession]) -> list[dict[str, Any]]:
    async with sessionmaker() as session:
        rows = (
            await session.execute(select(outbox_table.c.subject, outbox_table.c.payload).order_by(outbox_table.c.seq))
        ).all()
    return [{**json.loads(r.payload), "nats_subject": r.subject} for r in rows]


async def test_store_writes_rows_and_one_logged_event_each(
    sessionmaker: async_sessionmaker[AsyncSession], touchpoints: TouchpointService
) -> None:
    contact = str(uuid.uuid4())
    outcomes = await store(
        sessionmaker,
        touchpoints,
        touchpoint_factory(contact_id=contact, subject="Terrible, broken, awful", body=None),
        touchpoint_factory(contact_id=contact, type="purchase", amount="19.99", currency="eur", body=None),
    )
    assert [o.status for o in outcomes] == [201, 201]
    first, second = (o.touchpoint for o in outcomes)
    assert first is not None and second is not None
    assert first.sentiment is not None and first.sentiment < -0.5
    assert second.currency == "EUR" and float(second.amount or 0) == 19.99
    assert first.original_contact_id == first.contact_id == uuid.UUID(contact)
    logged = await outbox_events(sessionmaker)
    assert [e["type"] for e in logged] == ["crm.interaction.logged.v1"] * 2
    assert logged[0]["nats_subject"] == f"crm.interactions.logged.{contact}"
    assert logged[0]["data"]["id"] == str(first.id) and "body" not in logged[0]["data"]
    assert logged[0]["data"]["original_contact_id"] == contact


async def test_same_source_and_external_id_or_ingest_key_is_stored_once(
    sessionmaker: async_sessionmaker[AsyncSession], touchpoints: TouchpointService
) -> None:
    item = touchpoint_factory(source="shop", external_id="order-1")
    (first,) = await store(sessionmaker, touchpoints, item)
    again = await store(sessionmaker, touchpoints, item, dict(item, subject="resent"))
    assert first.status == 201 and [o.status for o in again] == [200, 200]
    assert {o.touchpoint.id for o in again if o.touchpoint} == {first.touchpoint.id if first.touchpoint else None}
    by_key = touchpoint_factory()
    (a,) = await store(sessionmaker, touchpoints, by_key, ingest_keys=["msg:abc"])
    (b,) = await store(sessionmaker, touchpoints, by_key, ingest_keys=["msg:abc"])
    assert (a.status, b.status) == (201, 200)
    assert a.touchpoint is not None and b.touchpoint is not None and a.touchpoint.id == b.touchpoint.id
    async with sessionmaker() as session:
        assert len((await session.scalars(select(Touchpoint))).all()) == 2
    assert len(await outbox_events(sessionmaker)) == 2


async def test_every_field_is_stored_as_given_and_a_repeat_within_one_batch_is_stored_once(
    sessionmaker: async_sessionmaker[AsyncSession], touchpoints: TouchpointService
) -> None:
    # PostgreSQL inserts a batch as one array per column (unnest): each type must come back as it went in.
    full = touchpoint_factory(
        channel="phone", direction="outbound", type="purchase", agent="Ann", team="sales", thread_id="t-all",
        outcome="sold", csat=4, nps=9, duration_s=61, amount="1234.5678", currency="eur", source="shop",
        external_id="o-7", attributes={"nested": {"list": [1, "two", None]}, "ok": True, "text": "é ü \" '"},
        body="line one\nline two", occurred_at="2026-01-05T08:00:00.123456+02:00",
    )  # fmt: skip
    sparse = touchpoint_factory(subject=None, body=None)
    outcomes = await store(sessionmaker, touchpoints, full, sparse, dict(full, subject="the same, re-sent"))
    assert [o.status for o in outcomes] == [201, 201, 200]
    assert outcomes[2].id == outcomes[0].id
    for outcome in outcomes[:2]:
        assert outcome.id is not None
        async with sessionmaker() as session:
            stored = service.to_read(await service.get_touchpoint(session=session, touchpoint_id=outcome.id))
        assert outcome.touchpoint == stored
    read = outcomes[0].touchpoint
    assert read is not None and read.attributes == full["attributes"] and read.body == full["body"]
    assert str(read.amount) == "1234.5678" and read.occurred_at.isoformat() == "2026-01-05T06:00:00.123456+00:00"
    assert outcomes[1].touchpoint is not None and outcomes[1].touchpoint.sentiment is None


async def test_merge_rekeys_and_later_touchpoints_follow_the_merge(
    sessionmaker: async_sessionmaker[AsyncSession], touchpoints: TouchpointService
) -> None:
    source, target, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await store(sessionmaker, touchpoints, touchpoint_factory(contact_id=str(source), thread_id="t-merge"))
    await store(sessionmaker, touchpoints, touchpoint_factory(contact_id=str(other)))
    async with sessionmaker() as session, session.begin():
        moved = await touchpoints.rekey(session=session, source_id=source, target_id=target)
    assert moved == 1
    # A replica that still believed the source live files the touchpoint under the target all the same.
    (late,) = await store(sessionmaker, touchpoints, touchpoint_factory(contact_id=str(source)))
    assert late.touchpoint is not None and late.touchpoint.contact_id == target
    assert late.touchpoint.original_contact_id == source
    async with sessionmaker() as session:
        rows, _ = await service.list_touchpoints(session=session, contact_id=target)
        assert len(rows) == 2 and {r["original_contact_id"] for r in rows} == {source}
        assert (await service.list_touchpoints(session=session, contact_id=source))[0] == []
        assert (await service.list_touchpoints(session=session, contact_id=other))[0] != []


async def test_erase_redacts_notes_keeps_metrics_and_refuses_new_touchpoints(
    sessionmaker: async_sessionmaker[AsyncSession], touchpoints: TouchpointService
) -> None:
    erased = uuid.uuid4()
    (kept,) = await store(
        sessionmaker,
        touchpoints,
        touchpoint_factory(contact_id=str(erased), csat=2, outcome="refund promised", attributes={"order": "A1"}),
    )
    async with sessionmaker() as session, session.begin():
        assert await touchpoints.redact_contact(session=session, contact_id=erased) == 1
    async with sessionmaker() as session:
        assert kept.touchpoint is not None
        row = await service.get_touchpoint(session=session, touchpoint_id=kept.touchpoint.id)
    assert (row.subject, row.body, row.outcome, row.attributes) == (None, None, None, {})
    assert (row.csat, row.channel, row.type) == (2, "email", "inquiry") and row.redacted_at is not None
    assert row.sentiment == kept.touchpoint.sentiment
    events = await outbox_events(sessionmaker)
    assert [e["type"] for e in events] == [
        "crm.interaction.logged.v1", "crm.interaction.redacted.v1", "crm.bus.purge_requested.v1"
    ]  # fmt: skip
    # The unsent logged event no longer carries the notes.
    assert events[0]["data"]["subject"] is None and events[0]["data"]["attributes"] == {}
    assert events[1]["data"] == {
        "contact_id": str(erased),
        "interactions": 1,
        "redacted_at": events[1]["data"]["redacted_at"],
    }
    (refused,) = await store(sessionmaker, touchpoints, touchpoint_factory(contact_id=str(erased)))
    assert refused.status == 422 and refused.problem is not None and refused.problem.slug == "contact-erased"


async def test_keyset_pages_are_stable_while_touchpoints_arrive(
    sessionmaker: async_sessionmaker[AsyncSession], touchpoints: TouchpointService
) -> None:
    contact = str(uuid.uuid4())
    # Two touchpoints share each time: the id breaks the tie.
    await store(
        sessionmaker, touchpoints, *[touchpoint_factory(contact_id=contact, occurred_at=at(n // 2)) for n in range(9)]
    )
    await store(sessionmaker, touchpoints, touchpoint_factory(occurred_at=at(100)))  # another contact
    seen: list[uuid.UUID] = []
    after = None
    while True:
        async with sessionmaker() as session:
            rows, after = await service.list_touchpoints(
                session=session, contact_id=uuid.UUID(contact), limit=4, after=after
            )
        seen += [r["id"] for r in rows]
        if after is None:
            break
        if len(seen) == 4:  # a new touchpoint arrives between two pages
            await store(sessionmaker, touchpoints, touchpoint_factory(contact_id=contact, occurred_at=at(50)))
    assert len(seen) == 9 == len(set(seen))
    async with sessionmaker() as session:
        everything, _ = await service.list_touchpoints(session=session, contact_id=uuid.UUID(contact), limit=200)
    ordered = [(r["occurred_at"], r["id"]) for r in everything]
    assert ordered == sorted(ordered, reverse=True) and [r["id"] for r in everything][1:] == seen


async def test_thread_status_resolution_event_and_first_response(
    sessionmaker: async_sessionmaker[AsyncSession], touchpoints: TouchpointService, clock: MovableClock
) -> None:
    from services.interactions.schemas import TouchpointPatch

    contact = str(uuid.uuid4())
    outcomes = await store(
        sessionmaker,
        touchpoints,
        touchpoint_factory(
            contact_id=contact, thread_id="T-1", type="complaint", channel="live_chat", occurred_at=at(0)
        ),
        touchpoint_factory(
            contact_id=contact, thread_id="T-1", direction="outbound", type="support", occurred_at=at(3)
        ),
        touchpoint_factory(
            contact_id=contact, thread_id="T-1", direction="inbound", type="support", occurred_at=at(10)
        ),
    )
    async with sessionmaker() as session:
        thread = await service.get_thread(session=session, thread_id="T-1")
    assert thread.status == "open" and thread.complaint and thread.channel == "live_chat"
    assert thread.first_response_s == 180 and [i.id for i in thread.items] == [
        o.touchpoint.id for o in outcomes if o.touchpoint
    ]
    clock.advance(hours=1)
    last = outcomes[2].touchpoint
    assert last is not None
    async with sessionmaker() as session, session.begin():
        await touchpoints.update(
            session=session, touchpoint_id=last.id, patch=TouchpointPatch(thread_status="resolved")
        )
    async with sessionmaker() as session, session.begin():  # resolving again changes nothing
        await touchpoints.update(
            session=session, touchpoint_id=last.id, patch=TouchpointPatch(thread_status="resolved")
        )
    async with sessionmaker() as session:
        thread = await service.get_thread(session=session, thread_id="T-1")
    assert thread.status == "resolved" and thread.resolved_at == clock.now()
    resolved = [e for e in await outbox_events(sessionmaker) if e["type"] == "crm.thread.resolved.v1"]
    assert len(resolved) == 1
    assert resolved[0]["data"]["complaint"] is True and resolved[0]["data"]["channel"] == "live_chat"
    assert resolved[0]["data"]["type"] == "complaint" and resolved[0]["data"]["thread_id"] == "T-1"
    assert resolved[0]["nats_subject"] == f"crm.interactions.thread_resolved.{contact}"


async def test_a_page_written_from_rows_is_the_document_the_models_write(
    sessionmaker: async_sessionmaker[AsyncSession], touchpoints: TouchpointService
) -> None:
    """schemas.page_json writes the rows as read (straight from asyncpg on PostgreSQL) without validating them:
    byte for byte what TouchpointPage gives from each touchpoint read as an ORM object, with every filter."""
    contact = str(uuid.uuid4())
    await store(
        sessionmaker,
        touchpoints,
        touchpoint_factory(contact_id=contact, type="purchase", amount="1234.5678", currency="eur", agent="Ann",
                           team="sales", thread_id="t-json", outcome="sold", source="shop", external_id="o-1",
                           attributes={"nested": {"list": [1, "two", None, 2.5]}, "ok": True, "text": "é \" ü"},
                           occurred_at="2026-01-05T08:00:00.123456+02:00"),
        touchpoint_factory(contact_id=contact, type="survey_response", csat=5, nps=10, duration_s=0, amount="0.1",
                           currency="usd", occurred_at=at(3), subject="Terrible, broken", body=None),
        touchpoint_factory(contact_id=contact, channel="phone", direction="outbound", subject=None, body=None,
                           occurred_at=at(1)),
        touchpoint_factory(contact_id=contact, occurred_at=at(1)),
        touchpoint_factory(occurred_at=at(2)),
    )  # fmt: skip
    async with sessionmaker() as session:
        everything, _ = await service.list_touchpoints(session=session, limit=200)
        middle = service.Position(as_utc(everything[2]["occurred_at"]), everything[2]["id"])
        cases: list[dict[str, Any]] = [
            {},
            {"contact_id": uuid.UUID(contact), "limit": 2},
            {"contact_id": uuid.UUID(contact), "after": middle},
            {"channel": "phone", "direction": "outbound"},
            {"type": "purchase", "thread_id": "t-json"},
            {"since": datetime(2026, 1, 5, 8, 1, tzinfo=UTC), "until": datetime(2026, 1, 5, 8, 3, tzinfo=UTC)},
        ]
        for filters in cases:
            rows, next_position = await service.list_touchpoints(session=session, **filters)
            assert rows, filters
            models = [service.to_read(await session.get_one(Touchpoint, row["id"])) for row in rows]
            cursor = next_position.cursor() if next_position else None
            before = next_position.before() if next_position else None
            expected = TouchpointPage(items=models, next_cursor=cursor, next_before=before).model_dump_json()
            assert page_json(rows, next_cursor=cursor, next_before=before).decode() == expected, filters


async def test_a_stored_touchpoint_s_answer_is_the_document_its_model_writes(
    sessionmaker: async_sessionmaker[AsyncSession], touchpoints: TouchpointService
) -> None:
    """Outcome.json writes a row just built without TouchpointRead (schemas.touchpoint_json): byte for byte what
    the model gives from that row and from the stored touchpoint read back, and for a resent one (200)."""
    contact = uuid.uuid4()
    full = touchpoint_factory(
        contact_id=str(contact), channel="phone", direction="outbound", type="purchase", agent="Ann", team="sales",
        thread_id="t-answer", outcome="sold", csat=4, nps=9, duration_s=61, amount="19.9", currency="eur",
        source="shop", external_id="o-8", attributes={"nested": {"list": [1, "two", None, 0.5]}, "text": "é \" ü"},
        body="line one\nline two", occurred_at="2026-01-05T08:00:00.123456+02:00",
    )  # fmt: skip
    sparse = touchpoint_factory(subject=None, body=None, amount="1234.5678", currency="usd", type="purchase")
    outcomes = await store(sessionmaker, touchpoints, full, sparse, touchpoint_factory(subject="Terrible, broken"))
    (resent,) = await store(sessionmaker, touchpoints, full)
    assert [o.status for o in outcomes] == [201, 201, 201] and resent.status == 200
    async with sessionmaker() as session:
        for outcome in [*outcomes, resent]:
            assert outcome.row is not None and outcome.id is not None
            read_back = service.to_read(await session.get_one(Touchpoint, outcome.id)).model_dump_json()
            assert outcome.json() == service.to_read(outcome.row).model_dump_json() == read_back
