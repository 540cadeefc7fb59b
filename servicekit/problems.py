"""RFC 9457 problem details: every 4xx and 5xx leaves as application/problem+json."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from servicekit.logging import get_logger

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://touchpoint.dev/problems/"

log = get_logger(__name__)


class ProblemError(Exception):
    """A domain error that carries its HTTP status; one handler renders it as problem+json."""

    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None, **extensions: Any):
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions


class NotFound(ProblemError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(ProblemError):
    status, slug, title = 409, "conflict", "Conflict"


class Gone(ProblemError):
    status, slug, title = 410, "gone", "Gone"


class PreconditionFailed(ProblemError):
    status, slug, title = 412, "precondition-failed", "Precondition failed"


class PreconditionRequired(ProblemError):
    status, slug, title = 428, "precondition-required", "Precondition required"


class Unprocessable(ProblemError):
    status, slug, title = 422, "unprocessable", "Unprocessable content"


class ServiceUnavailable(ProblemError):
    status, slug, title = 503, "service-unavailable", "Service unavailable"

    def __init__(self, detail: str | None = None, *, retry_after: int = 5, **extensions: Any):
        super().__init__(detail, headers={"Retry-After": str(retry_after)}, **extensions)


class ContactsUnavailable(ServiceUnavailable):
    """A passing cause: the contacts service is down, slow or answered oddly. HTTP answers 503, NATS redelivers
    later (the inbox retries every error but ``PermanentError``)."""

    slug, title = "contacts-unavailable", "Contacts service unavailable"


def problem_body(
    status: int,
    title: str | None = None,
    detail: str | None = None,
    slug: str | None = None,
    instance: str | None = None,
    **extensions: Any,
) -> dict[str, Any]:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + (slug or phrase.lower().replace(" ", "-")),
        "title": title or phrase,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extensions.items() if v is not None})
    return body


def problem_response(status: int, *, headers: dict[str, str] | None = None, **fields: Any) -> JSONResponse:
    return JSONResponse(
        problem_body(status, **fields), status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE
    )


def _text(value: object, limit: int = 300) -> str:
    """Caller-given text as it may go back in a problem: bounded, and writable as UTF-8 whatever it holds."""
    return str(value)[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


def _jsonable_errors(errors: Any) -> list[dict[str, Any]]:
    """Where and why, never the submitted value (pydantic's ``input`` and ``ctx`` are left out)."""
    cleaned = []
    for error in errors:
        loc = [part if isinstance(part, int) else _text(part, 100) for part in error.get("loc", ())]
        cleaned.append({"loc": loc, "msg": _text(error.get("msg", "")), "type": error.get("type")})
    return cleaned


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """A pydantic error's list as a problem's ``errors``: where and why, never the submitted value."""
    return _jsonable_errors(exc.errors(include_input=False, include_context=False, include_url=False))


def _raised_at(exc: BaseException) -> str:
    """``module:function:line`` of the innermost frame: where a validation error came from, without its text
    (which may quote what the caller sent)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "unknown"
    code = tb.tb_frame.f_code
    return f"{tb.tb_frame.f_globals.get('__name__', '?')}:{code.co_name}:{tb.tb_lineno}"


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _domain(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(
            exc.status,
            headers=exc.headers,
            title=exc.title,
            detail=exc.detail,
            slug=exc.slug,
            instance=request.url.path,
            **exc.extensions,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(
            422,
            title="Invalid request",
            slug="validation",
            detail="The request does not match the schema.",
            instance=request.url.path,
            errors=_jsonable_errors(exc.errors()),
        )

    # A model validated inside a service (a patch re-checked as a whole contact, a resolve's new profile) refuses
    # what the route's schema let through: the caller's input, so a 422 like the route's own, not a 500 whose
    # traceback would write the submitted values into the log. Logged with where, never what.
    @app.exception_handler(ValidationError)
    async def _model(request: Request, exc: ValidationError) -> JSONResponse:
        errors = _jsonable_errors(exc.errors(include_input=False, include_context=False, include_url=False))
        log.info("validation_refused", path=request.url.path, model=exc.title, at=_raised_at(exc),
                 types=sorted({str(e["type"]) for e in errors}))  # fmt: skip
        return problem_response(
            422,
            title="Invalid request",
            slug="validation",
            detail=f"The request would make an invalid {exc.title}.",
            instance=request.url.path,
            errors=errors,
        )

    # Domain validation that raises ValueError (a phone number, a time zone, text no encoder can write) is the
    # caller's input too. Its message goes back to the caller only; the log says where it was raised.
    @app.exception_handler(ValueError)
    async def _value(request: Request, exc: ValueError) -> JSONResponse:
        log.warning("value_refused", path=request.url.path, error=type(exc).__name__, at=_raised_at(exc))
        return problem_response(
            422,
            title="Invalid request",
            slug="validation",
            detail=_text(exc) or "A value in the request cannot be taken.",
            instance=request.url.path,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem_response(
            exc.status_code, headers=getattr(exc, "headers", None), detail=detail, instance=request.url.path
        )

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        if _is_database_down(exc):
            log.warning("database_unavailable", path=request.url.path, error=type(exc.orig).__name__)
            return problem_response(503, headers={"Retry-After": "5"}, slug="database-unavailable",
                                    detail="The database is not reachable right now; retry shortly.",
                                    instance=request.url.path)  # fmt: skip
        log.exception("database_error", path=request.url.path)
        return problem_response(500, detail="An unexpected error occurred; it has been logged.",
                                instance=request.url.path)  # fmt: skip

    @app.exception_handler(OSError)
    async def _connection(request: Request, exc: OSError) -> JSONResponse:
        log.warning("dependency_unreachable", path=request.url.path, error=repr(exc))
        return problem_response(503, headers={"Retry-After": "5"}, slug="service-unavailable",
                                detail="A dependency is not reachable right now; retry shortly.",
                                instance=request.url.path)  # fmt: skip

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path)
        return problem_response(
            500, detail="An unexpected error occurred; it has been logged.", instance=request.url.path
        )


_DOWN_MARKERS = (
    "connection refused", "connectiondoesnotexist", "cannotconnectnow", "connection was closed",
    "server closed the connection", "terminating connection", "the database system is shutting down",
    "the database system is starting up", "connection is closed", "connection reset", "admin shutdown",
    "too many connections", "could not connect", "timeout",
)  # fmt: skip


def _is_database_down(exc: DBAPIError) -> bool:
    """A lost or refused database connection (a restart, a failover) rather than a bad statement."""
    if exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError)):
        return True
    text = f"{type(exc.orig).__name__} {exc.orig}".lower()
    return any(marker in text for marker in _DOWN_MARKERS)


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"description": "Problem (RFC 9457)", "content": {PROBLEM_MEDIA_TYPE: {}}},
}
