from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.tests.conftest import ADMIN
from gateway.upstream import GatewayTimeout, ServiceClient, relay
from servicekit.clock import MovableClock
from servicekit.problems import PROBLEM_MEDIA_TYPE as PROBLEM
from servicekit.problems import ServiceUnavailable
from servicekit.testing.apps import running_app


def _client(handler: httpx.MockTransport, retries: int = 2) -> ServiceClient:
    return ServiceClient(
        "interactions", "http://svc", timeout_s=1, connect_timeout_s=0.2, read_retries=retries, transport=handler
    )


async def test_reads_are_retried_and_writes_are_not() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        return httpx.Response(503 if len(seen) < 3 else 200, json={})

    client = _client(httpx.MockTransport(answer))
    assert (await client.request("GET", "/v1/x", caller="k1")).status_code == 200
    assert seen == ["GET", "GET", "GET"]
    seen.clear()
    assert (await client.request("POST", "/v1/x", caller="k1", json={})).status_code == 503
    assert seen == ["POST"]


async def test_transport_failures_become_problems_naming_the_service() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(ServiceUnavailable) as down:
        await _client(httpx.MockTransport(refuse)).request("GET", "/v1/x", caller=None)
    assert down.value.extensions["service"] == "interactions" and down.value.headers["Retry-After"]
    with pytest.raises(GatewayTimeout) as slow:
        await _client(httpx.MockTransport(stall)).request("POST", "/v1/x", caller=None)
    assert slow.value.status == 504 and slow.value.extensions["service"] == "interactions"


def test_a_service_answer_is_relayed_with_its_headers_and_a_gateway_location() -> None:
    merged = httpx.Response(308, json={"merged_into": "b"}, headers={"Location": "/v1/contacts/b", "ETag": '"x"'})
    relayed = relay(merged, service="contacts")
    assert relayed.status_code == 308 and relayed.headers["location"] == "/api/v1/contacts/b"
    assert relayed.headers["etag"] == '"x"'
    # The interactions service's replay header, as the README promises it to clients (issue 22, item 7).
    replay = httpx.Response(201, json={}, headers={"Idempotency-Replayed": "true", "Idempotency-Key": "k1"})
    replayed = relay(replay, service="interactions")
    assert replayed.headers["idempotency-replayed"] == "true" and replayed.headers["idempotency-key"] == "k1"
    crashed = relay(httpx.Response(500, text="Traceback ..."), service="contacts")
    assert crashed.status_code == 502 and b"Traceback" not in crashed.body and b"contacts" in crashed.body
    # A problem names the path the caller asked for, not the service's.
    gone = {"type": "https://touchpoint.dev/problems/gone", "title": "Gone", "status": 410,
            "instance": "/v1/contacts/a", "detail": "Erased."}  # fmt: skip
    erased = relay(httpx.Response(410, json=gone, headers={"Content-Type": PROBLEM}), service="contacts")
    assert json.loads(bytes(erased.body)) == {**gone, "instance": "/api/v1/contacts/a"}
    assert erased.headers["content-type"] == PROBLEM


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A real TCP server that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        for writer in held:
            writer.close()
        server.close()


async def test_a_service_that_is_down_or_silent_is_503_or_504_never_a_hang(
    gateway_settings: GatewaySettings, clock: MovableClock, unused_tcp_port: int
) -> None:
    async with silent_server() as silent_port:
        settings = gateway_settings.model_copy(
            update={
                "contacts_url": f"http://127.0.0.1:{unused_tcp_port}",
                "interactions_url": f"http://127.0.0.1:{silent_port}",
                "upstream_timeout_s": 0.5,
            }
        )
        async with running_app(create_app(settings, clock=clock)) as client:
            down = await client.get(f"/api/v1/contacts/{uuid.uuid4()}", headers=ADMIN)
            assert down.status_code == 503
            assert down.headers["content-type"].startswith("application/problem+json")
            assert down.json()["service"] == "contacts" and "contacts" in down.json()["detail"]
            assert int(down.headers["retry-after"]) > 0

            started = asyncio.get_running_loop().time()
            slow = await client.get("/api/v1/interactions", headers=ADMIN)
            assert slow.status_code == 504 and slow.json()["service"] == "interactions"
            assert asyncio.get_running_loop().time() - started < 3

            ready = await client.get("/readyz")
            assert ready.status_code == 503
            checks = ready.json()["checks"]
            assert checks["database"] == "ok" and checks["nats"] == "ok"
            assert checks["contacts"] != "ok" and checks["interactions"] != "ok"


async def test_an_idle_connection_is_not_reused_after_the_keepalive_so_a_write_never_meets_a_closing_server() -> None:
    """The load run saw 503 "dropped the connection" on writes: the pool reused a connection the service's server
    was closing for idleness. This server answers one request per connection and then, like uvicorn at the end of
    its keep-alive, silently discards whatever arrives on that connection after it has been idle a while."""
    idle_close_s = 0.3

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered_at: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
            await reader.readexactly(length)
            if answered_at is not None and loop.time() - answered_at >= idle_close_s:
                writer.close()  # the request crossed the server's close: nothing is answered
                return
            writer.write(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}")
            await writer.drain()
            answered_at = loop.time()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = ServiceClient("interactions", f"http://127.0.0.1:{port}", timeout_s=2, connect_timeout_s=1,
                           read_retries=2, keepalive_s=idle_close_s / 3)  # fmt: skip
    try:
        assert (await client.request("POST", "/v1/x", caller="k", json={})).status_code == 201
        await asyncio.sleep(idle_close_s + 0.05)
        assert (await client.request("POST", "/v1/x", caller="k", json={})).status_code == 201
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
