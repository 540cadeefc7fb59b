"""A batch of touchpoints applied in one transaction: what its handlers share and what they make, written in
one statement per table (on PostgreSQL one statement for the four) instead of one ORM object each."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Table, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from servicekit.bulk import among, write_rows
from servicekit.events import CloudEvent
from servicekit.locks import FOLLOWUPS_TRIGGERS, lock_contacts
from servicekit.outbox import Outbox
from services.followups.models import OPEN, Followup, KnownContact, SeenTouch

_FOLLOWUPS: Table = Followup.__table__  # type: ignore[attr-defined]
_SEEN_TOUCHES: Table = SeenTouch.__table__  # type: ignore[attr-defined]
_KNOWN_CONTACTS: Table = KnownContact.__table__  # type: ignore[attr-defined]


def contact_id_of(event: CloudEvent) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(event.data.get("contact_id") or event.subject))
    except (ValueError, TypeError):
        return None


class Standing(NamedTuple):
    """An open follow-up as a batch first knows it: enough to tell whether a new trigger repeats it."""

    id: uuid.UUID
    contact_id: uuid.UUID
    policy: str | None
    step: str | None
    thread_id: str | None
    trigger_channel: str | None
    status: str


@dataclass
class TouchBatch:
    """The touchpoints of one transaction: the contacts loaded for them, and the rows their handlers made,
    written by ``write`` (at the end of the batch, or earlier when something must read them back)."""

    session: AsyncSession
    outbox: Outbox
    followups: list[dict[str, Any]] = field(default_factory=list)
    touches: list[dict[str, Any]] = field(default_factory=list)
    # The follow-ups' events, as outbox rows: one INSERT for the batch, not one per event.
    announced: list[dict[str, Any]] = field(default_factory=list)
    # The batch's contacts by id: the same objects the session holds, found without session.get's machinery.
    contacts: dict[uuid.UUID, KnownContact] = field(default_factory=dict)
    # Contact id -> its latest touch in the batch: one UPDATE for the batch, not an ORM flush of each contact.
    last_touch: dict[uuid.UUID, datetime] = field(default_factory=dict)
    # Contact id -> its open follow-ups (loaded ones, and rows made in this batch): what a new trigger may repeat.
    open_followups: dict[uuid.UUID, list[Followup | dict[str, Any] | Standing]] = field(default_factory=dict)

    def knows_open(self, contact_id: uuid.UUID) -> bool:
        return contact_id in self.open_followups

    def open_of(self, contact_id: uuid.UUID) -> list[Followup | dict[str, Any] | Standing]:
        return self.open_followups.setdefault(contact_id, [])

    async def write(self) -> None:
        """Write what the handlers collected so far (collecting goes on)."""
        touches, self.touches = self.touches, []
        made, self.followups = self.followups, []
        touched, self.last_touch = self.last_touch, {}
        announced, self.announced = self.announced, []
        last_touches = [{"id": ident, "last_touch_at": at} for ident, at in touched.items()]
        await write_rows(
            self.session,
            inserts=[(_SEEN_TOUCHES, touches), (_FOLLOWUPS, made), (self.outbox.table, announced)],
            updates=[(_KNOWN_CONTACTS, last_touches, "id", "last_touch_at")],
        )
        if announced:
            self.outbox.wake_after_commit(self.session)


class TouchBatches:
    """Opens the ``TouchBatch`` each batch of touchpoint events is handed (``servicekit.inbox.BatchKind``)."""

    def __init__(self, *, outbox: Outbox) -> None:
        self.outbox = outbox

    async def open(self, session: AsyncSession, events: list[CloudEvent]) -> TouchBatch:
        """The batch's contacts, and whom they were merged into, loaded in one query each, so each handler finds
        its contact without a query of its own."""
        batch = TouchBatch(session=session, outbox=self.outbox)
        wanted = {ident for event in events if (ident := contact_id_of(event)) is not None}
        # A contact this service has no row for yet has no row to lock below: the per-contact lock makes replicas
        # take turns on it too (the second finds what the first made). Taken first, in key order, for every
        # contact of the batch, so two batches never wait on each other's locks in opposite orders.
        await lock_contacts(session, wanted, namespace=FOLLOWUPS_TRIGGERS)
        for _ in range(2):
            if not wanted:
                break
            # Locked (PostgreSQL; SQLite has one writer anyway), in id order: replicas applying batches about the
            # same contact take turns, so each sees the follow-ups the other made or repeated (no piles, no lost
            # trigger). Without it two replicas each found nothing open and each made the follow-up.
            contacts = select(KnownContact).where(among(session, col(KnownContact.id), wanted))
            found = (await session.scalars(contacts.order_by(col(KnownContact.id)).with_for_update())).all()
            batch.contacts.update((c.id, c) for c in found)
            wanted = {c.merged_into for c in found if c.status == "merged" and c.merged_into is not None}
        # Their open follow-ups that a trigger of this batch may repeat (no piles), in one query of a few columns:
        # on no thread, or on a thread the batch names. The whole row is loaded only for one that is repeated.
        live = [ident for ident, c in batch.contacts.items() if c.status == "active"]
        if live:
            threads = {str(thread) for event in events if (thread := event.data.get("thread_id"))}
            on_thread: ColumnElement[bool] = col(Followup.thread_id).is_(None)
            if threads:
                on_thread = or_(on_thread, among(session, col(Followup.thread_id), threads))
            query = select(*(col(getattr(Followup, name)) for name in Standing._fields)).where(
                among(session, col(Followup.contact_id), live), col(Followup.status).in_(OPEN), on_thread
            )
            for row in (await session.execute(query)).all():
                batch.open_of(row.contact_id).append(Standing(*row))
            for ident in live:
                batch.open_of(ident)
        return batch

    async def finish(self, batch: TouchBatch) -> None:
        await batch.write()
