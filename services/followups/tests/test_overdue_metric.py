"""followups_overdue: open follow-ups past their overdue time per team, from one grouped query on SQLite and
PostgreSQL, with teams past the cap summed as 'other'; the running service samples it (and its consumers' lag) in
the background."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.clock import MovableClock
from servicekit.db import make_engine, make_sessionmaker
from servicekit.ids import new_id
from servicekit.testing.apps import running_app
from servicekit.testing.plugin import eventually
from services.followups import events, staff
from services.followups.app import create_app
from services.followups.models import Followup
from services.followups.overdue import FOLLOWUPS_OVERDUE, NO_TEAM, OTHER_TEAMS, OverdueSampler, fold_teams
from services.followups.settings import FollowupsSettings


def overdue(team: str) -> float | None:
    return REGISTRY.get_sample_value("followups_overdue", {"team": team})


async def add_followups(
    sessions: async_sessionmaker[AsyncSession], clock: MovableClock, *, team: str | None, count: int, **fields: Any
) -> None:
    now = clock.now()
    values: dict[str, Any] = {"due_at": now - timedelta(days=2), "overdue_at": now - timedelta(days=1)} | fields
    async with sessions() as session, session.begin():
        for _ in range(count):
            session.add(Followup(contact_id=new_id(), reason="call back", team=team, timeline_at=now,
                                 created_at=now, updated_at=now, **values))  # fmt: skip


def test_teams_past_the_cap_are_summed_as_other_and_no_team_is_unassigned() -> None:
    counts: dict[str | None, int] = {"billing": 5, "sales": 9, "support": 2, "vip": 5, None: 3}
    assert fold_teams(counts, cap=2) == {"sales": 9, "billing": 5, OTHER_TEAMS: 7, NO_TEAM: 3}
    assert fold_teams(counts, cap=10) == {"sales": 9, "billing": 5, "vip": 5, "support": 2, NO_TEAM: 3}
    assert fold_teams(counts, cap=0) == {OTHER_TEAMS: 21, NO_TEAM: 3}
    # A team named "other" shares the folded series rather than making a second one.
    assert fold_teams({"other": 1, "a": 4, "b": 2}, cap=1) == {"a": 4, OTHER_TEAMS: 3}
    assert fold_teams({}, cap=5) == {}


async def test_overdue_per_team_counts_open_follow_ups_past_their_overdue_time(
    followups_db: str, clock: MovableClock
) -> None:
    FOLLOWUPS_OVERDUE.clear()  # the registry is the process's: series an earlier test left are not this one's
    engine = make_engine(followups_db)
    sessions = make_sessionmaker(engine)
    try:
        await add_followups(sessions, clock, team="sales", count=4)
        await add_followups(sessions, clock, team="billing", count=2)
        await add_followups(sessions, clock, team="vip", count=1)
        await add_followups(sessions, clock, team=None, count=3)
        # Not overdue: done, cancelled, or not yet past their overdue time.
        await add_followups(sessions, clock, team="sales", count=2, status="done")
        await add_followups(sessions, clock, team="sales", count=1, status="cancelled")
        await add_followups(sessions, clock, team="support", count=3, overdue_at=clock.now() + timedelta(hours=1))

        sampler = OverdueSampler(sessionmaker=sessions, clock=clock, cap=2)
        assert await sampler.sample_overdue() == {"sales": 4, "billing": 2, OTHER_TEAMS: 1, NO_TEAM: 3}
        assert (overdue("sales"), overdue("billing"), overdue(OTHER_TEAMS), overdue(NO_TEAM)) == (4, 2, 1, 3)
        assert overdue("vip") is None and overdue("support") is None

        # An hour on, support's three are overdue too and take second place; billing joins vip in 'other'.
        clock.advance(hours=1, seconds=1)
        await sampler.sample_overdue()
        assert (overdue("sales"), overdue("support"), overdue(OTHER_TEAMS)) == (4, 3, 3)
        assert overdue("billing") is None, "a team that left the top is no series of its own any more"
    finally:
        await engine.dispose()


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
async def test_the_running_service_samples_overdue_and_its_consumers_lag(
    followups_settings: FollowupsSettings, clock: MovableClock, js: Any
) -> None:
    settings = followups_settings.model_copy(update={"metrics_sample_s": 0.05, "overdue_teams_max": 3})
    app = create_app(settings, clock=clock)
    async with running_app(app):
        runtime = app.state.runtime
        team = f"team-{new_id().hex[:8]}"
        await add_followups(runtime.sessionmaker, clock, team=team, count=2)
        await eventually(lambda: overdue(team) == 2)

        def caught_up() -> bool:
            durables = (events.INTERACTIONS_DURABLE, events.CONTACTS_DURABLE, staff.STAFF_DURABLE)
            return all(REGISTRY.get_sample_value("consumer_pending_messages", {"durable": d}) == 0 for d in durables)

        await eventually(caught_up)
        assert REGISTRY.get_sample_value("db_pool_connections_limit", {"service": "followups"}) == 1
