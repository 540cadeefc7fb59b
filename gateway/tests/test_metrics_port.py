"""Issue 18, item 13: the gateway's Prometheus metrics are not on the public port, only on their own."""

from __future__ import annotations

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.tests.conftest import ADMIN, StubServices
from servicekit.clock import MovableClock
from servicekit.testing.apps import running_app
from servicekit.testing.ports import free_port


async def test_metrics_are_served_on_their_own_port_and_the_public_port_answers_404(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices
) -> None:
    port = free_port()
    settings = gateway_settings.model_copy(update={"metrics_port": port})
    app = create_app(settings, clock=clock, transports=stub.transports())
    async with running_app(app) as client:
        # Before the fix anyone on the public port read every route's traffic here.
        for headers in ({}, ADMIN):
            for path in ("/metrics", "/metrics/", "/api/v1/../metrics"):
                public = await client.get(path, headers=headers)
                assert public.status_code == 404, (path, public.status_code, public.text[:200])
                assert "http_requests_total" not in public.text
        assert (await client.get("/healthz")).status_code == 200
        async with httpx.AsyncClient() as scraper:
            scraped = await scraper.get(f"http://127.0.0.1:{port}/metrics")
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain")
        assert 'http_requests_total{method="GET",route="/healthz",status="200"}' in scraped.text
        # The public 404s are counted as unmatched routes, with no path (no cardinality from what callers send).
        assert 'route="unmatched",status="404"' in scraped.text
    # The listener ends with the app: the port is free for the next process.
    async with httpx.AsyncClient() as scraper:
        with pytest.raises(httpx.ConnectError):
            await scraper.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


async def test_without_a_metrics_port_nothing_listens_and_the_public_port_still_answers_404(
    gateway: httpx.AsyncClient,
) -> None:
    assert (await gateway.get("/metrics", headers=ADMIN)).status_code == 404
