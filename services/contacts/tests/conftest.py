from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nats
import pytest

from servicekit.clock import MovableClock
from servicekit.db import make_engine, make_sessionmaker
from servicekit.events import CloudEvent, make_event
from servicekit.testing.apps import running_app
from servicekit.testing.nats import NatsServer
from services.contacts.app import create_app
from services.contacts.settings import ContactsSettings
from services.contacts.staff import STAFF_CHANGED, staff_handlers

ALEMBIC_INI = Path(__file__).resolve().parents[1] / "alembic.ini"


@pytest.fixture
def contacts_db(database_factory: Callable[[Path], str]) -> str:
    return database_factory(ALEMBIC_INI)


@pytest.fixture
def contacts_settings(contacts_db: str, nats_server: NatsServer) -> ContactsSettings:
    return ContactsSettings(
        database_url=contacts_db, nats_url=nats_server.url, log_json=False, max_body_bytes=65_536, outbox_poll_s=0.05
    )


@pytest.fixture
async def client(contacts_settings: ContactsSettings, clock: MovableClock) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(create_app(contacts_settings, clock=clock)) as client:
        yield client


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[object]:
    nc = await nats.connect(nats_server.url)
    yield nc.jetstream()
    await nc.close()


StaffChange = Callable[..., Awaitable[None]]


def staff_changed(handle: str, *, active: bool = True, at: datetime | None = None) -> CloudEvent:
    """A crm.staff.changed.v1 as the gateway publishes it (the fields the contacts service reads, and the rest)."""
    data: dict[str, object] = {"id": str(uuid.uuid4()), "handle": handle, "name": None, "role": "agent",
                               "teams": [], "timezone": None, "active": active}  # fmt: skip
    at = at or datetime.now(UTC)
    return make_event(type=STAFF_CHANGED, source="touchpoint/gateway", subject=handle, data=data, time=at)


@pytest.fixture
async def staff_change(contacts_db: str) -> AsyncIterator[StaffChange]:
    """Applies a staff change to the contacts database through the service's own handler (as its consumer does)."""
    engine = make_engine(contacts_db)
    sessionmaker = make_sessionmaker(engine)
    handle_change = staff_handlers()[STAFF_CHANGED]

    async def apply(handle: str, *, active: bool = True, at: datetime | None = None) -> None:
        async with sessionmaker() as session, session.begin():
            await handle_change(session, staff_changed(handle, active=active, at=at))

    yield apply
    await engine.dispose()


def contact_factory(**overrides: object) -> dict[str, object]:
    """A valid new-contact body; every call uses fresh identities."""
    n = uuid.uuid4().hex[:8]
    body: dict[str, object] = {
        "name": f"Ada Lovelace {n}",
        "company": "Analytical Engines",
        "emails": [f"ada.{n}@example.com"],
        "tier": "standard",
        "tags": ["vip"],
    }
    body.update(overrides)
    return body
