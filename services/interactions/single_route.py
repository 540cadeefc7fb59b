"""``POST /v1/interactions`` served without FastAPI's generic parameter solving.

It is the busiest route (64 clients at 1,000+ requests/s in bench/ingest.py). FastAPI solves any route's
parameters with generic machinery (dependency caches, scopes, a pass per parameter kind per dependency): for this
route's body, two headers and two dependencies that was about 100 µs of CPU per request, more than the body's
validation itself (py-spy: ``solve_dependencies`` 15% of the service's CPU under the benchmark).

``SingleTouchpointRoute`` reads the same things by the same rules, in the order FastAPI does (the body's JSON,
then the Idempotency-Key check, then the body's validation), and calls the same endpoint function. Its signature
still builds the OpenAPI document. ``tests/test_interactions_single_route.py`` checks that every refusal is the
answer FastAPI's own handling gives. Not applied here, as the service uses neither: dependencies declared on the
route or its router, and ``app.dependency_overrides``."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic_core import PydanticUndefined
from starlette.exceptions import HTTPException

from services.interactions.deps import interactions_state
from services.interactions.idempotency import checked_key

# The endpoint's parameters, which the handler below gives it (checked when the route is built).
PARAMETERS = ("body", "request", "ingestion", "idempotency")


class SingleTouchpointRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint
        if tuple(inspect.signature(endpoint).parameters) != PARAMETERS:
            raise TypeError(f"{endpoint.__name__} must take exactly {PARAMETERS} to be served by this route")
        if self.dependencies:
            raise TypeError("route-level dependencies would not run on this route")
        body_field = self.body_field
        assert body_field is not None

        async def handler(request: Request) -> Response:
            body = await _json_body(request)
            idempotency = checked_key(
                request.headers.get("idempotency-key"), request.headers.get("x-touchpoint-caller")
            )
            if body is PydanticUndefined:
                errors: list[Any] = [_missing_body()]
            else:
                item, errors = body_field.validate(body, {}, loc=("body",))
            if errors:
                raise RequestValidationError(errors, body=None if body is PydanticUndefined else body)
            ingestion = interactions_state(request.app).ingestion
            response: Response = await endpoint(
                body=item, request=request, ingestion=ingestion, idempotency=idempotency
            )
            return response

        return handler


async def _json_body(request: Request) -> Any:
    """The body as FastAPI reads it: parsed when it is JSON by its content type, the raw bytes (which the
    validation refuses) otherwise, undefined when empty; invalid JSON is a 422, an unreadable body a 400."""
    try:
        raw = await request.body()
        if not raw:
            return PydanticUndefined
        if not _is_json(request.headers.get("content-type")):
            return raw
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        error = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error", "input": {},
                 "ctx": {"error": exc.msg}}  # fmt: skip
        raise RequestValidationError([error], body=exc.doc) from exc
    except HTTPException:  # the body limit, NUL and surrogate checks of servicekit.http
        raise
    except Exception as exc:  # not UTF-8, nested too deep
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from exc


def _is_json(content_type: str | None) -> bool:
    """application/json or application/*+json, parameters and case aside (FastAPI's strict content type)."""
    if not content_type:
        return False
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind.count("/") != 1:
        return False
    main, sub = kind.split("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def _missing_body() -> dict[str, Any]:
    return {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
