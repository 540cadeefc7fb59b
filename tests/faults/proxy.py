"""A loopback TCP proxy that can delay or drop what passes through it: a slow or flaky service, for real."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Iterator

from servicekit.testing.ports import free_port


class SlowProxy:
    """Listens on 127.0.0.1:``port`` and forwards to 127.0.0.1:``target_port`` (or, given ``target_ports``, to
    each of them in turn, one connection each: two replicas behind one address, as a Kubernetes Service does).

    ``delay_s`` > 0 holds every request chunk that long before passing it on (kept-alive connections too);
    ``drop`` closes new connections at once and cuts open ones at their next chunk."""

    def __init__(self, *, target_port: int = 0, target_ports: list[int] | None = None, port: int | None = None) -> None:
        self.target_ports = target_ports or [target_port]
        self.target_port = self.target_ports[0]
        self._next_target: Iterator[int] = itertools.cycle(self.target_ports)
        self.port = port or free_port()
        self.delay_s = 0.0
        self.drop = False
        self.delayed = 0
        self.dropped = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.drop:
            self.dropped += 1
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", next(self._next_target))
        except OSError:
            # A replica that is down: the client sees a dropped connection, as behind a real load balancer.
            writer.close()
            return
        downstream = asyncio.create_task(self._pipe(up_reader, writer, delay=False))
        self._tasks.add(downstream)
        downstream.add_done_callback(self._tasks.discard)
        await self._pipe(reader, up_writer, delay=True)
        downstream.cancel()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, delay: bool) -> None:
        try:
            while True:
                chunk = await reader.read(65_536)
                if not chunk:
                    break
                if delay and self.drop:
                    self.dropped += 1
                    break
                if delay and self.delay_s > 0:
                    self.delayed += 1
                    await asyncio.sleep(self.delay_s)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


class ProxyThread:
    """Proxies served by their own event loop in a thread, so they outlive any one test's loop (a module's
    stack is wired through them from the start). Their ``delay_s`` and ``drop`` are set from the test."""

    def __init__(self, proxies: list[SlowProxy]) -> None:
        self.proxies = proxies
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fault-proxies", daemon=True)

    def __enter__(self) -> ProxyThread:
        self._thread.start()
        for proxy in self.proxies:
            asyncio.run_coroutine_threadsafe(proxy.start(), self.loop).result(timeout=10)
        return self

    def __exit__(self, *_exc: object) -> None:
        for proxy in self.proxies:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(proxy.stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
