"""The rules of interactions: a touchpoint is stored once and filed under a live contact, every change
writes its event to the outbox in the same transaction, merges and erasures reach every row."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import func, select, tuple_, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlmodel import col

from servicekit import cursors
from servicekit.bulk import among, unsized_type
from servicekit.clock import Clock, as_utc
from servicekit.cursors import InvalidCursor
from servicekit.db import upsert
from servicekit.erasure import checkpoint_after_commit
from servicekit.events import event_json, json_value
from servicekit.ids import new_id, new_ids
from servicekit.locks import INTERACTIONS_TOUCHPOINTS, lock_contacts
from servicekit.logging import current_request_context
from servicekit.outbox import Outbox
from servicekit.problems import Conflict, NotFound, ProblemError, Unprocessable
from servicekit.purge import purge_request
from services.interactions import events
from services.interactions.directory import ContactErased, ContactLink
from services.interactions.idempotency import erase_responses
from services.interactions.identities import IdentityCopy
from services.interactions.models import ContactFate, Thread, Touchpoint
from services.interactions.schemas import (
    READ_FIELDS,
    ThreadRead,
    TouchpointCreate,
    TouchpointPatch,
    TouchpointRead,
    check_attributes,
    touchpoint_json,
)
from services.interactions.sentiment import sentiment_of

# A sender's clock may run a little ahead; a touchpoint further in the future is a mistake.
MAX_FUTURE = timedelta(days=1)
MAX_THREAD_ITEMS = 1000
MAX_MERGE_HOPS = 4
# Fields a contact's erasure removes; channel, type, times, scores and amounts stay for the metrics.
REDACTED_FIELDS = ("subject", "body", "outcome", "attributes")
# What an erased contact's thread ids become: unique, and naming nobody.
ERASED_THREAD_PREFIX = "erased-"

_TABLE = cast(sa.Table, Touchpoint.__table__)  # type: ignore[attr-defined]
_FATES = cast(sa.Table, ContactFate.__table__)  # type: ignore[attr-defined]


class Redacted(Conflict):
    slug, title = "redacted", "Touchpoint redacted"


# --- positions (keyset pagination) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    """A place in the newest-first order: items strictly older than (at, id) come after it."""

    at: datetime
    id: uuid.UUID

    def cursor(self) -> str:
        return cursors.encode({"at": self.at.isoformat(), "id": str(self.id)})

    def before(self) -> str:
        return f"{self.at.isoformat().replace('+00:00', 'Z')}|{self.id}"

    @classmethod
    def from_cursor(cls, cursor: str) -> Position:
        return cursors.decode(cursor, lambda document: cls._make(document["at"], document["id"]))

    @classmethod
    def from_before(cls, before: str) -> Position:
        at, sep, ident = before.rpartition("|")
        try:
            if not sep:
                raise ValueError("no '|'")
            # A '+' left unencoded in a query string arrives as a space.
            return cls._make(at.replace(" ", "+"), ident)
        except ValueError:
            raise InvalidCursor(
                "`before` is `<occurred_at ISO 8601 with offset>|<touchpoint id>`, e.g. 2026-01-05T09:00:00Z|0190…"
            ) from None

    @classmethod
    def _make(cls, at: str, ident: str) -> Position:
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None:
            raise ValueError("naive time")
        try:
            return cls(as_utc(moment), uuid.UUID(ident))
        except OverflowError:
            raise ValueError("time out of range") from None


# --- storing -------------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """A valid touchpoint ready to be written: its contact known (``link``), or to be looked up in the write
    transaction by the digest of its identity (``identity``: the local copy of the identity directory)."""

    item: TouchpointCreate
    link: ContactLink | None
    sentiment: float | None
    ingest_key: str | None = None
    # The request that sent it (request id, traceparent): its event carries them even when written
    # together with other requests' touchpoints (group commit).
    request: dict[str, Any] = field(default_factory=dict)
    identity: bytes | None = None


@dataclass
class Outcome:
    """What became of one prepared touchpoint: 201 stored, 200 already stored, or a problem."""

    status: int
    row: Touchpoint | dict[str, Any] | None = None
    problem: ProblemError | None = None
    # Not written: its identity is not in the local copy, so only the contacts service can tell its contact.
    needs_contact: bool = False
    _read: TouchpointRead | None = None
    _json: str | None = None

    @property
    def touchpoint(self) -> TouchpointRead | None:
        """The touchpoint as the API shows it (built on first use: a batch answers only with ids)."""
        if self._read is None and self.row is not None:
            self._read = to_read(self.row)
        return self._read

    def json(self) -> str:
        """The touchpoint as the API answers it; a row just built is written without a round trip through
        TouchpointRead (schemas.touchpoint_json)."""
        if self._json is None:
            if isinstance(self.row, dict):
                self._json = touchpoint_json(self.row)
            else:
                assert self.touchpoint is not None
                self._json = self.touchpoint.model_dump_json()
        return self._json

    @property
    def id(self) -> uuid.UUID | None:
        if self.row is None:
            return None
        return self.row["id"] if isinstance(self.row, dict) else self.row.id


def to_read(row: Touchpoint | dict[str, Any] | sa.Row[Any]) -> TouchpointRead:
    return TouchpointRead.model_validate(row)


def event_data(touchpoint: TouchpointRead) -> dict[str, Any]:
    """The touchpoint as events carry it: everything but the body."""
    return touchpoint.model_dump(mode="json", exclude={"body"})


def row_event_data(row: dict[str, Any]) -> dict[str, Any]:
    """``event_data`` of a row this service just built, without a round trip through the API model
    (the same document: a test compares the two)."""
    return {k: json_value(v) for k, v in row.items() if k not in ("body", "ingest_key")}


OutboxRow = tuple[str, str, str, str, datetime]


def logged_outbox_row(
    row: dict[str, Any], at: datetime, request: dict[str, Any], *, event_id: uuid.UUID | None = None
) -> OutboxRow:
    """The ``logged`` event of a row this service just built (its times in UTC), serialized for
    ``Outbox.add_serialized``: the document ``interaction_event(LOGGED, …).to_json()`` makes (a test compares the
    two). A batch writes one per touchpoint, and building and dumping a pydantic event for each was a quarter of
    the CPU of a batch; pydantic-core's ``to_json`` writes the ids and times itself, where the json module called
    back into Python for each of them (half the cost of the event)."""
    data = row.copy()
    del data["body"], data["ingest_key"]
    if data["amount"] is not None:
        data["amount"] = float(data["amount"])  # an amount leaves as a JSON number, as in TouchpointRead
    event = str(event_id or new_id())
    payload = event_json(type=events.LOGGED, source=events.SOURCE, subject=str(row["contact_id"]), data=data,
                         time=at, event_id=event, request=request)  # fmt: skip
    return event, events.subject_for(events.LOGGED, row["contact_id"]), events.LOGGED, payload, at


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


async def _lock_contacts(session: AsyncSession, contact_ids: set[uuid.UUID], *, shared: bool) -> None:
    """On PostgreSQL, writers of a contact's touchpoints hold a shared lock and the merge and erase
    handlers an exclusive one, so a touchpoint written during a merge is either re-keyed by it or
    sees its ``contact_fates`` row. SQLite transactions are already serialised (BEGIN IMMEDIATE)."""
    await lock_contacts(session, contact_ids, namespace=INTERACTIONS_TOUCHPOINTS, shared=shared)


async def _final_contacts(session: AsyncSession, contact_ids: set[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID | None]:
    """Each contact id → the live contact to file under (after merges we know of), or None if erased."""
    final: dict[uuid.UUID, uuid.UUID | None] = {c: c for c in contact_ids}
    todo = set(contact_ids)
    for _ in range(MAX_MERGE_HOPS):
        if not todo:
            break
        await _lock_contacts(session, todo, shared=True)
        # = ANY(array) on PostgreSQL: one prepared statement whatever the number of contacts in a batch (an IN is a
        # new statement, prepared again, for every distinct count, and a bound parameter made for each contact).
        # Plain rows, not ORM objects: read in every write transaction (nearly always none), and the ORM's
        # compile and loading steps cost more than the indexed read.
        query = select(_FATES.c.contact_id, _FATES.c.fate, _FATES.c.merged_into).where(
            among(session, _FATES.c.contact_id, todo)
        )
        fates = {fate.contact_id: fate for fate in (await session.execute(query)).all()}
        moved: set[uuid.UUID] = set()
        for given, current in final.items():
            if current is None or current not in fates:
                continue
            fate = fates[current]
            final[given] = fate.merged_into if fate.fate == "merged" else None
            if final[given] is not None:
                moved.add(cast(uuid.UUID, final[given]))
        todo = moved
    return final


_COLUMNS = [column.name for column in _TABLE.columns]
# Values every row of one store() shares (its time, a new row's version): sent once, not as arrays of equal values
# (asyncpg's array encoder checks every element in Python; these four were a sixth of the statement's cost).
_BATCH_WIDE = ("received_at", "updated_at", "version", "redacted_at")
_PER_ROW = [name for name in _COLUMNS if name not in _BATCH_WIDE]
_CAST_TYPES = {name: unsized_type(_TABLE, name) for name in _COLUMNS}


# PostgreSQL: one INSERT … SELECT FROM unnest(one array per column). asyncpg encodes each column's array in C;
# a multi-row VALUES costs SQLAlchemy a Python loop over every parameter of every row (a third of a batch's CPU).
_PG_INSERT = sa.text(
    f"INSERT INTO {_TABLE.name} ({', '.join(_COLUMNS)}) SELECT "
    + ", ".join(f"CAST(:{name} AS {_CAST_TYPES[name]})" if name in _BATCH_WIDE else f"v.{name}" for name in _COLUMNS)
    + " FROM unnest(" + ", ".join(f"CAST(:{name} AS {_CAST_TYPES[name]}[])" for name in _PER_ROW)
    + f") AS v({', '.join(_PER_ROW)}) ON CONFLICT DO NOTHING RETURNING id"
)  # fmt: skip
_JSON_COLUMNS = {column.name for column in _TABLE.columns if isinstance(column.type, sa.JSON)}


async def _insert_new(session: AsyncSession, rows: list[dict[str, Any]]) -> set[uuid.UUID]:
    """Insert the rows (built by one ``store``: the same ``_BATCH_WIDE`` values in each), skipping each whose
    ``(source, external_id)`` or ingest key is already stored (or comes earlier in ``rows``); returns the ids of
    the rows inserted."""
    if _dialect(session) == "postgresql":
        params = {
            name: [json.dumps(row[name]) for row in rows] if name in _JSON_COLUMNS else [row[name] for row in rows]
            for name in _PER_ROW
        }
        params.update({name: rows[0][name] for name in _BATCH_WIDE})
        result = await session.execute(_PG_INSERT, params)
    else:
        result = await session.execute(sqlite.insert(_TABLE).on_conflict_do_nothing().returning(_TABLE.c.id), rows)
    return set(result.scalars().all())


class TouchpointService:
    """Touchpoint rules bound to this service's clock and outbox."""

    def __init__(self, *, clock: Clock, outbox: Outbox, identities: IdentityCopy | None = None) -> None:
        self.clock = clock
        self.outbox = outbox
        self.identities = identities

    def check(self, item: TouchpointCreate) -> None:
        """Rules that need the clock (schemas cannot see it)."""
        if as_utc(item.occurred_at) > self.clock.now() + MAX_FUTURE:
            raise Unprocessable(
                "occurred_at is more than a day in the future; send the time the touchpoint happened.",
                field="occurred_at",
            )

    def prepare(
        self,
        *,
        item: TouchpointCreate,
        link: ContactLink | None,
        ingest_key: str | None = None,
        request: dict[str, Any] | None = None,
        identity: bytes | None = None,
    ) -> Prepared:
        """``request``: the sending request's context (default: the current one), given once by a batch.
        ``link`` None: the contact is looked up by ``identity`` (a digest) when it is written."""
        return Prepared(
            item=item,
            link=link,
            sentiment=sentiment_of(item.subject, item.body),
            ingest_key=ingest_key,
            request=current_request_context() if request is None else request,
            identity=identity,
        )

    async def store(self, *, session: AsyncSession, prepared: list[Prepared]) -> list[Outcome]:
        """Write the touchpoints in the caller's transaction (one INSERT, one outbox INSERT).

        A touchpoint whose ``(source, external_id)`` or ingest key is already stored is not written
        again: its outcome is 200 with the stored one."""
        outcomes: list[Outcome | None] = [None] * len(prepared)
        if not prepared:
            return []
        links = await self._links(session, prepared)
        final = await _final_contacts(session, {link.contact_id for link in links if link is not None})
        await self._learn(session, links, final)
        now = self.clock.now()
        rows: list[dict[str, Any]] = []
        row_index: list[int] = []
        ids = new_ids(len(prepared))
        for index, (p, link) in enumerate(zip(prepared, links, strict=True)):
            if link is None:
                outcomes[index] = Outcome(0, needs_contact=True)
                continue
            contact_id = final[link.contact_id]
            if contact_id is None:
                outcomes[index] = Outcome(
                    422, problem=ContactErased(f"Contact {link.contact_id} was erased; the touchpoint is refused.")
                )
                continue
            rows.append(self._row(p, link, ids[index], contact_id, now))
            row_index.append(index)
        inserted: set[uuid.UUID] = set()
        if rows:
            inserted = await _insert_new(session, rows)
        fresh = [(i, row) for i, row in zip(row_index, rows, strict=True) if row["id"] in inserted]
        stale = [(i, row) for i, row in zip(row_index, rows, strict=True) if row["id"] not in inserted]
        logged: list[OutboxRow] = []
        for (index, row), event_id in zip(fresh, new_ids(len(fresh)), strict=True):
            outcomes[index] = Outcome(201, row)
            logged.append(logged_outbox_row(row, now, prepared[index].request, event_id=event_id))
        await self.outbox.add_serialized(session, logged)
        if stale:
            existing = await self._existing(session, [row for _, row in stale])
            for index, row in stale:
                found = existing.get(("k", row["ingest_key"])) or existing.get(("s", row["source"], row["external_id"]))
                outcomes[index] = (
                    Outcome(200, found)
                    if found is not None
                    else Outcome(409, problem=Conflict("A touchpoint with the same key is being written; retry."))
                )
        return [o if o is not None else Outcome(500) for o in outcomes]

    async def _links(self, session: AsyncSession, prepared: list[Prepared]) -> list[ContactLink | None]:
        """Each touchpoint's contact: as given, or from the local copy of the identity directory (one query for the
        whole transaction); None for an identity the copy does not know."""
        wanted = [p.identity for p in prepared if p.link is None and p.identity is not None]
        known: dict[bytes, uuid.UUID] = {}
        if wanted:
            assert self.identities is not None, "a touchpoint by identity needs the identity copy"
            known = await self.identities.lookup(session=session, digests=wanted)
        links: list[ContactLink | None] = []
        for p in prepared:
            if p.link is not None:
                links.append(p.link)
            elif p.identity is not None and p.identity in known:
                contact_id = known[p.identity]
                links.append(ContactLink(contact_id, contact_id))
            else:
                links.append(None)
        return links

    async def _learn(
        self, session: AsyncSession, links: list[ContactLink | None], final: dict[uuid.UUID, uuid.UUID | None]
    ) -> None:
        """Identities the contacts service just resolved join the local copy, for contacts that were neither merged
        nor erased (``_final_contacts`` read their fates under the contact lock, which the merge and erase handlers
        take exclusively: a learned row cannot slip in after an erase deleted the contact's rows)."""
        learned = {
            link.learned: link.contact_id
            for link in links
            if link is not None and link.learned is not None and final.get(link.contact_id) == link.contact_id
        }
        if learned and self.identities is not None:
            await self.identities.learn(session=session, found=learned)

    def _row(
        self, p: Prepared, link: ContactLink, id: uuid.UUID, contact_id: uuid.UUID, now: datetime
    ) -> dict[str, Any]:
        item = p.item
        return {
            "id": id,
            "contact_id": contact_id,
            "original_contact_id": link.original,
            "channel": str(item.channel),
            "direction": item.direction,
            "type": item.type,
            "occurred_at": as_utc(item.occurred_at),
            "received_at": now,
            "agent": item.agent,
            "team": item.team,
            "subject": item.subject,
            "body": item.body,
            "thread_id": item.thread_id,
            "followup_id": item.followup_id,
            "outcome": item.outcome,
            "csat": item.csat,
            "nps": item.nps,
            "duration_s": item.duration_s,
            "amount": item.amount,
            "currency": item.currency,
            "source": item.source,
            "external_id": item.external_id,
            "ingest_key": p.ingest_key,
            "attributes": item.attributes,
            "sentiment": p.sentiment,
            "version": 1,
            "updated_at": now,
            "redacted_at": None,
        }

    async def _existing(self, session: AsyncSession, rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], Touchpoint]:
        keys = [row["ingest_key"] for row in rows if row["ingest_key"]]
        pairs = [(row["source"], row["external_id"]) for row in rows if row["source"] and row["external_id"]]
        found: dict[tuple[Any, ...], Touchpoint] = {}
        if keys:
            for tp in (await session.scalars(select(Touchpoint).where(col(Touchpoint.ingest_key).in_(keys)))).all():
                found[("k", tp.ingest_key)] = tp
        if pairs:
            query = select(Touchpoint).where(tuple_(col(Touchpoint.source), col(Touchpoint.external_id)).in_(pairs))
            for tp in (await session.scalars(query)).all():
                found[("s", tp.source, tp.external_id)] = tp
        return found

    # --- changing ------------------------------------------------------------------------------------------

    async def update(self, *, session: AsyncSession, touchpoint_id: uuid.UUID, patch: TouchpointPatch) -> Touchpoint:
        touchpoint = await session.get(Touchpoint, touchpoint_id, with_for_update=True)
        if touchpoint is None:
            raise NotFound(f"No touchpoint {touchpoint_id}.")
        now = self.clock.now()
        changed: list[str] = []
        fields = patch.model_fields_set
        if touchpoint.redacted_at is not None and fields & {"outcome", "attributes"}:
            raise Redacted("The touchpoint was redacted when its contact was erased; it keeps no notes.")
        if "outcome" in fields and patch.outcome != touchpoint.outcome:
            touchpoint.outcome = patch.outcome
            changed.append("outcome")
        if "attributes" in fields:
            merged = dict(touchpoint.attributes)
            for key, value in (patch.attributes or {}).items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            try:
                check_attributes(merged)
            except ValueError as exc:
                raise Unprocessable(str(exc), field="attributes") from None
            if merged != touchpoint.attributes:
                touchpoint.attributes = merged
                changed.append("attributes")
        if changed:
            touchpoint.version += 1
            touchpoint.updated_at = now
            data = {**event_data(to_read(touchpoint)), "changed": changed}
            event, subject = events.interaction_event(events.UPDATED, touchpoint.contact_id, data, now)
            await self.outbox.add(session, event, subject=subject)
        if "thread_status" in fields:
            assert patch.thread_status is not None
            await self._set_thread_status(session, touchpoint, patch.thread_status, now)
        return touchpoint

    async def _set_thread_status(
        self, session: AsyncSession, touchpoint: Touchpoint, status: str, now: datetime
    ) -> None:
        if touchpoint.thread_id is None:
            raise Unprocessable("This touchpoint belongs to no thread.", field="thread_status")
        await session.execute(
            upsert(session, Thread)
            .values(thread_id=touchpoint.thread_id, contact_id=touchpoint.contact_id, status="open", updated_at=now)
            .on_conflict_do_nothing()
        )
        thread = await session.get(Thread, touchpoint.thread_id, with_for_update=True, populate_existing=True)
        assert thread is not None
        if thread.status == status:
            return
        thread.status = status
        thread.resolved_at = now if status == "resolved" else None
        thread.updated_at = now
        if status == "resolved":
            summary = await thread_summary(session=session, thread_id=thread.thread_id)
            data = {
                "thread_id": thread.thread_id,
                "contact_id": str(thread.contact_id),
                "resolved_at": now.isoformat(),
                "opened_at": summary["opened_at"].isoformat(),
                "channel": summary["channel"],
                "type": summary["type"],
                "complaint": summary["complaint"],
                "first_interaction_id": str(summary["first_id"]),
                "interactions": summary["count"],
            }
            event, subject = events.interaction_event(events.THREAD_RESOLVED, thread.contact_id, data, now)
            await self.outbox.add(session, event, subject=subject)

    # --- what the contacts service tells us ----------------------------------------------------------------

    async def rekey(self, *, session: AsyncSession, source_id: uuid.UUID, target_id: uuid.UUID) -> int:
        """The source contact was merged into the target: its touchpoints and threads move to the target
        (each touchpoint keeps ``original_contact_id``). Returns how many touchpoints moved."""
        await _lock_contacts(session, {source_id}, shared=False)
        now = self.clock.now()
        await self._set_fate(session, source_id, "merged", target_id, now)
        if self.identities is not None:
            await self.identities.repoint(session=session, source_id=source_id, target_id=target_id)
        # Flatten chains: whatever was merged into the source now points at the target.
        await session.execute(
            update(ContactFate).where(col(ContactFate.merged_into) == source_id).values(merged_into=target_id)
        )
        moved = await session.execute(
            update(Touchpoint)
            .where(col(Touchpoint.contact_id) == source_id)
            .values(contact_id=target_id)
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            update(Thread)
            .where(col(Thread.contact_id) == source_id)
            .values(contact_id=target_id)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(moved, "rowcount", 0) or 0)

    async def redact_contact(
        self, *, session: AsyncSession, contact_id: uuid.UUID, merged_ids: Iterable[uuid.UUID] = ()
    ) -> int:
        """GDPR erasure of the contact and of every contact merged into it: subject, body, outcome and attributes
        of their touchpoints are removed, thread ids are replaced and external ids dropped (either may hold an
        identity, such as ``mail:zelda@example.org``), and stored idempotent responses showing them are erased.
        Channel, type, direction, times, scores, amounts and sentiment stay so the metrics stay right."""
        merged_here = await session.scalars(
            select(col(ContactFate.contact_id)).where(col(ContactFate.merged_into) == contact_id)
        )
        family = {contact_id, *merged_ids, *merged_here.all()}
        await _lock_contacts(session, family, shared=False)
        now = self.clock.now()
        await self._set_fate(session, contact_id, "erased", None, now)
        if self.identities is not None:
            await self.identities.forget(session=session, contact_ids=family)
        mine = sa.or_(col(Touchpoint.contact_id).in_(family), col(Touchpoint.original_contact_id).in_(family))
        result = await session.execute(
            update(Touchpoint)
            .where(mine, col(Touchpoint.redacted_at).is_(None))
            .values(
                subject=None,
                body=None,
                outcome=None,
                attributes={},
                external_id=None,
                redacted_at=now,
                updated_at=now,
                version=col(Touchpoint.version) + 1,
            )
            .execution_options(synchronize_session=False)
        )
        count = int(getattr(result, "rowcount", 0) or 0)
        await self._replace_thread_ids(session, family, mine)
        await erase_responses(session=session, touchpoint_ids=select(col(Touchpoint.id)).where(mine))
        for member in sorted(family):
            await self.outbox.redact_events(
                session, subject_like=f"crm.interactions.%.{member}", redact=_redact_touchpoint_data
            )
        data = {"contact_id": str(contact_id), "interactions": count, "redacted_at": now.isoformat()}
        event, subject = events.interaction_event(events.REDACTED, contact_id, data, now)
        await self.outbox.add(session, event, subject=subject)
        checkpoint_after_commit(session)
        # Touchpoints logged for a contact merged into this one were published on that contact's id.
        originals = await session.scalars(
            select(col(Touchpoint.original_contact_id)).where(mine, col(Touchpoint.original_contact_id).is_not(None))
        )
        ids = [str(i) for i in sorted(family | set(originals.all()), key=lambda i: i != contact_id)]
        await self.outbox.add_serialized(session, [purge_request("interactions", ids, now)])
        return count

    async def _replace_thread_ids(self, session: AsyncSession, family: set[uuid.UUID], mine: Any) -> None:
        """Each thread of the erased contacts gets a new id that says nothing (``erased-<uuid>``): the touchpoints
        of one thread stay together, so thread metrics stay right, but the id can no longer name the person."""
        old_ids = set(
            (
                await session.scalars(
                    select(col(Touchpoint.thread_id)).where(mine, col(Touchpoint.thread_id).is_not(None))
                )
            ).all()
        )
        old_ids |= set(
            (await session.scalars(select(col(Thread.thread_id)).where(col(Thread.contact_id).in_(family)))).all()
        )
        for old in sorted(i for i in old_ids if i is not None and not i.startswith(ERASED_THREAD_PREFIX)):
            new = f"{ERASED_THREAD_PREFIX}{uuid.uuid4()}"
            await session.execute(
                update(Touchpoint)
                .where(mine, col(Touchpoint.thread_id) == old)
                .values(thread_id=new)
                .execution_options(synchronize_session=False)
            )
            await session.execute(
                update(Thread)
                .where(col(Thread.thread_id) == old, col(Thread.contact_id).in_(family))
                .values(thread_id=new)
                .execution_options(synchronize_session=False)
            )

    async def _set_fate(
        self, session: AsyncSession, contact_id: uuid.UUID, fate: str, merged_into: uuid.UUID | None, now: datetime
    ) -> None:
        row = await session.get(ContactFate, contact_id)
        if row is None:
            session.add(ContactFate(contact_id=contact_id, fate=fate, merged_into=merged_into, at=now))
        elif row.fate != "erased":  # erasure is final
            row.fate, row.merged_into, row.at = fate, merged_into, now
        await session.flush()


def _redact_touchpoint_data(data: dict[str, Any]) -> dict[str, Any]:
    """An unsent event's touchpoint (or thread) without what was written about the person, nor the ids that
    may name them."""
    for name in (*REDACTED_FIELDS, "thread_id", "external_id"):
        if name in data:
            data[name] = {} if name == "attributes" else None
    data["redacted"] = True
    return data


def utc_param(name: str, value: datetime) -> datetime:
    """A time from a query parameter in UTC; one that UTC cannot hold is a 422 problem, not a crash."""
    try:
        return as_utc(value)
    except OverflowError:
        raise Unprocessable(f"{name} is outside the range of dates (years 1 to 9999 in UTC).", field=name) from None


# --- reading -------------------------------------------------------------------------------------------------


async def get_touchpoint(*, session: AsyncSession, touchpoint_id: uuid.UUID) -> Touchpoint:
    touchpoint = await session.get(Touchpoint, touchpoint_id)
    if touchpoint is None:
        raise NotFound(f"No touchpoint {touchpoint_id}.")
    return touchpoint


# The page's filters, in the order its statement states them (each a bound parameter of the same name).
_PAGE_FILTERS = ("contact_id", "channel", "type", "direction", "thread_id", "since", "until", "after")
_READ_COLUMNS = [_TABLE.c[name] for name in READ_FIELDS]


@functools.cache
def _page_statement(filters: tuple[str, ...]) -> sa.Select[Any]:
    """The page query for one set of given filters, built once: each value and the limit are bound parameters."""
    table = _TABLE.c
    query = select(*_READ_COLUMNS)
    for name in filters:
        if name in ("contact_id", "channel", "type", "direction", "thread_id"):
            query = query.where(table[name] == sa.bindparam(name))
        elif name == "since":
            query = query.where(table.occurred_at >= sa.bindparam("since", type_=table.occurred_at.type))
        elif name == "until":
            query = query.where(table.occurred_at < sa.bindparam("until", type_=table.occurred_at.type))
        else:
            at = sa.bindparam("after_at", type_=table.occurred_at.type)
            id = sa.bindparam("after_id", type_=table.id.type)
            query = query.where(tuple_(table.occurred_at, table.id) < tuple_(at, id))
    return query.order_by(table.occurred_at.desc(), table.id.desc()).limit(sa.bindparam("limit", type_=sa.Integer))


@functools.cache
def _driver_page_sql(dialect: sa.Dialect, filters: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The page query as asyncpg takes it: its SQL with $n placeholders and the parameter names in their order."""
    compiled = _page_statement(filters).compile(dialect=dialect)
    assert compiled.positiontup is not None
    return compiled.string, tuple(compiled.positiontup)


async def list_touchpoints(
    *,
    session: AsyncSession | AsyncConnection,
    contact_id: uuid.UUID | None = None,
    channel: str | None = None,
    type: str | None = None,
    direction: str | None = None,
    thread_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: Position | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], Position | None]:
    """Newest first by (occurred_at, id), strictly older than ``after``: a page never repeats or skips
    a touchpoint, whatever arrives meanwhile (new ones sort before the position).

    Each touchpoint is a dict of the ``TouchpointRead`` fields (``schemas.page_json`` writes them; times aware
    UTC), not an ORM object: the timeline reads this page on every view. On PostgreSQL the statement, built once
    per set of filters, goes straight to asyncpg: SQLAlchemy's execution and row processing around it cost more
    CPU than the indexed query itself (py-spy, bench.ingest --part page), and asyncpg gives the same values (times
    in UTC, ids, Decimal amounts, attributes decoded by the codec SQLAlchemy installs on each connection)."""
    given = {"contact_id": contact_id, "channel": channel or None, "type": type or None,
             "direction": direction or None, "thread_id": thread_id or None,
             "since": utc_param("since", since) if since is not None else None,
             "until": utc_param("until", until) if until is not None else None}  # fmt: skip
    params: dict[str, Any] = {name: value for name, value in given.items() if value is not None}
    filters = tuple(name for name in _PAGE_FILTERS if name in params or (name == "after" and after is not None))
    if after is not None:
        params.update(after_at=after.at, after_id=after.id)
    params["limit"] = limit + 1
    connection = session if isinstance(session, AsyncConnection) else await session.connection()
    if connection.dialect.name == "postgresql":
        sql, names = _driver_page_sql(connection.dialect, filters)
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None
        records = await driver.fetch(sql, *[params[name] for name in names])
        rows = [dict(zip(READ_FIELDS, record, strict=True)) for record in records]
    else:
        result = await connection.execute(_page_statement(filters), params)
        rows = [dict(zip(READ_FIELDS, row, strict=True)) for row in result]
    if len(rows) > limit:
        last = rows[limit - 1]
        return rows[:limit], Position(as_utc(last["occurred_at"]), last["id"])
    return rows, None


async def thread_summary(*, session: AsyncSession, thread_id: str) -> dict[str, Any]:
    first = (
        await session.scalars(
            select(Touchpoint)
            .where(col(Touchpoint.thread_id) == thread_id)
            .order_by(col(Touchpoint.occurred_at), col(Touchpoint.id))
            .limit(1)
        )
    ).first()
    if first is None:
        raise NotFound(f"No thread {thread_id}.")
    count, complaints = (
        await session.execute(
            select(func.count(), func.count().filter(col(Touchpoint.type) == "complaint")).where(
                col(Touchpoint.thread_id) == thread_id
            )
        )
    ).one()
    return {
        "first_id": first.id,
        "opened_at": as_utc(first.occurred_at),
        "channel": first.channel,
        "type": first.type,
        "contact_id": first.contact_id,
        "complaint": complaints > 0,
        "count": int(count),
    }


def first_response_s(touchpoints: list[tuple[str, datetime]]) -> float | None:
    """Seconds from the first inbound touchpoint to the next outbound one (time-ordered input)."""
    inbound_at: datetime | None = None
    for direction, at in touchpoints:
        if inbound_at is None and direction == "inbound":
            inbound_at = at
        elif inbound_at is not None and direction == "outbound":
            return (at - inbound_at).total_seconds()
    return None


async def get_thread(*, session: AsyncSession, thread_id: str, limit: int = MAX_THREAD_ITEMS) -> ThreadRead:
    rows = list(
        (
            await session.scalars(
                select(Touchpoint)
                .where(col(Touchpoint.thread_id) == thread_id)
                .order_by(col(Touchpoint.occurred_at), col(Touchpoint.id))
                .limit(limit + 1)
            )
        ).all()
    )
    if not rows:
        raise NotFound(f"No thread {thread_id}.")
    truncated = len(rows) > limit
    rows = rows[:limit]
    thread = await session.get(Thread, thread_id)
    first = rows[0]
    return ThreadRead(
        thread_id=thread_id,
        contact_id=thread.contact_id if thread is not None else first.contact_id,
        status="resolved" if thread is not None and thread.status == "resolved" else "open",
        opened_at=as_utc(first.occurred_at),
        resolved_at=as_utc(thread.resolved_at) if thread is not None and thread.resolved_at else None,
        channel=first.channel,
        type=first.type,
        complaint=any(r.type == "complaint" for r in rows),
        first_response_s=first_response_s([(r.direction, as_utc(r.occurred_at)) for r in rows]),
        items=[to_read(r) for r in rows],
        truncated=truncated,
    )
