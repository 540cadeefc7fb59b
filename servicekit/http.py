"""HTTP plumbing every service shares: request context, metrics, health, the app factory."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servicekit.ids import random_hex
from servicekit.logging import bind_request_context, get_logger
from servicekit.metrics import HTTP_LATENCY, HTTP_REQUESTS
from servicekit.openapi import headers, operation_id, package_version
from servicekit.problems import PROBLEM_MEDIA_TYPE, install_problem_handlers, problem_body
from servicekit.tracing import bind_current_span, setup_tracing, valid_traceparent, valid_tracestate

log = get_logger("http")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    """X-Request-ID (made when absent) and W3C traceparent into logs, events and the response.

    Also enforces the body limit as a 413 problem: a declared Content-Length over it is refused
    before anything is parsed; a chunked body is counted as it arrives. Up to ``DRAIN_FACTOR`` times
    the limit, the rest of the body is read and dropped before the answer: a client (httpx, curl) sends
    its whole body before it reads, and a connection closed under it would show as a reset, not a 413."""

    def __init__(
        self, app: ASGIApp, max_body_bytes: int | None = None, body_limits: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # Routes (exact paths) that take larger bodies than the rest, e.g. a CSV import read as a stream.
        self.body_limits = body_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Only the three headers read here are decoded (decoding every header was most of this middleware's CPU).
        headers: dict[bytes, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.lower()
            if name in _READ_HEADERS:
                headers[name] = raw_value.decode("latin-1")
        request_id = headers.get(b"x-request-id", "")
        if not _REQUEST_ID.match(request_id):
            request_id = random_hex()
        traceparent = valid_traceparent(headers.get(b"traceparent"))
        tracestate = valid_tracestate(headers.get(b"tracestate")) if traceparent else None
        bind_request_context(request_id=request_id, traceparent=traceparent, tracestate=tracestate)
        # With the SDK on, the server span (FastAPI's instrumentation, outside this middleware) is the request's
        # context: the events and calls it causes are its children.
        bind_current_span()
        declared = headers.get(b"content-length", "")
        limit = self.body_limits.get(scope["path"], self.max_body_bytes)
        if limit is not None and declared.isdigit() and int(declared) > limit:
            if int(declared) <= DRAIN_FACTOR * limit:
                await _drain(receive, DRAIN_FACTOR * limit)
            response = JSONResponse(
                problem_body(413, detail=f"The body is larger than the limit of {limit} bytes.", max_body_bytes=limit),
                status_code=413,
                media_type=PROBLEM_MEDIA_TYPE,
                headers={"x-request-id": request_id, "connection": "close"},
            )
            await response(scope, receive, send)
            return
        refused = NUL_DETAIL if _has_nul(scope) else _repeated_query_parameter(scope)
        if refused:
            response = JSONResponse(
                problem_body(422, title="Invalid request", detail=refused, slug="validation"),
                status_code=422, media_type=PROBLEM_MEDIA_TYPE, headers={"x-request-id": request_id},
            )  # fmt: skip
            await response(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        received = 0
        tail = b""

        async def counting_receive() -> Message:
            nonlocal received, tail
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if limit is not None and received > limit:
                    if message.get("more_body", False):
                        await _drain(receive, DRAIN_FACTOR * limit - received)
                    raise StarletteHTTPException(413, f"The body is larger than the limit of {limit} bytes.")
                # PostgreSQL text cannot hold U+0000: refuse it in any JSON string, even split across chunks.
                window = tail + chunk
                if b"\\u0000" in window and _nul_escape(window):
                    raise StarletteHTTPException(422, NUL_DETAIL)
                final = not message.get("more_body", False)
                if b"\\u" in window and _lone_surrogate(window, final=final, judged=len(tail)):
                    raise StarletteHTTPException(422, SURROGATE_DETAIL)
                tail = window[-11:]
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, counting_receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            _observe(scope["method"], template, status, elapsed)
            if template not in ("/healthz", "/readyz"):
                log.info("request", method=scope["method"], route=template, status=status, ms=round(elapsed * 1000, 2))


_READ_HEADERS = frozenset((b"x-request-id", b"traceparent", b"tracestate", b"content-length"))
# Each (method, route, status)'s metric children, looked up once: prometheus_client's labels() checks and locks on
# every call. Bounded as the labels are: methods, route templates (or "unmatched") and statuses.
_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}


# Any token is a method to HTTP: a client sending 50 made-up ones made 50 series. Those outside this set count as
# "other" (they are answered 405 or 404 all the same).
METRIC_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _observe(method: str, template: str, status: int, elapsed: float) -> None:
    method = method if method in METRIC_METHODS else "other"
    children = _CHILDREN.get((method, template, status))
    if children is None:
        children = (HTTP_REQUESTS.labels(method, template, str(status)), HTTP_LATENCY.labels(method, template))
        _CHILDREN[(method, template, status)] = children
    children[0].inc()
    children[1].observe(elapsed)


NUL_DETAIL = "NUL characters (U+0000) are not accepted in text."
DRAIN_FACTOR = 4


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop the rest of a refused body, at most ``budget`` bytes (then the connection is closed)."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


SURROGATE_DETAIL = "An unpaired surrogate escape (\\ud800 to \\udfff) is not text; send the character itself in UTF-8."
_HIGH, _LOW = rb"\\u[dD][89abAB][0-9a-fA-F]{2}", rb"\\u[dD][c-fC-F][0-9a-fA-F]{2}"
_LONE_SURROGATE = re.compile(_HIGH + rb"(?!" + _LOW + rb")|(?<!" + _HIGH + rb")" + _LOW)


def _escaped(window: bytes, start: int) -> bool:
    """Whether the backslash at ``start`` is itself escaped (an odd run of backslashes before it)."""
    return bool((start - len(window[:start].rstrip(b"\\"))) % 2)


def _nul_escape(window: bytes) -> bool:
    """A ``\\u0000`` escape in a JSON string; an escaped backslash followed by ``u0000`` is text."""
    start = window.find(b"\\u0000")
    while start != -1:
        if not _escaped(window, start):
            return True
        start = window.find(b"\\u0000", start + 1)
    return False


def _lone_surrogate(window: bytes, *, final: bool, judged: int = 0) -> bool:
    """An unpaired UTF-16 surrogate escape in JSON: Python decodes it into a str no UTF-8 encoder (the
    database driver, the event serialiser, httpx) can write, and it would fail far from the request as a 500.
    A high surrogate at the very end of a chunk is undecided until the next chunk (``final``: no next).
    The first ``judged`` bytes are the previous chunk's tail: a low surrogate wholly inside it was paired there
    (its high one may be cut off here), so only an undecided high one is judged again."""
    for match in _LONE_SURROGATE.finditer(window):
        start = match.start()
        high = match.group()[3:4] in b"89abAB"
        if _escaped(window, start) or (match.end() <= judged and not high):
            continue  # an escaped backslash followed by the letters "ud800": text, not an escape
        cut_short = high and match.end() + 6 > len(window)
        if final or not cut_short:
            return True
    return False


def _has_nul(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    return b"%00" in query or b"\x00" in query or "\x00" in scope.get("path", "")


def _repeated_query_parameter(scope: Scope) -> str | None:
    """Every query parameter of every route takes one value: given twice, FastAPI would silently keep the last
    (and the gateway would forward only that one), so the request is refused instead."""
    query: bytes = scope.get("query_string", b"")
    if b"&" not in query:
        return None
    seen: set[str] = set()
    for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name in seen:
            return f"The query parameter {name!r} is given more than once; it takes one value."
        seen.add(name)
    return None


ReadinessCheck = Callable[[], Any]


def health_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        """200 while the process serves requests: what a liveness probe asks. Checks nothing else."""
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Readiness: database and NATS reachable",
        responses={503: {"description": "Not ready", "content": {PROBLEM_MEDIA_TYPE: {}}}},
    )
    async def readyz(request: Request) -> Response:
        """200 with each check's state when the database, NATS and the service's other dependencies answer;
        503 naming what is down otherwise: what a readiness probe and a load balancer ask."""
        checks: dict[str, str] = {}
        runtime = request.app.state.runtime
        for name, check in runtime.readiness_checks().items():
            try:
                ok = await check()
                checks[name] = "ok" if ok else "down"
            except Exception as exc:
                checks[name] = f"down: {type(exc).__name__}"
        failing = [name for name, state in checks.items() if state != "ok"]
        if failing:
            body = problem_body(503, detail=f"Not ready: {', '.join(failing)}", checks=checks)
            return JSONResponse(body, status_code=503, media_type=PROBLEM_MEDIA_TYPE, headers={"Retry-After": "2"})
        return JSONResponse({"status": "ready", "checks": checks})

    # No /metrics here: they are served on a port of their own (servicekit.metrics), never the API's.

    return router


async def database_ready(runtime: Any) -> bool:
    async with runtime.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return True


def build_app(
    *,
    title: str,
    description: str,
    version: str | None = None,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    max_body_bytes: int,
    body_limits: dict[str, int] | None = None,
    service: str | None = None,
) -> FastAPI:
    """A FastAPI app with problem+json errors, the body limit, request context and health routes; ``info.version``
    is the package's unless ``version`` says otherwise. Named ``service``, it is traced when the ``OTEL_*``
    variables ask for it (``servicekit.tracing``)."""
    app = FastAPI(
        title=title,
        description=description,
        version=version or package_version(),
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        # Not FastAPI's native OpenTelemetry bridge: it asks OpenTelemetry for its providers on every request
        # (os.environ lookups, ~3% of the CPU of a single touchpoint POST in py-spy) even with nothing exported.
        # Tracing, when asked for, is the instrumentation servicekit.tracing installs.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_problem_handlers(app)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=max_body_bytes, body_limits=body_limits)
    app.include_router(health_router())
    document_problems(app)
    if service is not None:
        setup_tracing(service=service, app=app)
    return app


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details. Validation problems (422) add `errors`; others add their own members.",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}
_PROBLEM_CONTENT = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
# What the platform itself can answer on any route, beside what each route documents.
_INVALID = {"description": "Invalid request (problem+json with `errors`)"}
_TOO_LARGE = {"description": "The body is over the size limit"}
_UNPARSABLE = {"description": "The body cannot be read as JSON (for example, it is not UTF-8)"}
_UNAVAILABLE = {"description": "The database or a dependency is unreachable (Retry-After)"}


def document_problems(app: FastAPI) -> None:
    """Make the OpenAPI document say what the handlers send: every error as problem+json with the Problem schema.

    FastAPI documents 422 as ``application/json`` ``HTTPValidationError`` and knows nothing of the 413 and 503
    that the middleware and the handlers send, so a client (or Schemathesis) reading the document would be
    misled. Applied once here, so every service and the gateway say the same."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                _document_operation(operation)
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = PROBLEM_SCHEMA
        text = str(document["paths"])
        for unused in ("HTTPValidationError", "ValidationError"):
            if f"/{unused}'" not in text:
                schemas.pop(unused, None)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _document_operation(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if "health" not in operation.get("tags", []):
        if operation.get("parameters") or "requestBody" in operation:
            responses.setdefault("422", dict(_INVALID))
        if "requestBody" in operation:
            responses.setdefault("400", dict(_UNPARSABLE))
            responses.setdefault("413", dict(_TOO_LARGE))
        responses.setdefault("503", dict(_UNAVAILABLE))
    for status, response in responses.items():
        if status[0] in "45":
            response["content"] = dict(_PROBLEM_CONTENT)
        # Every 429 and 503 here says when to come back; a 308 (a merged contact) says where it went.
        if status in ("429", "503"):
            response.setdefault("headers", {}).update(headers("Retry-After"))
        elif status == "308":
            response.setdefault("headers", {}).update(headers("Location"))
