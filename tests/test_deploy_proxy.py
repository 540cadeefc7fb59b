"""The reverse proxy in front of the gateway (issue 18, item 10): deploy/caddy/Caddyfile run by a real Caddy in
front of a real uvicorn that serves with the gateway's flags and body limit. TLS with HSTS and security headers;
the client's own address reaches the gateway, never one the client made up; bodies over the gateway's limit are
a 413 problem; a client sending its headers or body a byte at a time is cut off at the configured timeout,
while a live stream goes on past it. The Kubernetes Caddyfile configures the same server."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from gateway.settings import GatewaySettings
from servicekit.http import DRAIN_FACTOR, build_app
from servicekit.processes import spawn
from servicekit.testing import missing_tool
from servicekit.testing.ports import free_port, wait_for_port
from tests.deploy_support import compose, proxy

GATEWAY_LIMIT = GatewaySettings.model_fields["max_body_bytes"].default
# The Caddyfile's timeouts, in seconds (read from the file: the tests below hold Caddy to them).
TIMEOUT_UNITS = {"s": 1, "m": 60}


def _timeouts(text: str) -> dict[str, int]:
    found = re.findall(r"(?m)^\s*(read_header|read_body|idle|write)\s+(\d+)([sm])\s*$", text)
    return {name: int(number) * TIMEOUT_UNITS[unit] for name, number, unit in found}


TIMEOUTS = _timeouts(proxy.CADDYFILE.read_text())
STREAM_S = TIMEOUTS["read_body"] + 3  # a live stream longer than any request may take to arrive


@pytest.fixture(scope="module")
def caddy() -> str:
    binary = proxy.caddy_binary()
    if binary is None:
        missing_tool("caddy", "apt-get install caddy")
    assert binary is not None
    return binary


def upstream_app() -> FastAPI:
    """What the proxy is tested against: the platform's app (body limit, problems) with the gateway's limit."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield

    app = build_app(title="upstream", description="", version="0", lifespan=lifespan, max_body_bytes=GATEWAY_LIMIT)

    @app.get("/who")
    async def who(request: Request) -> dict[str, Any]:
        assert request.client is not None
        return {"client": request.client.host, "scheme": request.url.scheme}

    @app.post("/body")
    async def body(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            for n in range(STREAM_S + 1):
                yield f"data: {n}\n\n"
                await asyncio.sleep(1)

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@dataclass
class Proxied:
    url: str
    host: str
    port: int
    tls: ssl.SSLContext


@pytest.fixture(scope="module")
def proxied(caddy: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    home = tmp_path_factory.mktemp("caddy")
    upstream_port, https_port = free_port(), free_port()
    # The gateway's uvicorn flags in compose: proxy headers believed from the proxy's address only.
    server = uvicorn.Server(
        uvicorn.Config(
            upstream_app(), host="127.0.0.1", port=upstream_port, log_level="warning",
            proxy_headers=True, forwarded_allow_ips="127.0.0.1",
        )
    )  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    caddyfile = home / "Caddyfile"
    caddyfile.write_text(
        proxy.local_caddyfile(
            proxy.CADDYFILE.read_text(), upstream=f"127.0.0.1:{upstream_port}",
            admin_port=free_port(), http_port=free_port(), https_port=https_port,
        )
    )  # fmt: skip
    process = spawn(
        [caddy, "run", "--config", str(caddyfile), "--adapter", "caddyfile"],
        env=proxy.caddy_env(home, TOUCHPOINT_DOMAIN="localhost"),
        stdout=(home / "caddy.log").open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_port(upstream_port)
        wait_for_port(https_port, timeout=30)
        deadline = time.monotonic() + 30
        while not proxy.root_certificate(home).exists():
            assert process.poll() is None and time.monotonic() < deadline, (home / "caddy.log").read_text()
            time.sleep(0.1)
        yield Proxied(f"https://localhost:{https_port}", "localhost", https_port, proxy.trusting(home))
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        server.should_exit = True
        thread.join(timeout=10)


def test_both_caddyfiles_configure_the_same_server_with_the_gateways_limits(caddy: str, tmp_path: Path) -> None:
    env = proxy.caddy_env(tmp_path, TOUCHPOINT_DOMAIN="crm.example.com")
    checked = subprocess.run(
        [caddy, "validate", "--config", str(proxy.CADDYFILE), "--adapter", "caddyfile"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Caddy refuses a misspelt directive, so the pass above means something.
    broken = tmp_path / "Caddyfile"
    broken.write_text(proxy.CADDYFILE.read_text().replace("read_header", "read_headers"))
    refused = subprocess.run(
        [caddy, "validate", "--config", str(broken), "--adapter", "caddyfile"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert refused.returncode != 0 and "read_headers" in refused.stdout + refused.stderr

    compose_config = proxy.adapt(caddy, proxy.CADDYFILE, env)
    kubernetes_config = proxy.adapt(caddy, proxy.KUBERNETES_CADDYFILE, env)
    [server] = compose_config["apps"]["http"]["servers"].values()
    [kubernetes_server] = kubernetes_config["apps"]["http"]["servers"].values()
    # The same server but for where the certificate comes from (an ACME account or Caddy's CA; a Secret).
    assert kubernetes_server.pop("tls_connection_policies")
    assert kubernetes_server == server
    assert proxy.KUBERNETES_TLS in proxy.KUBERNETES_CADDYFILE.read_text()
    assert proxy.COMPOSE_TLS in proxy.CADDYFILE.read_text()
    # Timeouts for slow clients; none on writing (live timelines stream for as long as they are read).
    second = 1_000_000_000
    assert server["read_header_timeout"] == 10 * second and server["read_header_timeout"] < server["read_timeout"]
    assert server["read_timeout"] <= 60 * second and 0 < server["idle_timeout"] <= 300 * second
    assert "write_timeout" not in server
    assert TIMEOUTS == {"read_header": 10, "read_body": 30, "idle": 120}
    text = str(server)
    # The body bound the gateway's drain works under: a refused body is read up to 4x the limit, then 413.
    assert f"'max_size': {DRAIN_FACTOR * GATEWAY_LIMIT}" in text
    assert "'Strict-Transport-Security': ['max-age=63072000; includeSubDomains']" in text
    assert "'dial': 'gateway:8000'" in text


async def test_https_with_hsts_and_the_clients_own_address(proxied: Proxied) -> None:
    async with httpx.AsyncClient(verify=proxied.tls) as client:
        # A made-up X-Forwarded-For (to escape the per-address sign-in limit) is dropped by the proxy.
        response = await client.get(f"{proxied.url}/who", headers={"X-Forwarded-For": "203.0.113.7"})
        assert response.status_code == 200
        assert response.json() == {"client": "127.0.0.1", "scheme": "https"}
        assert response.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert "server" not in response.headers


async def test_a_body_over_the_gateways_limit_is_a_413_problem_however_it_is_sent(proxied: Proxied) -> None:
    async def chunked(size: int) -> AsyncIterator[bytes]:
        for start in range(0, size, 65_536):
            yield b"x" * min(65_536, size - start)

    async with httpx.AsyncClient(verify=proxied.tls, timeout=30) as client:
        accepted = await client.post(f"{proxied.url}/body", content=b"x" * GATEWAY_LIMIT)
        assert accepted.status_code == 200 and accepted.json() == {"bytes": GATEWAY_LIMIT}
        for size in (GATEWAY_LIMIT + 1, 3 * GATEWAY_LIMIT, 6 * GATEWAY_LIMIT):
            for make_content in (lambda size=size: b"x" * size, lambda size=size: chunked(size)):
                if size > DRAIN_FACTOR * GATEWAY_LIMIT:
                    # Past what the proxy and the gateway read and drop, the refusal comes while the client is still
                    # sending: an HTTP/1.1 client may read the 413 or meet the closed connection (both refuse it).
                    try:
                        refused = await client.post(f"{proxied.url}/body", content=make_content())
                    except httpx.ReadError:
                        continue
                else:
                    refused = await _post_past_a_refusal(client, f"{proxied.url}/body", make_content)
                assert refused.status_code == 413, (size, refused.status_code, refused.text[:200])
                assert refused.headers["content-type"] == "application/problem+json"
                assert refused.json()["status"] == 413
                assert refused.headers["strict-transport-security"]


async def _post_past_a_refusal(
    client: httpx.AsyncClient, url: str, make_content: Callable[[], bytes | AsyncIterator[bytes]]
) -> httpx.Response:
    """POST a body the server refuses before reading it all. HTTP/1.1 lets the server answer and close while the
    client is still sending; a client that is slow to read (a loaded machine) then meets the closed connection
    before the answer. Such a reset is tried again (at most three times), any answer but a 413 fails at once."""
    for attempt in range(3):
        try:
            return await client.post(url, content=make_content())
        except httpx.ReadError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def _open(proxied: Proxied) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(proxied.host, proxied.port, ssl=proxied.tls, server_hostname=proxied.host)


async def _trickle(proxied: Proxied, head: bytes, trickled: bytes, *, limit_s: float) -> float:
    """Send ``head``, then ``trickled`` a byte every half second; seconds until the proxy ends the connection."""
    reader, writer = await _open(proxied)
    started = time.monotonic()
    writer.write(head)
    try:
        for byte in trickled:
            writer.write(bytes([byte]))
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                answer = await asyncio.wait_for(reader.read(65_536), timeout=0.5)
                if not answer or b" 408 " in answer or b"HTTP/1.1" in answer:
                    return time.monotonic() - started
            assert time.monotonic() - started < limit_s + 5, "still open well past the timeout"
    except (ConnectionError, ssl.SSLError):
        return time.monotonic() - started
    finally:
        writer.close()
    raise AssertionError("the trickle ended before the proxy cut it off")


@pytest.mark.timeout(120)
async def test_slow_senders_are_cut_off_at_the_timeouts_and_a_live_stream_is_not(proxied: Proxied) -> None:
    header_s, body_s = TIMEOUTS["read_header"], TIMEOUTS["read_body"]

    async def slow_headers() -> float:
        # A slowloris: request headers that never end.
        return await _trickle(proxied, b"GET /who HTTP/1.1\r\nHost: localhost\r\n", b"X-Slow: " + b"a" * 200,
                              limit_s=header_s)  # fmt: skip

    async def slow_body() -> float:
        head = b"POST /body HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 500\r\n\r\n"
        return await _trickle(proxied, head, b"b" * 500, limit_s=body_s)

    async def live_stream() -> tuple[float, int]:
        started = time.monotonic()
        first, events = 0.0, 0
        async with (
            httpx.AsyncClient(verify=proxied.tls, timeout=10) as client,
            client.stream("GET", f"{proxied.url}/stream") as response,
        ):
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    events += 1
                    first = first or time.monotonic() - started
        return first, events

    header_cut, body_cut, (first_event, events) = await asyncio.gather(slow_headers(), slow_body(), live_stream())
    print(f"[proxy] slow headers cut after {header_cut:.1f} s, slow body after {body_cut:.1f} s; "
          f"a stream's first event after {first_event:.2f} s, all {events} over {STREAM_S} s")  # fmt: skip
    assert header_s - 1 <= header_cut <= header_s + 2, header_cut
    assert body_s - 1 <= body_cut <= body_s + 2, body_cut
    # Each event as it is written (not buffered), and the stream outlives the longest a request may take.
    assert first_event < 1.5 and events == STREAM_S + 1, (first_event, events)


def test_compose_runs_the_caddy_release_the_tests_run(caddy: str) -> None:
    image = compose.load_raw()["services"]["proxy"]["image"]
    major, minor = proxy.caddy_version(caddy)
    assert image.startswith(f"caddy:{major}.{minor}"), f"{image} vs caddy {major}.{minor} in the tests"
