"""RequestContextMiddleware: the request id (made when absent or invalid, echoed when valid), the traceparent in the
request's context, and a declared body over the limit refused before it is read."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request

from servicekit.http import RequestContextMiddleware
from servicekit.logging import current_request_context
from servicekit.problems import install_problem_handlers


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


async def test_a_surrogate_pair_at_the_end_of_a_body_is_text_in_any_chunking() -> None:
    """``json.dumps`` writes an emoji as a pair of surrogate escapes; a pair in the last bytes of a body was refused
    (422) once the final, empty chunk arrived: the low half was judged again without its high half."""
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/echo")
    async def echo(request: Request) -> object:
        return await request.json()

    app.add_middleware(RequestContextMiddleware, max_body_bytes=1000)
    body = b'{"name": "Smile \\ud83d\\ude00"}'

    async def in_pieces(size: int) -> AsyncIterator[bytes]:
        for start in range(0, len(body), size):
            yield body[start : start + size]

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        contents: list[bytes | AsyncIterator[bytes]] = [body, *(in_pieces(size) for size in (1, 3, 7, 11, 13))]
        for content in contents:
            answer = await client.post("/echo", content=content, headers={"content-type": "application/json"})
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"name": "Smile \U0001f600"}
        lone = await client.post("/echo", content=b'{"name": "x\\ud83d"}', headers={"content-type": "application/json"})
        assert lone.status_code == 422


async def test_made_up_methods_share_one_metric_series() -> None:
    """The method label had one value per method a client sent: 50 made-up methods made 50 series."""
    from prometheus_client import REGISTRY

    app = FastAPI()

    @app.get("/known")
    async def known() -> dict[str, str]:
        return {}

    app.add_middleware(RequestContextMiddleware, max_body_bytes=100)

    def methods_seen() -> set[str]:
        [family] = [f for f in REGISTRY.collect() if f.name == "http_requests"]
        return {s.labels["method"] for s in family.samples if s.labels.get("route") in ("/known", "unmatched")}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        for n in range(50):
            await client.request(f"MADEUP{n}", "/known")
        await client.get("/known")
    seen = methods_seen()
    assert "other" in seen and "GET" in seen
    assert not any(m.startswith("MADEUP") for m in seen), seen
