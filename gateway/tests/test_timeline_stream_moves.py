"""A timeline stream whose contact is merged into another or erased says so and ends: a page left open on the
customer follows the merge to the survivor, or drops what it shows of the person (the console does both)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx

from gateway import live
from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.tests.conftest import ADMIN, StubServices, live_ready
from gateway.tests.test_timeline import T0, _next, _read_events
from servicekit.clock import MovableClock
from servicekit.testing.apps import served
from servicekit.testing.nats import NatsServer


async def _announced(app: Any, contact_id: str) -> None:
    # As the gateway's consumer does once the contact event is applied: forget the contact, then announce it.
    app.state.timeline.forget_header(contact_id)
    await live.announce_contacts(app.state.runtime.bus, {contact_id})


async def test_a_stream_says_merged_with_the_survivor_or_erased_and_ends(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices, nats_server: NatsServer
) -> None:
    duplicate, survivor, erased = stub.add_contact(), stub.add_contact(), stub.add_contact()
    for contact in (duplicate, erased):
        stub.add_interaction(contact["id"], T0 - timedelta(days=1))
    app = create_app(gateway_settings, clock=clock, transports=stub.transports())
    async with served(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        await live_ready(app)
        await stub.project(app)
        for contact, change in ((duplicate, "merged"), (erased, "erased")):
            queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            url = f"/api/v1/contacts/{contact['id']}/timeline/stream"
            async with client.stream("GET", url, headers=ADMIN) as response:
                assert response.status_code == 200
                reader = asyncio.create_task(_read_events(response, queue))
                assert (await _next(queue))["event"] == "ready"
                if change == "merged":
                    contact.update(status="merged", merged_into=survivor["id"])
                else:
                    stub.gone.add(contact["id"])
                await _announced(app, contact["id"])
                said = await _next(queue)
                assert said["event"] == change
                expected = {"contact_id": contact["id"], **({"into": survivor["id"]} if change == "merged" else {})}
                assert json.loads(said["data"]) == expected
                await asyncio.wait_for(reader, 5)  # the stream ended after saying so
        again = await client.get(f"/api/v1/contacts/{erased['id']}/timeline/stream", headers=ADMIN)
        assert again.status_code == 410  # a reconnecting EventSource stops there


async def test_a_stream_goes_on_when_nothing_happened_to_its_contact(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices, nats_server: NatsServer
) -> None:
    contact = stub.add_contact()
    app = create_app(gateway_settings, clock=clock, transports=stub.transports())
    async with served(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        await live_ready(app)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        async with client.stream("GET", f"/api/v1/contacts/{contact['id']}/timeline/stream", headers=ADMIN) as r:
            reader = asyncio.create_task(_read_events(r, queue))
            assert (await _next(queue))["event"] == "ready"
            item = stub.add_interaction(contact["id"], T0, subject="Still here")
            await stub.project(app)
            pushed = await _next(queue)
            assert pushed["event"] == "item" and json.loads(pushed["data"])["id"] == item["id"]
            reader.cancel()
