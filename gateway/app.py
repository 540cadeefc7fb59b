"""The gateway: FastAPI factory and lifespan. The only door staff and automated systems need."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial

import httpx
from fastapi import FastAPI, Request, Response
from nats.js.api import DeliverPolicy

from gateway import events, examples, staff, webhooks
from gateway.api import PASSED_ON_BODIES, router, spreadsheets
from gateway.api.common import document_passed_on_bodies
from gateway.api.timeline import document_timeline_limit
from gateway.auth import Authenticator, PasswordHashing, RateLimiter
from gateway.console import router as console_router
from gateway.contract import publish_service_contract
from gateway.deps import Services
from gateway.live import LiveFeed, announce, announce_contacts
from gateway.models import inbox_table, outbox_table
from gateway.projection import WriteThrough
from gateway.settings import GatewaySettings
from gateway.timeline import Timeline
from gateway.upstream import ServiceClient, UpstreamAnswer, relay
from servicekit.bus import DurableConsumer
from servicekit.clock import Clock
from servicekit.db import make_engine, make_sessionmaker
from servicekit.heap import settled_heap
from servicekit.http import RequestContextMiddleware, document_problems, health_router
from servicekit.inbox import EventInbox
from servicekit.logging import configure_logging, get_logger
from servicekit.openapi import document_examples, operation_id, package_version
from servicekit.outbox import Outbox
from servicekit.problems import install_problem_handlers
from servicekit.runtime import Runtime
from servicekit.tracing import setup_tracing

NAME = "gateway"
log = get_logger(__name__)
SERVICE_NAMES = ("contacts", "interactions", "followups")


def create_app(
    settings: GatewaySettings | None = None,
    clock: Clock | None = None,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
) -> FastAPI:
    """The gateway app. ``transports`` (tests only) replaces the network to a service, by name."""
    settings = settings or GatewaySettings()
    transports = transports or {}

    # Before uvicorn serves (it calls this factory first): its own start-up lines are JSON too.
    configure_logging(service=NAME, level=settings.log_level, json=settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The gateway publishes staff changes (gateway.staff) through its outbox.
        runtime = Runtime.create(
            name=NAME, settings=settings, outbox=Outbox(outbox_table), streams=[staff.STREAM], clock=clock
        )
        clients = {
            name: ServiceClient(
                name,
                getattr(settings, f"{name}_url"),
                timeout_s=settings.upstream_timeout_s,
                connect_timeout_s=settings.upstream_connect_timeout_s,
                read_retries=settings.upstream_read_retries,
                pool_size=settings.upstream_pool_size,
                keepalive_s=settings.upstream_keepalive_s,
                transport=transports.get(name),
            )
            for name in SERVICE_NAMES
        }
        services = Services(**clients)
        # The timeline only reads the projections. On PostgreSQL it reads in autocommit: one query needs no
        # transaction, and BEGIN and ROLLBACK cost more round trips than the query. (SQLite keeps transactions:
        # servicekit's begin hook is what takes its lock.)
        reader, reading_engine = runtime.sessionmaker, runtime.engine
        if runtime.engine.dialect.name == "postgresql":
            reading_engine = make_engine(
                settings.database_url, pool_size=settings.db_pool_size, read_only=True, pooler=settings.db_pooler
            )
            reader = make_sessionmaker(reading_engine)
            runtime.sampler.pools["gateway-reads"] = reading_engine
        timeline = Timeline(
            contacts=services.contacts,
            sessionmaker=reader,
            engine=reading_engine,
            clock=runtime.clock,
            signing_key=settings.signing_key,
            header_cache_s=settings.header_cache_s,
            page_cache_s=settings.timeline_cache_s,
        )
        for stream, durable, subjects, handlers in events.CONSUMERS:
            inbox = EventInbox(
                table=inbox_table,
                sessionmaker=runtime.sessionmaker,
                handlers=handlers,
                clock=runtime.clock,
                bus=runtime.bus,
                name=durable,
                after_commit=partial(announce, runtime.bus),
                # Touchpoint and follow-up events are applied a batch at a time (see gateway.events.Batch).
                prepare=None if handlers is events.CONTACT_HANDLERS else events.prepare_batch,
                finish=None if handlers is events.CONTACT_HANDLERS else events.finish_batch,
            )
            runtime.consumers.append(
                DurableConsumer(
                    bus=runtime.bus,
                    stream=stream,
                    durable=durable,
                    filter_subjects=subjects,
                    handle_batch=inbox.handle_batch,
                    batch=settings.consumer_batch,
                    fetch_timeout_s=settings.consumer_wait_s,
                )
            )
        # Outbound webhooks: a durable of their own per stream records the deliveries, one worker sends them.
        delivery_worker = webhooks.DeliveryWorker(
            sessionmaker=runtime.sessionmaker,
            clock=runtime.clock,
            settings=settings,
            transport=transports.get("webhooks"),
        )
        for stream, durable, subjects in webhooks.consumers():
            feed = webhooks.WebhookFeed(
                sessionmaker=runtime.sessionmaker,
                clock=runtime.clock,
                name=durable,
                recorded=delivery_worker.wake,
                retry_window_s=settings.webhooks_retry_window_s,
            )
            runtime.consumers.append(
                DurableConsumer(
                    bus=runtime.bus,
                    stream=stream,
                    durable=durable,
                    filter_subjects=subjects,
                    handle_batch=feed.handle_batch,
                    batch=settings.consumer_batch,
                    fetch_timeout_s=settings.consumer_wait_s,
                    # A subscription starts with the events that follow it, not with the stream's past week.
                    deliver_policy=DeliverPolicy.NEW,
                )
            )
        runtime.background.append(delivery_worker.run)
        authenticator = Authenticator(runtime=runtime, admin_key=settings.admin_key or "", cache_s=settings.key_cache_s)
        live = LiveFeed(runtime.bus, on_event=timeline.forget_header, on_revoked=authenticator.forget)
        runtime.background.append(live.run)
        for client in services.all():
            runtime.extra_checks[client.name] = _reachable(client)
        app.state.runtime = runtime
        app.state.services = services
        app.state.timeline = timeline
        app.state.live = live
        app.state.write_through = WriteThrough(
            runtime.sessionmaker, partial(announce_contacts, runtime.bus), timeline.forget_header
        )
        app.state.authenticator = authenticator
        app.state.delivery_worker = delivery_worker
        app.state.rate_limiter = RateLimiter(per_minute=settings.rate_limit_per_minute, burst=settings.rate_limit_burst)
        app.state.sign_in_limiter = RateLimiter(
            per_minute=settings.sign_in_per_minute_per_address, burst=settings.sign_in_per_minute_per_address
        )
        app.state.password_hashing = PasswordHashing(settings.password_hash_concurrency)
        await runtime.start()
        try:
            with settled_heap():
                yield
        finally:
            await _stop(runtime)
            if reading_engine is not runtime.engine:
                await reading_engine.dispose()
            for client in services.all():
                await client.close()

    app = FastAPI(
        title="Touchpoint API",
        description=(
            "One secured API for contacts, touchpoints, threads, follow-ups and policies, the customer's "
            "timeline and journey, and service-quality metrics. Authenticate with `Authorization: Bearer <key>`."
        ),
        version=package_version(),
        generate_unique_id_function=operation_id,
        lifespan=lifespan,
        openapi_url="/api/v1/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    install_problem_handlers(app)

    @app.exception_handler(UpstreamAnswer)
    async def _upstream_answer(_request: Request, exc: UpstreamAnswer) -> Response:
        return relay(exc.response, service=exc.service)

    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_limits={spreadsheets.IMPORT_PATH: settings.import_max_bytes},
    )
    app.include_router(health_router())
    app.include_router(router)
    document_passed_on_bodies(app, PASSED_ON_BODIES)
    app.include_router(console_router)
    document_problems(app)
    setup_tracing(service=NAME, app=app)
    document_examples(app, by_schema=examples.EXAMPLES, by_operation=examples.TEXT_EXAMPLES)
    publish_service_contract(app, amend=partial(document_timeline_limit, max_limit=settings.timeline_max_limit))
    return app


def _reachable(client: ServiceClient) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        response = await client.client.get("/healthz", timeout=2.0)
        return response.status_code == 200

    return check


async def _stop(runtime: Runtime, grace_s: float = 5.0) -> None:
    """``Runtime.stop`` that cannot hang: a task that ignores its cancellation is logged and left behind."""
    tasks = list(runtime._tasks)
    for task in tasks:
        task.cancel()
    if tasks:
        _done, pending = await asyncio.wait(tasks, timeout=grace_s)
        if pending:
            log.error("tasks_ignored_cancellation", tasks=[t.get_name() for t in pending])
    runtime._tasks.clear()
    await runtime.stop()
