"""The console's one-time flashes: read once, only by the session that made them, gone when expired, and stored
sealed (the secret is not in the table in clear)."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select

from gateway.app import create_app
from gateway.auth import Principal, Role
from gateway.console import flash
from gateway.models import ConsoleFlash
from gateway.settings import GatewaySettings
from gateway.tests.conftest import StubServices
from servicekit.clock import MovableClock
from servicekit.testing.apps import running_app


def _staff(session_id: uuid.UUID | None) -> Principal:
    return Principal(id="u", kind="user", role=Role.admin, name="a", csrf_token="c", session_id=session_id)


async def test_a_flash_is_read_once_by_its_own_session_and_expires(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices
) -> None:
    app = create_app(gateway_settings, clock=clock, transports=stub.transports())
    async with running_app(app):
        request: Any = SimpleNamespace(app=app)
        mine, other = _staff(uuid.uuid4()), _staff(uuid.uuid4())
        await flash.keep(request, mine, "api_key", {"key": "tp_secret_value"})
        async with app.state.runtime.sessionmaker() as session:
            stored = (await session.scalars(select(ConsoleFlash))).one()
        assert "tp_secret_value" not in stored.sealed

        assert await flash.take(request, other, "api_key") is None  # another session's page: nothing
        assert await flash.take(request, mine, "password_link") is None  # another kind: left for its page
        assert await flash.take(request, mine, "api_key") == {"kind": "api_key", "key": "tp_secret_value"}
        assert await flash.take(request, mine, "api_key") is None  # once

        await flash.keep(request, mine, "api_key", {"key": "tp_late"})
        clock.advance(seconds=flash.FLASH_TTL.total_seconds() + 1)
        assert await flash.take(request, mine, "api_key") is None
        async with app.state.runtime.sessionmaker() as session:
            assert (await session.scalars(select(ConsoleFlash))).all() == []
        await flash.keep(request, _staff(None), "api_key", {"key": "x"})  # an API key has no session: nothing kept
        async with app.state.runtime.sessionmaker() as session:
            assert (await session.scalars(select(ConsoleFlash))).all() == []
