"""A small HTTP/1.1 keep-alive client for load generation, on plain asyncio streams.

httpx costs the load generator a few milliseconds of CPU per request; on a 2-core machine that shares its
cores with the server, the client then measures itself (a bare FastAPI endpoint reached only ~480 req/s with
64 httpx clients). This client does only what the benchmarks need: one request at a time per connection,
``Content-Length`` or chunked responses, a pool of at most ``concurrency`` connections. It is not a general
HTTP client (no redirects, TLS, proxies, or compression) and serves only ``bench/``.
"""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urlsplit


class Reply:
    """What a request got back: status, headers (lower-case names) and the body."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    def json(self) -> Any:
        return json.loads(self.content)


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def exchange(self, head: bytes, body: bytes) -> tuple[Reply, bool]:
        """Send one request; the reply and whether the connection may be used again."""
        self.writer.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.writer.write(body)
        await self.writer.drain()
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        headers: dict[str, str] = {}
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            content = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            content = b"".join(parts)
        else:
            content = await self.reader.read()
            return Reply(status, headers, content), False
        return Reply(status, headers, content), headers.get("connection", "").lower() != "close"

    def close(self) -> None:
        self.writer.close()


class LightClient:
    """``async with LightClient("http://127.0.0.1:8002", 64) as http: await http.post("/v1/…", content=b"…")``."""

    def __init__(self, base_url: str, concurrency: int, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout
        self._host_header = f"{self.host}:{self.port}".encode()
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(concurrency)

    async def __aenter__(self) -> LightClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()

    async def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes = b"",
        json_body: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        if json_body is not None:
            content = json.dumps(json_body).encode()
            headers = {"content-type": "application/json", **(headers or {})}
        target = f"{path}?{urlencode(params)}" if params else path
        lines = [f"{method} {target} HTTP/1.1".encode(), b"host: " + self._host_header]
        lines += [f"{k}: {v}".encode("latin-1") for k, v in (headers or {}).items()]
        if content or method in ("POST", "PUT", "PATCH"):
            lines.append(b"content-length: " + str(len(content)).encode())
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        async with self._slots:
            reused = bool(self._idle)
            connection = self._idle.pop() if reused else await self._connect()
            try:
                async with asyncio.timeout(self.timeout):
                    reply, reusable = await connection.exchange(head, content)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                connection.close()
                # uvicorn closes a connection idle for 5 s (its keep-alive timeout): a kept one found closed before
                # any byte of an answer came back was never read, so the request goes again on a new connection,
                # as browsers do. An answer cut short (some bytes read) is an error.
                if not reused or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                    raise
                connection = await self._connect()
                try:
                    async with asyncio.timeout(self.timeout):
                        reply, reusable = await connection.exchange(head, content)
                except BaseException:
                    connection.close()
                    raise
            except BaseException:
                connection.close()
                raise
            if reusable:
                self._idle.append(connection)
            else:
                connection.close()
            return reply

    async def get(self, path: str, *, params: dict[str, str] | None = None) -> Reply:
        return await self.request("GET", path, params=params)

    async def post(
        self, path: str, *, content: bytes = b"", json: Any = None, headers: dict[str, str] | None = None
    ) -> Reply:
        return await self.request("POST", path, content=content, json_body=json, headers=headers)

    async def _connect(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=2**22)
        return _Connection(reader, writer)
