"""A lean HTTP/1.1 keep-alive client for the gateway's hottest reads (the timeline's pages of the services).

httpx was about 40% of the gateway's CPU on a timeline page that no cache answers (request building, the
pool scanning every connection's socket on each request, response streaming layers). This client does only
what those reads need: GET, one request at a time per connection, ``Content-Length`` or chunked answers,
idle connections dropped after ``keepalive_s`` (before the service's server closes them, as with httpx).
Everything else (writes, the proxy routes, tests' in-process transports) stays on httpx.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit


class ReadFailed(Exception):
    """The service could not be reached (``connect``) or dropped the connection."""

    def __init__(self, reason: str, *, connect: bool) -> None:
        super().__init__(reason)
        self.connect = connect


class ReadTimedOut(Exception):
    """No (complete) answer within the timeout."""


class LeanReply:
    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: list[tuple[str, str]], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    async def exchange(self, request: bytes) -> tuple[LeanReply, bool]:
        self.writer.write(request)
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        headers: list[tuple[str, str]] = []
        length: int | None = None
        chunked = False
        reusable = status_line.startswith(b"HTTP/1.1")
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            headers.append((name, value))
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif name == "connection" and value.lower() == "close":
                reusable = False
        if status in (204, 304) or 100 <= status < 200:
            content = b""  # no body, whatever the headers say
        elif chunked:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while await self.reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                        pass
                    break
                parts.append((await self.reader.readexactly(size + 2))[:size])
            content = b"".join(parts)
        elif length is not None:
            content = await self.reader.readexactly(length)
        else:
            content = await self.reader.read()
            reusable = False
        return LeanReply(status, headers, content), reusable

    def close(self) -> None:
        self.writer.close()


class LeanReader:
    """``await reader.get("/v1/interactions?contact_id=…", [("x-request-id", "…")])`` → status, headers, body."""

    def __init__(
        self, base_url: str, *, timeout_s: float, connect_timeout_s: float, keepalive_s: float, pool_size: int
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http":
            raise ValueError("the lean reader speaks plain HTTP to the services only")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self._host_line = f"host: {self.host}:{self.port}\r\n".encode()
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(pool_size)

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def get(self, target: str, headers: list[tuple[str, str]]) -> LeanReply:
        request = (
            f"GET {target} HTTP/1.1\r\n".encode()
            + self._host_line
            + "".join(f"{k}: {v}\r\n" for k, v in headers).encode("latin-1")
            + b"\r\n"
        )
        async with self._slots:
            connection = self._take_idle()
            if connection is not None:
                try:
                    return await self._send(connection, request)
                except ReadFailed:
                    pass  # the service closed the kept connection as we sent: a read is safe to send again
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    reader, writer = await asyncio.open_connection(self.host, self.port, limit=2**22)
            except (OSError, TimeoutError) as exc:
                raise ReadFailed(repr(exc), connect=True) from None
            return await self._send(_Connection(reader, writer), request)

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if now - connection.idle_since < self.keepalive_s and not connection.reader.at_eof():
                return connection
            connection.close()
        return None

    async def _send(self, connection: _Connection, request: bytes) -> LeanReply:
        try:
            async with asyncio.timeout(self.timeout_s):
                reply, reusable = await connection.exchange(request)
        except TimeoutError:
            connection.close()
            raise ReadTimedOut() from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as exc:
            connection.close()
            raise ReadFailed(repr(exc), connect=False) from None
        except BaseException:
            connection.close()
            raise
        if reusable:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()
        return reply
