"""The contacts service: FastAPI factory and lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from servicekit.bus import DEADLETTER_STREAM, DurableConsumer
from servicekit.catalogue.staff import STAFF_STREAM
from servicekit.clock import Clock
from servicekit.heap import settled_heap
from servicekit.http import build_app
from servicekit.inbox import EventInbox
from servicekit.logging import configure_logging
from servicekit.outbox import Outbox
from servicekit.runtime import Runtime
from services.contacts import csv_api, events, staff
from services.contacts.api import router
from services.contacts.deps import ContactsState
from services.contacts.models import inbox_table, outbox_table
from services.contacts.service import ContactService
from services.contacts.settings import ContactsSettings

NAME = "contacts"


def create_app(settings: ContactsSettings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or ContactsSettings()

    # Before uvicorn serves (it calls this factory first): its own start-up lines are JSON too.
    configure_logging(service=NAME, level=settings.log_level, json=settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime.create(
            name=NAME, settings=settings, outbox=Outbox(outbox_table), streams=[events.STREAM], clock=clock
        )
        # The contact's dead letters (parked by any service's inbox, on crm.deadletter.<consumer>.<contact>) too.
        runtime.purge_erased(events.STREAM, "contacts", also=((DEADLETTER_STREAM, "crm.deadletter.*.{contact}"),))
        app.state.contacts = ContactsState(
            contacts=ContactService(
                clock=runtime.clock,
                outbox=runtime.outbox,
                default_region=settings.default_region,
                search_similarity=settings.search_similarity,
            )
        )
        # A copy of the staff handles, for the owners a CSV import names (the gateway owns staff).
        staff_changes = EventInbox(
            name=staff.STAFF_DURABLE, handlers=staff.staff_handlers(), table=inbox_table,
            sessionmaker=runtime.sessionmaker, clock=runtime.clock, bus=runtime.bus,
        )  # fmt: skip
        runtime.consumers.append(
            DurableConsumer(
                bus=runtime.bus,
                stream=STAFF_STREAM,
                durable=staff.STAFF_DURABLE,
                filter_subjects=staff.STAFF_SUBJECTS,
                handle_batch=staff_changes.handle_batch,
            )
        )
        app.state.runtime = runtime
        await runtime.start()
        try:
            with settled_heap():
                yield
        finally:
            await runtime.stop()

    app = build_app(
        service=NAME,
        title="Touchpoint contacts",
        description="Customers, their identities per channel, consent, merge and GDPR erase.",
        lifespan=lifespan,
        max_body_bytes=settings.max_body_bytes,
        body_limits={csv_api.IMPORT_PATH: settings.import_max_bytes},
    )
    app.include_router(csv_api.router)
    app.include_router(router)
    return app
