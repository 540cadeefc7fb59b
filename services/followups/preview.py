"""A policy preview: the follow-ups a policy would have made from the last N days, writing nothing.

It replays the touchpoints and thread resolutions this service saw (kept ``touch_retention_days``), against
each contact as it is known today; premium-quiet policies are previewed as a sweep run now.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from servicekit.clock import as_utc
from services.followups.models import KnownContact, SeenTouch
from services.followups.rules import Decision, PolicyDocument, decide, seconds_of
from services.followups.schemas import PolicyPreview, PreviewItem
from services.followups.service import facts_of

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
) -> PolicyPreview:
    since = now - timedelta(days=days)
    items: list[PreviewItem] = []
    by_step: Counter[str] = Counter()
    considered = 0
    kinds = {policy.trigger_of(step).event for step in policy.steps}
    event_types = [t for k, t in (("interaction.logged", "crm.interaction.logged.v1"),
                                  ("thread.resolved", "crm.thread.resolved.v1")) if k in kinds]  # fmt: skip
    contacts: dict[uuid.UUID, KnownContact | None] = {}

    def keep(decision: Decision, contact_id: uuid.UUID, trigger: str) -> None:
        by_step[decision.step] += 1
        if len(items) < MAX_ITEMS:
            items.append(_item(decision, contact_id, trigger))

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
                kind = "thread.resolved" if row.event_type == "crm.thread.resolved.v1" else "interaction.logged"
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
        items=items,
        truncated=count > len(items),
    )
