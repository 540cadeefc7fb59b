"""This service's copy of the identity directory: which contact holds an email, a phone, a handle or an external id.

A touchpoint that names its customer by an identity already known here is filed without asking the contacts
service (that call was 42% of this service's CPU in the load run); only unknown identities go to contacts, a
batch's worth in one ``POST /v1/contacts/resolve-many``.

Where the copy comes from: the contacts service's events (``crm.contact.created/updated/merged/erased.v1``, which
carry the contact's identities: issue 18 kept personal data on the bus and purges an erased contact's messages
from every stream instead), consumed by the ``interactions-contacts`` durable through the inbox (once per event),
and the answers of resolve-many (what the events of contacts made before this copy existed never told us).

What it holds: no personal data. An identity is stored as the HMAC-SHA256 of its normalised ``(kind, value)``
under ``INTERACTIONS_IDENTITY_KEY`` (a setting, never in the database): the table alone cannot be matched against
guessed addresses. An erase deletes every row of the contact and of the contacts merged into it.

How it stays right:
- each row keeps the time of the event that wrote it; an older event delivered late never overwrites a newer one
  (a removed identity stays as a row with ``held`` false, so an older "added" cannot bring it back);
- a row learned from an answer has the earliest time: any event about the identity wins over it;
- a merge re-points the source's rows to the target; a contact whose fate (merged or erased) is known here gets
  no new rows from a late created/updated event;
- what the copy says is only a hint on the write path: the write transaction still follows ``contact_fates``
  (merged: the survivor; erased: refused), under the contact lock the merge and erase handlers take exclusively.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.bulk import among
from servicekit.db import upsert
from servicekit.identities import Identity, identity_digest, profile_identities_of, requested_identity
from servicekit.logging import get_logger
from services.interactions.models import ContactFate, KnownIdentity
from services.interactions.schemas import ContactByIdentity

# The time of a row learned from a resolve-many answer: before any event, so any event about it wins.
LEARNED_AT = datetime(1970, 1, 1, tzinfo=UTC)
IDENTITY_FIELDS = ("emails", "phones", "handles", "external_ids")

# How long learning waits for a row another transaction is writing before it gives up (see ``learn``).
LEARN_WAIT = "200ms"
LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout expired
_LOCK_TIMEOUT = sa.text("SELECT current_setting('lock_timeout')")
# For this transaction only (and undone with a savepoint rolled back).
_SET_LOCK_TIMEOUT = sa.text("SELECT set_config('lock_timeout', :value, true)")

_TABLE = cast(sa.Table, KnownIdentity.__table__)  # type: ignore[attr-defined]
_FATES = cast(sa.Table, ContactFate.__table__)  # type: ignore[attr-defined]

log = get_logger(__name__)


def _sqlstate(exc: DBAPIError) -> str | None:
    """The SQLSTATE of a PostgreSQL error (asyncpg's, under SQLAlchemy's wrapper)."""
    for error in (exc.orig, getattr(exc.orig, "__cause__", None)):
        if (code := getattr(error, "sqlstate", None)) is not None:
            return str(code)
    return None


class IdentityCopy:
    """The copy's rules, bound to the key its digests are made with."""

    def __init__(self, *, key: bytes) -> None:
        self.key = key

    def digest(self, identity: Identity) -> bytes:
        return identity_digest(self.key, identity)

    def digest_of(self, contact: ContactByIdentity) -> bytes | None:
        """The digest a touchpoint's ``contact`` is looked up by; None when only the contacts service can
        normalise it (a phone number without its country code)."""
        identity = requested_identity(contact.resolve_request())
        return self.digest(identity) if identity is not None else None

    # --- reading ---------------------------------------------------------------------------------------------

    async def lookup(self, *, session: AsyncSession, digests: Iterable[bytes]) -> dict[bytes, uuid.UUID]:
        """The contact holding each known identity (unknown ones are absent)."""
        wanted = set(digests)
        if not wanted:
            return {}
        query = sa.select(_TABLE.c.digest, _TABLE.c.contact_id).where(
            among(session, _TABLE.c.digest, wanted), _TABLE.c.held.is_(True)
        )
        return {row.digest: row.contact_id for row in await session.execute(query)}

    # --- writing ---------------------------------------------------------------------------------------------

    async def learn(self, *, session: AsyncSession, found: dict[bytes, uuid.UUID]) -> None:
        """Identities the contacts service just resolved, for contacts with no known fate (the caller checked, under
        the contact lock): written only where nothing is known of the identity yet."""
        if not found:
            return
        rows = [
            {"digest": digest, "contact_id": contact_id, "held": True, "changed_at": LEARNED_AT}
            for digest, contact_id in sorted(found.items())
        ]
        statement = upsert(session, _TABLE).values(rows).on_conflict_do_nothing(index_elements=["digest"])
        if session.get_bind().dialect.name != "postgresql":
            await session.execute(statement)  # SQLite: write transactions are serialised, nobody to wait for
            return
        # The contacts consumer applies a batch of events in one transaction, each event's identities in turn (not
        # in one digest order across the batch): had this waited for a row that transaction wrote while it waits
        # for one written here, PostgreSQL would break the deadlock by failing one of them, and a touchpoint
        # request answered 500 (the fault suite saw it). What is learned is only a hint that the events bring
        # anyway, so rather than wait this gives up after LEARN_WAIT and files the touchpoints without it.
        try:
            async with session.begin_nested():
                before = await session.scalar(_LOCK_TIMEOUT)
                await session.execute(_SET_LOCK_TIMEOUT, {"value": LEARN_WAIT})
                await session.execute(statement)
                await session.execute(_SET_LOCK_TIMEOUT, {"value": before})
        except DBAPIError as exc:
            if _sqlstate(exc) != LOCK_NOT_AVAILABLE:
                raise
            log.info("identities_not_learned", identities=len(rows), why="a concurrent writer holds one")

    async def hold(
        self, *, session: AsyncSession, contact_id: uuid.UUID, identities: Iterable[Identity], at: datetime
    ) -> None:
        """As of ``at`` the contact holds these identities (a row written by a later event stays as it is)."""
        digests = sorted({self.digest(identity) for identity in identities})
        if not digests:
            return
        insert = upsert(session, _TABLE).values(
            [{"digest": digest, "contact_id": contact_id, "held": True, "changed_at": at} for digest in digests]
        )
        await session.execute(
            insert.on_conflict_do_update(
                index_elements=[_TABLE.c.digest],
                set_={"contact_id": insert.excluded.contact_id, "held": True, "changed_at": insert.excluded.changed_at},
                # Equal times: the one applied last wins (the stream delivers one contact's events in order).
                where=_TABLE.c.changed_at <= insert.excluded.changed_at,
            )
        )

    async def release(
        self, *, session: AsyncSession, contact_id: uuid.UUID, identities: Iterable[Identity], at: datetime
    ) -> None:
        """As of ``at`` the contact no longer holds these identities (one another contact holds since is left)."""
        digests = {self.digest(identity) for identity in identities}
        if not digests:
            return
        await session.execute(
            sa.update(_TABLE)
            .where(
                among(session, _TABLE.c.digest, digests),
                _TABLE.c.contact_id == contact_id,
                _TABLE.c.changed_at <= at,
            )
            .values(held=False, changed_at=at)
        )

    async def repoint(self, *, session: AsyncSession, source_id: uuid.UUID, target_id: uuid.UUID) -> None:
        """The source was merged into the target: whatever it held, the target holds (the source is gone for good,
        so whatever the row's time)."""
        await session.execute(sa.update(_TABLE).where(_TABLE.c.contact_id == source_id).values(contact_id=target_id))

    async def forget(self, *, session: AsyncSession, contact_ids: Iterable[uuid.UUID]) -> None:
        """The contacts were erased: every row of theirs goes, held or not."""
        await session.execute(sa.delete(_TABLE).where(_TABLE.c.contact_id.in_(sorted(set(contact_ids)))))

    # --- the contacts service's events -----------------------------------------------------------------------

    async def contact_created(self, *, session: AsyncSession, contact: dict[str, Any], at: datetime) -> None:
        contact_id = uuid.UUID(str(contact["id"]))
        if await _fate_known(session, contact_id):
            return
        await self.hold(session=session, contact_id=contact_id, identities=profile_identities_of(contact), at=at)

    async def contact_updated(
        self,
        *,
        session: AsyncSession,
        contact_id: uuid.UUID,
        changed: dict[str, Any],
        previous: dict[str, Any],
        at: datetime,
    ) -> None:
        """The identity fields an update changed: what the new values add is held, what they drop is released."""
        fields = [name for name in IDENTITY_FIELDS if name in changed]
        if not fields or await _fate_known(session, contact_id):
            return
        after = profile_identities_of({name: changed[name] for name in fields})
        before = profile_identities_of({name: previous.get(name) for name in fields})
        await self.release(session=session, contact_id=contact_id, identities=before - after, at=at)
        await self.hold(session=session, contact_id=contact_id, identities=after - before, at=at)

    async def contact_merged(
        self, *, session: AsyncSession, target_id: uuid.UUID, target: dict[str, Any] | None, at: datetime
    ) -> None:
        """The target after a merge holds its identities and the source's (``TouchpointService.rekey``, in the
        same transaction, re-points the source's rows)."""
        if target is not None and not await _fate_known(session, target_id):
            await self.hold(session=session, contact_id=target_id, identities=profile_identities_of(target), at=at)


async def _fate_known(session: AsyncSession, contact_id: uuid.UUID) -> bool:
    """Whether the contact was merged away or erased (as this service learned from the same consumer)."""
    found = await session.scalar(sa.select(_FATES.c.fate).where(_FATES.c.contact_id == contact_id))
    return found is not None
