"""The outbox relay sends a backlog as JetStream atomic batches (one disk sync each instead of one per event
under sync_interval: always), in order, each event once; what a server or stream refuses goes one by one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import nats
import pytest
from sqlalchemy import MetaData, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.bus import Bus, StreamSpec
from servicekit.clock import MovableClock
from servicekit.db import make_engine, make_sessionmaker
from servicekit.events import CloudEvent, make_event
from servicekit.outbox import Outbox, OutboxRelay
from servicekit.runtime import shared_tables
from servicekit.testing.apps import EventTap
from servicekit.testing.nats import NatsServer

metadata = MetaData()
outbox_table, _ = shared_tables(metadata)
STREAM = StreamSpec("RELAY_EVENTS", ["relay.events.>"])


@pytest.fixture
async def sessions(empty_database_url: str) -> AsyncIterator[Any]:
    engine = make_engine(empty_database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield make_sessionmaker(engine)
    await engine.dispose()


class CountingRelay(OutboxRelay):
    """Records how each atomic batch went: (size, True stored / False refused / None no answer)."""

    atomic: list[tuple[int, bool | None]]

    async def _publish_atomic(self, js: Any, chunk: list[Any]) -> bool | None:
        stored = await super()._publish_atomic(js, chunk)
        self.atomic.append((len(chunk), stored))
        return stored


def relay_for(bus: Bus, sessions: Any, clock: MovableClock, **options: Any) -> CountingRelay:
    relay = CountingRelay(table=outbox_table, sessionmaker=sessions, jetstream=bus.jetstream, clock=clock,
                          name="relay-tests", **options)  # fmt: skip
    relay.atomic = []
    return relay


async def write(sessions: async_sessionmaker[AsyncSession], count: int, start: int = 0) -> list[CloudEvent]:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        make_event(type="test.thing.happened.v1", source="tests", subject=f"s{n}", data={"n": n}, time=at)
        for n in range(start, start + count)
    ]
    async with sessions() as session, session.begin():
        await Outbox(outbox_table).add_many(session, [(e, f"relay.events.{e.subject}") for e in events])
    return events


async def drain(relay: OutboxRelay) -> list[int]:
    rounds = []
    while published := await relay.publish_pending():
        rounds.append(published)
    return rounds


async def unsent(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        query = select(func.count()).select_from(outbox_table).where(outbox_table.c.published_at.is_(None))
        return int(await session.scalar(query) or 0)


async def in_stream(url: str, stream: str, count: int) -> list[str]:
    """The ids of the stream's events, in stream order; fails unless there are exactly ``count``."""
    nc = await nats.connect(url)
    try:
        tap = await EventTap(nc.jetstream(), stream, "relay.events.>", durable="tap").start()
        got = await tap.take(count)
        await tap.assert_no_more(wait=0.5)
        return [e.id for e in got]
    finally:
        await nc.close()


@pytest.fixture
async def bus(nats_factory: Callable[[], NatsServer]) -> AsyncIterator[Bus]:
    bus = Bus(nats_factory().url, name="relay-tests")
    bus.add_streams(STREAM)
    await bus.start()
    await bus.wait_connected()
    yield bus
    await bus.close()


async def test_a_backlog_goes_out_as_atomic_batches_in_order_each_once(
    bus: Bus, sessions: Any, clock: MovableClock
) -> None:
    events = await write(sessions, 1234)
    relay = relay_for(bus, sessions, clock, batch=600, atomic_max=500)
    assert await drain(relay) == [600, 600, 34]
    assert relay.atomic == [(500, True), (100, True), (500, True), (100, True), (34, True)]
    assert await unsent(sessions) == 0
    assert await in_stream(bus.url, "RELAY_EVENTS", 1234) == [e.id for e in events]


async def test_a_round_of_the_default_size_is_one_atomic_batch_the_server_takes_whole(
    bus: Bus, sessions: Any, clock: MovableClock
) -> None:
    """The defaults (1,000 a round, batches of up to ATOMIC_LIMIT) send a full round as one batch, one commit
    answer a round: a server that took fewer would refuse it and the round would go one by one."""
    events = await write(sessions, 1000)
    relay = relay_for(bus, sessions, clock, batch=1000)
    assert await drain(relay) == [1000]
    assert relay.atomic == [(1000, True)]
    assert await in_stream(bus.url, "RELAY_EVENTS", 1000) == [e.id for e in events]


# PostgreSQL only: SQLite has one writer, and its relays take no lock.
@pytest.mark.parametrize("db_backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
async def test_a_relay_sends_nothing_while_another_holds_the_databases_relay_lock(
    bus: Bus, sessions: Any, clock: MovableClock
) -> None:
    """Two replicas on one PostgreSQL database: the relay whose round finds the lock taken reads and sends no row
    (the lock is taken by the query that reads the rows, in the round's transaction)."""
    events = await write(sessions, 20)
    relay = relay_for(bus, sessions, clock)
    async with sessions() as other, other.begin():
        assert await other.scalar(select(text(f"pg_try_advisory_xact_lock({relay._lock_key})")))
        assert await relay.publish_pending() == 0
        assert await unsent(sessions) == 20
    assert await drain(relay) == [20]
    async with sessions() as other, other.begin():  # the round's transaction released the lock
        assert await other.scalar(select(text(f"pg_try_advisory_xact_lock({relay._lock_key})")))
    assert await in_stream(bus.url, "RELAY_EVENTS", 20) == [e.id for e in events]


async def test_a_few_rows_go_one_by_one(bus: Bus, sessions: Any, clock: MovableClock) -> None:
    events = await write(sessions, 5)
    relay = relay_for(bus, sessions, clock, atomic_min=16)
    assert await drain(relay) == [5]
    assert relay.atomic == []
    assert await in_stream(bus.url, "RELAY_EVENTS", 5) == [e.id for e in events]


async def test_events_sent_before_are_refused_as_a_batch_and_resent_one_by_one_without_duplicates(
    bus: Bus, sessions: Any, clock: MovableClock
) -> None:
    """As after a lost acknowledgement: rows already in the stream are still unsent in the outbox."""
    first = await write(sessions, 40)
    relay = relay_for(bus, sessions, clock)
    assert await drain(relay) == [40]
    async with sessions() as session, session.begin():
        await session.execute(update(outbox_table).values(published_at=None))
    more = await write(sessions, 20, start=40)
    assert await drain(relay) == [60]
    assert relay.atomic == [(40, True), (60, False)]
    assert await unsent(sessions) == 0
    assert await in_stream(bus.url, "RELAY_EVENTS", 60) == [e.id for e in first + more]
    # The refusal was about those events, not about the stream: the next backlog is a batch again.
    await write(sessions, 30, start=60)
    assert await drain(relay) == [30] and relay.atomic[-1] == (30, True)


async def test_a_stream_without_atomic_batches_gets_the_events_one_by_one(
    nats_factory: Callable[[], NatsServer], sessions: Any, clock: MovableClock
) -> None:
    server = nats_factory()
    nc = await nats.connect(server.url)
    await nc.jetstream().add_stream(name="RELAY_EVENTS", subjects=["relay.events.>"])  # as made elsewhere
    await nc.close()
    bus = Bus(server.url, name="relay-tests")  # ensures only its own dead-letter stream
    await bus.start()
    await bus.wait_connected()
    try:
        events = await write(sessions, 40)
        relay = relay_for(bus, sessions, clock)
        assert await drain(relay) == [40]
        more = await write(sessions, 40, start=40)
        assert await drain(relay) == [40]
        assert relay.atomic == [(40, False)]  # refused once; then not tried again for a while
        assert await in_stream(server.url, "RELAY_EVENTS", 80) == [e.id for e in events + more]
    finally:
        await bus.close()


async def test_after_a_batch_commit_without_an_answer_the_next_rounds_go_one_by_one(
    nats_factory: Callable[[], NatsServer], sessions: Any, clock: MovableClock
) -> None:
    """In the fault suite, after a nats-server SIGKILL, the contacts and interactions relays sent the same
    atomic batch every round for minutes, its commit never answered, until their processes restarted. Here
    the commit gets no answer (no stream holds the subject yet: no responders); once a stream does, the
    next round sends the rows one by one instead of trying the batch again."""
    server = nats_factory()
    bus = Bus(server.url, name="relay-tests")  # no stream for relay.events yet
    await bus.start()
    await bus.wait_connected()
    streams = Bus(server.url, name="relay-streams")
    try:
        events = await write(sessions, 40)
        relay = relay_for(bus, sessions, clock)
        with pytest.raises(ConnectionError):  # nothing acknowledged: the relay's loop backs off and retries
            await relay.publish_pending()
        assert relay.atomic == [(40, None)]
        streams.add_streams(STREAM)
        await streams.start()
        await streams.wait_connected()
        assert await drain(relay) == [40]
        assert relay.atomic == [(40, None)], "the unanswered batch was tried again"
        assert await unsent(sessions) == 0
        assert await in_stream(bus.url, "RELAY_EVENTS", 40) == [e.id for e in events]
    finally:
        await streams.close()
        await bus.close()
