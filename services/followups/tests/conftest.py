from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from fastapi import FastAPI

from servicekit.clock import MovableClock
from servicekit.events import CloudEvent
from servicekit.ids import new_id
from servicekit.testing.apps import EventTap, running_app
from servicekit.testing.nats import NatsServer
from servicekit.testing.plugin import eventually
from services.followups.app import create_app
from services.followups.deps import followups_state
from services.followups.scheduler import Scheduler
from services.followups.settings import FollowupsSettings

ALEMBIC_INI = Path(__file__).resolve().parents[1] / "alembic.ini"


@pytest.fixture
def followups_db(database_factory: Callable[[Path], str]) -> str:
    return database_factory(ALEMBIC_INI)


@pytest.fixture
def nats_private(nats_factory: Callable[[], NatsServer]) -> NatsServer:
    """A nats-server of this test alone: the durable consumers start from an empty stream every time."""
    return nats_factory()


@pytest.fixture
def followups_settings(followups_db: str, nats_private: NatsServer) -> FollowupsSettings:
    # The scheduler does not run by itself: each test moves the clock and calls tick().
    return FollowupsSettings(
        database_url=followups_db, nats_url=nats_private.url, log_json=False, outbox_poll_s=0.05,
        scheduler_enabled=False, contacts_url="http://127.0.0.1:9", contacts_timeout_s=0.5, policy_cache_s=0,
    )  # fmt: skip


@pytest.fixture
async def js(nats_private: NatsServer) -> AsyncIterator[Any]:
    nc = await nats.connect(nats_private.url)
    js = nc.jetstream()
    # The producers' streams, as contacts, interactions and the gateway (staff) create them.
    producers = (("CRM_CONTACTS", ["crm.contacts.>"]), ("CRM_INTERACTIONS", ["crm.interactions.>"]),
                 ("CRM_STAFF", ["crm.staff.>"]))  # fmt: skip
    for name, subjects in producers:
        try:
            await js.stream_info(name)
        except Exception:
            await js.add_stream(name=name, subjects=subjects)
    yield js
    await nc.close()


class Harness:
    """A running follow-ups service, fed the way the other services feed it: CloudEvents on NATS."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient, js: Any, clock: MovableClock) -> None:
        self.app = app
        self.client = client
        self.js = js
        self.clock = clock

    @property
    def scheduler(self) -> Scheduler:
        return followups_state(self.app).scheduler

    async def publish(self, event: CloudEvent, subject: str, msg_id: str | None = None) -> None:
        await self.js.publish(subject, event.to_json(), headers={"Nats-Msg-Id": msg_id or event.id})

    async def contact(self, **fields: Any) -> dict[str, Any]:
        """A crm.contact.created.v1 as the contacts service publishes it."""
        now = self.clock.now()
        contact: dict[str, Any] = {
            "id": str(new_id()), "name": "Ada", "tier": "standard", "preferred_channel": "email",
            "language": "en", "timezone": "UTC", "consent": {}, "owner": None, "tags": [], "stage": "customer",
            "status": "active", "created_at": now.isoformat(), "updated_at": now.isoformat(), "version": 1,
        }  # fmt: skip
        contact.update(fields)
        event = contact_event("created", contact["id"], {"contact": contact}, now)
        await self.publish(event, _subject("created", contact["id"]))
        await self.applied(event.id)  # as if contacts had announced it well before the touchpoints come
        return contact

    async def touch(self, contact_id: str, **fields: Any) -> CloudEvent:
        """A crm.interaction.logged.v1 as the interactions service publishes it; returns the event."""
        event = logged_event(contact_id, at=self.clock.now(), **fields)
        await self.publish(event, f"crm.interactions.logged.{contact_id}")
        return event

    async def tap(self, contact_id: str) -> EventTap:
        """Reads the follow-up events about a contact as a downstream service would."""
        return await EventTap(
            self.js, "CRM_FOLLOWUPS", f"crm.followups.*.{contact_id}", durable=f"t{uuid.uuid4().hex}"
        ).start()

    async def followups(self, **params: Any) -> list[dict[str, Any]]:
        response = await self.client.get("/v1/followups", params={"limit": 200, **params})
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def wait_for(self, count: int, **params: Any) -> list[dict[str, Any]]:
        """Exactly ``count`` follow-ups matching ``params`` once the consumers caught up."""
        found: list[dict[str, Any]] = []

        async def enough() -> bool:
            nonlocal found
            found = await self.followups(**params)
            return len(found) >= count

        await eventually(enough, timeout=15)
        assert len(found) == count, found
        return found

    async def applied(self, event_id: str) -> None:
        """Wait until the inbox recorded the event (applied, whatever it made)."""
        from sqlalchemy import select

        from services.followups.models import inbox_table

        async def seen() -> bool:
            async with self.app.state.runtime.sessionmaker() as session:
                return (
                    await session.scalar(select(inbox_table.c.event_id).where(inbox_table.c.event_id == event_id))
                ) is not None

        await eventually(seen, timeout=15)


def _subject(action: str, contact_id: str) -> str:
    return f"crm.contacts.{action}.{contact_id}"


def contact_event(action: str, contact_id: str, data: dict[str, Any], at: datetime) -> CloudEvent:
    return CloudEvent(
        id=str(new_id()), source="touchpoint/contacts", type=f"crm.contact.{action}.v1", subject=contact_id,
        time=at, data=data,
    )  # fmt: skip


def logged_event(contact_id: str, *, at: datetime, **fields: Any) -> CloudEvent:
    touch: dict[str, Any] = {
        "id": str(new_id()), "contact_id": contact_id, "original_contact_id": contact_id, "channel": "email",
        "direction": "inbound", "type": "inquiry", "occurred_at": at.isoformat(), "received_at": at.isoformat(),
        "agent": None, "team": None, "subject": "Hello", "thread_id": None, "outcome": None, "csat": None,
        "nps": None, "duration_s": None, "amount": None, "currency": None, "source": "test", "external_id": None,
        "attributes": {}, "sentiment": 0.1, "version": 1, "updated_at": at.isoformat(), "redacted_at": None,
        "some_future_field": {"tolerated": True},
    }  # fmt: skip
    touch.update({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in fields.items()})
    return CloudEvent(
        id=str(new_id()), source="touchpoint/interactions", type="crm.interaction.logged.v1", subject=contact_id,
        time=at, data=touch,
    )  # fmt: skip


def resolved_event(contact_id: str, *, thread_id: str, at: datetime, **fields: Any) -> CloudEvent:
    data = {
        "thread_id": thread_id, "contact_id": contact_id, "resolved_at": at.isoformat(), "opened_at": at.isoformat(),
        "channel": "phone", "type": "complaint", "complaint": True, "first_interaction_id": str(uuid.uuid4()),
        "interactions": 2,
    }  # fmt: skip
    data.update(fields)
    return CloudEvent(
        id=str(new_id()), source="touchpoint/interactions", type="crm.thread.resolved.v1", subject=contact_id,
        time=at, data=data,
    )  # fmt: skip


@pytest.fixture
async def harness(followups_settings: FollowupsSettings, clock: MovableClock, js: Any) -> AsyncIterator[Harness]:
    app = create_app(followups_settings, clock=clock)
    async with running_app(app) as client:
        yield Harness(app, client, js, clock)


def dumps(value: Any) -> str:
    return json.dumps(value, default=str)
