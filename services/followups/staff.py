"""Staff changes (``crm.staff.changed.v1``, published by the gateway, which owns staff): what follow-ups do
about them. A person disabled leaves no work behind in a queue nobody reads: each of their open follow-ups goes
back to its team's queue (unassigned; the team it had, else the person's first team).

The event, its durable consumer and its handler are together here."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from servicekit.bus import PermanentError
from servicekit.catalogue.staff import STAFF_CHANGED, STAFF_CHANGED_SUBJECTS
from servicekit.events import CloudEvent
from servicekit.inbox import EventHandler
from servicekit.logging import get_logger
from services.followups.models import OPEN, Followup
from services.followups.service import FollowupService

log = get_logger(__name__)

STAFF_DURABLE = "followups-staff"
STAFF_SUBJECTS = [STAFF_CHANGED_SUBJECTS]


async def return_work_of(
    *, session: AsyncSession, followups: FollowupService, handle: str, teams: list[str]
) -> list[Followup]:
    """Every open follow-up assigned to ``handle`` goes back to its team's queue, announced as reassigned."""
    rows = list(
        (
            await session.scalars(
                select(Followup)
                .where(col(Followup.assignee) == handle, col(Followup.status).in_(OPEN))
                .order_by(col(Followup.id))
                .with_for_update()
            )
        ).all()
    )
    now = followups.clock.now()
    home_team = teams[0] if teams else None
    for followup in rows:
        followup.assignee = None
        followup.team = followup.team or home_team
        followup.updated_at = now
        followup.version += 1
    await followups.emit(session, [("scheduled", followup) for followup in rows])
    return rows


def staff_handlers(followups: FollowupService) -> dict[str, EventHandler]:
    async def on_staff_changed(session: AsyncSession, event: CloudEvent) -> None:
        data: dict[str, Any] = event.data
        handle = data.get("handle")
        if not isinstance(handle, str) or not handle:
            raise PermanentError("crm.staff.changed.v1 without a handle")
        if data.get("active", True):
            return
        teams = [t for t in data.get("teams") or [] if isinstance(t, str)]
        returned = await return_work_of(session=session, followups=followups, handle=handle, teams=teams)
        log.info("staff_work_returned", handle=handle, followups=len(returned))

    return {STAFF_CHANGED: on_staff_changed}
