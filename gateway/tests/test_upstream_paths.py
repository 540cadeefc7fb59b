"""Path traversal (issue 18, item 12): no value a caller puts into a gateway path reaches another route of a
service. Every API route with a path parameter is tried (enumerated from the app, not listed by hand) with
dot-segments and slashes sent as they are, percent-encoded and double-encoded, over a real socket, so nothing
between the caller and the route tidies the path first."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urlsplit

import pytest

from gateway.api import endpoint_actions
from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.tests.conftest import ADMIN, StubServices
from gateway.upstream import ServiceClient, UnsafeUpstreamPath, path_segment, upstream_path
from servicekit.clock import MovableClock
from servicekit.testing.apps import served

PAYLOADS = (
    "a/../../../metrics",
    "..",
    "%2e%2e",
    "a/%2e%2e/%2e%2e/%2e%2e/readyz",
    "a%2f..%2f..%2f..%2fopenapi.json",
    "a%2F..%2F..%2Fv1%2Fstats",
    "a%252f..%252f..%252fmetrics",
    "..%2f..%2f..%2fmetrics",
)
_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


def test_a_value_is_always_one_segment_and_never_a_dot_segment() -> None:
    assert upstream_path("/v1/threads/{}", "a/../../metrics") == "/v1/threads/a%2F..%2F..%2Fmetrics"
    assert upstream_path("/v1/policies/{}/enable", "..") == "/v1/policies/%2E%2E/enable"
    assert (
        path_segment(".") == "%2E"
        and path_segment("%2f") == "%252f"
        and path_segment("mail:a@b.c") == ("mail%3Aa%40b.c")
    )


async def test_a_path_with_a_dot_segment_never_leaves_the_gateway() -> None:
    client = ServiceClient("interactions", "http://svc", timeout_s=1, connect_timeout_s=0.2, read_retries=0)
    try:
        with pytest.raises(UnsafeUpstreamPath):
            await client.request("GET", "/v1/threads/a/../../metrics", caller="me")
    finally:
        await client.close()


async def _send_as_is(base_url: str, method: str, raw_path: str) -> int:
    """One HTTP/1.1 request whose path is written on the wire exactly as given (httpx would remove dot-segments,
    as ``curl --path-as-is`` does not)."""
    parts = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    body = b"{}" if method in ("POST", "PUT", "PATCH") else b""
    head = (
        f"{method} {raw_path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: {ADMIN['Authorization']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    status_line = await reader.readline()
    await reader.read()
    writer.close()
    return int(status_line.split()[1])


async def test_every_forwarding_route_keeps_a_traversal_payload_inside_its_own_route(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices
) -> None:
    app = create_app(gateway_settings, clock=clock, transports=stub.transports())
    routes = [(method, path) for method, path, _action in endpoint_actions() if "{" in path]
    assert len(routes) >= 20, routes
    reached: set[str] = set()
    async with served(app) as base_url:
        for method, path in routes:
            for payload in PAYLOADS:
                raw_path = _PARAM.sub(payload, path)
                stub.calls.clear()
                status = await _send_as_is(base_url, method, raw_path)
                assert status != 500 and not 200 <= status < 300, (method, raw_path, status)
                # The service is asked for the route's own resource, the value one segment of it.
                wanted = path.removeprefix("/api").split("/")
                for call in stub.calls:
                    sent = call.url.raw_path.decode().split("?")[0].split("/")
                    assert "." not in sent and ".." not in sent, (raw_path, sent)
                    assert sent[:3] == wanted[:3], (raw_path, sent)
                    assert len(sent) <= len(wanted), (raw_path, sent)
                    reached.add(path)
    # Not vacuous: the thread route takes free text (slashes included) and called its service; the others take
    # uuids or a policy id's pattern, which refuse every payload before a service is asked.
    assert "/api/v1/threads/{thread_id}" in reached, reached
