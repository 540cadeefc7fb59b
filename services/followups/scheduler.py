"""The scheduler: follow-ups fall due, go overdue and are escalated on time, each announced once.

Driven by the injected clock; tests call ``tick`` after moving a clock instead of sleeping. On PostgreSQL
several replicas claim work with ``SELECT … FOR UPDATE SKIP LOCKED`` (a row is fired by the replica that
locked it, in the transaction that writes its event to the outbox); on SQLite the one writer serialises them.
The premium-quiet sweep runs on one replica at a time, holding a lease row with an expiry.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from servicekit.clock import Clock, as_utc
from servicekit.logging import get_logger
from services.followups.models import Followup, KnownContact, Lease, SeenTouch
from services.followups.rules import decide, seconds_of
from services.followups.service import FollowupService, facts_of, next_action_at

log = get_logger(__name__)

QUIET_LEASE = "premium-quiet-sweep"
SWEEP_PAGE = 1000


def advance(followup: Followup, now: datetime, replica: str) -> list[str]:
    """Every transition of ``followup`` whose time has come, in order; returns the actions to announce."""
    actions: list[str] = []
    for _ in range(10):
        when = next_action_at(followup)
        if when is None or as_utc(when) > now:
            break
        if followup.status == "scheduled":
            followup.status = "due"
            followup.fired_at = now
            followup.fired_by = replica
            actions.append("due")
        elif not followup.overdue:
            followup.overdue = True
            actions.append("overdue")
        else:
            level = followup.plan["levels"][followup.escalation_level]
            followup.escalation_level += 1
            if level.get("assignee") or level.get("team"):
                followup.assignee = level.get("assignee")
                followup.team = level.get("team") or followup.team
            actions.append("escalated")
    followup.next_action_at = next_action_at(followup)
    if actions:
        followup.updated_at = now
        followup.version += 1
    return actions


class Scheduler:
    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        followups: FollowupService,
        clock: Clock,
        replica: str,
        batch: int = 500,
        interval_s: float = 0.25,
        lease_s: int = 600,
        sweep_interval_s: float = 300.0,
        touch_retention_days: int = 400,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.followups = followups
        self.clock = clock
        self.replica = replica
        self.batch = batch
        self.interval_s = interval_s
        self.lease_s = lease_s
        self.sweep_interval_s = sweep_interval_s
        self.touch_retention_days = touch_retention_days

    # -- due, overdue, escalated ---------------------------------------------------------------------------

    async def tick(self) -> int:
        """Fire everything whose time has come (batch after batch); returns how many follow-ups changed."""
        total = 0
        while True:
            fired = await self.claim_and_fire()
            total += fired
            if fired < self.batch:
                return total

    async def claim_and_fire(self) -> int:
        """One batch in one transaction: claim, change, write events. Returns the number claimed."""
        now = self.clock.now()
        async with self.sessionmaker() as session, session.begin():
            query = (
                select(Followup)
                .where(col(Followup.next_action_at) <= now)
                .order_by(col(Followup.next_action_at))
                .limit(self.batch)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = (await session.scalars(query)).all()
            changes: list[tuple[str, Followup]] = []
            for followup in rows:
                for action in advance(followup, now, self.replica):
                    changes.append((action, followup))
            await session.flush()
            # Each event carries the follow-up as it is after the round (due, overdue and escalated may share one).
            await self.followups.emit(session, changes)
        return len(rows)

    async def run(self) -> None:
        """The background job: tick, pause while nothing is due, never die on a passing error."""
        while True:
            try:
                fired = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("scheduler_round_failed", error=repr(exc))
                fired = 0
            if not fired:
                await asyncio.sleep(self.interval_s)

    # -- premium-quiet sweep (one replica at a time) -------------------------------------------------------

    async def hold_lease(self, name: str = QUIET_LEASE) -> bool:
        """Take or renew the lease ``name`` for ``lease_s``; False when another replica holds it unexpired."""
        now = self.clock.now()
        try:
            async with self.sessionmaker() as session, session.begin():
                lease = await session.get(Lease, name, with_for_update=True)
                if lease is None:
                    session.add(Lease(name=name, holder=self.replica, expires_at=now + timedelta(seconds=self.lease_s)))
                    await session.flush()
                    return True
                if lease.holder != self.replica and as_utc(lease.expires_at) > now:
                    return False
                lease.holder = self.replica
                lease.expires_at = now + timedelta(seconds=self.lease_s)
                return True
        except IntegrityError:
            return False  # another replica created it first

    async def release_lease(self, name: str = QUIET_LEASE) -> None:
        async with self.sessionmaker() as session, session.begin():
            lease = await session.get(Lease, name, with_for_update=True)
            if lease is not None and lease.holder == self.replica:
                lease.expires_at = self.clock.now()

    async def sweep_quiet(self) -> int | None:
        """Premium contacts quiet for a policy's ``quiet_for`` get its follow-up (once per silence: the trigger
        is the contact and the time of its last touch). None when another replica holds the lease."""
        if not await self.hold_lease():
            return None
        made = 0
        now = self.clock.now()
        async with self.sessionmaker() as session, session.begin():
            policies = [
                (version, policy)
                for version, policy in await self.followups.policies.enabled(session)
                if policy.trigger.event == "contact.quiet"
            ]
        for version, policy in policies:
            assert policy.trigger.quiet_for is not None
            cutoff = now - timedelta(seconds=seconds_of(policy.trigger.quiet_for))
            after: uuid.UUID | None = None
            while True:
                async with self.sessionmaker() as session, session.begin():
                    last_touch = func.coalesce(col(KnownContact.last_touch_at), col(KnownContact.known_since))
                    query = select(KnownContact).where(col(KnownContact.status) == "active", last_touch <= cutoff)
                    if policy.trigger.all.tier is not None:
                        query = query.where(col(KnownContact.tier).in_(policy.trigger.all.tier))
                    if after is not None:
                        query = query.where(col(KnownContact.id) > after)
                    contacts = (await session.scalars(query.order_by(col(KnownContact.id)).limit(SWEEP_PAGE))).all()
                    for contact in contacts:
                        silence_from = as_utc(contact.last_touch_at or contact.known_since)
                        touch = {"contact_id": str(contact.id), "id": None}
                        for step in policy.steps:
                            decision = decide(
                                policy=policy, version=version, step=step, touch=touch, anchor_at=now,
                                contact=facts_of(contact), default_timezone=self.followups.default_timezone,
                            )  # fmt: skip
                            if decision is None:
                                continue
                            trigger = f"quiet:{contact.id}:{silence_from.isoformat()}"
                            if await self.followups.make(
                                session, decision=decision, contact_id=contact.id, trigger_event_id=trigger
                            ):
                                made += 1
                if len(contacts) < SWEEP_PAGE:
                    break
                after = contacts[-1].id
        await self.purge_old_touches()
        return made

    async def purge_old_touches(self) -> None:
        cutoff = self.clock.now() - timedelta(days=self.touch_retention_days)
        async with self.sessionmaker() as session, session.begin():
            await session.execute(delete(SeenTouch).where(col(SeenTouch.at) < cutoff))

    async def run_sweeps(self) -> None:
        while True:
            try:
                await self.sweep_quiet()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("quiet_sweep_failed", error=repr(exc))
            await asyncio.sleep(self.sweep_interval_s)
