from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from servicekit.clock import MovableClock
from servicekit.db import make_engine, make_sessionmaker
from servicekit.outbox import Outbox
from servicekit.testing.nats import NatsServer
from services.interactions.directory import ContactLink
from services.interactions.identities import IdentityCopy
from services.interactions.models import outbox_table
from services.interactions.schemas import TouchpointCreate
from services.interactions.service import Outcome, TouchpointService
from services.interactions.settings import InteractionsSettings

ALEMBIC_INI = Path(__file__).resolve().parents[1] / "alembic.ini"


@pytest.fixture
def interactions_db(database_factory: Callable[[Path], str]) -> str:
    return database_factory(ALEMBIC_INI)


@pytest.fixture
def interactions_settings(interactions_db: str, nats_server: NatsServer) -> InteractionsSettings:
    return InteractionsSettings(
        database_url=interactions_db,
        nats_url=nats_server.url,
        log_json=False,
        outbox_poll_s=0.05,
        contacts_url="http://127.0.0.1:9",  # nothing listens: these tests never need the contacts service
        contacts_timeout_s=0.5,
    )


@pytest.fixture
async def engine(interactions_db: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(interactions_db)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


@pytest.fixture
def touchpoints(clock: MovableClock) -> TouchpointService:
    return TouchpointService(
        clock=clock, outbox=Outbox(outbox_table), identities=IdentityCopy(key=b"test-identity-key")
    )


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[Any]:
    nc = await nats.connect(nats_server.url)
    yield nc.jetstream()
    await nc.close()


def touchpoint_factory(**overrides: Any) -> dict[str, Any]:
    """A valid touchpoint body (by contact id); every call is a different touchpoint."""
    body: dict[str, Any] = {
        "contact_id": str(uuid.uuid4()),
        "channel": "email",
        "direction": "inbound",
        "type": "inquiry",
        "occurred_at": "2026-01-05T08:00:00Z",
        "subject": "Where is my order?",
        "body": "I ordered a week ago and nothing has arrived yet.",
    }
    body.update(overrides)
    return body


def at(minutes: float = 0, start: datetime = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)) -> str:
    return (start + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


async def store(
    sessionmaker: async_sessionmaker[AsyncSession],
    touchpoints: TouchpointService,
    *items: dict[str, Any],
    ingest_keys: list[str | None] | None = None,
) -> list[Outcome]:
    """Store touchpoints through the service (the contact ids taken as live)."""
    prepared = []
    for n, raw in enumerate(items):
        item = TouchpointCreate.model_validate(raw)
        assert item.contact_id is not None
        link = ContactLink(item.contact_id, item.contact_id)
        key = ingest_keys[n] if ingest_keys else None
        prepared.append(touchpoints.prepare(item=item, link=link, ingest_key=key))
    async with sessionmaker() as session, session.begin():
        return await touchpoints.store(session=session, prepared=prepared)
