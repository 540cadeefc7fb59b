"""``QueryParametersRoute`` answers exactly as FastAPI's own parameter solving does.

The contact page's endpoint signature is served twice in one app built by servicekit (its middleware and problem
handlers): once through the route class, once through FastAPI's generic handling. Every request, valid or not,
must get the same status and body (a problem's ``instance``, the path, aside) from both, a valid one reaching the
endpoint with the same arguments and a connection."""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fastapi.routing
import httpx
import pytest
from fastapi import APIRouter, FastAPI, Response
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncConnection

from servicekit.db import make_engine
from servicekit.http import build_app
from services.interactions import api
from services.interactions.list_route import QueryParametersRoute


async def echo(**arguments: Any) -> Response:
    """What the endpoint was given (its signature is the contact page's)."""
    connection = arguments.pop("connection")
    assert isinstance(connection, AsyncConnection) and not connection.closed
    seen = {name: value if value is None or isinstance(value, int) else str(value) for name, value in arguments.items()}
    return Response(json.dumps(seen, sort_keys=True), media_type="application/json")


echo.__signature__ = inspect.signature(api.list_touchpoints, eval_str=True)  # type: ignore[attr-defined]


@asynccontextmanager
async def _no_lifespan(_app: FastAPI) -> AsyncIterator[None]:
    yield


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(title="t", description="t", version="1", lifespan=_no_lifespan, max_body_bytes=64 * 1024)
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'read.db'}")
    app.state.runtime = SimpleNamespace(engine=engine, read_engine=None)
    router = APIRouter()
    router.add_api_route("/lean", echo, methods=["GET"], route_class_override=QueryParametersRoute)
    router.add_api_route("/generic", echo, methods=["GET"])
    app.include_router(router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        yield http
    await engine.dispose()


CONTACT = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
QUERIES = [
    "",
    f"contact_id={CONTACT}&limit=50",
    f"contact_id={CONTACT.upper()}&limit=200&before=2026-01-05T09:00:00Z|{CONTACT}",
    "channel=phone&type=complaint&direction=inbound&thread_id=t-1",
    "since=2026-01-05T09:00:00%2B02:00&until=2026-01-06",
    "cursor=abc&limit=1",
    "unknown=1&limit=7",
    "limit=0", "limit=201", "limit=abc", "limit=", "limit=1.5",
    "contact_id=nope", "contact_id=", "channel=fax", "channel=", "type=other", "direction=sideways",
    "since=12345", "since=yesterday", "until=2026-13-01", f"thread_id={'x' * 201}", f"cursor={'c' * 513}",
    f"before={'b' * 121}", "limit=0&channel=fax&contact_id=nope",
]  # fmt: skip


@pytest.mark.parametrize("query", QUERIES)
async def test_the_route_class_answers_as_fastapi_does(
    client: httpx.AsyncClient, query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    solved: list[str] = []
    solve = fastapi.routing.solve_dependencies

    async def counted(*args: Any, **kwargs: Any) -> Any:
        solved.append(query)
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    lean = await client.get(f"/lean?{query}")
    # A valid request is served by the route class itself; an invalid one by FastAPI's handling.
    assert bool(solved) == (lean.status_code != 200)
    generic = await client.get(f"/generic?{query}")
    assert lean.status_code == generic.status_code, lean.text
    assert lean.headers["content-type"] == generic.headers["content-type"]

    def comparable(response: httpx.Response) -> Any:
        body = response.json()
        if isinstance(body, dict):
            body.pop("instance", None)
        return body

    assert comparable(lean) == comparable(generic)


def test_the_service_serves_its_contact_page_through_the_route_class() -> None:
    routes = [r for r in api.router.routes if isinstance(r, APIRoute) and r.path == "/v1/interactions"]
    (page,) = [r for r in routes if r.methods == {"GET"}]
    assert isinstance(page, QueryParametersRoute)


def test_an_endpoint_with_other_parameters_is_refused() -> None:
    async def other(connection: Any, limit: int = 1) -> Response:
        return Response()

    with pytest.raises(TypeError):
        APIRouter().add_api_route("/x", other, methods=["GET"], route_class_override=QueryParametersRoute)
