"""RequestContextMiddleware: the request id (made when absent or invalid, echoed when valid), the traceparent in the
request's context, and a declared body over the limit refused before it is read."""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI

from servicekit.http import RequestContextMiddleware
from servicekit.logging import current_request_context


async def test_request_ids_traceparent_and_declared_length() -> None:
    app = FastAPI()

    @app.post("/echo")
    async def echo() -> dict[str, str | None]:
        context = current_request_context()
        return {"request_id": context.get("request_id"), "traceparent": context.get("traceparent")}

    app.add_middleware(RequestContextMiddleware, max_body_bytes=100)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        made = [await client.post("/echo") for _ in range(3)]
        assert all(re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]) for r in made)
        assert len({r.headers["x-request-id"] for r in made}) == 3
        assert [r.json()["request_id"] for r in made] == [r.headers["x-request-id"] for r in made]
        given = await client.post("/echo", headers={"X-Request-ID": "req-1", "Traceparent": traceparent})
        assert given.headers["x-request-id"] == "req-1"
        assert given.json() == {"request_id": "req-1", "traceparent": traceparent}
        invalid = await client.post("/echo", headers={"x-request-id": "a b", "traceparent": "nonsense"})
        assert invalid.headers["x-request-id"] != "a b" and invalid.json()["traceparent"] is None
        too_large = await client.post("/echo", content=b"x" * 101)
        assert too_large.status_code == 413 and too_large.json()["max_body_bytes"] == 100
