"""The follow-ups service: FastAPI factory and lifespan."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy.exc import IntegrityError

from servicekit.bus import DurableConsumer
from servicekit.catalogue.contacts import CONTACTS_STREAM
from servicekit.catalogue.interactions import INTERACTIONS_STREAM
from servicekit.catalogue.staff import STAFF_STREAM
from servicekit.clock import Clock
from servicekit.heap import settled_heap
from servicekit.http import build_app
from servicekit.inbox import EventInbox
from servicekit.logging import configure_logging, get_logger
from servicekit.outbox import Outbox
from servicekit.runtime import Runtime
from services.followups import events, staff
from services.followups.api import router
from services.followups.deps import FollowupsState
from services.followups.directory import ContactDirectory
from services.followups.models import inbox_table, outbox_table
from services.followups.overdue import OverdueSampler
from services.followups.policybook import PolicyBook
from services.followups.scheduler import Scheduler
from services.followups.service import FollowupService
from services.followups.settings import FollowupsSettings
from services.followups.touches import TouchBatches

NAME = "followups"
log = get_logger(__name__)


def create_app(
    settings: FollowupsSettings | None = None,
    clock: Clock | None = None,
    contacts_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """``contacts_transport`` reaches the contacts service some other way than its URL (tests run it in-process)."""
    settings = settings or FollowupsSettings()

    # Before uvicorn serves (it calls this factory first): its own start-up lines are JSON too.
    configure_logging(service=NAME, level=settings.log_level, json=settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime.create(
            name=NAME, settings=settings, outbox=Outbox(outbox_table), streams=[events.STREAM], clock=clock
        )
        overdue = OverdueSampler(sessionmaker=runtime.sessionmaker, clock=runtime.clock, cap=settings.overdue_teams_max)
        runtime.sampler.extra.append(overdue.sample_overdue)
        replica = settings.replica or f"{socket.gethostname()}:{os.getpid()}"
        policies = PolicyBook(clock=runtime.clock, cache_s=settings.policy_cache_s)
        directory = ContactDirectory(
            base_url=settings.contacts_url, timeout_s=settings.contacts_timeout_s,
            concurrency=settings.contacts_concurrency, transport=contacts_transport,
        )  # fmt: skip
        followups = FollowupService(
            clock=runtime.clock, outbox=runtime.outbox, policies=policies, directory=directory,
            default_timezone=settings.default_timezone,
        )  # fmt: skip
        scheduler = Scheduler(
            sessionmaker=runtime.sessionmaker, followups=followups, clock=runtime.clock, replica=replica,
            batch=settings.scheduler_batch, interval_s=settings.scheduler_interval_s,
            lease_s=settings.quiet_sweep_lease_s, sweep_interval_s=settings.quiet_sweep_interval_s,
            touch_retention_days=settings.touch_retention_days,
        )  # fmt: skip
        try:
            async with runtime.sessionmaker() as session, session.begin():
                await policies.load_shipped(session)
        except IntegrityError:
            log.info("policies_loaded_by_another_replica")

        shared: dict[str, Any] = {"table": inbox_table, "sessionmaker": runtime.sessionmaker,
                                  "clock": runtime.clock, "bus": runtime.bus}  # fmt: skip
        touchpoints = events.TouchpointConsumer(
            inbox=EventInbox(
                name=events.INTERACTIONS_DURABLE, handlers=events.interaction_handlers(followups),
                batches=TouchBatches(outbox=runtime.outbox), **shared,
            ),
            sessionmaker=runtime.sessionmaker, followups=followups, directory=directory,
        )  # fmt: skip
        contacts = EventInbox(name=events.CONTACTS_DURABLE, handlers=events.contact_handlers(followups), **shared)
        staff_changes = EventInbox(name=staff.STAFF_DURABLE, handlers=staff.staff_handlers(followups), **shared)
        runtime.purge_erased(events.STREAM, "followups")
        runtime.consumers += [
            DurableConsumer(
                bus=runtime.bus, stream=CONTACTS_STREAM, durable=events.CONTACTS_DURABLE,
                filter_subjects=events.CONTACTS_SUBJECTS,
                handle_batch=contacts.handle_batch,
                fetch_timeout_s=settings.consumer_wait_s, batch=settings.consumer_batch,
            ),
            DurableConsumer(
                bus=runtime.bus, stream=STAFF_STREAM, durable=staff.STAFF_DURABLE,
                filter_subjects=staff.STAFF_SUBJECTS,
                handle_batch=staff_changes.handle_batch,
                fetch_timeout_s=settings.consumer_wait_s, batch=settings.consumer_batch,
            ),
            DurableConsumer(
                bus=runtime.bus, stream=INTERACTIONS_STREAM, durable=events.INTERACTIONS_DURABLE,
                filter_subjects=events.INTERACTIONS_SUBJECTS, handle_batch=touchpoints.handle_batch,
                fetch_timeout_s=settings.consumer_wait_s, batch=settings.consumer_batch,
            ),
        ]  # fmt: skip
        if settings.scheduler_enabled:
            runtime.background += [scheduler.run, scheduler.run_sweeps]
        app.state.followups = FollowupsState(followups=followups, policies=policies, scheduler=scheduler)
        app.state.runtime = runtime
        await runtime.start()
        try:
            with settled_heap():
                yield
        finally:
            await runtime.stop()
            await directory.close()

    app = build_app(
        service=NAME,
        title="Touchpoint follow-ups",
        description="Follow-ups made from policies after each touchpoint (2+2+2 after a purchase, complaint "
        "call-backs, low-score recovery, reply SLAs, premium check-ins): due on time, on a channel the customer "
        "accepts, escalated when missed, closed by the next outbound touchpoint.",
        lifespan=lifespan,
        max_body_bytes=settings.max_body_bytes,
    )
    app.include_router(router)
    return app
