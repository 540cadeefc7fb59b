"""What every service-to-service httpx client shares."""

from __future__ import annotations

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from servicekit.tracing import recording

# An idle pooled connection is closed on our side before the server behind it closes it for idleness (uvicorn
# keeps an idle connection 5 s): a request sent on a connection the server is closing at that instant fails
# with nothing received, and a write cannot be retried safely. The 10-minute load run saw exactly that, first
# from the gateway to the services, then from interactions to contacts.
KEEPALIVE_S = 2.0


def service_client(
    base_url: str,
    *,
    timeout: httpx.Timeout,
    connections: int,
    keepalive_s: float = KEEPALIVE_S,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The pooled httpx client of another Touchpoint service: at most ``connections`` at once, idle ones
    dropped after ``keepalive_s``; ``transport`` replaces the pool (tests). Traced when tracing records
    (``servicekit.tracing``): a CLIENT span per call, its context in the request's ``traceparent``.

    The client is httpx (its API, timeouts and errors); the pool under it is aiohttp's. httpcore's pool polls
    the socket of every idle connection each time it assigns a request (encode/httpcore#928, still open), so
    with a few dozen connections that costs more CPU than the call: the gateway spent 7.4 ms of CPU per
    timeline page on httpcore's pool and 5.0 ms on this one (bench/timeline.py --quick), and a bare client's
    CPU per call went from 1.7-2.2 ms to 0.5 ms."""
    transport = transport or _aiohttp_pool(connections, keepalive_s)
    if recording():
        # The instrumentation's own wrapper: its global patch covers httpx's transports, not this aiohttp one.
        from opentelemetry.instrumentation.httpx import AsyncOpenTelemetryTransport

        transport = AsyncOpenTelemetryTransport(transport)
    return httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport, follow_redirects=False)


def _aiohttp_pool(connections: int, keepalive_s: float) -> httpx.AsyncBaseTransport:
    # The session is made on the first request, inside the running event loop, as aiohttp requires.
    return AiohttpTransport(
        client=lambda: aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, keepalive_timeout=keepalive_s)
        )
    )
