"""A loopback TCP proxy that can delay or drop what passes through it: a slow or flaky service, for real."""

from __future__ import annotations

import asyncio
import contextlib

from servicekit.testing.ports import free_port


class SlowProxy:
    """Listens on 127.0.0.1:``port`` and forwards to 127.0.0.1:``target_port``.

    ``delay_s`` > 0 holds every request chunk that long before passing it on (kept-alive connections too);
    ``drop`` closes new connections at once and cuts open ones at their next chunk."""

    def __init__(self, *, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
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
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
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
