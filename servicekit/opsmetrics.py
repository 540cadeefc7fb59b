"""The metrics ops watch beyond request rates, sampled in the background: consumer lag per durable, the age of the
oldest unsent outbox row, and the database pool in use.

A scrape reads gauges only: asking JetStream or the database on every scrape would make a slow dependency a slow
(and timed-out) scrape, just when the figures matter. Each round samples each part apart, so NATS being down
leaves the outbox and pool figures current (the lag keeps its last value; ``up`` and the outbox age say why).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from nats.js.errors import NotFoundError
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import QueuePool

from servicekit.bus import Bus, DurableConsumer
from servicekit.clock import Clock, as_utc
from servicekit.logging import get_logger
from servicekit.metrics import (
    CONSUMER_ACK_PENDING,
    CONSUMER_PENDING,
    DB_POOL_IN_USE,
    DB_POOL_LIMIT,
    OUTBOX_OLDEST_AGE,
)

log = get_logger(__name__)


async def sample_consumer_lag(*, bus: Bus, consumers: Sequence[DurableConsumer]) -> None:
    """Each durable's ``num_pending`` and ``num_ack_pending`` as JetStream counts them (one consumer-info
    request each). A durable not created yet, or NATS down, keeps its last figures."""
    js = bus.jetstream()
    if js is None:
        return
    for consumer in consumers:
        try:
            info = await js.consumer_info(consumer.stream, consumer.durable)
        except NotFoundError:
            continue
        CONSUMER_PENDING.labels(consumer.durable).set(info.num_pending or 0)
        CONSUMER_ACK_PENDING.labels(consumer.durable).set(info.num_ack_pending or 0)


async def oldest_unsent_age_s(*, sessionmaker: async_sessionmaker[AsyncSession], table: Table, clock: Clock) -> float:
    """Seconds since the oldest unsent outbox row was written (0 when none waits); the first row in ``seq``
    order, read through the partial index the relay uses."""
    query = select(table.c.created_at).where(table.c.published_at.is_(None)).order_by(table.c.seq).limit(1)
    async with sessionmaker() as session:
        created_at = (await session.execute(query)).scalar_one_or_none()
    if created_at is None:
        return 0.0
    return max(0.0, (clock.now() - as_utc(created_at)).total_seconds())


def sample_pool(*, engine: AsyncEngine, service: str) -> None:
    """Connections checked out of the engine's pool, and the most it hands out (SQLite: one per process)."""
    pool = engine.sync_engine.pool
    if not isinstance(pool, QueuePool):  # NullPool, StaticPool: no count to report
        return
    DB_POOL_IN_USE.labels(service).set(pool.checkedout())
    # size() alone would call a pool in overflow over-full; QueuePool keeps its overflow bound private.
    DB_POOL_LIMIT.labels(service).set(pool.size() + max(0, pool._max_overflow))


@dataclass
class OpsSampler:
    """One sampling round every ``interval_s``; ``consumers`` is read at each round (the service adds its
    consumers after the runtime is made). ``extra`` are further rounds a service adds (follow-ups: overdue per
    team), each run apart like the parts here."""

    service: str
    bus: Bus
    consumers: Sequence[DurableConsumer]
    sessionmaker: async_sessionmaker[AsyncSession]
    outbox: Table
    engine: AsyncEngine
    clock: Clock
    interval_s: float
    extra: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    # Further pools of the service, each under its own ``service`` label value (the gateway's timeline reads).
    pools: dict[str, AsyncEngine] = field(default_factory=dict)

    async def sample_outbox(self) -> None:
        age = await oldest_unsent_age_s(sessionmaker=self.sessionmaker, table=self.outbox, clock=self.clock)
        OUTBOX_OLDEST_AGE.labels(self.service).set(age)

    async def sample_lag(self) -> None:
        await sample_consumer_lag(bus=self.bus, consumers=self.consumers)

    async def sample_pool(self) -> None:
        sample_pool(engine=self.engine, service=self.service)
        for label, engine in self.pools.items():
            sample_pool(engine=engine, service=label)

    async def sample_once(self) -> None:
        # The pool first: the outbox query below checks a connection out itself.
        for part in [self.sample_pool, self.sample_outbox, self.sample_lag, *self.extra]:
            try:
                await part()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The next round tries again; a figure that cannot be read keeps its last value meanwhile.
                log.warning("metrics_sample_failed", part=getattr(part, "__name__", repr(part)), error=repr(exc))

    async def run(self) -> None:
        while True:
            await self.sample_once()
            await asyncio.sleep(self.interval_s)
