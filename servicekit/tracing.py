"""W3C trace context across HTTP and the bus, and OpenTelemetry export when the standard ``OTEL_*`` variables ask.

What always happens, exporter or not (it costs a header string per event): the ``traceparent`` and ``tracestate`` of
the request that caused an event are bound in the logging context (``servicekit.logging``), written into the event
(the CloudEvents distributed-tracing extension, so into its outbox row), lifted by the outbox relay into the NATS
message's headers, and made current by every consumer while the event's handler runs, so the events the handler
emits carry them on and its log lines show its ``trace_id``.

What the SDK adds, only when configured (``OTEL_TRACES_EXPORTER`` other than ``none``, or an
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; ``OTEL_SDK_DISABLED=true`` wins): a
TracerProvider named ``OTEL_SERVICE_NAME`` or the service's own name, spans exported by OTLP/HTTP (or ``console``),
FastAPI, httpx and SQLAlchemy instrumented, and a consumer span per event. Without it no span object is made.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from structlog.contextvars import bind_contextvars, get_contextvars, reset_contextvars

from servicekit.logging import get_logger

log = get_logger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")
# W3C: list members of printable ASCII, at most 32 members (512 characters is the propagation limit).
_TRACESTATE = re.compile(r"^[\x20-\x2b\x2d-\x3c\x3e-\x7e]*=[\x20-\x2b\x2d-\x7e]*(,[\x20-\x7e]*)*$")
TRACESTATE_MAX = 512
_PROPAGATOR = TraceContextTextMapPropagator()
_TRACER_NAME = "touchpoint"


def valid_traceparent(value: str | None) -> str | None:
    return value if value and _TRACEPARENT.match(value) else None


def valid_tracestate(value: str | None) -> str | None:
    if not value or len(value) > TRACESTATE_MAX or '"' in value or not _TRACESTATE.match(value):
        return None
    return value


def exporters_requested(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The span exporters the standard variables ask for (empty: tracing is not exported, the SDK stays off)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = environ.get("OTEL_TRACES_EXPORTER")
    if named is not None:
        return [name for name in (part.strip().lower() for part in named.split(",")) if name and name != "none"]
    if environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return ["otlp"]
    return []


# Whether spans are recorded: set by setup_tracing (and servicekit.testing.tracing), read on every event. A module
# flag, not a look at the global provider: that reads os.environ on each call while none is installed.
_recording = False


def recording() -> bool:
    """Spans are recorded: ``setup_tracing`` installed an SDK TracerProvider, or found one installed."""
    return _recording


def set_recording(on: bool) -> None:
    global _recording
    _recording = on


def _sdk_installed() -> bool:
    provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def setup_tracing(*, service: str, app: Any = None, environ: Mapping[str, str] = os.environ) -> bool:
    """Install the SDK when the ``OTEL_*`` variables ask for it (once per process), then instrument ``app`` and
    the process's httpx clients and SQLAlchemy engines; returns whether spans are recorded. A provider already
    installed (a test's in-memory exporter, or another service of the same process) is kept."""
    if not _sdk_installed():
        exporters = exporters_requested(environ)
        if not exporters:
            return False
        _install_provider(service=environ.get("OTEL_SERVICE_NAME") or service, exporters=exporters)
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    if not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry:
        HTTPXClientInstrumentor().instrument()
    if not SQLAlchemyInstrumentor().is_instrumented_by_opentelemetry:
        # Its package declares SQLAlchemy < 2.1 and otherwise instruments nothing on the 2.1 we run; the engine
        # events it listens to are unchanged in 2.1 (tests/test_trace_across_the_bus.py sees its spans).
        SQLAlchemyInstrumentor().instrument(skip_dep_check=True)
    if app is not None:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")
    set_recording(True)
    return True


def _install_provider(*, service: str, exporters: list[str]) -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    for name in exporters:
        exporter: SpanExporter
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()  # endpoint, headers, timeout: the OTEL_EXPORTER_OTLP_* variables
        elif name == "console":
            exporter = ConsoleSpanExporter()
        else:
            log.warning("tracing_exporter_unknown", exporter=name, known=["otlp", "console", "none"])
            continue
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log.info("tracing_enabled", service_name=service, exporters=exporters)


def current_trace_headers() -> dict[str, str]:
    """The W3C headers of the current context: the recording span's when the SDK is on, else those bound for the
    request or event being handled. For an outgoing call or message."""
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return carrier
    bound = get_contextvars()
    headers = {}
    if bound.get(TRACEPARENT):
        headers[TRACEPARENT] = bound[TRACEPARENT]
        if bound.get(TRACESTATE):
            headers[TRACESTATE] = bound[TRACESTATE]
    return headers


def bind_current_span() -> None:
    """Bind the recording span's traceparent/tracestate for logs and events (a no-op when no span records)."""
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        headers = current_trace_headers()
        bind_contextvars(traceparent=headers.get(TRACEPARENT), tracestate=headers.get(TRACESTATE))


def message_trace_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The valid W3C headers of a received NATS message (a forged or broken one is dropped, never fatal)."""
    if not headers:
        return {}
    traceparent = valid_traceparent(headers.get(TRACEPARENT))
    if traceparent is None:
        return {}
    found = {TRACEPARENT: traceparent}
    tracestate = valid_tracestate(headers.get(TRACESTATE))
    if tracestate is not None:
        found[TRACESTATE] = tracestate
    return found


class consuming:
    """Make the trace context of a received message current while its handler runs.

    Without the SDK the headers are only bound (for logs and the events the handler makes: two context variables).
    With it, a CONSUMER span named ``name`` is started as the child of the message's context, so what the handler
    does (queries, calls, the events it emits) belongs to the producer's trace. A class, not a generator: it runs
    once per event."""

    __slots__ = ("_attributes", "_headers", "_name", "_span", "_tokens")

    def __init__(self, headers: Mapping[str, str], *, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        self._headers = headers
        self._name = name
        self._attributes = attributes
        self._span: Any = None

    def __enter__(self) -> None:
        headers = self._headers
        self._tokens = bind_contextvars(traceparent=headers.get(TRACEPARENT), tracestate=headers.get(TRACESTATE))
        if _recording:
            parent = _PROPAGATOR.extract(headers) if headers else otel_context.Context()
            self._span = trace.get_tracer(_TRACER_NAME).start_as_current_span(
                self._name, context=parent, kind=SpanKind.CONSUMER, attributes=self._attributes
            )
            self._span.__enter__()
            bind_current_span()

    def __exit__(self, *exc: Any) -> None:
        try:
            if self._span is not None:
                self._span.__exit__(*exc)
        finally:
            reset_contextvars(**self._tokens)


@contextlib.contextmanager
def batch_span(name: str, contexts: list[Mapping[str, str]], *, attributes: Mapping[str, Any] | None = None
               ) -> Iterator[None]:  # fmt: skip
    """A span for the work one batch shares (its transaction), linked to every message's context: messaging
    semantics for batch processing (a batch has many parents, so it is a root with links). Nothing without the
    SDK."""
    if not _recording:
        yield
        return
    links = []
    for headers in contexts:
        span = trace.get_current_span(_PROPAGATOR.extract(headers)).get_span_context() if headers else None
        if span is not None and span.is_valid:
            links.append(Link(span))
    tracer = trace.get_tracer(_TRACER_NAME)
    # A root of its own: not a child of whichever message or request happens to be current.
    with tracer.start_as_current_span(name, context=otel_context.Context(), kind=SpanKind.CONSUMER, links=links,
                                      attributes=attributes):  # fmt: skip
        yield


def trace_headers_of_event(payload: str) -> dict[str, str]:
    """The ``traceparent``/``tracestate`` extension attributes of a stored CloudEvent's JSON, for the relay's NATS
    headers, found without parsing the document: the extensions come after ``data`` in every writer's order
    (``CloudEvent.to_json``, ``event_json``, and ``json.dumps`` of a redacted one), so the last occurrence of the
    key is the event's own. A value that is not a valid W3C header is left out."""
    traceparent = valid_traceparent(_last_string(payload, '"traceparent":'))
    if traceparent is None:
        return {}
    headers = {TRACEPARENT: traceparent}
    tracestate = valid_tracestate(_last_string(payload, '"tracestate":'))
    if tracestate is not None:
        headers[TRACESTATE] = tracestate
    return headers


def _last_string(document: str, key: str) -> str | None:
    at = document.rfind(key)
    if at < 0:
        return None
    start = at + len(key)
    while start < len(document) and document[start] == " ":
        start += 1
    if start >= len(document) or document[start] != '"':
        return None
    end = document.find('"', start + 1)
    return document[start + 1 : end] if end > 0 else None
