"""What the follow-ups service publishes (documented in servicekit/catalogue/followups.py) and consumes: the
touchpoints and resolved threads of the interactions service, the contacts service's contact changes; each
consumed event's handler and registration sit here, each applied once through the inbox."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from servicekit.bus import PermanentError, StreamSpec
from servicekit.catalogue.contacts import (
    CONTACT_CREATED,
    CONTACT_ERASED,
    CONTACT_MERGED,
    CONTACT_UPDATED,
)
from servicekit.catalogue.contacts import CONTACTS_SUBJECTS as ALL_CONTACT_SUBJECTS
from servicekit.catalogue.followups import FOLLOWUP_ACTIONS as ACTIONS
from servicekit.catalogue.followups import FOLLOWUPS_STREAM, FOLLOWUPS_SUBJECTS
from servicekit.catalogue.followups import followup_type as event_type
from servicekit.catalogue.interactions import INTERACTION_LOGGED, THREAD_RESOLVED
from servicekit.clock import as_utc
from servicekit.events import CloudEvent, event_json
from servicekit.ids import new_id
from servicekit.inbox import EventInbox
from servicekit.logging import current_request_context, get_logger
from servicekit.problems import ContactsUnavailable
from services.followups.directory import ContactAnswer, ContactDirectory
from services.followups.models import KnownContact
from services.followups.touches import TouchBatch

if TYPE_CHECKING:  # the service writes its events with this module's followup_outbox_row
    from services.followups.service import FollowupService

log = get_logger(__name__)

SOURCE = "touchpoint/followups"
STREAM = StreamSpec(name=FOLLOWUPS_STREAM, subjects=[FOLLOWUPS_SUBJECTS], description="Follow-up events")

# Consumed from the interactions service.
INTERACTIONS_DURABLE = "followups-interactions"
INTERACTIONS_SUBJECTS = ["crm.interactions.logged.*", "crm.interactions.thread_resolved.*"]

# Consumed from the contacts service.
CONTACTS_DURABLE = "followups-contacts"
CONTACTS_SUBJECTS = [ALL_CONTACT_SUBJECTS]

_TYPES = {action: event_type(action) for action in ACTIONS}


def followup_outbox_row(action: str, document: dict[str, Any], at: datetime) -> tuple[str, str, str, str, datetime]:
    """The event about a follow-up (data = the follow-up as ``document`` gives it, in JSON form; subject
    ``crm.followups.<action>.<contact>``), serialized for ``Outbox.add_serialized``: (id, subject, type, JSON,
    time). It is the document ``make_event(...).to_json()`` makes (a test compares the two), by the JSON
    encoder pydantic itself uses (pydantic_core.to_json): building and dumping a pydantic event for every
    follow-up made was a fifth of the consumer's CPU at 1,000 touchpoints per second."""
    kind = _TYPES[action]
    contact_id = document["contact_id"]
    event_id = str(new_id())
    payload = event_json(type=kind, source=SOURCE, subject=str(contact_id), data=document, time=at,
                         event_id=event_id, request=current_request_context())  # fmt: skip
    return event_id, f"crm.followups.{action}.{contact_id}", kind, payload, at


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        return None


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError):
        return None


def touch_of(event: CloudEvent) -> dict[str, Any]:
    """The parts of a touchpoint (``crm.interaction.logged.v1`` data) the policies read; extra fields are ignored."""
    data = event.data
    keep = ("id", "channel", "direction", "type", "agent", "team", "thread_id", "csat", "nps", "outcome", "followup_id")
    touch = {name: data.get(name) for name in keep}
    touch["contact_id"] = data.get("contact_id") or event.subject
    touch["occurred_at"] = data.get("occurred_at")
    return touch


def thread_of(event: CloudEvent) -> dict[str, Any]:
    """A resolved thread (``crm.thread.resolved.v1``) as the policies read it: its first touchpoint's type and
    channel, whether it held a complaint."""
    data = event.data
    return {
        "thread_id": data.get("thread_id"),
        "contact_id": data.get("contact_id") or event.subject,
        "type": data.get("type"),
        "channel": data.get("channel"),
        "complaint": bool(data.get("complaint")) or data.get("type") == "complaint",
        "resolved_at": data.get("resolved_at"),
        "id": data.get("first_interaction_id"),
    }


# --- handlers: touchpoints and resolved threads (interactions), a batch at a time --------------------------

TouchHandler = Callable[[TouchBatch, CloudEvent], Awaitable[None]]
ContactHandler = Callable[[AsyncSession, CloudEvent], Awaitable[None]]


def interaction_handlers(followups: FollowupService) -> dict[str, TouchHandler]:
    """Handlers of the interactions events, each handed the ``TouchBatch`` its inbox opened (``TouchBatches``)."""

    async def on_interaction_logged(batch: TouchBatch, event: CloudEvent) -> None:
        touch = touch_of(event)
        contact_id = _uuid(touch["contact_id"])
        occurred_at = _time(touch["occurred_at"])
        if contact_id is None or occurred_at is None:
            raise PermanentError(f"{event.type} {event.id} lacks contact_id or occurred_at")
        contact = await followups.known_contact(batch.session, contact_id, batch=batch)
        if contact is None:
            return  # erased: nothing is promised to a person who asked to be forgotten
        touch["contact_id"] = str(contact.id)
        await followups.touch_logged(batch, event=event, contact=contact, touch=touch, at=occurred_at)

    async def on_thread_resolved(batch: TouchBatch, event: CloudEvent) -> None:
        thread = thread_of(event)
        contact_id = _uuid(thread["contact_id"])
        resolved_at = _time(thread["resolved_at"]) or as_utc(event.time)
        if contact_id is None or not thread["thread_id"]:
            raise PermanentError(f"{event.type} {event.id} lacks contact_id or thread_id")
        contact = await followups.known_contact(batch.session, contact_id, batch=batch)
        if contact is None:
            return
        thread["contact_id"] = str(contact.id)
        await followups.thread_resolved(batch, event=event, contact=contact, thread=thread, at=resolved_at)

    return {INTERACTION_LOGGED: on_interaction_logged, THREAD_RESOLVED: on_thread_resolved}


# --- handlers: contact changes (contacts), each in the batch's transaction ------------------------------------


def contact_handlers(followups: FollowupService) -> dict[str, ContactHandler]:
    async def on_contact_created(session: AsyncSession, event: CloudEvent) -> None:
        data = event.data.get("contact")
        if not isinstance(data, dict) or _uuid(data.get("id")) is None:
            raise PermanentError(f"{event.type} {event.id} carries no contact")
        await followups.remember(session, uuid.UUID(str(data["id"])), data, followups.clock.now())

    async def on_contact_updated(session: AsyncSession, event: CloudEvent) -> None:
        contact_id = _uuid(event.data.get("contact_id") or event.subject)
        changed = event.data.get("changed")
        if contact_id is None or not isinstance(changed, dict):
            raise PermanentError(f"{event.type} {event.id} lacks contact_id or changed")
        await followups.contact_updated(session, contact_id=contact_id, changed=changed,
                                        version=event.data.get("version"))  # fmt: skip

    async def on_contact_merged(session: AsyncSession, event: CloudEvent) -> None:
        source_id, target_id = _uuid(event.data.get("source_id")), _uuid(event.data.get("target_id"))
        if source_id is None or target_id is None:
            raise PermanentError(f"{event.type} {event.id} lacks source_id or target_id")
        await followups.contact_merged(session, source_id=source_id, target_id=target_id,
                                       contact=event.data.get("contact"))  # fmt: skip

    async def on_contact_erased(session: AsyncSession, event: CloudEvent) -> None:
        contact_id = _uuid(event.data.get("contact_id") or event.subject)
        if contact_id is None:
            raise PermanentError(f"{event.type} {event.id} lacks contact_id")
        # The contacts merged into it are erased with it (contacts names them; some may never have reached us).
        merged_ids = [ident for ident in map(_uuid, event.data.get("merged_ids") or []) if ident is not None]
        await followups.contact_erased(session, contact_id=contact_id, merged_ids=merged_ids)

    return {
        CONTACT_CREATED: on_contact_created,
        CONTACT_UPDATED: on_contact_updated,
        CONTACT_MERGED: on_contact_merged,
        CONTACT_ERASED: on_contact_erased,
    }


# Contact ids known to be stored (rows in known_contacts are never deleted: erased and merged ones stay).
KNOWN_IDS_KEPT = 200_000


class TouchpointConsumer:
    """Before a batch of touchpoints is applied, contacts we have never heard of are fetched from the contacts
    service concurrently and outside the transaction (SQLite's one writer is not held across HTTP calls).
    What fails here is fetched again by the handler, which nak's the event if contacts is still down.
    The ids found stored are remembered, so a batch of known contacts costs no query here at all."""

    def __init__(
        self,
        *,
        inbox: EventInbox[TouchBatch],
        sessionmaker: async_sessionmaker[AsyncSession],
        followups: FollowupService,
        directory: ContactDirectory,
    ) -> None:
        self.inbox = inbox
        self.sessionmaker = sessionmaker
        self.followups = followups
        self.directory = directory
        self._stored: set[uuid.UUID] = set()

    async def handle_batch(self, msgs: list[Msg]) -> None:
        try:
            await self._prefetch(msgs)
        except Exception as exc:  # an optimisation only: the handlers look up what is still missing
            log.info("contact_prefetch_failed", error=repr(exc))
        await self.inbox.handle_batch(msgs)

    async def _prefetch(self, msgs: list[Msg]) -> None:
        wanted: set[uuid.UUID] = set()
        for msg in msgs:
            # Only the contact id is wanted here, and interactions names it last in the subject
            # (crm.interactions.logged.<contact id>): reading it there costs no JSON parse per message. The
            # inbox validates the whole event next, and a handler looks up any contact still missing.
            try:
                wanted.add(uuid.UUID(msg.subject.rsplit(".", 1)[-1]))
            except ValueError:
                continue
        wanted -= self._stored
        if not wanted:
            return
        async with self.sessionmaker() as session:
            known = set(
                (await session.scalars(select(col(KnownContact.id)).where(col(KnownContact.id).in_(wanted)))).all()
            )
            await session.rollback()
        self._remember(known)
        missing = wanted - known
        if not missing:
            return
        answers = await asyncio.gather(*(self._lookup(c) for c in missing))
        found = [answer for answer in answers if answer is not None and not answer.unknown]
        if not found:
            return
        async with self.sessionmaker() as session, session.begin():
            for answer in found:
                await self.followups.store_answer(session, answer)
        self._remember({answer.asked for answer in found})

    def _remember(self, stored: set[uuid.UUID]) -> None:
        if len(self._stored) + len(stored) > KNOWN_IDS_KEPT:
            self._stored.clear()
        self._stored |= stored

    async def _lookup(self, contact_id: uuid.UUID) -> ContactAnswer | None:
        try:
            return await self.directory.lookup(contact_id)
        except ContactsUnavailable:
            return None
