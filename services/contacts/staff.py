"""Staff changes (``crm.staff.changed.v1``, published by the gateway, which owns staff): the contacts service keeps a
copy of the handles, so a CSV import (which the gateway streams through without reading) can check each row's
``owner`` here. The gateway checks an owner sent to its contact API at once against its own table; this copy may
lag a moment behind it.

The event, its durable consumer and its handler are together here."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.bus import PermanentError
from servicekit.catalogue.staff import STAFF_CHANGED, STAFF_CHANGED_SUBJECTS
from servicekit.db import upsert
from servicekit.events import CloudEvent
from servicekit.inbox import EventHandler
from services.contacts.models import StaffHandle

STAFF_DURABLE = "contacts-staff"
STAFF_SUBJECTS = [STAFF_CHANGED_SUBJECTS]
STAFF_HANDLE_MAX = 64  # the gateway's limit, and the column's

_TABLE: Any = StaffHandle.__table__  # type: ignore[attr-defined]


async def remember_staff(*, session: AsyncSession, handle: str, active: bool, event: CloudEvent) -> None:
    """Store whether ``handle`` is active as of ``event``; a row written by a later event stays as it is."""
    insert = upsert(session, _TABLE).values(handle=handle, active=active, changed_at=event.time)
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=[_TABLE.c.handle],
            set_={"active": insert.excluded.active, "changed_at": insert.excluded.changed_at},
            # Equal times: the one delivered last wins (a stream delivers one user's changes in order).
            where=_TABLE.c.changed_at <= insert.excluded.changed_at,
        )
    )


async def owner_problem(*, session: AsyncSession, handle: str) -> str | None:
    """Why ``handle`` cannot own a contact (not an active staff handle), or None when it can."""
    active = await session.scalar(sa.select(_TABLE.c.active).where(_TABLE.c.handle == handle))
    if active is None:
        return f"owner {handle!r} is not a staff handle."
    if not active:
        return f"owner {handle!r} is disabled: give the contact to an active colleague."
    return None


def staff_handlers() -> dict[str, EventHandler]:
    async def on_staff_changed(session: AsyncSession, event: CloudEvent) -> None:
        data: dict[str, Any] = event.data
        handle = data.get("handle")
        if not isinstance(handle, str) or not handle or len(handle) > STAFF_HANDLE_MAX:
            raise PermanentError("crm.staff.changed.v1 without a handle (of at most 64 characters)")
        active = data.get("active", True)
        if not isinstance(active, bool):
            raise PermanentError("crm.staff.changed.v1 with a non-boolean active")
        await remember_staff(session=session, handle=handle, active=active, event=event)

    return {STAFF_CHANGED: on_staff_changed}
