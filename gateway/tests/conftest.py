from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException

from gateway import events, live
from gateway.app import create_app
from gateway.settings import DEV_ADMIN_KEY, GatewaySettings
from servicekit.clock import MovableClock
from servicekit.events import CloudEvent, make_event
from servicekit.testing.apps import running_app
from servicekit.testing.nats import NatsServer

ALEMBIC_INI = Path(__file__).resolve().parents[1] / "alembic.ini"
ADMIN = {"Authorization": f"Bearer {DEV_ADMIN_KEY}"}


def _key(at: str, id_: str) -> tuple[datetime, int]:
    return (datetime.fromisoformat(at), uuid.UUID(id_).int)


def interaction_fields(at: datetime) -> dict[str, Any]:
    """The fields of a touchpoint as the interactions service gives it that ``add_interaction`` leaves out."""
    return {
        "agent": None, "team": None, "thread_id": None, "outcome": None, "csat": None, "nps": None, "duration_s": None,
        "amount": None, "currency": None, "source": None, "external_id": None, "attributes": {}, "sentiment": None,
        "updated_at": at.isoformat(), "redacted_at": None,
    }  # fmt: skip


class StubServices:
    """In-test stand-ins for contacts, interactions and follow-ups (unit tests of the gateway only):
    the keyset contract of docs/CONVENTIONS.md over in-memory lists. A touchpoint or follow-up added here is
    also an event for the gateway's projection: ``project`` applies the ones not applied yet with the
    gateway's own handlers, as its consumers would (the ``gateway`` fixture does it before each request)."""

    def __init__(self) -> None:
        self.contacts: dict[str, dict[str, Any]] = {}
        self.interactions: list[dict[str, Any]] = []
        self.followups: list[dict[str, Any]] = []
        self.calls: list[httpx.Request] = []
        self.unprojected: list[CloudEvent] = []
        self.interactions_down = False  # GET of one touchpoint answers 503
        self.gone: set[str] = set()  # contacts whose GET answers 410, as the contacts service does once erased
        self.app = self._build()

    async def project(self, app: FastAPI, *, announce: bool = True) -> None:
        """Applies the events of what was added since the last call to the gateway app's projection and, as its
        consumers do after the commit, announces the contacts that changed (and forgets them at once here, so
        the next request sees them). ``announce=False``: applied quietly, as if by a consumer whose
        announcement was lost."""
        pending, self.unprojected = self.unprojected, []
        for event in pending:
            async with app.state.runtime.sessionmaker() as session, session.begin():
                await events.apply(session, [event])
            if announce:
                app.state.timeline.forget_header(event.subject)
        if announce:
            await live.announce(app.state.runtime.bus, pending)

    def add_contact(self, **fields: Any) -> dict[str, Any]:
        now = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
        contact = {
            "id": str(uuid.uuid4()), "name": "Ada", "company": None, "emails": ["ada@example.com"], "phones": [],
            "handles": {}, "external_ids": {}, "tier": "standard", "preferred_channel": None, "language": None,
            "timezone": None, "tags": [], "attributes": {}, "consent": {}, "stage": "lead", "owner": None,
            "status": "active", "merged_into": None, "created_at": now, "updated_at": now, "erased_at": None,
            "version": 1, **fields,
        }  # fmt: skip
        self.contacts[contact["id"]] = contact
        return contact

    def add_interaction(self, contact_id: str, at: datetime, **fields: Any) -> dict[str, Any]:
        item = {
            "id": str(uuid.uuid4()), "contact_id": contact_id, "original_contact_id": contact_id,
            "channel": "email", "direction": "inbound", "type": "inquiry", "occurred_at": at.isoformat(),
            "received_at": at.isoformat(), "subject": "Hello", "body": "Where is my order?", "csat": None,
            "version": 1, **fields,
        }  # fmt: skip
        self.interactions.append(item)
        body_less = {k: v for k, v in item.items() if k != "body"}
        self.unprojected.append(
            make_event(type=events.INTERACTION_LOGGED, source="test", subject=contact_id, data=body_less, time=at)
        )
        return item

    def add_followup(self, contact_id: str, at: datetime, **fields: Any) -> dict[str, Any]:
        item = {
            "id": str(uuid.uuid4()), "contact_id": contact_id, "reason": "Thank-you call", "channel": "phone",
            "status": "scheduled", "due_at": at.isoformat(), "timeline_at": at.isoformat(), "version": 1, **fields,
        }  # fmt: skip
        self.followups.append(item)
        kind = "crm.followup.completed.v1" if item["status"] == "completed" else "crm.followup.scheduled.v1"
        self.unprojected.append(make_event(type=kind, source="test", subject=contact_id, data=item, time=at))
        return item

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.get("/healthz")
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

        @app.get("/v1/contacts/{contact_id}")
        async def contact(contact_id: str) -> Any:
            found = self.contacts.get(contact_id)
            if found is None:
                raise HTTPException(404)
            if contact_id in self.gone:
                raise HTTPException(410)
            if found["status"] == "merged":
                from fastapi.responses import JSONResponse

                return JSONResponse(
                    {"merged_into": found["merged_into"]},
                    status_code=308,
                    headers={"Location": f"/v1/contacts/{found['merged_into']}"},
                )
            return found

        def page(items: list[dict[str, Any]], at_field: str, before: str | None, limit: int) -> dict[str, Any]:
            ordered = sorted(items, key=lambda i: _key(i[at_field], i["id"]), reverse=True)
            if before:
                at, id_ = before.split("|")
                ordered = [i for i in ordered if _key(i[at_field], i["id"]) < _key(at, id_)]
            return {"items": ordered[:limit], "next_cursor": None}

        @app.get("/v1/interactions")
        async def interactions(
            contact_id: str, limit: int = 50, before: str | None = None, channel: str | None = None,
            type: str | None = None,
        ) -> dict[str, Any]:  # fmt: skip
            rows = [i for i in self.interactions if i["contact_id"] == contact_id]
            rows = [
                i for i in rows if (channel is None or i["channel"] == channel) and (type is None or i["type"] == type)
            ]
            return page(rows, "occurred_at", before, limit)

        @app.get("/v1/interactions/{interaction_id}")
        async def interaction(interaction_id: str) -> Any:
            if self.interactions_down:
                raise HTTPException(503)
            found = next((i for i in self.interactions if i["id"] == interaction_id), None)
            if found is None:
                raise HTTPException(404)
            return found

        @app.patch("/v1/contacts/{contact_id}")
        async def change_contact(contact_id: str, body: dict[str, Any]) -> Any:
            found = self.contacts.get(contact_id)
            if found is None:
                raise HTTPException(404)
            found.update(body, version=found["version"] + 1)
            return found

        @app.delete("/v1/contacts/{contact_id}", status_code=204)
        async def erase_contact(contact_id: str) -> None:
            found = self.contacts.get(contact_id)
            if found is None:
                raise HTTPException(404)
            found.update(name=None, emails=[], phones=[], status="erased", version=found["version"] + 1,
                         erased_at=datetime(2026, 1, 2, tzinfo=UTC).isoformat())  # fmt: skip

        @app.post("/v1/interactions", status_code=201)
        async def log_interaction(body: dict[str, Any]) -> Any:
            at = datetime.fromisoformat(body["occurred_at"])
            fields = {**interaction_fields(at), **{k: v for k, v in body.items() if k != "contact_id"}}
            return self.add_interaction(body["contact_id"], at, **fields)

        @app.get("/v1/followups")
        async def followups(
            contact_id: str, order: str, limit: int = 50, before: str | None = None, status: str | None = None
        ) -> dict[str, Any]:
            assert order == "timeline"
            rows = [
                f for f in self.followups if f["contact_id"] == contact_id and (status is None or f["status"] == status)
            ]
            return page(rows, "timeline_at", before, limit)

        return app

    def transports(self) -> dict[str, httpx.AsyncBaseTransport]:
        def recording() -> httpx.AsyncBaseTransport:
            inner = httpx.ASGITransport(app=self.app)
            calls = self.calls

            class Recording(httpx.AsyncBaseTransport):
                async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                    calls.append(request)
                    return await inner.handle_async_request(request)

            return Recording()

        return {name: recording() for name in ("contacts", "interactions", "followups")}


@pytest.fixture
def gateway_db(database_factory: Callable[[Path], str]) -> str:
    return database_factory(ALEMBIC_INI)


@pytest.fixture
def gateway_settings(gateway_db: str, nats_server: NatsServer) -> GatewaySettings:
    return GatewaySettings(
        database_url=gateway_db,
        nats_url=nats_server.url,
        dev_mode=True,
        log_json=False,
        max_body_bytes=65_536,
        upstream_read_retries=0,
        upstream_connect_timeout_s=0.5,
        upstream_timeout_s=2.0,
    )


@pytest.fixture
def stub() -> StubServices:
    return StubServices()


@pytest.fixture
async def gateway(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(gateway_settings, clock=clock, transports=stub.transports())
    async with running_app(app) as client:

        async def project(_request: httpx.Request) -> None:
            await stub.project(app)

        client.event_hooks["request"].append(project)
        yield client


async def make_key(client: httpx.AsyncClient, role: str, name: str | None = None) -> dict[str, str]:
    response = await client.post("/api/v1/api-keys", json={"name": name or f"{role} key", "role": role}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['key']}"}


async def live_ready(app: FastAPI) -> None:
    """The app is connected to NATS and its live feed subscribed: an announcement made before that never wakes
    its streams (a stream test once announced in between and waited for nothing)."""
    await app.state.runtime.bus.wait_connected()
    await asyncio.wait_for(app.state.live.subscribed.wait(), 10)
