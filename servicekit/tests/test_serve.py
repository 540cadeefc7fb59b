"""servicekit.serve: several worker processes, each on its own SO_REUSEPORT socket, stopped together."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

from fastapi import FastAPI

from servicekit.testing.ports import free_port, wait_for_port


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/pid")
    async def pid() -> int:
        return os.getpid()

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
    server = subprocess.Popen(
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
