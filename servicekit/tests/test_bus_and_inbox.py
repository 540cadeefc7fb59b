"""The platform's delivery promises on a real nats-server: consumers resume after the server restarts
(nats-py #504), an event applied once however often it is delivered, poison messages dead-lettered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession

import servicekit.bus
from servicekit.bus import Bus, DurableConsumer, PermanentError, StreamSpec
from servicekit.clock import MovableClock
from servicekit.db import make_engine, make_sessionmaker
from servicekit.events import CloudEvent, make_event
from servicekit.inbox import EventInbox
from servicekit.outbox import Outbox, OutboxRelay
from servicekit.runtime import shared_tables
from servicekit.testing.apps import EventTap
from servicekit.testing.nats import NatsServer
from servicekit.testing.plugin import eventually

metadata = MetaData()
outbox_table, inbox_table = shared_tables(metadata)
applied = Table("applied", metadata, Column("n", Integer, primary_key=True, autoincrement=True),
                Column("event_id", String(64)), Column("value", String(100)))  # fmt: skip
STREAM = StreamSpec("TEST_EVENTS", ["test.events.>"])


@pytest.fixture
async def sessionmaker(empty_database_url: str) -> AsyncIterator[object]:
    engine = make_engine(empty_database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield make_sessionmaker(engine)
    await engine.dispose()


def event(n: int, value: str = "ok") -> CloudEvent:
    from datetime import UTC, datetime

    return make_event(type="test.thing.happened.v1", source="tests", subject=f"s{n}", data={"value": value, "n": n},
                      time=datetime(2026, 1, 1, tzinfo=UTC))  # fmt: skip


async def connected_bus(server: NatsServer) -> Bus:
    bus = Bus(server.url, name="kit")
    bus.add_streams(STREAM)
    await bus.start()
    await bus.wait_connected()
    return bus


async def count_applied(sessionmaker: object) -> int:
    async with sessionmaker() as session:  # type: ignore[operator]
        return int(await session.scalar(select(func.count()).select_from(applied)) or 0)


async def record(session: AsyncSession, e: CloudEvent) -> None:
    if e.data["value"] == "poison":
        raise PermanentError("this event can never be applied")
    await session.execute(applied.insert().values(event_id=e.id, value=e.data["value"]))


async def start_consumer(bus: Bus, sessionmaker: object, clock: MovableClock) -> asyncio.Task[None]:
    inbox = EventInbox(table=inbox_table, sessionmaker=sessionmaker, handlers={"test.thing.happened.v1": record},  # type: ignore[arg-type]
                       clock=clock, bus=bus, name="kit-tests", retry_delay_s=0.2)  # fmt: skip
    consumer = DurableConsumer(bus=bus, stream="TEST_EVENTS", durable="kit-tests", filter_subjects=["test.events.>"],
                               handle_batch=inbox.handle_batch, fetch_timeout_s=0.5)  # fmt: skip
    return asyncio.create_task(consumer.run())


async def publish(url: str, events: list[CloudEvent], msg_id: bool = True) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    for e in events:
        await js.publish(f"test.events.{e.subject}", e.to_json(), headers={"Nats-Msg-Id": e.id} if msg_id else None)
    await nc.close()


async def test_the_same_event_delivered_three_times_is_applied_once(
    nats_factory: Callable[[], NatsServer], sessionmaker: object, clock: MovableClock
) -> None:
    server = nats_factory()
    bus = await connected_bus(server)
    task = await start_consumer(bus, sessionmaker, clock)
    try:
        events = [event(n) for n in range(20)]
        # Without Nats-Msg-Id the stream keeps all three copies: only the inbox can stop a double apply.
        for _ in range(3):
            await publish(server.url, events, msg_id=False)
        await eventually(lambda: _stream_drained(server.url, "kit-tests"), timeout=20)
        assert await count_applied(sessionmaker) == 20
        async with sessionmaker() as session:  # type: ignore[operator]
            ids = (await session.scalars(select(applied.c.event_id))).all()
        assert sorted(ids) == sorted(e.id for e in events)
    finally:
        task.cancel()
        await bus.close()


async def _stream_drained(url: str, durable: str) -> bool:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info("TEST_EVENTS", durable)
        return info.num_pending == 0 and info.num_ack_pending == 0
    finally:
        await nc.close()


async def test_a_poison_event_is_dead_lettered_and_the_rest_go_on(
    nats_factory: Callable[[], NatsServer], sessionmaker: object, clock: MovableClock
) -> None:
    server = nats_factory()
    bus = await connected_bus(server)
    task = await start_consumer(bus, sessionmaker, clock)
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        tap = await EventTap(js, "CRM_DEADLETTER", "crm.deadletter.>", durable="dl-tap").start()
        batch = [event(1), event(2, "poison"), event(3)]
        await publish(server.url, batch)
        await js.publish("test.events.garbage", b"{not a cloud event")
        await eventually(lambda: count_applied(sessionmaker), timeout=20)
        await eventually(lambda: _stream_drained(server.url, "kit-tests"), timeout=20)
        assert await count_applied(sessionmaker) == 2
        letters = []
        for _ in range(2):
            msgs = await tap.sub.fetch(1, timeout=10)
            letters.append(json.loads(msgs[0].data))
            await msgs[0].ack()
        reasons = sorted(letter["reason"][:20] for letter in letters)
        assert reasons[0].startswith("not a CloudEvent") and reasons[1].startswith("this event can never")
        assert {letter["origin"] for letter in letters} == {"test.events.s2", "test.events.garbage"}
        await nc.close()
    finally:
        task.cancel()
        await bus.close()


@pytest.mark.parametrize("how", ["restart", "kill"])
async def test_the_consumer_resumes_after_the_server_comes_back(
    how: str, nats_factory: Callable[[], NatsServer], sessionmaker: object, clock: MovableClock
) -> None:
    server = nats_factory()
    bus = await connected_bus(server)
    task = await start_consumer(bus, sessionmaker, clock)
    try:
        await publish(server.url, [event(n) for n in range(5)])
        await eventually(lambda: _applied_at_least(sessionmaker, 5), timeout=20)
        if how == "kill":
            server.kill()
        else:
            server.stop()
        await asyncio.sleep(1.0)
        server.start()
        await publish(server.url, [event(n) for n in range(5, 15)])
        await eventually(lambda: _applied_at_least(sessionmaker, 15), timeout=30)
        assert await count_applied(sessionmaker) == 15
    finally:
        task.cancel()
        await bus.close()


async def _applied_at_least(sessionmaker: object, n: int) -> bool:
    return await count_applied(sessionmaker) >= n


async def test_the_relay_publishes_in_order_once_nats_is_back(
    nats_factory: Callable[[], NatsServer], sessionmaker: object, clock: MovableClock
) -> None:
    server = nats_factory()
    server.stop()
    bus = Bus(server.url, name="kit")
    bus.add_streams(STREAM)
    await bus.start()
    outbox = Outbox(outbox_table)
    relay = OutboxRelay(table=outbox_table, sessionmaker=sessionmaker, jetstream=bus.jetstream, clock=clock,  # type: ignore[arg-type]
                        name="kit", batch=7, poll_s=0.05)  # fmt: skip
    outbox.set_waker(relay.wake)
    relay_task = asyncio.create_task(relay.run())
    events = [event(n) for n in range(30)]
    try:
        for e in events:  # NATS is down: the writes still commit
            async with sessionmaker() as session, session.begin():  # type: ignore[operator]
                await outbox.add(session, e, subject=f"test.events.{e.subject}")
        server.start()
        await bus.wait_connected(timeout=20)
        nc = await nats.connect(server.url)
        tap = await EventTap(nc.jetstream(), "TEST_EVENTS", "test.events.>", durable="order").start()
        got = await tap.take(30, timeout=30)
        await tap.assert_no_more()
        await nc.close()
        assert [g.id for g in got] == [e.id for e in events]
    finally:
        # Stop between rounds, as Runtime.stop does: cancelling mid-query can wedge the SQLite connection.
        relay.stop()
        await asyncio.wait_for(relay_task, timeout=15)
        await bus.close()


async def test_a_row_committed_late_with_a_lower_seq_is_not_marked_sent(
    nats_factory: Callable[[], NatsServer], sessionmaker: object, clock: MovableClock
) -> None:
    """On PostgreSQL a transaction can take seq 1 and commit while the relay publishes seq 2: the relay must
    mark only what it published, or row 1 is marked sent and its event is lost."""
    server = nats_factory()
    bus = await connected_bus(server)
    late, early = event(1), event(2)

    async def insert(e: CloudEvent, seq: int) -> None:
        async with sessionmaker() as session, session.begin():  # type: ignore[operator]
            await session.execute(outbox_table.insert().values(
                seq=seq, event_id=e.id, subject=f"test.events.{e.subject}", type=e.type,
                payload=e.to_json().decode(), created_at=e.time))  # fmt: skip

    class LateCommit(OutboxRelay):
        async def _publish_in_order(self, js: Any, rows: list[Any]) -> int | None:
            acked = await super()._publish_in_order(js, rows)
            if not any(row.seq == 1 for row in rows):
                await insert(late, 1)  # commits between the relay's read and its mark
            return acked

    relay = LateCommit(table=outbox_table, sessionmaker=sessionmaker, jetstream=bus.jetstream, clock=clock,  # type: ignore[arg-type]
                       name="kit", batch=10)  # fmt: skip
    try:
        await insert(early, 2)
        assert await relay.publish_pending() == 1
        assert await relay.publish_pending() == 1  # the late row is still unsent, and goes now
        nc = await nats.connect(server.url)
        tap = await EventTap(nc.jetstream(), "TEST_EVENTS", "test.events.>", durable="late").start()
        got = await tap.take(2)
        await nc.close()
        assert sorted(e.id for e in got) == sorted([late.id, early.id])
    finally:
        await bus.close()


async def test_batches_in_flight_overlap_each_acked_once_and_stop_finishes_the_batches_in_hand(
    nats_factory: Callable[[], NatsServer],
) -> None:
    server = nats_factory()
    bus = await connected_bus(server)
    seen: list[int] = []
    running, overlapped, stop_after = 0, 0, 20

    async def slow_commit(msgs: list[Any]) -> None:
        nonlocal running, overlapped
        running += 1
        overlapped = max(overlapped, running)
        await asyncio.sleep(0.2)  # a transaction's round trips: the next batch is fetched meanwhile
        for msg in msgs:
            seen.append(json.loads(msg.data)["data"]["n"])
            await msg.ack()
        running -= 1
        if len(seen) >= stop_after:
            consumer.stop()

    def overlapping_consumer() -> DurableConsumer:
        return DurableConsumer(bus=bus, stream="TEST_EVENTS", durable="kit-overlap", filter_subjects=["test.events.>"],
                               handle_batch=slow_commit, batch=10, fetch_timeout_s=0.2, in_flight=2)  # fmt: skip

    await publish(server.url, [event(n) for n in range(60)])
    consumer = overlapping_consumer()
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(task, timeout=20)
        # Stopped between fetches: every batch it took is finished and acked, none left half-done.
        assert running == 0 and overlapped == 2
        assert 20 <= len(seen) < 60 and len(seen) == len(set(seen))
        stop_after = 10**9
        consumer = overlapping_consumer()
        task = asyncio.create_task(consumer.run())
        await eventually(lambda: _stream_drained(server.url, "kit-overlap"), timeout=20)
        assert sorted(seen) == list(range(60))
    finally:
        task.cancel()
        await bus.close()


class RecordedLog:
    """Stands in for a module's structlog logger and keeps each line's event name: capture_logs misses loggers that
    an earlier test in the same process has already bound and cached."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def _record(self, event: str, **_: Any) -> None:
        self.events.append(event)

    info = warning = error = debug = exception = _record


async def test_a_consumer_waits_quietly_for_a_stream_another_service_makes_then_consumes(
    nats_factory: Callable[[], NatsServer], sessionmaker: object, clock: MovableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway makes CRM_STAFF; contacts and follow-ups consume it and may start first. Before, they logged a
    consumer_error with a NotFoundError every few seconds until it existed."""
    logs = RecordedLog()
    monkeypatch.setattr(servicekit.bus, "log", logs)
    server = nats_factory()
    consumer_bus = Bus(server.url, name="kit")  # declares no stream: it only consumes
    await consumer_bus.start()
    await consumer_bus.wait_connected()
    task = await start_consumer(consumer_bus, sessionmaker, clock)
    await eventually(lambda: "consumer_awaiting_stream" in logs.events)
    owner = await connected_bus(server)
    await publish(server.url, [event(1)])

    async def applied_once() -> bool:
        return await count_applied(sessionmaker) == 1

    await eventually(applied_once)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await owner.close()
    await consumer_bus.close()
    assert logs.events.count("consumer_awaiting_stream") == 1
    assert "consumer_error" not in logs.events


async def test_a_durable_whose_filter_changed_takes_the_new_one_and_keeps_its_place(
    nats_factory: Callable[[], NatsServer],
) -> None:
    # interactions-contacts consumed merges and erasures; a release that keeps a copy of the identity directory
    # needs created and updated too, from the same durable (one order for every event of a contact).
    server = nats_factory()
    bus = await connected_bus(server)
    seen: list[str] = []

    async def take(msgs: list[Any]) -> None:
        for msg in msgs:
            seen.append(msg.subject)
            await msg.ack()

    def consumer(filters: list[str]) -> DurableConsumer:
        return DurableConsumer(bus=bus, stream="TEST_EVENTS", durable="kit-refilter", filter_subjects=filters,
                               handle_batch=take, fetch_timeout_s=0.2)  # fmt: skip

    nc = await nats.connect(server.url)
    js = nc.jetstream()
    try:
        await js.publish("test.events.a.1", b"{}")
        await js.publish("test.events.b.1", b"{}")
        first = consumer(["test.events.a.*"])
        task = asyncio.create_task(first.run())
        await eventually(lambda: seen == ["test.events.a.1"], timeout=20)
        first.stop()
        await asyncio.wait_for(task, timeout=20)
        await js.publish("test.events.a.2", b"{}")
        await js.publish("test.events.b.2", b"{}")
        second = consumer(["test.events.a.*", "test.events.b.*"])
        task = asyncio.create_task(second.run())
        # From its place on: b.1 came before the change and is not delivered again.
        await eventually(lambda: seen[1:] == ["test.events.a.2", "test.events.b.2"], timeout=20)
        info = await js.consumer_info("TEST_EVENTS", "kit-refilter")
        assert sorted(info.config.filter_subjects or []) == ["test.events.a.*", "test.events.b.*"]
        second.stop()
        await asyncio.wait_for(task, timeout=20)
    finally:
        await nc.close()
        await bus.close()
