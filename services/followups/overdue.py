"""Overdue follow-ups per team, as a gauge ops can alert on: counted with one grouped query every sampling round
(servicekit.opsmetrics), never per scrape.

A team is a label value, and teams are data (an admin may create hundreds): the ``cap`` teams with the most
overdue work keep their own series, the rest are summed into ``other``; follow-ups of no team count as
``unassigned``. So the gauge has at most ``cap + 2`` series at a time, whatever the teams.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Gauge
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from servicekit.clock import Clock
from servicekit.metrics import in_worker_process
from services.followups.models import OPEN, Followup

OTHER_TEAMS = "other"
NO_TEAM = "unassigned"

# Across worker processes every worker counts the same rows: the largest live count is the count.
FOLLOWUPS_OVERDUE = Gauge(
    "followups_overdue",
    "Open follow-ups past their overdue time, per team (teams past the cap summed as 'other')",
    ["team"],
    multiprocess_mode="livemax",
)


async def overdue_by_team(*, session: AsyncSession, now: datetime) -> dict[str | None, int]:
    """Open follow-ups whose overdue time has passed, counted per team (``None``: no team)."""
    query = (
        select(col(Followup.team), func.count())
        .where(col(Followup.status).in_(OPEN), col(Followup.overdue_at) <= now)
        .group_by(col(Followup.team))
    )
    return {team: int(n) for team, n in (await session.execute(query)).all()}


def fold_teams(counts: dict[str | None, int], *, cap: int) -> dict[str, int]:
    """The ``cap`` teams with the most overdue (ties by name) keep their label; the rest become ``other``."""
    named = sorted(((team, n) for team, n in counts.items() if team is not None), key=lambda item: (-item[1], item[0]))
    folded: dict[str, int] = {team: n for team, n in named[:cap]}
    rest = sum(n for _, n in named[cap:])
    if rest or OTHER_TEAMS in folded:
        folded[OTHER_TEAMS] = folded.get(OTHER_TEAMS, 0) + rest
    if counts.get(None):
        folded[NO_TEAM] = folded.get(NO_TEAM, 0) + counts[None]
    return folded


class OverdueSampler:
    """Sets ``followups_overdue`` from one grouped query; a team that has no overdue work any more goes to 0 and
    its series is dropped (so a team's series does not stay at its last count for ever)."""

    def __init__(self, *, sessionmaker: async_sessionmaker[AsyncSession], clock: Clock, cap: int) -> None:
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.cap = cap
        self._shown: set[str] = set()

    async def sample_overdue(self) -> dict[str, int]:
        async with self.sessionmaker() as session:
            counts = await overdue_by_team(session=session, now=self.clock.now())
        folded = fold_teams(counts, cap=self.cap)
        for team in self._shown - folded.keys():
            FOLLOWUPS_OVERDUE.labels(team).set(0)
            # A worker of servicekit.serve cannot drop a series (its file keeps it, prometheus_client warns): it
            # stays at 0 there, one per team this worker ever showed.
            if not in_worker_process():
                FOLLOWUPS_OVERDUE.remove(team)
        for team, n in folded.items():
            FOLLOWUPS_OVERDUE.labels(team).set(n)
        self._shown = set(folded)
        return folded
