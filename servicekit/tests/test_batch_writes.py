"""Writes collected over a batch: the outbox's deferred rows, the batch object the inbox hands handlers, and its
prepare and finish around a batch."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.bus import Bus
from servicekit.clock import MovableClock
from servicekit.events import CloudEvent, make_event
from servicekit.ids import new_id, new_ids
from servicekit.inbox import EventInbox
from servicekit.outbox import Outbox
from servicekit.runtime import shared_tables
from servicekit.tests.recording import recording_sessions

metadata = MetaData()
outbox_table, inbox_table = shared_tables(metadata)
things = Table("things", metadata, Column("n", Integer, primary_key=True), Column("event_id", String(64)))


@pytest.fixture
async def sessions(empty_database_url: str) -> AsyncIterator[Any]:
    async with recording_sessions(empty_database_url, metadata) as sessionmaker:
        yield sessionmaker


def outbox_inserts(sessions: Any) -> int:
    return sum(1 for s in sessions.statements if s.lstrip().upper().startswith("INSERT INTO OUTBOX"))


def thing(n: int) -> CloudEvent:
    return make_event(type="test.thing.happened.v1", source="tests", subject=f"s{n}", data={"n": n},
                      time=datetime(2026, 1, 1, tzinfo=UTC))  # fmt: skip


async def count(sessions: async_sessionmaker[AsyncSession], table: Table) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def test_deferred_outbox_rows_are_written_in_one_statement_with_the_commit(sessions: Any) -> None:
    outbox = Outbox(outbox_table)
    async with sessions() as session, session.begin():
        outbox.defer(session)
        for n in range(50):
            await outbox.add(session, thing(n), subject=f"test.events.s{n}")
        assert outbox_inserts(sessions) == 0  # nothing written yet: collected until the commit
    assert outbox_inserts(sessions) == 1
    async with sessions() as session:
        payloads = (await session.scalars(select(outbox_table.c.payload).order_by(outbox_table.c.seq))).all()
    assert [CloudEvent.from_json(p).data["n"] for p in payloads] == list(range(50))
    # The next transaction of the same session does not defer unless asked again.
    async with sessions() as session:
        async with session.begin():
            outbox.defer(session)
            await outbox.add(session, thing(50), subject="test.events.s50")
        async with session.begin():
            await outbox.add(session, thing(51), subject="test.events.s51")
            assert outbox_inserts(sessions) == 3
    assert await count(sessions, outbox_table) == 52


async def test_many_events_added_at_once_are_one_statement_in_their_order(
    sessions: Any, empty_database_url: str
) -> None:
    outbox = Outbox(outbox_table)
    async with sessions() as session, session.begin():
        await outbox.add_many(session, [(thing(n), f"test.events.s{n}") for n in range(500)])
    # PostgreSQL: one INSERT … SELECT FROM unnest for the lot, not an executemany of a row each; SQLite: one
    # executemany (its driver is in-process).
    (insert,) = [s for s in sessions.statements if s.lstrip().upper().startswith("INSERT INTO OUTBOX")]
    assert ("unnest" in insert) == empty_database_url.startswith("postgresql")
    async with sessions() as session:
        rows = (await session.execute(select(outbox_table).order_by(outbox_table.c.seq))).all()
    assert [CloudEvent.from_json(row.payload).data["n"] for row in rows] == list(range(500))
    assert [row.subject for row in rows] == [f"test.events.s{n}" for n in range(500)]
    assert {row.type for row in rows} == {"test.thing.happened.v1"}
    assert all(row.published_at is None and row.created_at is not None for row in rows)


async def test_deferred_outbox_rows_roll_back_with_their_transaction_and_are_seen_by_redaction(sessions: Any) -> None:
    outbox = Outbox(outbox_table)
    with pytest.raises(RuntimeError):
        async with sessions() as session, session.begin():
            outbox.defer(session)
            await outbox.add(session, thing(1), subject="test.events.s1")
            raise RuntimeError("the change fails")
    assert await count(sessions, outbox_table) == 0
    async with sessions() as session, session.begin():
        outbox.defer(session)
        await outbox.add(session, thing(2), subject="test.events.s2")
        # An erase in the same transaction must redact the event collected a moment ago.
        await outbox.redact_events(session, subject_like="test.events.s2", redact=lambda data: {"n": None})
        await outbox.add(session, thing(3), subject="test.events.s3")
    async with sessions() as session:
        payloads = (await session.scalars(select(outbox_table.c.payload).order_by(outbox_table.c.seq))).all()
    assert [CloudEvent.from_json(p).data["n"] for p in payloads] == [None, 3]


async def test_prepare_and_finish_wrap_a_batch_in_its_transaction_with_only_the_new_events(
    sessions: Any, clock: MovableClock
) -> None:
    calls: list[tuple[str, list[str]]] = []

    async def prepare(session: AsyncSession, batch: list[CloudEvent]) -> None:
        calls.append(("prepare", [e.id for e in batch]))
        session.sync_session.info["collected"] = []

    async def handle(session: AsyncSession, e: CloudEvent) -> None:
        if e.data["n"] == 99:
            raise RuntimeError("this one fails")
        session.sync_session.info["collected"].append({"n": e.data["n"], "event_id": e.id})

    async def finish(session: AsyncSession, batch: list[CloudEvent]) -> None:
        calls.append(("finish", [e.id for e in batch]))
        await session.execute(things.insert(), session.sync_session.info["collected"])

    inbox = EventInbox(table=inbox_table, sessionmaker=sessions, handlers={"test.thing.happened.v1": handle},
                       clock=clock, bus=Bus("nats://127.0.0.1:9", name="unused"), name="batch-tests",
                       prepare=prepare, finish=finish)  # fmt: skip
    first = [thing(n) for n in range(3)]
    fourth = thing(3)
    await inbox._apply(first)
    await inbox._apply([first[1], fourth])  # one applied already: the hooks get only the new one
    ids = [e.id for e in first]
    assert calls == [("prepare", ids), ("finish", ids), ("prepare", [fourth.id]), ("finish", [fourth.id])]
    assert await count(sessions, things) == 4 and await count(sessions, inbox_table) == 4
    # A failing handler rolls back what finish would have written and the inbox rows alike.
    with pytest.raises(RuntimeError):
        await inbox._apply([thing(4), thing(99)])
    assert await count(sessions, things) == 4 and await count(sessions, inbox_table) == 4


class Collected:
    """A batch object as a consumer's ``BatchKind`` opens it: the session, and what its handlers collect."""

    def __init__(self, session: AsyncSession, events: list[CloudEvent]) -> None:
        self.session, self.events, self.rows = session, events, list[dict[str, Any]]()


class Collecting:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    async def open(self, session: AsyncSession, events: list[CloudEvent]) -> Collected:
        self.calls.append(("open", [e.id for e in events]))
        return Collected(session, events)

    async def finish(self, batch: Collected) -> None:
        self.calls.append(("finish", [e.id for e in batch.events]))
        await batch.session.execute(things.insert(), batch.rows)


async def test_handlers_are_handed_the_batch_object_the_batch_kind_opened(sessions: Any, clock: MovableClock) -> None:
    kind = Collecting()
    handed: list[Collected] = []

    async def handle(batch: Collected, e: CloudEvent) -> None:
        if e.data["n"] == 99:
            raise RuntimeError("this one fails")
        handed.append(batch)
        batch.rows.append({"n": e.data["n"], "event_id": e.id})

    inbox = EventInbox(table=inbox_table, sessionmaker=sessions, handlers={"test.thing.happened.v1": handle},
                       clock=clock, bus=Bus("nats://127.0.0.1:9", name="unused"), name="batch-kind-tests",
                       batches=kind)  # fmt: skip
    first = [thing(n) for n in range(3)]
    fourth = thing(3)
    await inbox._apply(first)
    assert len({id(batch) for batch in handed}) == 1  # one object for the whole batch
    await inbox._apply([first[1], fourth])  # one applied already: the batch holds only the new one
    ids = [e.id for e in first]
    assert kind.calls == [("open", ids), ("finish", ids), ("open", [fourth.id]), ("finish", [fourth.id])]
    assert await count(sessions, things) == 4 and await count(sessions, inbox_table) == 4
    # A failing handler rolls back what finish would have written and the inbox rows alike.
    with pytest.raises(RuntimeError):
        await inbox._apply([thing(4), thing(99)])
    assert await count(sessions, things) == 4 and await count(sessions, inbox_table) == 4


async def test_the_inbox_claims_a_batch_in_one_insert_and_applies_each_event_once(
    sessions: Any, clock: MovableClock
) -> None:
    """No SELECT of the inbox first: on PostgreSQL its cached generic plan, made while the inbox was nearly empty,
    scanned the whole table for every batch once it held 30,000 rows (260 ms a batch, the follow-ups benchmark)."""
    seen: list[str] = []

    async def handle(session: AsyncSession, e: CloudEvent) -> None:
        seen.append(e.id)

    inbox = EventInbox(table=inbox_table, sessionmaker=sessions, handlers={"test.thing.happened.v1": handle},
                       clock=clock, bus=Bus("nats://127.0.0.1:9", name="unused"), name="claim-tests")  # fmt: skip
    events = [thing(n) for n in range(5)]
    await inbox._apply(events[:2])
    sessions.statements.clear()
    # Two applied already, one delivered twice within the batch.
    await inbox._apply([events[1], events[2], events[0], events[3], events[2], events[4]])
    assert seen == [events[0].id, events[1].id, events[2].id, events[3].id, events[4].id]
    about_inbox = [s for s in sessions.statements if "inbox" in s.lower()]
    assert len(about_inbox) == 1 and about_inbox[0].lstrip().upper().startswith("INSERT")
    async with sessions() as session:
        stored = (await session.execute(select(inbox_table.c.event_id, inbox_table.c.type))).all()
    assert sorted(stored) == sorted((e.id, e.type) for e in events)


@pytest.mark.parametrize("make", [lambda n: [new_id() for _ in range(n)], new_ids], ids=["one_by_one", "at_once"])
def test_new_ids_are_time_ordered_uuid7_with_the_clocks_time(make: Callable[[int], list[uuid.UUID]]) -> None:
    before_ms = time.time_ns() // 1_000_000
    ids = make(20_000)  # far more than 1,000 in each millisecond
    after_ms = time.time_ns() // 1_000_000
    assert all(type(i) is uuid.UUID and i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # Their time is the clock's: never behind it, never ahead of it (ids of one millisecond count up instead).
    assert all(before_ms <= i.int >> 80 <= after_ms for i in ids)
    # Not a plain counter either: the step from one id to the next is random.
    steps = {b.int - a.int for a, b in itertools.pairwise(ids) if a.int >> 80 == b.int >> 80}
    assert len(steps) > len(ids) // 2
