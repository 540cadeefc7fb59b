"""The sampled metrics on real components: consumer lag from a real nats-server's consumer info, the oldest unsent
outbox row's age by the injected clock, and the pool in use, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from nats.aio.msg import Msg
from prometheus_client import REGISTRY
from sqlalchemy import MetaData, update
from sqlalchemy.ext.asyncio import AsyncEngine

from servicekit.bus import Bus, DurableConsumer, StreamSpec
from servicekit.clock import MovableClock
from servicekit.db import make_engine, make_sessionmaker
from servicekit.events import make_event
from servicekit.opsmetrics import OpsSampler
from servicekit.outbox import Outbox
from servicekit.runtime import shared_tables
from servicekit.testing.nats import NatsServer
from servicekit.testing.plugin import eventually

metadata = MetaData()
outbox_table, _ = shared_tables(metadata)
STREAM = StreamSpec("LAG_EVENTS", ["lag.events.>"])


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


@pytest.fixture
async def engine(empty_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(empty_database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


def offline_bus() -> Bus:
    """A bus never started: the figures that do not come from NATS."""
    return Bus("nats://127.0.0.1:1", name="offline")


@pytest.fixture
async def bus(nats_factory: Callable[[], NatsServer]) -> AsyncIterator[Bus]:
    bus = Bus(nats_factory().url, name="lag-tests")
    bus.add_streams(STREAM)
    await bus.start()
    await bus.wait_connected()
    yield bus
    await bus.close()


def sampler_for(engine: AsyncEngine, clock: MovableClock, bus: Bus, consumers: list[DurableConsumer]) -> OpsSampler:
    service = f"svc-{uuid.uuid4().hex[:8]}"  # a series of this test alone in the process-wide registry
    return OpsSampler(service=service, bus=bus, consumers=consumers, sessionmaker=make_sessionmaker(engine),
                      outbox=outbox_table, engine=engine, clock=clock, interval_s=0.05)  # fmt: skip


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
async def test_consumer_lag_counts_what_waits_then_what_is_unacked_then_nothing(
    bus: Bus, engine: AsyncEngine, clock: MovableClock
) -> None:
    durable = f"lag-{uuid.uuid4().hex[:8]}"
    held: list[Msg] = []
    release = asyncio.Event()

    async def hold_then_ack(msgs: list[Msg]) -> None:
        held.extend(msgs)
        await release.wait()
        for msg in msgs:
            await msg.ack_sync()

    consumer = DurableConsumer(bus=bus, stream=STREAM.name, durable=durable, filter_subjects=STREAM.subjects,
                               handle_batch=hold_then_ack, batch=100, fetch_timeout_s=0.1)  # fmt: skip
    sampler = sampler_for(engine, clock, bus, [consumer])
    await consumer._subscribe()  # the durable exists, nothing is fetched yet
    for n in range(7):
        await bus.publish(f"lag.events.{n}", b"{}", msg_id=f"lag-{durable}-{n}")

    await sampler.sample_once()
    assert value("consumer_pending_messages", durable=durable) == 7
    assert value("consumer_ack_pending_messages", durable=durable) == 0

    running = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: len(held) == 7)
        await sampler.sample_once()
        assert value("consumer_pending_messages", durable=durable) == 0
        assert value("consumer_ack_pending_messages", durable=durable) == 7

        release.set()

        async def caught_up() -> bool:
            await sampler.sample_once()
            return value("consumer_ack_pending_messages", durable=durable) == 0

        await eventually(caught_up)
        assert value("consumer_pending_messages", durable=durable) == 0
    finally:
        consumer.stop()
        await asyncio.wait_for(running, 5)


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
async def test_a_durable_not_created_yet_or_nats_gone_keeps_the_other_figures_current(
    nats_factory: Callable[[], NatsServer], engine: AsyncEngine, clock: MovableClock
) -> None:
    server = nats_factory()
    bus = Bus(server.url, name="lag-tests")
    bus.add_streams(STREAM)
    await bus.start()
    await bus.wait_connected()
    durable = f"absent-{uuid.uuid4().hex[:8]}"
    consumer = DurableConsumer(bus=bus, stream=STREAM.name, durable=durable, filter_subjects=STREAM.subjects,
                               handle_batch=lambda msgs: asyncio.sleep(0))  # fmt: skip
    sampler = sampler_for(engine, clock, bus, [consumer])
    try:
        await sampler.sample_once()
        assert value("consumer_pending_messages", durable=durable) is None
        server.stop()
        await eventually(lambda: not bus.connected)
        await write_event(engine, clock)
        clock.advance(seconds=30)
        await sampler.sample_once()
        assert value("outbox_oldest_unsent_age_seconds", service=sampler.service) == 30
    finally:
        await bus.close()


async def write_event(engine: AsyncEngine, clock: MovableClock) -> str:
    event = make_event(type="test.thing.happened.v1", source="tests", subject="s", data={}, time=clock.now())
    async with make_sessionmaker(engine)() as session, session.begin():
        await Outbox(outbox_table).add(session, event, subject="lag.events.s")
    return event.id


async def test_outbox_age_is_the_oldest_unsent_row_by_the_injected_clock(
    engine: AsyncEngine, clock: MovableClock
) -> None:
    sampler = sampler_for(engine, clock, offline_bus(), [])
    await sampler.sample_once()
    assert value("outbox_oldest_unsent_age_seconds", service=sampler.service) == 0

    first = await write_event(engine, clock)
    clock.advance(seconds=45)
    await write_event(engine, clock)
    clock.advance(seconds=45)
    await sampler.sample_once()
    assert value("outbox_oldest_unsent_age_seconds", service=sampler.service) == 90

    # The oldest one is sent: the age is the next one's.
    async with make_sessionmaker(engine)() as session, session.begin():
        await session.execute(
            update(outbox_table).where(outbox_table.c.event_id == first).values(published_at=clock.now())
        )
    await sampler.sample_once()
    assert value("outbox_oldest_unsent_age_seconds", service=sampler.service) == 45

    async with make_sessionmaker(engine)() as session, session.begin():
        await session.execute(update(outbox_table).values(published_at=clock.now()))
    await sampler.sample_once()
    assert value("outbox_oldest_unsent_age_seconds", service=sampler.service) == 0


async def test_pool_in_use_counts_checked_out_connections(
    engine: AsyncEngine, clock: MovableClock, db_backend: str
) -> None:
    sampler = sampler_for(engine, clock, offline_bus(), [])
    await sampler.sample_once()
    assert value("db_pool_connections_in_use", service=sampler.service) == 0
    # make_engine: one connection per process on SQLite; pool_size plus as many in overflow on PostgreSQL.
    assert value("db_pool_connections_limit", service=sampler.service) == (1 if db_backend == "sqlite" else 20)

    async with engine.connect():
        await sampler.sample_pool()
        assert value("db_pool_connections_in_use", service=sampler.service) == 1
        if db_backend == "postgres":
            async with engine.connect():
                await sampler.sample_pool()
                assert value("db_pool_connections_in_use", service=sampler.service) == 2
    await sampler.sample_pool()
    assert value("db_pool_connections_in_use", service=sampler.service) == 0


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
async def test_the_sampler_runs_its_rounds_in_the_background(engine: AsyncEngine, clock: MovableClock) -> None:
    sampler = sampler_for(engine, clock, offline_bus(), [])
    await write_event(engine, clock)
    clock.advance(seconds=61)
    job = asyncio.create_task(sampler.run())
    try:
        await eventually(lambda: value("outbox_oldest_unsent_age_seconds", service=sampler.service) == 61)
        clock.advance(seconds=1)
        await eventually(lambda: value("outbox_oldest_unsent_age_seconds", service=sampler.service) == 62)
    finally:
        job.cancel()


@pytest.mark.parametrize("db_backend", ["postgres"], indirect=True)
async def test_a_further_pool_is_counted_under_its_own_label(
    empty_database_url: str, engine: AsyncEngine, clock: MovableClock
) -> None:
    """The gateway's timeline reads have a pool of their own (PostgreSQL): it is sampled beside the main one."""
    sampler = sampler_for(engine, clock, offline_bus(), [])
    reads = make_engine(empty_database_url, read_only=True)
    label = f"{sampler.service}-reads"
    sampler.pools[label] = reads
    try:
        async with reads.connect():
            await sampler.sample_pool()
            assert value("db_pool_connections_in_use", service=label) == 1
            assert value("db_pool_connections_in_use", service=sampler.service) == 0
        await sampler.sample_pool()
        assert value("db_pool_connections_in_use", service=label) == 0
    finally:
        await reads.dispose()
