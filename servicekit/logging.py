"""Structured logging (structlog) with the request id and traceparent bound per request."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.contextvars import bind_contextvars, clear_contextvars, get_contextvars


def configure_logging(*, service: str, level: str = "INFO", json: bool = True) -> None:
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # No file: each logger writes to sys.stdout as it is when the logger is made, not to the stream of the
        # moment of configuring (a test that configured logging under pytest's capture left every later test
        # writing to a closed file).
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)
    logging.basicConfig(level=level.upper(), stream=sys.stdout, format="%(levelname)s %(name)s %(message)s")
    # Access logs would carry query strings (emails, phones): our middleware logs paths only.
    logging.getLogger("uvicorn.access").disabled = True
    # One line per upstream call (with its URL and query) is noise, and can carry personal data.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)


def bind_request_context(*, request_id: str, traceparent: str | None) -> None:
    clear_contextvars()
    bind_contextvars(request_id=request_id)
    if traceparent:
        bind_contextvars(traceparent=traceparent)


def current_request_context() -> dict[str, Any]:
    return get_contextvars()
