"""Live timelines and the caller's credentials (issue 18, items 6 and 7): an open stream ends within 5 s of its key
being revoked, its user disabled or its session signed out, in every gateway process (two apps here, each with its
own NATS connection and caches, on one database, as two processes are); and a caller holds a bounded number."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import update
from sqlmodel import col

from gateway.app import create_app
from gateway.models import ApiKey
from gateway.settings import GatewaySettings
from gateway.tests.conftest import ADMIN, StubServices, live_ready, make_key
from gateway.tests.test_timeline import _next, _read_events
from servicekit.clock import MovableClock
from servicekit.testing.apps import served
from servicekit.testing.plugin import eventually

PASSWORD = "correct horse battery"


class OpenStream:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reader = asyncio.create_task(_read_events(response, self.events))

    async def ended_within(self, seconds: float) -> float:
        """Seconds until the stream said ``end`` and closed (fails after ``seconds``)."""
        started = asyncio.get_running_loop().time()
        while True:
            remaining = seconds - (asyncio.get_running_loop().time() - started)
            event = await _next(self.events, timeout=max(remaining, 0.01))
            if event.get("event") == "end":
                await asyncio.wait_for(self.reader, timeout=max(remaining, 0.5))  # the response is over
                return asyncio.get_running_loop().time() - started


@asynccontextmanager
async def opened(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> AsyncIterator[OpenStream]:
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        stream = OpenStream(response)
        assert (await _next(stream.events))["event"] == "ready"
        try:
            yield stream
        finally:
            stream.reader.cancel()


async def _signed_in(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    made = await client.post("/api/v1/users", json={"email": email, "password": PASSWORD, "role": "agent"},
                             headers=ADMIN)  # fmt: skip
    assert made.status_code == 201, made.text
    login = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return {"Cookie": f"tp_session={login.cookies['tp_session']}", "X-CSRF-Token": login.json()["csrf_token"]}


async def test_a_revoked_key_a_disabled_user_or_a_sign_out_ends_open_streams_in_every_process(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices
) -> None:
    contact = stub.add_contact()
    url = f"/api/v1/contacts/{contact['id']}/timeline/stream"
    # A long key cache: the other process must not keep trusting the key from it.
    settings = gateway_settings.model_copy(update={"key_cache_s": 600.0})
    acting, streaming = (create_app(settings, clock=clock, transports=stub.transports()) for _ in range(2))
    async with (
        served(acting) as acting_url,
        served(streaming) as streaming_url,
        httpx.AsyncClient(base_url=acting_url, timeout=30) as admin,
        httpx.AsyncClient(base_url=streaming_url, timeout=30) as client,
    ):
        await live_ready(streaming)
        key = await make_key(admin, "readonly")
        [key_id] = [k["id"] for k in (await admin.get("/api/v1/api-keys", headers=ADMIN)).json()["items"]]
        leaving, disabled = await _signed_in(admin, "leaving@example.com"), await _signed_in(admin, "gone@example.com")
        await asyncio.sleep(0.3)  # both processes' live subscriptions are up
        async with (
            opened(client, url, key) as by_key,
            opened(client, url, leaving) as by_session,
            opened(client, url, disabled) as by_user,
        ):
            # Told through NATS, the other process ends them well before its own 4 s re-check would.
            assert (await admin.delete(f"/api/v1/api-keys/{key_id}", headers=ADMIN)).status_code == 204
            assert await by_key.ended_within(5.0) < 2.5
            assert (await admin.post("/api/v1/auth/logout", headers=leaving)).status_code == 204
            assert await by_session.ended_within(5.0) < 2.5
            [user] = [u for u in (await admin.get("/api/v1/users", headers=ADMIN)).json()["items"]
                      if u["email"] == "gone@example.com"]  # fmt: skip
            assert (await admin.delete(f"/api/v1/users/{user['id']}", headers=ADMIN)).status_code == 204
            assert await by_user.ended_within(5.0) < 2.5
        # Reconnecting is refused, so an EventSource stops there.
        for headers in (key, leaving, disabled):
            assert (await client.get(url, headers=headers)).status_code == 401


async def test_a_stream_ends_within_5_s_even_when_no_announcement_arrives(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices
) -> None:
    """The revocation reaches the database but not NATS (here: written straight into the table): the stream's own
    re-check of its credential ends it, whenever news about its contact wakes it meanwhile."""
    contact = stub.add_contact()
    app = create_app(gateway_settings, clock=clock, transports=stub.transports())
    async with served(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        key = await make_key(client, "readonly")
        [key_id] = [k["id"] for k in (await client.get("/api/v1/api-keys", headers=ADMIN)).json()["items"]]
        async with opened(client, f"/api/v1/contacts/{contact['id']}/timeline/stream", key) as stream:
            async with app.state.runtime.sessionmaker() as session, session.begin():
                revoked = update(ApiKey).where(col(ApiKey.id) == uuid.UUID(key_id))
                await session.execute(revoked.values(revoked_at=datetime.now(UTC)))
            # News about the contact wakes the stream just before its re-check is due: the re-check still comes
            # on time (a full wait after the wake-up would end it about 7 s after the revocation).
            await asyncio.sleep(3.5)
            app.state.live.poke(contact["id"])
            assert await stream.ended_within(2.0) < 2.0


async def test_streams_are_capped_per_caller_with_a_429_and_a_closed_one_frees_its_place(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices
) -> None:
    contact = stub.add_contact()
    url = f"/api/v1/contacts/{contact['id']}/timeline/stream"
    settings = gateway_settings.model_copy(update={"streams_per_caller": 2})
    app = create_app(settings, clock=clock, transports=stub.transports())
    async with served(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        key, other = await make_key(client, "readonly"), await make_key(client, "readonly")
        async with opened(client, url, key), opened(client, url, key):
            refused = await client.get(url, headers=key, timeout=5)
            assert refused.status_code == 429, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.json()["type"].endswith("/too-many-streams") and refused.json()["max_streams"] == 2
            assert int(refused.headers["retry-after"]) > 0
            async with opened(client, url, other):  # another caller has places of its own
                pass
        caller = (await client.get("/api/v1/auth/me", headers=key)).json()["principal_id"]
        await eventually(lambda: app.state.live.open_streams(caller) == 0, timeout=5.0)
        async with opened(client, url, key), opened(client, url, key):
            pass
