"""The W3C trace context crosses the bus with no exporter configured: the relay puts the traceparent of the request
that caused an event into the message's headers, and a consumer makes it current while the event's handler runs,
so the event the handler emits carries the same trace and its log lines show the trace id. In a batch, each
event keeps its own trace."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

import nats
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.bus import Bus, DurableConsumer, PermanentError, StreamSpec
from servicekit.clock import MovableClock
from servicekit.db import make_engine, make_sessionmaker
from servicekit.events import CloudEvent, event_json, make_event
from servicekit.inbox import EventInbox
from servicekit.logging import bind_request_context, configure_logging, get_logger
from servicekit.outbox import Outbox, OutboxRelay
from servicekit.runtime import shared_tables
from servicekit.testing.nats import NatsServer
from servicekit.testing.plugin import eventually
from servicekit.testing.tracing import untrace
from servicekit.tracing import exporters_requested, recording, setup_tracing, trace_headers_of_event

metadata = MetaData()
outbox_table, inbox_table = shared_tables(metadata)
STREAM = StreamSpec("TRACE_EVENTS", ["trace.made.>", "trace.followed.>"])
FIRST = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
SECOND = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
log = get_logger("trace-tests")


@pytest.fixture
async def sessionmaker(empty_database_url: str) -> AsyncIterator[Any]:
    engine = make_engine(empty_database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield make_sessionmaker(engine)
    await engine.dispose()


def made(n: int) -> CloudEvent:
    return make_event(type="trace.made.v1", source="tests", subject=f"s{n}", data={"n": n},
                      time=datetime(2026, 1, 1, tzinfo=UTC))  # fmt: skip


async def fetch_at_least(subscription: Any, count: int) -> list[Any]:
    """Fetch until `count` messages have come: a fetch returns as soon as any message is there, and the relay may
    not have published them all yet."""
    got: list[Any] = []

    async def enough() -> bool:
        try:
            got.extend(await subscription.fetch(count - len(got), timeout=0.5))
        except nats.errors.TimeoutError:
            pass
        return len(got) >= count

    await eventually(enough, timeout=20)
    return got


async def test_a_consumer_re_publishes_with_the_same_trace_id_without_an_exporter(
    nats_factory: Callable[[], NatsServer], sessionmaker: Any, clock: MovableClock,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    assert not recording() and exporters_requested({}) == []
    configure_logging(service="kit", json=True)
    server = nats_factory()
    bus = Bus(server.url, name="kit")
    bus.add_streams(STREAM)
    await bus.start()
    await bus.wait_connected()
    outbox = Outbox(outbox_table)
    relay = OutboxRelay(table=outbox_table, sessionmaker=sessionmaker, jetstream=bus.jetstream, clock=clock,
                        name="kit", poll_s=0.05)  # fmt: skip
    outbox.set_waker(relay.wake)

    async def follow(session: AsyncSession, event: CloudEvent) -> None:
        log.info("following", n=event.data["n"])
        followed = make_event(type="trace.followed.v1", source="tests", subject=event.subject,
                              data={"n": event.data["n"]}, time=clock.now())  # fmt: skip
        await outbox.add(session, followed, subject=f"trace.followed.{event.data['n']}")

    # Two requests of two traces; their events reach the consumer in one batch.
    for n, traceparent in ((1, FIRST), (2, SECOND)):
        bind_request_context(request_id=f"req-{n}", traceparent=traceparent, tracestate=f"vendor=v{n}")
        async with sessionmaker() as session, session.begin():
            await outbox.add(session, made(n), subject=f"trace.made.{n}")
    bind_request_context(request_id="test", traceparent=None)
    relay_task = asyncio.create_task(relay.run())
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    made_sub = await js.pull_subscribe("trace.made.>", stream="TRACE_EVENTS")
    sent = await fetch_at_least(made_sub, 2)
    assert {m.subject: (m.headers or {}).get("traceparent") for m in sent} == {
        "trace.made.1": FIRST,
        "trace.made.2": SECOND,
    }
    assert {m.subject: (m.headers or {}).get("tracestate") for m in sent} == {
        "trace.made.1": "vendor=v1",
        "trace.made.2": "vendor=v2",
    }

    inbox = EventInbox(table=inbox_table, sessionmaker=sessionmaker, handlers={"trace.made.v1": follow},
                       clock=clock, bus=bus, name="trace-tests")  # fmt: skip
    consumer = DurableConsumer(bus=bus, stream="TRACE_EVENTS", durable="trace-tests", filter_subjects=["trace.made.>"],
                               handle_batch=inbox.handle_batch, fetch_timeout_s=0.2)  # fmt: skip
    consumer_task = asyncio.create_task(consumer.run())
    try:
        followed_sub = await js.pull_subscribe("trace.followed.>", stream="TRACE_EVENTS")
        got = await fetch_at_least(followed_sub, 2)
    finally:
        consumer.stop()
        relay.stop()
        await asyncio.wait_for(asyncio.gather(consumer_task, relay_task), 10)
        await nc.close()
        await bus.close()
    headers = {m.subject: m.headers or {} for m in got}
    # The same trace id (and, with no span of its own, the same parent) and trace state, each event its own.
    assert (
        headers["trace.followed.1"]["traceparent"] == FIRST and headers["trace.followed.1"]["tracestate"] == "vendor=v1"
    )
    assert (
        headers["trace.followed.2"]["traceparent"] == SECOND
        and headers["trace.followed.2"]["tracestate"] == "vendor=v2"
    )
    bodies = {m.subject: json.loads(m.data) for m in got}
    assert bodies["trace.followed.1"]["traceparent"] == FIRST and bodies["trace.followed.2"]["traceparent"] == SECOND
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    following = {line["n"]: line for line in lines if line["event"] == "following"}
    assert following[1]["trace_id"] == FIRST[3:35] and following[2]["trace_id"] == SECOND[3:35]
    assert all(line["service"] == "kit" for line in lines)
    assert "tracestate" not in following[1]


def test_the_relay_finds_the_trace_context_in_every_writer_s_json() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    request = {"request_id": "r", "traceparent": FIRST, "tracestate": "a=1,b=2"}
    bind_request_context(request_id="r", traceparent=FIRST, tracestate="a=1,b=2")
    pydantic_json = make_event(type="t.v1", source="s", subject="x", data={"traceparent": "spoofed"}, time=at)
    written = event_json(type="t.v1", source="s", subject="x", data={"n": 1}, time=at, event_id="e", request=request)
    redacted = json.dumps(json.loads(written))  # as Outbox.redact_events rewrites a row: with spaces
    expected = {"traceparent": FIRST, "tracestate": "a=1,b=2"}
    for payload in (pydantic_json.to_json().decode(), written, redacted):
        assert trace_headers_of_event(payload) == expected
    bind_request_context(request_id="r", traceparent=None)
    assert (
        trace_headers_of_event(make_event(type="t.v1", source="s", subject="x", data={}, time=at).to_json().decode())
        == {}
    )
    forged = written.replace(FIRST, "00-zz-1-01")
    assert trace_headers_of_event(forged) == {}


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://tempo:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4318"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
    ],
)
def test_the_standard_variables_decide_whether_spans_are_exported(
    environ: dict[str, str], exporters: list[str]
) -> None:
    assert exporters_requested(environ) == exporters


async def test_a_dead_letter_carries_the_trace_context_of_the_event_it_parks(
    nats_factory: Callable[[], NatsServer], sessionmaker: Any, clock: MovableClock
) -> None:
    server = nats_factory()
    bus = Bus(server.url, name="kit")
    bus.add_streams(STREAM)
    await bus.start()
    await bus.wait_connected()

    async def refuse(_session: AsyncSession, _event: CloudEvent) -> None:
        raise PermanentError("never")

    inbox = EventInbox(table=inbox_table, sessionmaker=sessionmaker, handlers={"trace.made.v1": refuse},
                       clock=clock, bus=bus, name="trace-dl")  # fmt: skip
    consumer = DurableConsumer(bus=bus, stream="TRACE_EVENTS", durable="trace-dl", filter_subjects=["trace.made.>"],
                               handle_batch=inbox.handle_batch, fetch_timeout_s=0.2)  # fmt: skip
    task = asyncio.create_task(consumer.run())
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        bind_request_context(request_id="dl", traceparent=None)
        poison = made(9)
        await js.publish("trace.made.9", poison.to_json(), headers={"Nats-Msg-Id": poison.id, "traceparent": FIRST})
        parked = await js.pull_subscribe("crm.deadletter.>", stream="CRM_DEADLETTER")
        (letter,) = await parked.fetch(1, timeout=20)
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 10)
        await nc.close()
        await bus.close()
    assert (letter.headers or {}).get("traceparent") == FIRST


class _Collector(http.server.BaseHTTPRequestHandler):
    """A stand-in OTLP/HTTP collector: keeps what is posted to it."""

    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


def test_an_otlp_endpoint_turns_on_export_under_the_service_s_name(monkeypatch: pytest.MonkeyPatch) -> None:
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=collector.serve_forever, daemon=True)
    thread.start()
    _Collector.received.clear()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_port}")
        assert setup_tracing(service="kit-otlp", environ={"OTEL_SDK_DISABLED": "true"}) is False
        assert not recording()
        assert setup_tracing(service="kit-otlp") is True and recording()
        with trace.get_tracer("test").start_as_current_span("exported"):
            pass
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider) and provider.force_flush(10_000)
    finally:
        untrace()
        collector.shutdown()
        collector.server_close()
    assert not recording()
    (path, media_type, body) = _Collector.received[0]
    assert path == "/v1/traces" and media_type == "application/x-protobuf"
    assert b"kit-otlp" in body and b"exported" in body
