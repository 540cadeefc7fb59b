"""One-time flashes: a secret a console form made (a new API key, a password link) shown once, on the page the form
redirects to. A form answers every POST with a redirect, so reloading the page shown after it makes nothing twice;
the secret cannot ride in the redirect's URL (it would sit in the history and in access logs), so it waits here.

Stored in the gateway's database (any replica may serve the GET), sealed under ``GATEWAY_SECRET_KEY``, readable
only by the console session that made it, deleted when read and, unread, after ``FLASH_TTL``."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from fastapi import Request
from sqlalchemy import delete, select
from sqlmodel import col

from gateway.auth import Principal
from gateway.models import ConsoleFlash
from gateway.webhooks import seal, unseal
from servicekit.clock import as_utc

# Long enough for a slow redirect, short enough that a forgotten one is gone before anyone comes back for it.
FLASH_TTL = timedelta(minutes=2)


async def keep(request: Request, principal: Principal, kind: str, payload: dict[str, Any]) -> None:
    """Holds ``payload`` for the next page of this session that asks for a flash of ``kind``."""
    if principal.session_id is None:
        return
    runtime = request.app.state.runtime
    key = request.app.state.settings.signing_key
    now = runtime.clock.now()
    sealed = seal(json.dumps({"kind": kind, **payload}), key)
    async with runtime.sessionmaker() as session, session.begin():
        await session.execute(delete(ConsoleFlash).where(col(ConsoleFlash.expires_at) <= now))
        session.add(ConsoleFlash(session_id=principal.session_id, sealed=sealed, expires_at=now + FLASH_TTL))


async def take(request: Request, principal: Principal, kind: str) -> dict[str, Any] | None:
    """The newest unexpired flash of ``kind`` for this session, deleted as it is read (``None`` when there is none)."""
    if principal.session_id is None:
        return None
    runtime = request.app.state.runtime
    key = request.app.state.settings.signing_key
    now = runtime.clock.now()
    found: dict[str, Any] | None = None
    async with runtime.sessionmaker() as session, session.begin():
        rows = (
            await session.scalars(
                select(ConsoleFlash)
                .where(col(ConsoleFlash.session_id) == principal.session_id)
                .order_by(col(ConsoleFlash.id))
            )
        ).all()
        for row in rows:
            if as_utc(row.expires_at) <= now:
                await session.delete(row)
                continue
            try:
                payload = json.loads(unseal(row.sealed, key))
            except ValueError:  # sealed under an earlier GATEWAY_SECRET_KEY: unreadable, so of no use
                await session.delete(row)
                continue
            if payload.get("kind") == kind:
                found = payload
                await session.delete(row)
    return found
