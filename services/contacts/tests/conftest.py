from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import nats
import pytest

from servicekit.clock import MovableClock
from servicekit.testing.apps import running_app
from servicekit.testing.nats import NatsServer
from services.contacts.app import create_app
from services.contacts.settings import ContactsSettings

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


def contact_factory(**overrides: object) -> dict[str, object]:
    """A valid new-contact body; every call uses fresh identities."""
    import uuid

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
