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
from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from gateway import projection
from gateway.models import ContactAlias, ContactEvent, FollowupState, TouchSummary
from servicekit.bus import PermanentError
from servicekit.clock import as_utc
from servicekit.db import upsert
from servicekit.events import CloudEvent

CONTACT_CREATED = "crm.contact.created.v1"
CONTACT_UPDATED = "crm.contact.updated.v1"
CONTACT_MERGED = "crm.contact.merged.v1"
CONTACT_ERASED = "crm.contact.erased.v1"
INTERACTION_LOGGED = "crm.interaction.logged.v1"
INTERACTION_UPDATED = "crm.interaction.updated.v1"
INTERACTION_REDACTED = "crm.interaction.redacted.v1"

FOLLOWUP_STATUS_OF_EVENT = {
    "crm.followup.scheduled.v1": "scheduled",
    "crm.followup.due.v1": "due",
    "crm.followup.overdue.v1": "due",
    "crm.followup.escalated.v1": "due",
    "crm.followup.completed.v1": "completed",
    "crm.followup.cancelled.v1": "cancelled",
    "crm.followup.skipped.v1": "skipped",
}
_OVERDUE_EVENTS = ("crm.followup.overdue.v1", "crm.followup.escalated.v1")


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
    for channel, first_at, last_at, touches, csat_sum, csat_count in moved.all():
        await _add_touches(
            session,
            target_id,
            channel,
            first_at=first_at,
            last_at=last_at,
            touches=touches,
            csat_sum=csat_sum,
            csat_count=csat_count,
        )
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
    # At once, not only when the interactions service says it redacted them: the timeline must not show them.
    await projection.redact(session, contact_id, as_utc(event.time))
    await _add_contact_event(
        session, event, contact_id, "erased", "Personal data erased", "The contact's personal data was erased.", {}
    )


# --- interactions and follow-ups (header) -------------------------------------------------------------------------


async def _add_touches(
    session: AsyncSession,
    contact_id: uuid.UUID,
    channel: str,
    *,
    first_at: datetime,
    last_at: datetime,
    touches: int,
    csat_sum: int,
    csat_count: int,
) -> None:
    """Adds to the (contact, channel) row in one statement: the merge and the touch consumers may add to the
    same row at once, and a read-then-write would let one overwrite the other's sum."""
    table = TouchSummary.__table__  # type: ignore[attr-defined]
    insert = upsert(session, table).values(
        contact_id=contact_id,
        channel=channel,
        first_at=first_at,
        last_at=last_at,
        touches=touches,
        csat_sum=csat_sum,
        csat_count=csat_count,
    )
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


async def on_interaction_logged(session: AsyncSession, event: CloudEvent) -> None:
    doc = _document(event, "interaction")
    contact_id = await surviving_contact(session, _uuid(doc.get("contact_id") or event.subject))
    at = _time(doc.get("occurred_at")) or as_utc(event.time)
    csat = doc.get("csat")
    await _add_touches(
        session,
        contact_id,
        str(doc.get("channel") or "unknown"),
        first_at=at,
        last_at=at,
        touches=1,
        csat_sum=int(csat) if isinstance(csat, int) else 0,
        csat_count=1 if isinstance(csat, int) else 0,
    )
    await projection.put_interaction(session, doc, contact_id)


async def on_interaction_updated(session: AsyncSession, event: CloudEvent) -> None:
    doc = _document(event, "interaction")
    contact_id = await surviving_contact(session, _uuid(doc.get("contact_id") or event.subject))
    await projection.put_interaction(session, doc, contact_id)


async def on_interaction_redacted(session: AsyncSession, event: CloudEvent) -> None:
    contact_id = _uuid(event.data.get("contact_id") or event.subject)
    await projection.redact(session, contact_id, _time(event.data.get("redacted_at")) or as_utc(event.time))


async def on_followup_event(session: AsyncSession, event: CloudEvent) -> None:
    doc = _document(event, "followup")
    followup_id = _uuid(doc.get("id") or event.data.get("followup_id"))
    contact_id = await surviving_contact(session, _uuid(doc.get("contact_id") or event.subject))
    status = str(doc.get("status") or FOLLOWUP_STATUS_OF_EVENT[event.type])
    if doc.get("due_at") or doc.get("timeline_at"):
        await projection.put_followup(session, {**doc, "id": str(followup_id), "status": status}, contact_id)
    row = await session.get(FollowupState, followup_id)
    if row is None:
        row = FollowupState(id=followup_id, contact_id=contact_id, status=status, updated_at=as_utc(event.time))
        session.add(row)
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
    ("CRM_CONTACTS", "gateway-contacts", ["crm.contacts.>"], CONTACT_HANDLERS),
    ("CRM_INTERACTIONS", "gateway-interactions", ["crm.interactions.>"], INTERACTION_HANDLERS),
    ("CRM_FOLLOWUPS", "gateway-followups", ["crm.followups.>"], FOLLOWUP_HANDLERS),
]
