"""What the follow-ups service consumes: touchpoints and resolved threads (interactions), contact changes
(contacts); each applied once through the inbox."""

from __future__ import annotations

import asyncio
import uuid

from nats.aio.msg import Msg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from servicekit.inbox import EventHandler, EventInbox
from servicekit.logging import get_logger
from services.followups import events
from services.followups.directory import ContactAnswer, ContactDirectory, ContactsUnavailable
from services.followups.models import KnownContact
from services.followups.service import FollowupService

log = get_logger(__name__)


def interaction_handlers(followups: FollowupService) -> dict[str, EventHandler]:
    return {
        events.INTERACTION_LOGGED: followups.on_interaction_logged,
        events.THREAD_RESOLVED: followups.on_thread_resolved,
    }


def contact_handlers(followups: FollowupService) -> dict[str, EventHandler]:
    return {
        events.CONTACT_CREATED: followups.on_contact_created,
        events.CONTACT_UPDATED: followups.on_contact_updated,
        events.CONTACT_MERGED: followups.on_contact_merged,
        events.CONTACT_ERASED: followups.on_contact_erased,
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
        inbox: EventInbox,
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
