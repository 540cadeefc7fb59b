"""Structured logging (structlog): one JSON line per record, each naming its service, and inside a traced context
its ``trace_id`` and ``span_id``; the request id and W3C trace headers are bound per request (or per event).

The standard library's records (uvicorn's, SQLAlchemy's, nats-py's) go through the same processors and renderer
(structlog's ``ProcessorFormatter``), so a JSON log holds no plain-text line. ``service`` is added by a processor,
not bound in a context variable: ``clear_contextvars()`` at each request cannot drop it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from opentelemetry import trace
from structlog.contextvars import bind_contextvars, clear_contextvars, get_contextvars
from structlog.typing import EventDict, WrappedLogger

# uvicorn configures these with handlers of their own (plain text, not propagated): they join the root's.
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


class _ServiceField:
    def __init__(self, service: str) -> None:
        self.service = service

    def __call__(self, _logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        event_dict["service"] = self.service
        return event_dict


def add_trace_ids(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """``trace_id``/``span_id`` of the recording span, else of the traceparent bound for the request or event."""
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        event_dict["trace_id"] = format(span.trace_id, "032x")
        event_dict["span_id"] = format(span.span_id, "016x")
    else:
        traceparent = event_dict.get("traceparent")
        if traceparent:
            event_dict["trace_id"] = traceparent[3:35]
            event_dict["span_id"] = traceparent[36:52]
    # Vendors' trace state is for the next hop, not for a log line.
    event_dict.pop("tracestate", None)
    return event_dict


class _CurrentStdout(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stdout`` as it is at each record (as structlog's PrintLogger does): a test capturing output
    replaces it, and a handler holding the stream of the moment of configuring wrote to a closed file later."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(*, service: str, level: str = "INFO", json: bool = True) -> None:
    """Configure structlog and the standard library's logging for this process (idempotent: a second service in
    the same process, as in tests, takes over the ``service`` field)."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _ServiceField(service),
        add_trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    level_number = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        # No file: each logger writes to sys.stdout as it is when the logger is made, not to the stream of the
        # moment of configuring (a test that configured logging under pytest's capture left every later test
        # writing to a closed file).
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = _CurrentStdout()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _CurrentStdout)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_number)
    for name in _UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # Access logs would carry query strings (emails, phones): our middleware logs paths only.
    logging.getLogger("uvicorn.access").disabled = True
    # One line per upstream call (with its URL and query) is noise, and can carry personal data.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)


def bind_request_context(*, request_id: str, traceparent: str | None, tracestate: str | None = None) -> None:
    clear_contextvars()
    bind_contextvars(request_id=request_id)
    if traceparent:
        bind_contextvars(traceparent=traceparent)
        if tracestate:
            bind_contextvars(tracestate=tracestate)


def current_request_context() -> dict[str, Any]:
    return get_contextvars()
