"""Staff and teams: who work can be given to, and the event the rest of Touchpoint learns it from.

The gateway owns staff users (they sign in here). Everywhere else a person is named by their ``handle`` (a
contact's owner, a follow-up's assignee, a policy's escalation assignee) and a team by its id. Every change to a
staff user is published as ``crm.staff.changed.v1`` through the gateway's outbox, in the transaction that made
it; the follow-ups service consumes it (a disabled person's open follow-ups go back to their team's queue).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from gateway.auth import Principal
from gateway.models import StaffUser, Team
from servicekit.bus import StreamSpec
from servicekit.catalogue.staff import STAFF_CHANGED, STAFF_STREAM
from servicekit.events import make_event
from servicekit.outbox import Outbox
from servicekit.problems import Unprocessable

SOURCE = "touchpoint/gateway"
STREAM = StreamSpec(name=STAFF_STREAM, subjects=["crm.staff.>"], description="Staff changes (gateway)")
# What `assignee=me` (and the console's "Mine") stands for: the signed-in staff user.
ME = "me"


def staff_document(user: StaffUser) -> dict[str, Any]:
    """What others may know of a staff user: no email, no password, no session."""
    return {
        "id": str(user.id),
        "handle": user.handle,
        "name": user.name,
        "role": user.role,
        "teams": list(user.teams),
        "timezone": user.timezone,
        "active": user.disabled_at is None,
    }


async def publish_staff_change(*, session: AsyncSession, outbox: Outbox, user: StaffUser, at: datetime) -> None:
    event = make_event(type=STAFF_CHANGED, source=SOURCE, subject=user.handle, data=staff_document(user), time=at)
    await outbox.add(session, event, subject=f"crm.staff.changed.{user.id}")


def resolve_me(value: str | None, principal: Principal, *, field: str) -> str | None:
    """``me`` becomes the caller's handle; an API key has none, so ``me`` is refused for it."""
    if value != ME:
        return value
    if principal.handle is None:
        raise Unprocessable(f"{field}=me needs a signed-in staff user; an API key is nobody.", field=field)
    return principal.handle


async def check_person(session: AsyncSession, handle: str | None, *, field: str) -> None:
    """A person work may be given to: an active staff user's handle (422 naming ``field`` otherwise)."""
    if handle is None:
        return
    user = await session.scalar(select(StaffUser).where(col(StaffUser.handle) == handle))
    if user is None:
        raise Unprocessable(f"{field} {handle!r} is not a staff handle.", field=field)
    if user.disabled_at is not None:
        raise Unprocessable(f"{field} {handle!r} is disabled: give the work to their team instead.", field=field)


async def check_teams(session: AsyncSession, teams: Iterable[str | None], *, field: str) -> None:
    wanted = {t for t in teams if t}
    if not wanted:
        return
    known = set((await session.scalars(select(col(Team.id)).where(col(Team.id).in_(wanted)))).all())
    unknown = sorted(wanted - known)
    if unknown:
        raise Unprocessable(f"{field}: no team {', '.join(map(repr, unknown))} (admins add teams).", field=field)


async def check_work_target(session: AsyncSession, *, assignee: str | None, team: str | None, prefix: str = "") -> None:
    await check_person(session, assignee, field=f"{prefix}assignee")
    await check_teams(session, [team], field=f"{prefix}team")


async def check_policy_names(session: AsyncSession, document: dict[str, Any]) -> None:
    """Every ``assignee`` in a policy document names an active staff user and every ``team`` a known team.

    The document is walked, not read field by field, so a policy shape that grows another place to name people
    (a step's own assign rule, another escalation level) is checked without a change here."""
    for path, key, value in _named(document, ""):
        if not isinstance(value, str):
            continue
        if key == "assignee":
            await check_person(session, value, field=path)
        else:
            await check_teams(session, [value], field=path)


def _named(node: Any, path: str) -> Iterable[tuple[str, str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if key in ("assignee", "team") and not isinstance(value, dict | list):
                yield here, key, value
            else:
                yield from _named(value, here)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _named(value, f"{path}[{index}]")


class StaffNames:
    """The checks above for routes that then call a service: each in a short session of its own, so the
    request's session holds no transaction (on SQLite, the one write lock) while the service answers; the
    write-through of the answer and the projection consumers need that lock."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker

    async def check_work_target(self, *, assignee: str | None, team: str | None) -> None:
        if assignee is None and team is None:
            return
        async with self.sessionmaker() as session:
            await check_work_target(session, assignee=assignee, team=team)

    async def check_person(self, handle: str | None, *, field: str) -> None:
        if handle is None:
            return
        async with self.sessionmaker() as session:
            await check_person(session, handle, field=field)

    async def check_policy_names(self, document: dict[str, Any]) -> None:
        async with self.sessionmaker() as session:
            await check_policy_names(session, document)

    async def team_timezone(self, team: str) -> str | None:
        async with self.sessionmaker() as session:
            known = await session.get(Team, team)
        return known.timezone if known is not None else None


async def _staff_names(request: Request) -> StaffNames:
    return StaffNames(request.app.state.runtime.sessionmaker)


StaffNamesDep = Annotated[StaffNames, Depends(_staff_names)]
