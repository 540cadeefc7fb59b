"""servicekit.serve: several worker processes, each on its own SO_REUSEPORT socket, stopped together."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from servicekit.http import RequestContextMiddleware
from servicekit.processes import spawn
from servicekit.testing.plugin import eventually
from servicekit.testing.ports import free_port, wait_for_port


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/pid")
    async def pid() -> int:
        return os.getpid()

    return app


def create_counted_app() -> FastAPI:
    """The same, counting its requests as every service does (servicekit.http's middleware)."""
    app = create_app()
    app.add_middleware(RequestContextMiddleware)
    return app


def create_sampled_app() -> FastAPI:
    """Each worker sets the sampled gauges as servicekit.opsmetrics does: its own pool, and the lag every worker
    reads alike from JetStream."""
    from contextlib import asynccontextmanager

    from servicekit.metrics import CONSUMER_PENDING, DB_POOL_IN_USE

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        DB_POOL_IN_USE.labels("sampled").set(3)
        CONSUMER_PENDING.labels("sampled-durable").set(7)
        yield

    app = create_app()
    app.router.lifespan_context = lifespan
    return app


async def _pid_over(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    writer.write(b"GET /pid HTTP/1.1\r\nHost: test\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
    return int(await reader.readexactly(length))


async def test_connections_made_at_once_are_spread_over_the_workers_and_a_sigterm_stops_them_all() -> None:
    port = free_port()
    server = spawn(
        [sys.executable, "-m", "servicekit.serve", "servicekit.tests.test_serve:create_app", "--port", str(port),
         "--workers", "2"],
        start_new_session=True,
    )  # fmt: skip
    try:
        await asyncio.to_thread(wait_for_port, port)
        await asyncio.sleep(0.5)  # both workers listening
        # 32 keep-alive connections opened at once, as the benchmarks' readers open theirs. Through uvicorn's
        # --workers (one shared socket) one worker took 29 to 32 of them; here the kernel spreads them.
        connections = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(32)))
        try:
            pids = [await _pid_over(r, w) for r, w in connections]
            again = [await _pid_over(r, w) for r, w in connections]
        finally:
            for _, writer in connections:
                writer.close()
        assert again == pids, "a connection stays with its worker"
        counts = sorted(pids.count(p) for p in set(pids))
        assert len(counts) == 2 and counts[0] >= 6, counts
        server.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.wait, 15) == 0
        for pid in set(pids):
            assert not os.path.exists(f"/proc/{pid}"), f"worker {pid} outlived its parent"
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _requests_counted(metrics: str, route: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "http_requests_total" and sample.labels.get("route") == route
    )


async def test_the_supervisor_serves_the_sum_of_every_workers_metrics_on_the_metrics_port() -> None:
    port, metrics_port = free_port(), free_port()
    server = spawn(
        [sys.executable, "-m", "servicekit.serve", "servicekit.tests.test_serve:create_counted_app",
         "--port", str(port), "--workers", "2", "--metrics-port", str(metrics_port)],
        start_new_session=True,
    )  # fmt: skip
    try:
        await asyncio.to_thread(wait_for_port, port)
        await asyncio.to_thread(wait_for_port, metrics_port)
        await asyncio.sleep(0.5)  # both workers listening
        connections = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(32)))
        try:
            pids = [await _pid_over(r, w) for r, w in connections]
        finally:
            for _, writer in connections:
                writer.close()
        assert len(set(pids)) == 2, "both workers answered"
        async with httpx.AsyncClient() as client:
            # Each worker counted its own share; a scrape of the metrics port sees all 32, whoever served them.
            for _ in range(4):
                scraped = await client.get(f"http://127.0.0.1:{metrics_port}/metrics")
                assert scraped.status_code == 200
                assert _requests_counted(scraped.text, "/pid") == 32
            # The workers' API port has no metrics.
            assert (await client.get(f"http://127.0.0.1:{port}/metrics")).status_code == 404
        server.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.wait, 15) == 0
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


async def test_the_sampled_gauges_add_up_the_pools_and_take_the_lag_once_over_the_workers() -> None:
    port, metrics_port = free_port(), free_port()
    server = spawn(
        [sys.executable, "-m", "servicekit.serve", "servicekit.tests.test_serve:create_sampled_app",
         "--port", str(port), "--workers", "2", "--metrics-port", str(metrics_port)],
        start_new_session=True,
    )  # fmt: skip
    try:
        await asyncio.to_thread(wait_for_port, port)
        await asyncio.to_thread(wait_for_port, metrics_port)

        async def both_workers_reported() -> dict[str, float] | None:
            async with httpx.AsyncClient() as client:
                scraped = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
            values = {
                sample.name: sample.value
                for family in text_string_to_metric_families(scraped)
                for sample in family.samples
                if sample.labels.get("service") == "sampled" or sample.labels.get("durable") == "sampled-durable"
            }
            return values if values.get("db_pool_connections_in_use") == 6 else None

        values = await eventually(both_workers_reported, timeout=30)
        assert values == {"db_pool_connections_in_use": 6, "consumer_pending_messages": 7}
        server.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.wait, 15) == 0
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
