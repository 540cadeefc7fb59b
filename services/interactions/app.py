"""The interactions service: FastAPI factory and lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from servicekit.bus import DurableConsumer
from servicekit.catalogue.contacts import CONTACTS_STREAM
from servicekit.clock import Clock
from servicekit.heap import settled_heap
from servicekit.http import build_app
from servicekit.inbox import EventInbox
from servicekit.logging import configure_logging, get_logger
from servicekit.outbox import Outbox
from servicekit.runtime import Runtime
from services.interactions import events
from services.interactions.api import router
from services.interactions.consumers import NatsIngest, contact_handlers, forget_dead_contacts
from services.interactions.deps import InteractionsState
from services.interactions.directory import ContactDirectory
from services.interactions.flows import Ingestion
from services.interactions.idempotency import IdempotencyKeys
from services.interactions.identities import IdentityCopy
from services.interactions.models import inbox_table, outbox_table
from services.interactions.service import TouchpointService
from services.interactions.settings import InteractionsSettings

NAME = "interactions"
PURGE_EVERY_S = 60.0
# NATS ingest batches in hand at once: the next one is fetched, parsed and scored while the last one commits.
INGEST_IN_FLIGHT = 2
log = get_logger(__name__)


def create_app(settings: InteractionsSettings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or InteractionsSettings()

    # Before uvicorn serves (it calls this factory first): its own start-up lines are JSON too.
    configure_logging(service=NAME, level=settings.log_level, json=settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime.create(
            name=NAME,
            settings=settings,
            outbox=Outbox(outbox_table),
            streams=[events.STREAM, events.INGEST_STREAM],
            clock=clock,
        )
        identities = IdentityCopy(key=settings.identity_key.get_secret_value().encode())
        touchpoints = TouchpointService(clock=runtime.clock, outbox=runtime.outbox, identities=identities)
        directory = ContactDirectory(
            base_url=settings.contacts_url,
            timeout_s=settings.contacts_timeout_s,
            concurrency=settings.contacts_concurrency,
            cache_size=settings.contact_cache_size,
            retry_after_s=settings.retry_after_s,
        )
        keys = IdempotencyKeys(
            sessionmaker=runtime.sessionmaker,
            clock=runtime.clock,
            ttl_s=settings.idempotency_ttl_s,
            in_flight_s=settings.idempotency_in_flight_s,
        )
        ingestion = Ingestion(
            sessionmaker=runtime.sessionmaker, touchpoints=touchpoints, directory=directory, keys=keys
        )
        inbox = EventInbox(
            table=inbox_table,
            sessionmaker=runtime.sessionmaker,
            handlers=contact_handlers(touchpoints),
            clock=runtime.clock,
            bus=runtime.bus,
            name=events.CONTACTS_DURABLE,
            after_commit=forget_dead_contacts(directory.forget),  # type: ignore[arg-type]
        )
        ingest = NatsIngest(ingestion=ingestion, bus=runtime.bus, retry_max_s=settings.ingest_retry_max_s)
        runtime.purge_erased(events.STREAM, "interactions")
        runtime.consumers += [
            DurableConsumer(
                bus=runtime.bus,
                stream=CONTACTS_STREAM,
                durable=events.CONTACTS_DURABLE,
                filter_subjects=events.CONTACTS_SUBJECTS,
                handle_batch=inbox.handle_batch,
            ),
            DurableConsumer(
                bus=runtime.bus,
                stream=events.INGEST_STREAM.name,
                durable=events.INGEST_DURABLE,
                filter_subjects=[events.INGEST_SUBJECT],
                handle_batch=ingest.handle_batch,
                batch=settings.ingest_batch,
                in_flight=INGEST_IN_FLIGHT,
            ),
        ]

        async def purge_idempotency_keys() -> None:
            while True:
                await asyncio.sleep(PURGE_EVERY_S)
                try:
                    await keys.purge_expired()
                except Exception as exc:
                    log.warning("idempotency_purge_failed", error=repr(exc))

        runtime.background.append(purge_idempotency_keys)
        app.state.interactions = InteractionsState(touchpoints=touchpoints, ingestion=ingestion)
        app.state.runtime = runtime
        await runtime.start()
        try:
            with settled_heap():
                yield
        finally:
            await runtime.stop()
            await directory.close()
            await keys.close()

    app = build_app(
        service=NAME,
        title="Touchpoint interactions",
        description="Every touchpoint on every channel: logged over HTTP or NATS, stored once, linked to its "
        "contact, announced on the bus; threads, timelines and service-quality figures.",
        lifespan=lifespan,
        max_body_bytes=settings.max_body_bytes,
    )
    app.include_router(router)
    return app
