"""The rules of follow-ups: made from policies once per trigger, closed by the customer's next touch, changed by
hand; every change writes its event to the outbox in the same transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import col

from servicekit.bus import PermanentError
from servicekit.clock import Clock, as_utc
from servicekit.erasure import ERASED_TEXT, checkpoint_after_commit
from servicekit.events import CloudEvent, json_value
from servicekit.ids import new_id
from servicekit.outbox import Outbox
from servicekit.problems import Conflict, NotFound, Unprocessable
from servicekit.purge import purge_request
from services.followups import events
from services.followups.closing import BY_AGENT, close_reason
from services.followups.directory import ContactAnswer, ContactDirectory
from services.followups.models import OPEN, PRIORITY_RANK, Followup, KnownContact, SeenTouch
from services.followups.policybook import PolicyBook
from services.followups.rules import ContactFacts, Decision, choose_channel, decide, due_time, manual_plan
from services.followups.schemas import FollowupCreate, FollowupRead, FollowupStats, StatsSla
from services.followups.touches import Standing, TouchBatch

SLA_POLICY = "response-sla"


class NotOpen(Conflict):
    slug, title = "followup-closed", "The follow-up is closed"


def to_read(followup: Followup) -> FollowupRead:
    return FollowupRead.model_validate(followup)


_DOCUMENT_FIELDS = tuple(FollowupRead.model_fields)


def document(followup: Followup | dict[str, Any]) -> dict[str, Any]:
    """The follow-up as its events carry it (from the row or from the columns about to be written):
    ``FollowupRead(...).model_dump(mode="json")`` without pydantic's cost per call (a test compares the two;
    the values are this service's own, already valid)."""
    if isinstance(followup, dict):
        return {name: json_value(followup[name]) for name in _DOCUMENT_FIELDS}
    return {name: json_value(getattr(followup, name)) for name in _DOCUMENT_FIELDS}


def facts_of(contact: KnownContact | None) -> ContactFacts:
    if contact is None:
        return ContactFacts()
    return ContactFacts(
        tier=contact.tier,
        timezone=contact.timezone,
        preferred_channel=contact.preferred_channel,
        consent=dict(contact.consent or {}),
        owner=contact.owner,
        tags=list(contact.tags or []),
    )


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError):
        return None


# --- reading -------------------------------------------------------------------------------------------------


async def get_followup(*, session: AsyncSession, followup_id: uuid.UUID, lock: bool = False) -> Followup:
    followup = await session.get(Followup, followup_id, with_for_update=lock or None, populate_existing=lock)
    if followup is None:
        raise NotFound(f"No follow-up {followup_id}.")
    return followup


async def stats(
    *,
    session: AsyncSession,
    now: datetime,
    since: datetime | None,
    until: datetime | None,
    team: str | None,
    channel: str | None,
    assignee: str | None = None,
) -> FollowupStats:
    """Counts over the follow-ups falling due in [since, until)."""
    on_time = case(
        (col(Followup.closed_at) <= func.coalesce(col(Followup.overdue_at), col(Followup.due_at)), 1), else_=0
    )
    due_passed = case((col(Followup.due_at) < now, 1), else_=0)
    overdue_now = case((col(Followup.overdue_at) <= now, 1), else_=0)
    query = select(
        col(Followup.policy),
        col(Followup.status),
        col(Followup.cancel_reason),
        on_time.label("on_time"),
        due_passed.label("due_passed"),
        overdue_now.label("overdue_now"),
        func.count().label("n"),
        func.coalesce(func.sum(col(Followup.escalation_level)), 0).label("escalations"),
        func.coalesce(func.sum(case((col(Followup.escalation_level) > 0, 1), else_=0)), 0).label("escalated"),
    )
    if since is not None:
        query = query.where(col(Followup.due_at) >= as_utc(since))
    if until is not None:
        query = query.where(col(Followup.due_at) < as_utc(until))
    if team is not None:
        query = query.where(col(Followup.team) == team)
    if channel is not None:
        query = query.where(col(Followup.channel) == channel)
    if assignee is not None:
        query = query.where(col(Followup.assignee) == assignee)
    query = query.group_by(
        col(Followup.policy), col(Followup.status), col(Followup.cancel_reason), on_time, due_passed, overdue_now
    )
    rows = (await session.execute(query)).all()
    total = met = missed = sla_open = on_time_n = late = open_overdue = escalations = escalated = 0
    by_status: dict[str, int] = {}
    by_policy: dict[str, dict[str, int]] = {}
    for row in rows:
        n = int(row.n)
        total += n
        escalations += int(row.escalations)
        escalated += int(row.escalated)
        by_status[row.status] = by_status.get(row.status, 0) + n
        policy_counts = by_policy.setdefault(row.policy or "manual", {})
        policy_counts[row.status] = policy_counts.get(row.status, 0) + n
        if row.status == "completed":
            if row.on_time:
                on_time_n += n
            else:
                late += n
        if row.status in OPEN and row.overdue_now:
            open_overdue += n
        if row.policy == SLA_POLICY:
            answered = row.status == "completed" or (row.status == "cancelled" and row.cancel_reason == "answered")
            if answered:
                if row.on_time:
                    met += n
                else:
                    missed += n
            elif row.status in OPEN:
                if row.due_passed:
                    missed += n
                else:
                    sla_open += n
    decided = met + missed
    return FollowupStats(
        since=since,
        until=until,
        team=team,
        channel=channel,
        assignee=assignee,
        as_of=now,
        total=total,
        sla=StatsSla(met=met, missed=missed, open=sla_open, met_rate=round(met / decided, 4) if decided else None),
        completed_on_time=on_time_n,
        completed_late=late,
        open_overdue=open_overdue,
        escalations=escalations,
        escalated_followups=escalated,
        by_status=by_status,
        by_policy=by_policy,
    )


# --- writing -------------------------------------------------------------------------------------------------


def next_action_at(followup: Followup) -> datetime | None:
    """When the scheduler must look at this follow-up next: becoming due, overdue, or the next escalation."""
    if followup.status not in OPEN:
        return None
    if followup.status == "scheduled":
        return followup.due_at
    overdue_at = followup.overdue_at or followup.due_at
    if not followup.overdue:
        return overdue_at
    levels = followup.plan.get("levels", [])
    if followup.escalation_level < len(levels):
        after = timedelta(seconds=float(levels[followup.escalation_level]["after_s"]))
        return max(as_utc(overdue_at), as_utc(followup.due_at) + after)
    return None


def set_due(followup: Followup, due_at: datetime) -> None:
    followup.due_at = due_at
    followup.overdue_at = due_at + timedelta(seconds=float(followup.plan.get("overdue_after_s", 86_400)))
    if followup.status in OPEN:
        followup.timeline_at = due_at
    followup.next_action_at = next_action_at(followup)


def new_followup(
    *, decision: Decision, contact_id: uuid.UUID, trigger_event_id: str | None, now: datetime
) -> dict[str, Any]:
    """Every column of the follow-up a policy step just decided: scheduled, or skipped when no channel is left."""
    skipped = decision.skip_reason is not None
    due = decision.due_at
    return {
        "id": new_id(), "contact_id": contact_id, "policy": decision.policy, "policy_version": decision.policy_version,
        "step": decision.step, "reason": decision.reason, "channel": decision.channel, "due_at": due,
        "status": "skipped" if skipped else "scheduled", "priority": decision.priority,
        "priority_rank": PRIORITY_RANK[decision.priority], "assignee": decision.assignee, "team": decision.team,
        "trigger_event_id": trigger_event_id, "thread_id": decision.thread_id, "completed_at": None, "outcome": None,
        "trigger_interaction_id": _uuid(decision.trigger_interaction_id), "trigger_channel": decision.trigger_channel,
        "triggers": [], "close_reason": None, "interaction_id": None, "escalation_level": 0, "cancel_reason": None,
        "skip_reason": decision.skip_reason,
        "closed_at": now if skipped else None, "timeline_at": now if skipped else due, "anchor_at": decision.anchor_at,
        "plan": decision.plan,
        "overdue_at": due + timedelta(seconds=float(decision.plan.get("overdue_after_s", 86_400))),
        "overdue": False, "next_action_at": None if skipped else due, "fired_at": None, "fired_by": None,
        "created_at": now, "updated_at": now, "version": 1,
    }  # fmt: skip


def _get(followup: Followup | dict[str, Any] | Standing, name: str) -> Any:
    return followup[name] if isinstance(followup, dict) else getattr(followup, name)


def _set(followup: Followup | dict[str, Any], **values: Any) -> None:
    for name, value in values.items():
        if isinstance(followup, dict):
            followup[name] = value
        else:
            setattr(followup, name, value)


def same_obligation(followup: Followup | dict[str, Any] | Standing, decision: Decision) -> bool:
    """Whether an open follow-up already stands for what ``decision`` would make: the same policy step on the
    same thread (a reply owed on no thread: on the same channel too; answering an SMS does not answer an email)."""
    if _get(followup, "policy") != decision.policy or _get(followup, "step") != decision.step:
        return False
    if _get(followup, "thread_id") != decision.thread_id:
        return False
    return (
        decision.thread_id is not None
        or not decision.plan.get("reply")
        or (_get(followup, "trigger_channel") == decision.trigger_channel)
    )


def _erased_followup_data(data: dict[str, Any]) -> dict[str, Any]:
    """An unsent event's follow-up without what was written about the person (the outcome, a manual follow-up's
    reason) nor its thread id (which may hold an identity, e.g. ``mail:zelda@example.org``)."""
    erased = {**data, "outcome": None, "thread_id": None}
    if data.get("policy") is None and "reason" in data:
        erased["reason"] = ERASED_TEXT
    return erased


class FollowupService:
    """Follow-up rules bound to this service's clock, outbox, policies and contacts directory."""

    def __init__(
        self,
        *,
        clock: Clock,
        outbox: Outbox,
        policies: PolicyBook,
        directory: ContactDirectory | None,
        default_timezone: str,
    ) -> None:
        self.clock = clock
        self.outbox = outbox
        self.policies = policies
        self.directory = directory
        self.default_timezone = default_timezone

    async def emit(
        self,
        session: AsyncSession,
        changes: Sequence[tuple[str, Followup | dict[str, Any]]],
        *,
        batch: TouchBatch | None = None,
    ) -> None:
        """Each change's event into the outbox, in this transaction (a batch writes them with its own rows)."""
        if not changes:
            return
        now = self.clock.now()
        rows = [events.followup_outbox_row(action, document(followup), now) for action, followup in changes]
        if batch is None:
            await self.outbox.add_serialized(session, rows)
            return
        batch.announced.extend(
            {"event_id": event_id, "subject": subject, "type": kind, "payload": payload, "created_at": at}
            for event_id, subject, kind, payload, at in rows
        )

    def _close(self, followup: Followup, status: str, at: datetime) -> None:
        followup.status = status
        followup.closed_at = at
        followup.timeline_at = at
        followup.next_action_at = None
        followup.updated_at = self.clock.now()
        followup.version += 1

    # -- contacts ----------------------------------------------------------------------------------------

    async def known_contact(
        self, session: AsyncSession, contact_id: uuid.UUID, *, batch: TouchBatch | None = None
    ) -> KnownContact | None:
        """The live contact as we know it (following merges); asks the contacts service the first time.
        None when it was erased. Raises ``ContactsUnavailable`` (retry later) or ``PermanentError`` (unknown)."""
        contact = await self._loaded(session, contact_id, batch)
        for _ in range(5):
            if contact is None or contact.status != "merged" or contact.merged_into is None:
                break
            contact = await self._loaded(session, contact.merged_into, batch)
        if contact is not None:
            return contact if contact.status == "active" else None
        if self.directory is None:
            raise PermanentError(f"contact {contact_id} is unknown and no contacts service is configured")
        answer = await self.directory.lookup(contact_id)
        if answer.unknown:
            raise PermanentError(f"the contacts service knows no contact {contact_id}")
        return await self.store_answer(session, answer)

    async def _loaded(
        self, session: AsyncSession, contact_id: uuid.UUID, batch: TouchBatch | None
    ) -> KnownContact | None:
        if batch is not None and (contact := batch.contacts.get(contact_id)) is not None:
            return contact
        return await session.get(KnownContact, contact_id)

    async def store_answer(self, session: AsyncSession, answer: ContactAnswer) -> KnownContact | None:
        """Keep what the contacts service said about a contact; returns the live contact (None: erased)."""
        now = self.clock.now()
        if answer.erased or answer.contact is None:
            for ident in (*answer.merged_from, answer.asked):
                await self.remember(session, ident, {"status": "erased"}, now)
            return None
        live = await self.remember(session, uuid.UUID(str(answer.contact["id"])), answer.contact, now)
        for source in answer.merged_from:
            if source != live.id:
                await self.remember(session, source, {"status": "merged", "merged_into": live.id}, now)
        return live

    async def remember(
        self, session: AsyncSession, contact_id: uuid.UUID, data: dict[str, Any], now: datetime
    ) -> KnownContact:
        contact = await session.get(KnownContact, contact_id)
        if contact is None:
            contact = KnownContact(id=contact_id, known_since=now, updated_at=now)
            session.add(contact)
        version = data.get("version")
        if isinstance(version, int) and version < contact.version:
            return contact  # an older copy of the contact than the one we hold
        contact.status = str(data.get("status") or "active")
        contact.merged_into = _uuid(data.get("merged_into"))
        for name in ("tier", "timezone", "preferred_channel", "owner"):
            if name in data:
                setattr(contact, name, data[name] if name != "tier" else (data[name] or "standard"))
        if "consent" in data:
            contact.consent = dict(data.get("consent") or {})
        if "tags" in data:
            contact.tags = list(data.get("tags") or [])
        if isinstance(version, int):
            contact.version = version
        contact.updated_at = now
        await session.flush()
        return contact

    async def contact_updated(
        self, session: AsyncSession, *, contact_id: uuid.UUID, changed: dict[str, Any], version: Any
    ) -> None:
        contact = await session.get(KnownContact, contact_id)
        if contact is None:
            return  # never needed yet: the contacts service is asked the first time a policy needs it
        if isinstance(version, int) and version <= contact.version:
            return
        await self.remember(
            session, contact_id, {"status": contact.status, **changed, "version": version}, self.clock.now()
        )
        if {"consent", "preferred_channel", "timezone"} & set(changed):
            await self._reconsider(session, contact, timezone_changed="timezone" in changed)

    async def _reconsider(self, session: AsyncSession, contact: KnownContact, *, timezone_changed: bool) -> None:
        """The contact's consent, preferred channel or time zone changed: each open follow-up gets the channel
        its policy now picks (none left → skipped as opted_out), and scheduled ones their due time in the new zone."""
        facts = facts_of(contact)
        rows = (
            await session.scalars(
                select(Followup).where(col(Followup.contact_id) == contact.id, col(Followup.status).in_(OPEN))
            )
        ).all()
        changes: list[tuple[str, Followup]] = []
        now = self.clock.now()
        for followup in rows:
            plan = followup.plan
            if plan.get("manual"):
                channel = followup.channel
                if channel is not None and facts.consent.get(channel) is False:
                    channel = None
                lost = followup.channel is not None and channel is None
            elif plan.get("reply"):
                channel = followup.channel  # a reply owed on the customer's channel: consent is for outreach
                lost = False
            else:
                rule = dict(plan.get("channel") or {})
                touched = followup.channel if rule.get("use") == "touchpoint" else None
                channel = choose_channel(
                    rule=rule, preferred=facts.preferred_channel, touched=touched, consent=facts.consent
                )
                lost = channel is None
            if lost:
                followup.skip_reason = "opted_out"
                self._close(followup, "skipped", now)
                changes.append(("skipped", followup))
                continue
            moved = False
            if timezone_changed and followup.status == "scheduled" and followup.anchor_at and "offset" in plan:
                due = due_time(
                    plan=plan, anchor_at=as_utc(followup.anchor_at), timezone=facts.timezone,
                    default_timezone=self.default_timezone,
                )  # fmt: skip
                if due != as_utc(followup.due_at):
                    set_due(followup, due)
                    moved = True
            if channel != followup.channel or moved:
                followup.channel = channel
                followup.updated_at = now
                followup.version += 1
                changes.append(("scheduled", followup))
        await self.emit(session, changes)

    async def contact_merged(
        self, session: AsyncSession, *, source_id: uuid.UUID, target_id: uuid.UUID, contact: Any
    ) -> None:
        now = self.clock.now()
        await session.execute(
            update(Followup).where(col(Followup.contact_id) == source_id).values(contact_id=target_id, updated_at=now)
        )
        await session.execute(
            update(SeenTouch).where(col(SeenTouch.contact_id) == source_id).values(contact_id=target_id)
        )
        source = await session.get(KnownContact, source_id)
        touched = source.last_touch_at if source is not None else None
        await self.remember(session, source_id, {"status": "merged", "merged_into": target_id}, now)
        # Flatten chains: whatever was merged into the source now points at the target.
        await session.execute(
            update(KnownContact).where(col(KnownContact.merged_into) == source_id).values(merged_into=target_id)
        )
        target = await self.remember(
            session, target_id, contact if isinstance(contact, dict) else {"status": "active"}, now
        )
        if touched is not None and (target.last_touch_at is None or as_utc(target.last_touch_at) < as_utc(touched)):
            target.last_touch_at = touched
        # An opt-out on either record wins in the merged contact: the moved follow-ups follow it.
        await self._reconsider(session, target, timezone_changed=False)

    async def contact_erased(
        self, session: AsyncSession, *, contact_id: uuid.UUID, merged_ids: Iterable[uuid.UUID] = ()
    ) -> None:
        """Every follow-up of the contact, and of the contacts merged into it, loses what was written about the
        person; the open ones are cancelled (their events carry no more than that)."""
        now = self.clock.now()
        merged_here = await session.scalars(
            select(col(KnownContact.id)).where(col(KnownContact.merged_into) == contact_id)
        )
        family = {contact_id, *merged_ids, *merged_here.all()}
        rows = (await session.scalars(select(Followup).where(col(Followup.contact_id).in_(family)))).all()
        changes: list[tuple[str, Followup]] = []
        for followup in rows:
            followup.outcome, followup.thread_id = None, None  # free text, and an id that may name the person
            if followup.policy is None:
                followup.reason = ERASED_TEXT  # a manual follow-up's reason is written about the person
            if followup.status in OPEN:
                followup.cancel_reason = "erased"
                self._close(followup, "cancelled", now)
                changes.append(("cancelled", followup))
        await session.execute(delete(SeenTouch).where(col(SeenTouch.contact_id).in_(family)))
        for member_id in sorted(family):
            contact = await session.get(KnownContact, member_id)
            if contact is None:
                if member_id != contact_id:
                    continue
                contact = KnownContact(id=member_id, known_since=now, updated_at=now)
                session.add(contact)
            if member_id == contact_id:
                contact.status = "erased"
            contact.timezone, contact.preferred_channel, contact.owner = None, None, None
            contact.consent, contact.tags, contact.updated_at = {}, [], now
            await self.outbox.redact_events(
                session, subject_like=f"crm.followups.%.{member_id}", redact=_erased_followup_data
            )
        await self.emit(session, changes)
        checkpoint_after_commit(session)
        # Follow-ups of a contact merged into this one were published on that contact's id.
        ids = [str(contact_id), *(str(i) for i in sorted(family) if i != contact_id)]
        await self.outbox.add_serialized(session, [purge_request("followups", ids, now)])

    # -- touchpoints ----------------------------------------------------------------------------------------

    def touch_seen(
        self, batch: TouchBatch, *, event: CloudEvent, contact: KnownContact, at: datetime, data: dict[str, Any]
    ) -> None:
        """Keep the touchpoint (or resolved thread) for policy previews; a touchpoint is the contact's last one."""
        batch.touches.append(
            {"event_id": event.id, "event_type": event.type, "contact_id": contact.id, "at": at, "data": data}
        )
        if event.type == events.INTERACTION_LOGGED and (
            contact.last_touch_at is None or as_utc(contact.last_touch_at) < at
        ):
            # Written by the batch in one statement; the loaded contact shows it now without being marked
            # changed (no UPDATE of its own at the flush).
            set_committed_value(contact, "last_touch_at", at)
            batch.last_touch[contact.id] = at

    async def touch_logged(
        self, batch: TouchBatch, *, event: CloudEvent, contact: KnownContact, touch: dict[str, Any], at: datetime
    ) -> None:
        """A touchpoint: an outbound one closes what it answers; then each policy step it triggers is made."""
        self.touch_seen(batch, event=event, contact=contact, at=at, data=touch)
        if touch.get("direction") == "outbound" or touch.get("followup_id"):
            await self._close_by_touch(batch, contact.id, touch, at)
        await self.apply_policies(batch, event=event, kind="interaction.logged", touch=touch, anchor_at=at,
                                  contact=contact)  # fmt: skip

    async def thread_resolved(
        self, batch: TouchBatch, *, event: CloudEvent, contact: KnownContact, thread: dict[str, Any], at: datetime
    ) -> None:
        self.touch_seen(batch, event=event, contact=contact, at=at, data=thread)
        await self.apply_policies(batch, event=event, kind="thread.resolved", touch=thread, anchor_at=at,
                                  contact=contact)  # fmt: skip

    async def _close_by_touch(
        self, batch: TouchBatch, contact_id: uuid.UUID, touch: dict[str, Any], occurred_at: datetime
    ) -> None:
        """Close the contact's open follow-ups this touchpoint does (``closing.close_reason``): completed, or
        cancelled as ``answered`` for a reply SLA; the touchpoint and the reason recorded on each."""
        # Follow-ups made earlier in the same batch (the inbound this one answers) must be found too.
        session = batch.session
        await batch.write()
        await session.flush()
        rows = (
            await session.scalars(
                select(Followup).where(col(Followup.contact_id) == contact_id, col(Followup.status).in_(OPEN))
            )
        ).all()
        changes: list[tuple[str, Followup]] = []
        still_open: list[Followup | dict[str, Any] | Standing] = []
        for followup in rows:
            reason = close_reason(followup, touch, occurred_at)
            if reason is None:
                still_open.append(followup)
                continue
            followup.interaction_id = _uuid(touch.get("id"))
            followup.close_reason = reason
            if followup.plan.get("on_reply") == "cancel_answered":
                followup.cancel_reason = "answered"
                self._close(followup, "cancelled", occurred_at)
                changes.append(("cancelled", followup))
            else:
                followup.completed_at = occurred_at
                followup.outcome = touch.get("outcome") or f"Done by an outbound {touch.get('channel')} touchpoint."
                self._close(followup, "completed", occurred_at)
                changes.append(("completed", followup))
        batch.open_followups[contact_id] = still_open
        await self.emit(session, changes, batch=batch)

    async def apply_policies(
        self,
        batch: TouchBatch,
        *,
        event: CloudEvent,
        kind: str,
        touch: dict[str, Any],
        anchor_at: datetime,
        contact: KnownContact,
    ) -> None:
        facts = facts_of(contact)
        for version, policy in await self.policies.enabled(batch.session):
            for step in policy.steps:
                if policy.trigger_of(step).event != kind:
                    continue
                decision = decide(
                    policy=policy, version=version, step=step, touch=touch, anchor_at=anchor_at, contact=facts,
                    default_timezone=self.default_timezone,
                )  # fmt: skip
                if decision is not None:
                    await self.make(
                        batch.session, decision=decision, contact_id=contact.id, trigger_event_id=event.id,
                        check_existing=False, batch=batch,
                    )  # fmt: skip

    async def make(
        self,
        session: AsyncSession,
        *,
        decision: Decision,
        contact_id: uuid.UUID,
        trigger_event_id: str,
        check_existing: bool = True,
        batch: TouchBatch | None = None,
    ) -> bool:
        """Store what a policy step decided, once per (policy, step, trigger event); False if already made.

        ``check_existing=False`` when the caller already knows (the inbox applies each event once): the unique
        constraint still refuses a second one, and the event is then retried and found applied."""
        if check_existing:
            exists = await session.scalar(
                select(col(Followup.id)).where(
                    col(Followup.policy) == decision.policy,
                    col(Followup.step) == decision.step,
                    col(Followup.trigger_event_id) == trigger_event_id,
                )
            )
            if exists is not None:
                return False
        repeat = decision.plan.get("repeat", "stack")
        if repeat != "stack":
            standing = await self._standing(session, decision=decision, contact_id=contact_id, batch=batch)
            if standing is not None:
                await self._repeated(session, standing, decision=decision, trigger_event_id=trigger_event_id,
                                     repeat=repeat, batch=batch)  # fmt: skip
                return True
        row = new_followup(decision=decision, contact_id=contact_id, trigger_event_id=trigger_event_id,
                           now=self.clock.now())  # fmt: skip
        if batch is not None:
            batch.followups.append(row)
            if row["status"] in OPEN:
                batch.open_of(contact_id).append(row)
        else:
            session.add(Followup(**row))
        await self.emit(session, [(row["status"], row)], batch=batch)  # scheduled, or skipped (no channel left)
        return True

    async def _standing(
        self, session: AsyncSession, *, decision: Decision, contact_id: uuid.UUID, batch: TouchBatch | None
    ) -> Followup | dict[str, Any] | None:
        """The open follow-up that already stands for this decision, if any (``same_obligation``)."""
        if batch is not None and batch.knows_open(contact_id):
            candidates = batch.open_of(contact_id)
            for index, found in enumerate(candidates):
                if _get(found, "status") in OPEN and same_obligation(found, decision):
                    if isinstance(found, Standing):  # known by a few columns so far: the whole row now
                        candidates[index] = await get_followup(session=session, followup_id=found.id)
                    return candidates[index]  # type: ignore[return-value]
            return None
        rows = (
            await session.scalars(
                select(Followup).where(
                    col(Followup.contact_id) == contact_id, col(Followup.status).in_(OPEN),
                    col(Followup.policy) == decision.policy, col(Followup.step) == decision.step,
                )
            )
        ).all()  # fmt: skip
        return next((followup for followup in rows if same_obligation(followup, decision)), None)

    async def _repeated(
        self,
        session: AsyncSession,
        followup: Followup | dict[str, Any],
        *,
        decision: Decision,
        trigger_event_id: str,
        repeat: str,
        batch: TouchBatch | None,
    ) -> None:
        """A new trigger of an open follow-up's (contact, policy, step, thread): recorded on it, and with
        ``reanchor`` its due time counts from the new trigger (falling due again if it had)."""
        now = self.clock.now()
        handled = "reanchored" if repeat == "reanchor" else "covered"
        record = {"event_id": trigger_event_id, "interaction_id": decision.trigger_interaction_id,
                  "at": json_value(decision.anchor_at), "handled": handled}  # fmt: skip
        # A new list: the ORM sees a JSON column change only when it is assigned.
        _set(followup, triggers=[*(_get(followup, "triggers") or []), record])
        if handled == "reanchored":
            due = decision.due_at
            overdue_at = due + timedelta(seconds=float(_get(followup, "plan").get("overdue_after_s", 86_400)))
            _set(followup, anchor_at=decision.anchor_at, due_at=due, overdue_at=overdue_at, timeline_at=due,
                 status="scheduled", fired_at=None, overdue=False, next_action_at=due)  # fmt: skip
        _set(followup, updated_at=now, version=_get(followup, "version") + 1)
        await self.emit(session, [("scheduled", followup)], batch=batch)

    # -- by hand ------------------------------------------------------------------------------------------

    async def create(self, *, session: AsyncSession, data: FollowupCreate) -> Followup:
        now = self.clock.now()
        contact = await session.get(KnownContact, data.contact_id)
        if contact is not None and contact.status == "erased":
            raise Unprocessable(f"Contact {data.contact_id} was erased.", field="contact_id")
        if contact is not None and contact.status == "merged" and contact.merged_into is not None:
            contact = await self.known_contact(session, contact.merged_into)
        if data.channel is not None and contact is not None and contact.consent.get(data.channel) is False:
            raise Unprocessable(f"The contact opted out of {data.channel}.", field="channel")
        followup = Followup(
            contact_id=contact.id if contact is not None else data.contact_id,
            reason=data.reason,
            channel=data.channel,
            due_at=data.due_at,
            priority=data.priority,
            priority_rank=PRIORITY_RANK[data.priority],
            assignee=data.assignee,
            team=data.team,
            thread_id=data.thread_id,
            anchor_at=now,
            plan=manual_plan(data.channel),
            timeline_at=data.due_at,
            created_at=now,
            updated_at=now,
        )
        set_due(followup, as_utc(data.due_at))
        session.add(followup)
        await session.flush()
        await self.emit(session, [("scheduled", followup)])
        return followup

    async def complete(
        self, *, session: AsyncSession, followup_id: uuid.UUID, outcome: str | None, interaction_id: uuid.UUID | None
    ) -> Followup:
        followup = await get_followup(session=session, followup_id=followup_id, lock=True)
        if followup.status == "completed":
            if interaction_id is None or followup.interaction_id == interaction_id:
                return followup  # the same completion again: nothing changes
            raise NotOpen("The follow-up was already completed by another touchpoint.", followup_status=followup.status)
        if followup.status not in OPEN:
            raise NotOpen(f"A {followup.status} follow-up cannot be completed.", followup_status=followup.status)
        now = self.clock.now()
        followup.outcome = outcome
        followup.interaction_id = interaction_id
        followup.close_reason = BY_AGENT
        followup.completed_at = now
        self._close(followup, "completed", now)
        await self.emit(session, [("completed", followup)])
        return followup

    async def snooze(self, *, session: AsyncSession, followup_id: uuid.UUID, until: datetime) -> Followup:
        followup = await get_followup(session=session, followup_id=followup_id, lock=True)
        if followup.status not in OPEN:
            raise NotOpen(f"A {followup.status} follow-up cannot be snoozed.", followup_status=followup.status)
        now = self.clock.now()
        if as_utc(until) <= now:
            raise Unprocessable("A follow-up can only be snoozed into the future.", field="until", now=now.isoformat())
        # Back to scheduled: it falls due again (and is announced again) at the new time.
        followup.status = "scheduled"
        followup.fired_at = None
        followup.overdue = False
        set_due(followup, as_utc(until))
        followup.updated_at = now
        followup.version += 1
        await self.emit(session, [("scheduled", followup)])
        return followup

    async def cancel(self, *, session: AsyncSession, followup_id: uuid.UUID, reason: str) -> Followup:
        followup = await get_followup(session=session, followup_id=followup_id, lock=True)
        if followup.status == "cancelled":
            return followup
        if followup.status not in OPEN:
            raise NotOpen(f"A {followup.status} follow-up cannot be cancelled.", followup_status=followup.status)
        followup.cancel_reason = reason
        self._close(followup, "cancelled", self.clock.now())
        await self.emit(session, [("cancelled", followup)])
        return followup

    async def assign(
        self, *, session: AsyncSession, followup_id: uuid.UUID, assignee: str | None, team: str | None
    ) -> Followup:
        followup = await get_followup(session=session, followup_id=followup_id, lock=True)
        if followup.status not in OPEN:
            raise NotOpen(f"A {followup.status} follow-up cannot be reassigned.", followup_status=followup.status)
        followup.assignee = assignee
        if team is not None:
            followup.team = team
        followup.updated_at = self.clock.now()
        followup.version += 1
        # ``scheduled`` announces a change to an open follow-up; ``due`` is only ever sent when it falls due.
        await self.emit(session, [("scheduled", followup)])
        return followup
