"""A policy preview: the follow-ups a policy would have made from the last N days, writing nothing.

It replays the touchpoints and thread resolutions this service saw (kept ``touch_retention_days``), against
each contact as it is known today; premium-quiet policies are previewed as a sweep run now. A follow-up the replay
makes is closed by a later touchpoint of the replay by the same rules as a stored one (services.followups.closing),
so the preview says per step what would have been created, skipped (and why) and closed. A trigger that repeats a
follow-up the replay still holds open is handled as the policy's ``repeat`` says (``covered`` or ``reanchored``
onto the open one, counted per step; ``stack`` makes another), as a stored trigger is (FollowupService.make).

The policy may be a saved version or a draft nobody saved yet (``POST /v1/policies/preview``): the same replay.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from servicekit.catalogue.interactions import INTERACTION_LOGGED, THREAD_RESOLVED
from servicekit.clock import as_utc
from services.followups.closing import close_reason
from services.followups.models import KnownContact, SeenTouch
from services.followups.rules import Decision, PolicyDocument, decide, seconds_of
from services.followups.schemas import PolicyPreview, PreviewItem, StepPreview
from services.followups.service import facts_of, same_obligation

MAX_ITEMS = 1000
PAGE = 2000


def _item(decision: Decision, contact_id: uuid.UUID, trigger: str) -> PreviewItem:
    return PreviewItem(
        contact_id=contact_id,
        step=decision.step,
        trigger=trigger,
        anchor_at=decision.anchor_at,
        due_at=decision.due_at,
        status="skipped" if decision.skip_reason else "scheduled",
        skip_reason=decision.skip_reason,
        channel=decision.channel,
        priority=decision.priority,
        assignee=decision.assignee,
        team=decision.team,
        reason=decision.reason,
    )


async def preview(
    *,
    session: AsyncSession,
    policy: PolicyDocument,
    version: int,
    enabled: bool,
    days: int,
    now: Any,
    default_timezone: str,
    draft: bool = False,
) -> PolicyPreview:
    since = now - timedelta(days=days)
    items: list[PreviewItem] = []
    by_step: Counter[str] = Counter()
    steps = {step.id: StepPreview() for step in policy.steps}
    considered = 0
    kinds = {policy.trigger_of(step).event for step in policy.steps}
    # Every touchpoint is replayed when anything is: one that triggers nothing may still close what was made.
    event_types = [INTERACTION_LOGGED, THREAD_RESOLVED] if kinds - {"contact.quiet"} else []
    contacts: dict[uuid.UUID, KnownContact | None] = {}
    # Per contact, what the replay made and is still open: (the follow-up's closing facts, its item or None).
    open_now: dict[uuid.UUID, list[tuple[dict[str, Any], PreviewItem | None, str]]] = {}

    def keep(decision: Decision, contact_id: uuid.UUID, trigger: str) -> None:
        summary = steps[decision.step]
        if not decision.skip_reason and _repeats(decision, contact_id):
            return
        by_step[decision.step] += 1
        item = _item(decision, contact_id, trigger)
        if decision.skip_reason:
            summary.skipped[decision.skip_reason] = summary.skipped.get(decision.skip_reason, 0) + 1
        else:
            summary.created += 1
            facts = {"id": None, "anchor_at": decision.anchor_at, "created_at": decision.anchor_at,
                     "plan": decision.plan, "due_at": decision.due_at, "thread_id": decision.thread_id,
                     "channel": decision.channel, "policy": decision.policy, "step": decision.step,
                     "trigger_channel": decision.trigger_channel}  # fmt: skip
            open_now.setdefault(contact_id, []).append((facts, item if len(items) < MAX_ITEMS else None, decision.step))
        if len(items) < MAX_ITEMS:
            items.append(item)

    def _repeats(decision: Decision, contact_id: uuid.UUID) -> bool:
        """Whether the trigger repeats a follow-up the replay holds open (then handled per ``repeat``, none made)."""
        repeat = decision.plan.get("repeat", "stack")
        if repeat == "stack":
            return False
        standing = next((o for o in open_now.get(contact_id, []) if same_obligation(o[0], decision)), None)
        if standing is None:
            return False
        handled = "reanchored" if repeat == "reanchor" else "covered"
        summary = steps[decision.step]
        summary.repeated[handled] = summary.repeated.get(handled, 0) + 1
        facts, item, _ = standing
        if handled == "reanchored":
            facts.update(anchor_at=decision.anchor_at, due_at=decision.due_at)
            if item is not None:
                item.anchor_at, item.due_at = decision.anchor_at, decision.due_at
        return True

    def close_by(contact_id: uuid.UUID, touch: dict[str, Any], occurred_at: Any) -> None:
        still = []
        for facts, item, step in open_now.get(contact_id, []):
            why = close_reason(facts, touch, occurred_at)
            if why is None:
                still.append((facts, item, step))
                continue
            steps[step].closed[why] = steps[step].closed.get(why, 0) + 1
            if item is not None:
                item.status, item.close_reason, item.closed_by = "closed", why, str(touch.get("id"))
        open_now[contact_id] = still

    if event_types:
        after: tuple[Any, str] | None = None
        while True:
            query = select(SeenTouch).where(
                col(SeenTouch.at) >= since, col(SeenTouch.at) <= now, col(SeenTouch.event_type).in_(event_types)
            )
            if after is not None:
                query = query.where(tuple_(col(SeenTouch.at), col(SeenTouch.event_id)) > tuple_(*after))
            rows = (await session.scalars(query.order_by(col(SeenTouch.at), col(SeenTouch.event_id)).limit(PAGE))).all()
            for row in rows:
                considered += 1
                if row.contact_id not in contacts:
                    contacts[row.contact_id] = await session.get(KnownContact, row.contact_id)
                facts = facts_of(contacts[row.contact_id])
                kind = "thread.resolved" if row.event_type == THREAD_RESOLVED else "interaction.logged"
                if kind == "interaction.logged":
                    close_by(row.contact_id, row.data, as_utc(row.at))
                for step in policy.steps:
                    if policy.trigger_of(step).event != kind:
                        continue
                    decision = decide(
                        policy=policy, version=version, step=step, touch=row.data, anchor_at=as_utc(row.at),
                        contact=facts, default_timezone=default_timezone,
                    )  # fmt: skip
                    if decision is not None:
                        trigger = str(row.data.get("thread_id") if kind == "thread.resolved" else row.data.get("id"))
                        keep(decision, row.contact_id, trigger)
            if len(rows) < PAGE:
                break
            after = (rows[-1].at, rows[-1].event_id)
    if "contact.quiet" in kinds and policy.trigger.quiet_for is not None:
        cutoff = now - timedelta(seconds=seconds_of(policy.trigger.quiet_for))
        last_touch = func.coalesce(col(KnownContact.last_touch_at), col(KnownContact.known_since))
        quiet = (
            await session.scalars(
                select(KnownContact).where(col(KnownContact.status) == "active", last_touch <= cutoff).limit(50_000)
            )
        ).all()
        for contact in quiet:
            considered += 1
            for step in policy.steps:
                decision = decide(
                    policy=policy, version=version, step=step, touch={"contact_id": str(contact.id)}, anchor_at=now,
                    contact=facts_of(contact), default_timezone=default_timezone,
                )  # fmt: skip
                if decision is not None:
                    keep(decision, contact.id, f"quiet:{contact.id}")
    count = sum(by_step.values())
    return PolicyPreview(
        policy=policy.id,
        version=version,
        enabled=enabled,
        days=days,
        since=since,
        until=now,
        considered=considered,
        count=count,
        by_step=dict(by_step),
        steps=steps,
        items=items,
        truncated=count > len(items),
        draft=draft,
    )
