"""Spans recorded in memory for a test, and the process left untraced afterwards (OpenTelemetry's provider is
process-global and set once: later tests in the same run must not go on recording)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from servicekit.tracing import set_recording


@contextlib.contextmanager
def recorded_spans(service: str = "touchpoint-tests") -> Iterator[InMemorySpanExporter]:
    """An SDK provider exporting to memory while the block runs: apps built inside it are instrumented
    (``servicekit.tracing.setup_tracing`` keeps a provider already installed)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset_globals()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        untrace()


def untrace() -> None:
    """Leave the process as it was before any tracing: no provider, no instrumentation, nothing recorded."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    for instrumentor in (HTTPXClientInstrumentor(), SQLAlchemyInstrumentor()):
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
    _reset_globals()
    set_recording(False)


def _reset_globals() -> None:
    # What opentelemetry's own test utilities (opentelemetry.test.globals_test) do between tests.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    trace._PROXY_TRACER_PROVIDER = trace.ProxyTracerProvider()
