"""Run a service's FastAPI app in-process, lifespan included: behind an httpx client, or on a real port."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from nats.js.api import ConsumerConfig, DeliverPolicy

from servicekit.events import CloudEvent
from servicekit.testing.ports import free_port


@asynccontextmanager
async def running_app(app: FastAPI, base_url: str = "http://test") -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        runtime = getattr(app.state, "runtime", None)
        if runtime is not None:
            await runtime.bus.wait_connected(timeout=20)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url, timeout=30) as client:
            yield client


@asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free port of this event loop (lifespan included) and yield its base
    URL: for streaming responses, and for services that call each other over real HTTP."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class EventTap:
    """A durable consumer of our own, reading what a service published (as another service would)."""

    def __init__(self, js: Any, stream: str, subjects: str = ">", durable: str = "test-tap") -> None:
        self.js = js
        self.stream = stream
        self.subjects = subjects
        self.durable = durable
        self.sub: Any = None

    async def start(self) -> EventTap:
        config = ConsumerConfig(
            durable_name=self.durable, deliver_policy=DeliverPolicy.ALL, filter_subject=self.subjects, ack_wait=30
        )
        self.sub = await self.js.pull_subscribe(self.subjects, durable=self.durable, stream=self.stream, config=config)
        return self

    async def take(self, count: int, timeout: float = 15.0) -> list[CloudEvent]:
        """Exactly ``count`` events; fails if fewer arrive within ``timeout``."""
        import asyncio

        got: list[CloudEvent] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(got) < count:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"expected {count} events, got {len(got)}: {[e.type for e in got]}")
            try:
                msgs = await self.sub.fetch(count - len(got), timeout=min(remaining, 1.0))
            except Exception:
                continue
            for msg in msgs:
                got.append(CloudEvent.model_validate(json.loads(msg.data)))
                await msg.ack()
        return got

    async def assert_no_more(self, wait: float = 1.0) -> None:
        try:
            msgs = await self.sub.fetch(1, timeout=wait)
        except Exception:
            return
        raise AssertionError(f"unexpected extra events: {[m.data[:200] for m in msgs]}")
