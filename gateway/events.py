"""What the gateway consumes: contact, touchpoint and follow-up events, projected into its own tables.

- ``gateway-contacts`` (CRM_CONTACTS): created, stage/consent/tier changed, merged and erased become
  ``contact_event`` timeline items; a merge records the alias and re-keys what we hold.
- ``gateway-interactions`` (CRM_INTERACTIONS): each touchpoint as a timeline item (without its body), updated
  and redacted with it; first/last touch per channel and the CSAT sum (header).
- ``gateway-followups`` (CRM_FOLLOWUPS): each follow-up as a timeline item at its latest version, and its latest
  status (header's open/overdue counts).

All three go through ``EventInbox``: each event is applied once, with its inbox row, in one transaction.
Contact events keep stages, tiers, consent flags and ids only; the touchpoints' subject, outcome and attributes
are removed from the projection when their contact is erased (``gateway.projection.redact``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from gateway import projection, webhooks
from gateway.models import ContactAlias, ContactEvent, FollowupState, TouchSummary
from servicekit.bus import PermanentError
from servicekit.catalogue.contacts import (
    CONTACT_CREATED,
    CONTACT_ERASED,
    CONTACT_MERGED,
    CONTACT_UPDATED,
    CONTACTS_STREAM,
    CONTACTS_SUBJECTS,
)
from servicekit.catalogue.followups import FOLLOWUP_ACTIONS, FOLLOWUPS_STREAM, FOLLOWUPS_SUBJECTS, followup_type
from servicekit.catalogue.interactions import (
    INTERACTION_LOGGED,
    INTERACTION_REDACTED,
    INTERACTION_UPDATED,
    INTERACTIONS_STREAM,
    INTERACTIONS_SUBJECTS,
)
from servicekit.clock import as_utc
from servicekit.db import upsert
from servicekit.erasure import checkpoint_after_commit
from servicekit.events import CloudEvent

# A follow-up's status after each of its events (overdue and escalated ones are still due).
FOLLOWUP_STATUS_OF_EVENT = {
    followup_type(action): "due" if action in ("overdue", "escalated") else action for action in FOLLOWUP_ACTIONS
}
_OVERDUE_EVENTS = (followup_type("overdue"), followup_type("escalated"))


def _uuid(value: Any) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        raise PermanentError(f"not a UUID: {value!r}") from None


def _event_uuid(event: CloudEvent) -> uuid.UUID:
    try:
        return uuid.UUID(event.id)
    except ValueError:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"touchpoint:event:{event.id}")


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return as_utc(value)
    try:
        return as_utc(datetime.fromisoformat(str(value)))
    except ValueError:
        return None


async def surviving_contact(session: AsyncSession, contact_id: uuid.UUID) -> uuid.UUID:
    target = await session.scalar(select(col(ContactAlias.target_id)).where(col(ContactAlias.source_id) == contact_id))
    return target or contact_id


# --- contacts -----------------------------------------------------------------------------------------------------


async def _add_contact_event(
    session: AsyncSession, event: CloudEvent, contact_id: uuid.UUID, type_: str, title: str, summary: str, detail: dict
) -> None:
    current = await surviving_contact(session, contact_id)
    row = ContactEvent(
        id=_event_uuid(event),
        contact_id=current,
        original_contact_id=contact_id,
        at=as_utc(event.time),
        type=type_,
        title=title,
        summary=summary,
        detail=detail,
    )
    session.add(row)
    await session.flush()
    await projection.put_contact_event(session, row)


async def on_contact_created(session: AsyncSession, event: CloudEvent) -> None:
    contact = event.data.get("contact") or {}
    contact_id = _uuid(contact.get("id") or event.subject)
    stage, tier = contact.get("stage", "lead"), contact.get("tier", "standard")
    await _add_contact_event(
        session,
        event,
        contact_id,
        "created",
        "Contact created",
        f"Stage {stage}, tier {tier}.",
        {"stage": stage, "tier": tier},
    )


async def on_contact_updated(session: AsyncSession, event: CloudEvent) -> None:
    changed: dict[str, Any] = event.data.get("changed") or {}
    previous: dict[str, Any] = event.data.get("previous") or {}
    contact_id = _uuid(event.data.get("contact_id") or event.subject)
    detail = {k: {"from": previous.get(k), "to": changed[k]} for k in ("stage", "consent", "tier") if k in changed}
    if not detail:
        return  # other profile changes are not timeline items (and may be personal data)
    parts = []
    if "stage" in detail:
        parts.append(f"Stage {detail['stage']['from']} → {detail['stage']['to']}.")
    if "tier" in detail:
        parts.append(f"Tier {detail['tier']['from']} → {detail['tier']['to']}.")
    if "consent" in detail:
        flags = ", ".join(f"{ch} {'on' if ok else 'off'}" for ch, ok in sorted((changed["consent"] or {}).items()))
        parts.append(f"Consent: {flags or 'cleared'}.")
    type_ = "stage_changed" if "stage" in detail else "tier_changed" if "tier" in detail else "consent_changed"
    titles = {"stage_changed": "Stage changed", "tier_changed": "Tier changed", "consent_changed": "Consent changed"}
    await _add_contact_event(session, event, contact_id, type_, titles[type_], " ".join(parts), detail)


async def on_contact_merged(session: AsyncSession, event: CloudEvent) -> None:
    source_id = _uuid(event.data.get("source_id"))
    target_id = _uuid(event.data.get("target_id") or event.subject)
    # Flatten chains: whatever pointed at the source now points at the target.
    await session.execute(
        update(ContactAlias).where(col(ContactAlias.target_id) == source_id).values(target_id=target_id)
    )
    if await session.get(ContactAlias, source_id) is None:
        session.add(ContactAlias(source_id=source_id, target_id=target_id))
    await session.execute(
        update(ContactEvent).where(col(ContactEvent.contact_id) == source_id).values(contact_id=target_id)
    )
    await session.execute(
        update(FollowupState).where(col(FollowupState.contact_id) == source_id).values(contact_id=target_id)
    )
    await projection.rekey(session, source_id, target_id)
    # One statement takes the source's rows and says which it took. A SELECT then a DELETE would see two
    # snapshots on PostgreSQL (read committed): a touch committed in between was deleted without being
    # moved, and the merged contact's header lost it (a flaky test showed it). A touch committed after this
    # statement stays under the source, which the header reads as part of the target's family.
    moved = await session.execute(
        delete(TouchSummary)
        .where(col(TouchSummary.contact_id) == source_id)
        .returning(
            col(TouchSummary.channel),
            col(TouchSummary.first_at),
            col(TouchSummary.last_at),
            col(TouchSummary.touches),
            col(TouchSummary.csat_sum),
            col(TouchSummary.csat_count),
        )
    )
    await _add_touches(
        session,
        [
            {"contact_id": target_id, "channel": channel, "first_at": first_at, "last_at": last_at,
             "touches": touches, "csat_sum": csat_sum, "csat_count": csat_count}
            for channel, first_at, last_at, touches, csat_sum, csat_count in moved.all()
        ],
    )  # fmt: skip
    await _add_contact_event(
        session,
        event,
        target_id,
        "merged",
        "Duplicate merged",
        f"Contact {source_id} was merged into this one; its history is part of this timeline.",
        {"source_id": str(source_id), "target_id": str(target_id)},
    )


async def on_contact_erased(session: AsyncSession, event: CloudEvent) -> None:
    contact_id = _uuid(event.data.get("contact_id") or event.subject)
    # The contacts merged into it were the same person: what is still filed under their ids goes too.
    merged_here = await session.scalars(
        select(col(ContactAlias.source_id)).where(col(ContactAlias.target_id) == contact_id)
    )
    family = {contact_id, *(_uuid(ident) for ident in event.data.get("merged_ids") or []), *merged_here.all()}
    # At once, not only when the interactions service says it redacted them: the timeline must not show them.
    for member in sorted(family):
        await projection.redact(session, member, as_utc(event.time))
    await webhooks.forget_erased_contact(session=session, event=event, now=as_utc(event.time))
    checkpoint_after_commit(session)
    await _add_contact_event(
        session, event, contact_id, "erased", "Personal data erased", "The contact's personal data was erased.", {}
    )


# --- interactions and follow-ups (header) -------------------------------------------------------------------------


async def _add_touches(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Adds to the (contact, channel) rows in one statement: the merge and the touch consumers may add to the
    same row at once, and a read-then-write would let one overwrite the other's sum."""
    if not rows:
        return
    table = TouchSummary.__table__  # type: ignore[attr-defined]
    insert = upsert(session, table).values(rows)
    new = insert.excluded
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=[table.c.contact_id, table.c.channel],
            set_={
                "first_at": case((new.first_at < table.c.first_at, new.first_at), else_=table.c.first_at),
                "last_at": case((new.last_at > table.c.last_at, new.last_at), else_=table.c.last_at),
                "touches": table.c.touches + new.touches,
                "csat_sum": table.c.csat_sum + new.csat_sum,
                "csat_count": table.c.csat_count + new.csat_count,
            },
        )
    )


def _document(event: CloudEvent, key: str) -> dict[str, Any]:
    nested = event.data.get(key)
    return nested if isinstance(nested, dict) else event.data


# --- a batch of touchpoint or follow-up events, applied in one transaction -----------------------------------------

_BATCH = "gateway_projection_batch"


@dataclass
class Batch:
    """What the handlers of one fetched batch share: the surviving contact and the erasure of each contact the
    events name (loaded in one query each, before the handlers), and the rows they make (written in one statement
    per table, after them). At 1,000 touchpoints a second, with three follow-up events each, a query or two per
    event kept the gateway's consumers minutes behind."""

    survivors: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    erased: set[uuid.UUID] = field(default_factory=set)
    items: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    touches: dict[tuple[uuid.UUID, str], dict[str, Any]] = field(default_factory=dict)
    # The follow-ups' stored states, loaded before the handlers; a new one is added here and to the session.
    # No handler asks the database for one: a query per event (and the flush it sets off) left the follow-up
    # consumer waiting for a turn of the event loop once per event while the touchpoint consumer was busy.
    followup_states: dict[uuid.UUID, FollowupState] = field(default_factory=dict)

    def survivor(self, contact_id: uuid.UUID) -> uuid.UUID:
        return self.survivors.get(contact_id, contact_id)

    def add_item(self, row: dict[str, Any]) -> None:
        held = self.items.get(row["id"])
        if held is None or held["version"] < row["version"]:
            self.items[row["id"]] = row

    def add_touch(self, contact_id: uuid.UUID, channel: str, at: datetime, csat: Any) -> None:
        scored = isinstance(csat, int) and not isinstance(csat, bool)
        row = self.touches.setdefault(
            (contact_id, channel),
            {"contact_id": contact_id, "channel": channel, "first_at": at, "last_at": at, "touches": 0,
             "csat_sum": 0, "csat_count": 0},
        )  # fmt: skip
        row["first_at"], row["last_at"] = min(row["first_at"], at), max(row["last_at"], at)
        row["touches"] += 1
        row["csat_sum"] += int(csat) if scored else 0
        row["csat_count"] += 1 if scored else 0


def _named_contact(event: CloudEvent) -> uuid.UUID | None:
    doc = _document(event, "followup" if event.type.startswith("crm.followup.") else "interaction")
    try:
        return uuid.UUID(str(doc.get("contact_id") or event.subject))
    except (ValueError, TypeError):
        return None


def _followup_id(event: CloudEvent) -> uuid.UUID | None:
    doc = _document(event, "followup")
    try:
        return uuid.UUID(str(doc.get("id") or event.data.get("followup_id")))
    except (ValueError, TypeError):
        return None


async def prepare_batch(session: AsyncSession, batch: list[CloudEvent]) -> None:
    named = {contact for event in batch if (contact := _named_contact(event)) is not None}
    found = Batch()
    if named:
        rows = await session.execute(
            select(col(ContactAlias.source_id), col(ContactAlias.target_id)).where(
                col(ContactAlias.source_id).in_(named)
            )
        )
        found.survivors = {source: target for source, target in rows.all()}
        found.erased = await projection.erased_among(session, {found.survivor(c) for c in named})
    followups = {f for event in batch if event.type.startswith("crm.followup.") and (f := _followup_id(event))}
    if followups:
        loaded = await session.scalars(select(FollowupState).where(col(FollowupState.id).in_(followups)))
        found.followup_states = {row.id: row for row in loaded.all()}
    session.sync_session.info[_BATCH] = found


async def finish_batch(session: AsyncSession, batch: list[CloudEvent]) -> None:
    found: Batch = session.sync_session.info.pop(_BATCH)
    await _add_touches(session, list(found.touches.values()))
    await projection.put_rows(session, list(found.items.values()))


def _batch(session: AsyncSession) -> Batch:
    found: Batch | None = session.sync_session.info.get(_BATCH)
    if found is None:
        raise RuntimeError("apply touchpoint and follow-up events with their batch (gateway.events.apply)")
    return found


async def apply(session: AsyncSession, batch: list[CloudEvent]) -> None:
    """Applies touchpoint or follow-up events in the caller's transaction, as the gateway's consumers do (without
    the inbox): for tests and tools."""
    await prepare_batch(session, batch)
    handlers = {**INTERACTION_HANDLERS, **FOLLOWUP_HANDLERS}
    for event in batch:
        handler = handlers.get(event.type)
        if handler is not None:
            await handler(session, event)
    await finish_batch(session, batch)


async def on_interaction_logged(session: AsyncSession, event: CloudEvent) -> None:
    found = _batch(session)
    doc = _document(event, "interaction")
    contact_id = found.survivor(_uuid(doc.get("contact_id") or event.subject))
    at = _time(doc.get("occurred_at")) or as_utc(event.time)
    found.add_touch(contact_id, str(doc.get("channel") or "unknown"), at, doc.get("csat"))
    found.add_item(projection.interaction_row(doc, contact_id, erased=contact_id in found.erased))


async def on_interaction_updated(session: AsyncSession, event: CloudEvent) -> None:
    found = _batch(session)
    doc = _document(event, "interaction")
    contact_id = found.survivor(_uuid(doc.get("contact_id") or event.subject))
    found.add_item(projection.interaction_row(doc, contact_id, erased=contact_id in found.erased))


async def on_interaction_redacted(session: AsyncSession, event: CloudEvent) -> None:
    found = _batch(session)
    contact_id = found.survivor(_uuid(event.data.get("contact_id") or event.subject))
    redacted_at = _time(event.data.get("redacted_at")) or as_utc(event.time)
    # What this batch holds for the contact is written redacted, as projection.redact redacts what is stored.
    found.erased.add(contact_id)
    for key, row in list(found.items.items()):
        if row["contact_id"] == contact_id and not row["redacted"]:
            found.items[key] = projection.redacted_row(row["document"], row["sort_rank"], redacted_at.isoformat())
    await projection.redact(session, contact_id, redacted_at)


async def on_followup_event(session: AsyncSession, event: CloudEvent) -> None:
    found = _batch(session)
    doc = _document(event, "followup")
    followup_id = _uuid(doc.get("id") or event.data.get("followup_id"))
    contact_id = found.survivor(_uuid(doc.get("contact_id") or event.subject))
    status = str(doc.get("status") or FOLLOWUP_STATUS_OF_EVENT[event.type])
    if doc.get("due_at") or doc.get("timeline_at"):
        item = {**doc, "id": str(followup_id), "status": status}
        found.add_item(projection.followup_row(item, contact_id, erased=contact_id in found.erased))
    row = found.followup_states.get(followup_id)
    if row is None:
        row = FollowupState(id=followup_id, contact_id=contact_id, status=status, updated_at=as_utc(event.time))
        session.add(row)
        found.followup_states[followup_id] = row
    elif as_utc(row.updated_at) > as_utc(event.time):
        return  # an older event arriving late does not undo a newer status
    row.contact_id = contact_id
    row.status = status
    row.updated_at = as_utc(event.time)
    row.due_at = _time(doc.get("due_at")) or row.due_at
    if event.type in _OVERDUE_EVENTS:
        row.overdue = True
    elif status != "due":
        row.overdue = False


CONTACT_HANDLERS = {
    CONTACT_CREATED: on_contact_created,
    CONTACT_UPDATED: on_contact_updated,
    CONTACT_MERGED: on_contact_merged,
    CONTACT_ERASED: on_contact_erased,
}
INTERACTION_HANDLERS = {
    INTERACTION_LOGGED: on_interaction_logged,
    INTERACTION_UPDATED: on_interaction_updated,
    INTERACTION_REDACTED: on_interaction_redacted,
}
FOLLOWUP_HANDLERS = dict.fromkeys(FOLLOWUP_STATUS_OF_EVENT, on_followup_event)

# (stream, durable, subjects, handlers): the streams belong to their producers; we only read them.
CONSUMERS = [
    (CONTACTS_STREAM, "gateway-contacts", [CONTACTS_SUBJECTS], CONTACT_HANDLERS),
    (INTERACTIONS_STREAM, "gateway-interactions", [INTERACTIONS_SUBJECTS], INTERACTION_HANDLERS),
    (FOLLOWUPS_STREAM, "gateway-followups", [FOLLOWUPS_SUBJECTS], FOLLOWUP_HANDLERS),
]
