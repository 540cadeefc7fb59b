"""What a running service holds: settings, clock, database, bus, outbox relay and consumers.

Built in the lifespan and reached from routes through ``request.app.state.runtime``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from servicekit.bus import Bus, DurableConsumer, StreamSpec
from servicekit.clock import Clock, SystemClock
from servicekit.db import make_engine, make_sessionmaker
from servicekit.http import database_ready
from servicekit.metrics import MetricsListener, in_worker_process, start_metrics_listener
from servicekit.opsmetrics import OpsSampler
from servicekit.outbox import Outbox, OutboxRelay
from servicekit.purge import PURGE_STREAM, BusPurger
from servicekit.settings import ServiceSettings


@dataclass
class Runtime:
    name: str
    settings: ServiceSettings
    clock: Clock
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    bus: Bus
    outbox: Outbox
    relay: OutboxRelay
    # Consumer lag, outbox age and pool in use (servicekit.opsmetrics); a service adds its own rounds to ``extra``.
    sampler: OpsSampler
    consumers: list[DurableConsumer] = field(default_factory=list)
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    extra_checks: dict[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)
    # What reading routes use (servicekit.deps), made on their first request.
    read_engine: AsyncEngine | None = None
    read_sessionmaker: async_sessionmaker[AsyncSession] | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _jobs: list[asyncio.Task[None]] = field(default_factory=list)
    metrics_listener: MetricsListener | None = None

    @classmethod
    def create(
        cls,
        *,
        name: str,
        settings: ServiceSettings,
        outbox: Outbox,
        streams: list[StreamSpec],
        clock: Clock | None = None,
    ) -> Runtime:
        clock = clock or SystemClock()
        engine = make_engine(settings.database_url, pool_size=settings.db_pool_size, pooler=settings.db_pooler)
        sessionmaker = make_sessionmaker(engine)
        bus = Bus(
            settings.nats_url,
            name=name,
            stream_replicas=settings.stream_replicas,
            duplicate_window_s=settings.duplicate_window_s,
            user=settings.nats_user,
            password=settings.nats_password.get_secret_value() if settings.nats_password else None,
            tls_ca_file=settings.nats_tls_ca_file,
        )
        bus.add_streams(*streams)
        relay = OutboxRelay(
            table=outbox.table,
            sessionmaker=sessionmaker,
            jetstream=bus.jetstream,
            clock=clock,
            name=name,
            batch=settings.outbox_batch,
            poll_s=settings.outbox_poll_s,
            retention_s=settings.outbox_retention_s,
        )
        outbox.set_waker(relay.wake)
        consumers: list[DurableConsumer] = []
        sampler = OpsSampler(
            service=name,
            bus=bus,
            consumers=consumers,
            sessionmaker=sessionmaker,
            outbox=outbox.table,
            engine=engine,
            clock=clock,
            interval_s=settings.metrics_sample_s,
        )
        return cls(
            name=name,
            settings=settings,
            clock=clock,
            engine=engine,
            sessionmaker=sessionmaker,
            bus=bus,
            outbox=outbox,
            relay=relay,
            sampler=sampler,
            consumers=consumers,
            background=[sampler.run],
        )

    def purge_erased(self, stream: StreamSpec, root: str, also: tuple[tuple[str, str], ...] = ()) -> None:
        """Erased contacts' messages leave ``stream`` (which this service owns) once every consumer has them: this
        service's purge requests are consumed here (``servicekit.purge``)."""
        self.bus.add_streams(PURGE_STREAM)
        purger = BusPurger(
            bus=self.bus,
            stream=stream.name,
            root=root,
            sessionmaker=self.sessionmaker,
            outbox=self.outbox.table,
            also=also,
        )
        self.consumers.append(purger.consumer())

    def readiness_checks(self) -> dict[str, Callable[[], Awaitable[bool]]]:
        async def nats_ready() -> bool:
            return self.bus.connected

        return {"database": lambda: database_ready(self), "nats": nats_ready, **self.extra_checks}

    async def start(self) -> None:
        port = self.settings.metrics_port
        # A worker of servicekit.serve writes its metrics to files that its supervisor serves on this port.
        if port is not None and not in_worker_process():
            self.metrics_listener = start_metrics_listener(host=self.settings.metrics_host, port=port)
        await self.bus.start()
        self._tasks.append(asyncio.create_task(self.relay.run(), name=f"{self.name}-relay"))
        for consumer in self.consumers:
            self._tasks.append(asyncio.create_task(consumer.run(), name=f"{self.name}-{consumer.durable}"))
        for job in self.background:
            self._jobs.append(asyncio.create_task(job(), name=f"{self.name}-job"))

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop loops between rounds, then close NATS and the database; never hangs past the grace."""
        self.relay.stop()
        for consumer in self.consumers:
            consumer.stop()
        # Background jobs (schedulers, sweeps) have no stop signal of their own: they are cancelled.
        for job in self._jobs:
            job.cancel()
        tasks = [*self._tasks, *self._jobs]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace_s)
        self._tasks.clear()
        self._jobs.clear()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.bus.close(), timeout=grace_s + 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.engine.dispose(), timeout=grace_s)
        if self.metrics_listener is not None:
            await asyncio.to_thread(self.metrics_listener.close)
            self.metrics_listener = None


def shared_tables(metadata: MetaData) -> tuple[Any, Any]:
    """The outbox and inbox tables on a service's own metadata."""
    from servicekit.inbox import inbox_table
    from servicekit.outbox import outbox_table

    return outbox_table(metadata), inbox_table(metadata)
