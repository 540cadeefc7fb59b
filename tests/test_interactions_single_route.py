"""``SingleTouchpointRoute`` answers exactly as FastAPI's own parameter solving does.

The same endpoint signature is served twice in one app built by servicekit (its middleware and problem
handlers): once through the route class, once through FastAPI's generic handling. Every request, valid or not,
must get the same status and the same problem (its ``instance``, the path, aside) from both, and a valid one must
reach the endpoint with the same arguments."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.routing import APIRoute

from servicekit.http import build_app
from services.interactions import api
from services.interactions.deps import IdempotencyDep, IngestionDep, _ingestion
from services.interactions.schemas import TouchpointCreate
from services.interactions.single_route import SingleTouchpointRoute
from services.interactions.tests.conftest import touchpoint_factory


async def echo(
    body: TouchpointCreate, request: Request, ingestion: IngestionDep, idempotency: IdempotencyDep
) -> Response:
    """What the endpoint was given."""
    seen = {"body": body.model_dump(mode="json"), "ingestion": ingestion, "idempotency": list(idempotency)}
    return Response(json.dumps(seen), status_code=201, media_type="application/json")


@asynccontextmanager
async def _no_lifespan(_app: FastAPI) -> AsyncIterator[None]:
    yield


def _app() -> FastAPI:
    app = build_app(title="t", description="t", version="1", lifespan=_no_lifespan, max_body_bytes=64 * 1024)
    app.state.interactions = SimpleNamespace(ingestion="the ingestion")  # what InteractionsState holds
    router = APIRouter()
    router.add_api_route("/lean", echo, methods=["POST"], status_code=201, route_class_override=SingleTouchpointRoute)
    router.add_api_route("/generic", echo, methods=["POST"], status_code=201)
    app.include_router(router)
    return app


VALID = json.dumps(touchpoint_factory()).encode()
JSON = {"content-type": "application/json"}
CASES: list[tuple[str, bytes, dict[str, str]]] = [
    ("valid", VALID, JSON),
    ("valid with key and caller", VALID, {**JSON, "idempotency-key": "k-1", "x-touchpoint-caller": "shop"}),
    ("json with charset and capitals", VALID, {"content-type": "Application/JSON; charset=utf-8"}),
    ("+json subtype", VALID, {"content-type": "application/vnd.touchpoint+json"}),
    ("no content type", VALID, {}),
    ("text/plain", VALID, {"content-type": "text/plain"}),
    ("content type without a subtype", VALID, {"content-type": "application"}),
    ("invalid field", json.dumps(touchpoint_factory(channel="fax")).encode(), JSON),
    ("missing field", json.dumps({k: v for k, v in touchpoint_factory().items() if k != "type"}).encode(), JSON),
    ("unknown field", json.dumps(touchpoint_factory(colour="red")).encode(), JSON),
    ("empty body", b"", JSON),
    ("JSON null", b"null", JSON),
    ("JSON list", b"[]", JSON),
    ("JSON string", b'"x"', JSON),
    ("truncated JSON", VALID[:-5], JSON),
    ("not UTF-8", b'{"subject": "\xff\xfe"}', JSON),
    ("nested too deep", b"[" * 100_000 + b"]" * 100_000, JSON),
    ("NUL escape", json.dumps(touchpoint_factory(subject="a\u0000b")).encode(), JSON),
    ("empty key", VALID, {**JSON, "idempotency-key": ""}),
    ("key too long", VALID, {**JSON, "idempotency-key": "k" * 256}),
    ("caller too long", VALID, {**JSON, "idempotency-key": "k", "x-touchpoint-caller": "c" * 201}),
    ("blank caller", VALID, {**JSON, "idempotency-key": "k", "x-touchpoint-caller": "   "}),
    ("bad key and invalid body", json.dumps(touchpoint_factory(channel="fax")).encode(),
     {**JSON, "idempotency-key": ""}),
    ("bad key and invalid JSON", b"{", {**JSON, "idempotency-key": ""}),
    ("bad key and empty body", b"", {**JSON, "idempotency-key": ""}),
]  # fmt: skip


def _answer(response: httpx.Response) -> tuple[int, Any, str | None]:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict):
        body.pop("instance", None)
    return response.status_code, body, response.headers.get("content-type")


@pytest.mark.parametrize(("name", "content", "headers"), CASES, ids=[c[0] for c in CASES])
async def test_the_route_class_answers_as_fastapi_does(name: str, content: bytes, headers: dict[str, str]) -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        lean = await client.post("/lean", content=content, headers=headers)
        generic = await client.post("/generic", content=content, headers=headers)
    assert _answer(lean) == _answer(generic)
    if name.startswith("valid"):
        assert lean.status_code == 201
        assert lean.json()["ingestion"] == "the ingestion"
        assert lean.json()["body"]["subject"] == "Where is my order?"


def test_the_service_serves_its_single_post_through_the_route_class() -> None:
    post = [r for r in api.router.routes if isinstance(r, APIRoute) and r.methods == {"POST"}]
    assert {r.path: type(r) for r in post} == {
        "/v1/interactions": SingleTouchpointRoute,
        "/v1/interactions/batch": APIRoute,
    }


async def test_the_route_class_is_what_serves_the_request() -> None:
    """Dependency overrides are applied only by FastAPI's solving (the service sets none): the generic route
    sees the override, the route class does not, so the answers above did come through the route class."""
    app = _app()
    app.dependency_overrides[_ingestion] = lambda: "overridden"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        lean = await client.post("/lean", content=VALID, headers=JSON)
        generic = await client.post("/generic", content=VALID, headers=JSON)
    assert (lean.json()["ingestion"], generic.json()["ingestion"]) == ("the ingestion", "overridden")


def test_an_endpoint_with_other_parameters_is_refused() -> None:
    async def other(body: TouchpointCreate, request: Request) -> Response:
        return Response()

    router = APIRouter()
    with pytest.raises(TypeError, match="must take exactly"):
        router.add_api_route("/x", other, methods=["POST"], route_class_override=SingleTouchpointRoute)
