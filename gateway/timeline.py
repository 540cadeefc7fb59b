"""The customer's timeline: touchpoints, follow-ups and contact events in one list, newest first.

Order: ``at`` descending, then kind rank (interaction, followup, contact_event), then id descending.
All three live in the gateway's projection (``gateway.projection``, kept from the events), so a page is one
indexed keyset read strictly after the last emitted position: pages never repeat or skip an item, also while
new ones arrive (a new item lands above the cursor). The cursor is that position, HMAC-signed and bound to the
contact and the filters: a tampered or foreign cursor is a 400 problem. The services are called only for the
contact itself (its profile, or where a merged-away id now lives).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import and_, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlmodel import col

from gateway.caches import Coalescer, ExpiringCache
from gateway.models import ContactAlias, ContactEvent, FollowupState, TouchSummary
from gateway.projection import KINDS, RANK, SORT_RANK, to_json
from gateway.projection import TABLE as _ITEMS
from gateway.schemas_services import FOLLOWUP_STATUSES, INTERACTION_TYPES
from gateway.upstream import ServiceClient, UpstreamAnswer, upstream_path
from servicekit.clock import Clock, as_utc
from servicekit.cursors import InvalidCursor, read_signed, sign
from servicekit.db import UTCDateTime

CONTACT_EVENT_TYPES = ("created", "stage_changed", "consent_changed", "tier_changed", "merged", "erased")


@dataclass(frozen=True)
class Position:
    """Where an item sits in the timeline order."""

    at: datetime
    rank: int
    id: uuid.UUID

    def key(self) -> tuple[datetime, int, int]:
        # Sorting by this key *descending* gives the timeline order.
        return (self.at, -self.rank, self.id.int)


def position_of(item: dict[str, Any]) -> Position:
    return Position(item["at"], RANK[item["kind"]], uuid.UUID(str(item["id"])))


def _position_of_document(document: str) -> Position:
    """The position of a stored item, from its JSON (a page selects only the JSON: it needs the position of
    one item, its last, and decoding three more columns of every row cost more than this)."""
    item = json.loads(document)
    return Position(as_utc(datetime.fromisoformat(item["at"])), RANK[item["kind"]], uuid.UUID(item["id"]))


@dataclass
class PageEntry:
    """One page as read (its items' stored JSON and the last position when more may follow), and, once a
    response needed it, the page as JSON with its signed cursor."""

    documents: list[str]
    last: Position | None
    encoded: bytes | None = None


# --- signed cursors -------------------------------------------------------------------------------------------


def encode_position(position: Position, *, contact_id: uuid.UUID, scope: str, key: bytes) -> str:
    return sign(
        {"at": position.at.isoformat(), "r": position.rank, "id": str(position.id), "c": str(contact_id), "s": scope},
        key,
    )


def decode_position(token: str, *, contact_id: uuid.UUID, scope: str, key: bytes) -> Position:
    def read(payload: dict[str, Any]) -> Position:
        if payload.get("c") != str(contact_id) or payload.get("s") != scope:
            raise InvalidCursor("This cursor belongs to another timeline or other filters.")
        return Position(as_utc(datetime.fromisoformat(payload["at"])), int(payload["r"]), uuid.UUID(payload["id"]))

    return read_signed(token, key, read)


# --- filters and sources --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    kinds: tuple[str, ...] = KINDS
    channel: str | None = None
    type: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def scope(self) -> str:
        """A short fingerprint binding a cursor to these filters."""
        text = json.dumps(
            [self.kinds, self.channel, self.type, _iso(self.since), _iso(self.until)], separators=(",", ":")
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def sources(self) -> list[str]:
        kinds = list(self.kinds)
        if self.channel is not None:
            kinds = [k for k in kinds if k != "contact_event"]  # contact events have no channel
        if self.type is not None:
            allowed = {
                "interaction": self.type in INTERACTION_TYPES,
                "followup": self.type in FOLLOWUP_STATUSES,
                "contact_event": self.type in CONTACT_EVENT_TYPES,
            }
            kinds = [k for k in kinds if allowed[k]]
        return kinds


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@functools.lru_cache(maxsize=512)
def _page_query(
    ranks: tuple[int, ...] | None, limit: int, *, channel: bool, type_: bool, since: bool, until: bool, after: bool
) -> sa.Select[Any]:
    """One member's page of the projection, for one shape of filters (built once, then only executed): the items
    strictly after ``after`` in timeline order, newest first, along ``ix_timeline_items_page``."""
    conditions = [_ITEMS.c.contact_id == sa.bindparam("contact_id", type_=sa.Uuid())]
    if ranks is not None:
        conditions.append(_ITEMS.c.sort_rank.in_(ranks))
    if channel:
        conditions.append(_ITEMS.c.channel == sa.bindparam("channel"))
    if type_:
        conditions.append(_ITEMS.c.type == sa.bindparam("type"))
    if since:
        conditions.append(_ITEMS.c.at >= sa.bindparam("since", type_=UTCDateTime()))
    if until:
        conditions.append(_ITEMS.c.at < sa.bindparam("until", type_=UTCDateTime()))
    if after:
        bound = (
            sa.bindparam("after_at", type_=UTCDateTime()),
            sa.bindparam("after_rank", type_=sa.SmallInteger()),
            sa.bindparam("after_id", type_=sa.Uuid()),
        )
        conditions.append(tuple_(_ITEMS.c.at, _ITEMS.c.sort_rank, _ITEMS.c.id) < tuple_(*bound))
    return (
        select(_ITEMS.c.document)
        .where(*conditions)
        .order_by(_ITEMS.c.at.desc(), _ITEMS.c.sort_rank.desc(), _ITEMS.c.id.desc())
        .limit(limit)
    )


class Timeline:
    """Reads one contact's timeline from the projection (and the contact from the contacts service)."""

    def __init__(
        self,
        *,
        contacts: ServiceClient,
        sessionmaker: async_sessionmaker[AsyncSession],
        engine: AsyncEngine,
        clock: Clock,
        signing_key: bytes,
        header_cache_s: float,
        page_cache_s: float = 0.0,
    ) -> None:
        self.contacts = contacts
        self.sessionmaker = sessionmaker
        self.engine = engine
        self.clock = clock
        self.signing_key = signing_key
        self.header_cache_s = header_cache_s
        self._headers: ExpiringCache[uuid.UUID, tuple[dict[str, Any], bytes]] = ExpiringCache(header_cache_s, 10_000)
        self._contacts: ExpiringCache[uuid.UUID, dict[str, Any]] = ExpiringCache(header_cache_s, 10_000)
        self._families: ExpiringCache[uuid.UUID, list[uuid.UUID]] = ExpiringCache(header_cache_s, 10_000)
        # Pages read recently; an event about the contact (seen live) moves its generation and so
        # retires them at once, the TTL bounds what a missed live message could leave behind.
        self.page_cache_s = page_cache_s
        self._pages: ExpiringCache[tuple[Any, ...], tuple[int, PageEntry]] = ExpiringCache(page_cache_s, 5_000)
        self._generation: dict[uuid.UUID, int] = {}
        # Readers missing the same contact, header or page at once share one read (see Coalescer).
        self._reading: Coalescer[tuple[Any, ...], Any] = Coalescer()

    # -- the contact ---------------------------------------------------------------------------------------

    async def resolve_contact(self, *, contact_id: uuid.UUID, caller: str) -> dict[str, Any]:
        """The live contact for this id; a merged-away id gives its surviving target.

        Reused for ``header_cache_s`` (a contact event about it, seen live, forgets it sooner)."""
        cached = self._contacts.get(contact_id)
        if cached is not None:
            return cached
        generation = self._generation.get(contact_id, 0)

        async def resolve() -> dict[str, Any]:
            contact = await self._resolve(contact_id=contact_id, caller=caller)
            if self._generation.get(contact_id, 0) == generation:  # no event about it meanwhile
                self._contacts.put(contact_id, contact)
            return contact

        found: dict[str, Any] = await self._reading.run(("contact", contact_id, generation), resolve)
        return found

    async def _resolve(self, *, contact_id: uuid.UUID, caller: str) -> dict[str, Any]:
        for _ in range(4):
            response = await self.contacts.request("GET", upstream_path("/v1/contacts/{}", contact_id), caller=caller)
            if response.status_code == 200:
                contact: dict[str, Any] = response.json()
                return contact
            if response.status_code == 308:
                body = response.json() if response.content else {}
                target = body.get("merged_into") or response.headers.get("location", "").rsplit("/", 1)[-1]
                contact_id = uuid.UUID(str(target))
                continue
            raise UpstreamAnswer(response, service=self.contacts.name)
        raise UpstreamAnswer(response, service=self.contacts.name)

    def forget_header(self, contact_id: uuid.UUID | str) -> None:
        try:
            key = uuid.UUID(str(contact_id))
        except ValueError:
            return
        self._headers.pop(key)
        self._contacts.pop(key)
        self._families.pop(key)
        self._generation[key] = self._generation.get(key, 0) + 1
        if len(self._generation) > 100_000:
            self._generation.clear()
            self._pages.clear()

    async def header(self, *, contact: dict[str, Any]) -> dict[str, Any]:
        header, _ = await self._header_entry(contact)
        return header

    async def _header_entry(self, contact: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        """The header and its JSON, built once per ``header_cache_s`` (or event about the contact)."""
        contact_id = uuid.UUID(contact["id"])
        cached = self._headers.get(contact_id)
        if cached is not None:
            return cached
        generation = self._generation.get(contact_id, 0)

        async def build() -> tuple[dict[str, Any], bytes]:
            header = await self._build_header(contact_id, contact)
            entry = (header, to_json(header))
            if self._generation.get(contact_id, 0) == generation:  # no event about it meanwhile
                self._headers.put(contact_id, entry)
            return entry

        built: tuple[dict[str, Any], bytes] = await self._reading.run(("header", contact_id, generation), build)
        return built

    async def _build_header(self, contact_id: uuid.UUID, contact: dict[str, Any]) -> dict[str, Any]:
        now = self.clock.now()
        family = await self.family(contact_id)
        async with self.sessionmaker() as session:
            rows = (await session.scalars(select(TouchSummary).where(col(TouchSummary.contact_id).in_(family)))).all()
            # Counted in the database: a customer with hundreds of open follow-ups would otherwise load them all
            # as ORM rows whenever the header is rebuilt (after every event about the contact).
            is_overdue = and_(
                col(FollowupState.status) == "due",
                or_(col(FollowupState.overdue), col(FollowupState.due_at) < now),
            )
            open_followups, overdue_followups = (
                await session.execute(
                    select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.case((is_overdue, 1), else_=0)), 0)).where(
                        col(FollowupState.contact_id).in_(family),
                        col(FollowupState.status).in_(("scheduled", "due")),
                    )
                )
            ).one()
        # Per channel, across the contact and the contacts merged into it.
        touches: dict[str, dict[str, Any]] = {}
        for row in rows:
            seen = touches.setdefault(
                row.channel, {"first": as_utc(row.first_at), "last": as_utc(row.last_at), "n": 0, "sum": 0, "count": 0}
            )
            seen["first"] = min(seen["first"], as_utc(row.first_at))
            seen["last"] = max(seen["last"], as_utc(row.last_at))
            seen["n"] += row.touches
            seen["sum"] += row.csat_sum
            seen["count"] += row.csat_count
        csat_count = sum(t["count"] for t in touches.values())
        header = {
            "profile": contact,
            "stage": contact.get("stage"),
            "tier": contact.get("tier"),
            "owner": contact.get("owner"),
            "open_followups": int(open_followups),
            "overdue_followups": int(overdue_followups),
            "last_touch_per_channel": [
                {"channel": channel, "last_at": t["last"], "touches": t["n"]}
                for channel, t in sorted(touches.items(), key=lambda kv: kv[1]["last"], reverse=True)
            ],
            "csat_average": round(sum(t["sum"] for t in touches.values()) / csat_count, 2) if csat_count else None,
            "csat_responses": csat_count,
            "first_touch_at": min((t["first"] for t in touches.values()), default=None),
            "last_touch_at": max((t["last"] for t in touches.values()), default=None),
        }
        return header

    # -- a page --------------------------------------------------------------------------------------------

    async def family(self, contact_id: uuid.UUID) -> list[uuid.UUID]:
        """The contact and the contacts merged into it. A merge re-keys the projection, but an event about the
        source applied concurrently with its merge may still land under the source: reading all is exact.
        Reused like the contact (an event about it, seen live, forgets it)."""
        cached = self._families.get(contact_id)
        if cached is not None:
            return cached
        generation = self._generation.get(contact_id, 0)
        found = [contact_id, *[a for a in await self.aliases_of(contact_id) if a != contact_id]]
        if self._generation.get(contact_id, 0) == generation:
            self._families.put(contact_id, found)
        return found

    async def page(
        self,
        *,
        contact_id: uuid.UUID,
        filters: Filters,
        limit: int,
        after: Position | None,
        caller: str,
    ) -> tuple[list[dict[str, Any]], Position | None]:
        """Up to ``limit`` items strictly after ``after`` (or from the top); and the last position when
        more may follow."""
        entry = await self._page_entry(contact_id=contact_id, filters=filters, limit=limit, after=after)
        items = [json.loads(document) for document in entry.documents]
        for item in items:
            item["at"] = as_utc(datetime.fromisoformat(item["at"]))
        return items, entry.last

    async def _page_entry(
        self, *, contact_id: uuid.UUID, filters: Filters, limit: int, after: Position | None
    ) -> PageEntry:
        if self.page_cache_s <= 0:
            return await self._page(contact_id=contact_id, filters=filters, limit=limit, after=after)
        key = (contact_id, filters, limit, after)
        generation = self._generation.get(contact_id, 0)
        cached = self._pages.get(key)
        if cached is not None and cached[0] == generation:
            return cached[1]

        async def read() -> PageEntry:
            entry = await self._page(contact_id=contact_id, filters=filters, limit=limit, after=after)
            if self._generation.get(contact_id, 0) == generation:  # nothing happened to the contact meanwhile
                self._pages.put(key, (generation, entry))
            return entry

        found: PageEntry = await self._reading.run(("page", *key, generation), read)
        return found

    async def render(
        self, *, contact_id: uuid.UUID, filters: Filters, limit: int, cursor: str | None, caller: str
    ) -> bytes:
        """The timeline response as JSON: ``{"contact": header, "items": […], "next_cursor": …}``.

        Assembled from the header's JSON and the items' stored JSON: a page costs one indexed read and a join,
        and a page read again within its cache time costs dictionary look-ups (the cursor is signed once too)."""
        contact = await self.resolve_contact(contact_id=contact_id, caller=caller)
        surviving = uuid.UUID(contact["id"])
        after = self.read_cursor(cursor, contact_id=surviving, filters=filters) if cursor else None
        cached_header = self._headers.get(surviving)
        if cached_header is not None:
            header = cached_header
            entry = await self._page_entry(contact_id=surviving, filters=filters, limit=limit, after=after)
        else:
            header, entry = await asyncio.gather(
                self._header_entry(contact),
                self._page_entry(contact_id=surviving, filters=filters, limit=limit, after=after),
            )
        if entry.encoded is None:
            token = self.cursor(entry.last, contact_id=surviving, filters=filters) if entry.last else None
            entry.encoded = b"[" + ", ".join(entry.documents).encode() + b'], "next_cursor": ' + to_json(token)
        return b'{"contact": ' + header[1] + b', "items": ' + entry.encoded + b"}"

    async def _page(self, *, contact_id: uuid.UUID, filters: Filters, limit: int, after: Position | None) -> PageEntry:
        kinds = filters.sources()
        if not kinds:
            return PageEntry([], None)
        ranks = tuple(SORT_RANK[kind] for kind in kinds) if len(kinds) < len(KINDS) else None
        query = _page_query(
            ranks,
            limit + 1,
            channel=filters.channel is not None,
            type_=filters.type is not None,
            since=filters.since is not None,
            until=filters.until is not None,
            after=after is not None,
        )
        params: dict[str, Any] = {"channel": filters.channel, "type": filters.type}
        params.update(since=filters.since, until=filters.until)
        if after is not None:
            params.update(after_at=after.at, after_rank=SORT_RANK[KINDS[after.rank]], after_id=after.id)
        family = await self.family(contact_id)
        documents: list[str] = []
        # A plain connection, not an ORM session: this runs on every page no cache answers.
        async with self.engine.connect() as connection:
            for member in family:
                documents.extend((await connection.execute(query, {**params, "contact_id": member})).scalars())
        if len(family) > 1:
            documents.sort(key=lambda document: _position_of_document(document).key(), reverse=True)
        page = documents[:limit]
        return PageEntry(page, _position_of_document(page[-1]) if len(documents) > limit else None)

    def cursor(self, position: Position, *, contact_id: uuid.UUID, filters: Filters) -> str:
        return encode_position(position, contact_id=contact_id, scope=filters.scope(), key=self.signing_key)

    def read_cursor(self, token: str, *, contact_id: uuid.UUID, filters: Filters) -> Position:
        return decode_position(token, contact_id=contact_id, scope=filters.scope(), key=self.signing_key)

    async def items_above(
        self, *, contact_id: uuid.UUID, position: Position, caller: str, cap: int = 1000
    ) -> list[dict[str, Any]]:
        """The items newer than ``position`` (for a stream that reconnects), oldest first."""
        found: list[dict[str, Any]] = []
        after: Position | None = None
        while len(found) < cap:
            items, after = await self.page(
                contact_id=contact_id, filters=Filters(), limit=100, after=after, caller=caller
            )
            newer = [i for i in items if position_of(i).key() > position.key()]
            found.extend(newer)
            if len(newer) < len(items) or after is None:
                break
        return list(reversed(found[:cap]))

    async def aliases_of(self, contact_id: uuid.UUID) -> list[uuid.UUID]:
        async with self.sessionmaker() as session:
            rows = await session.scalars(
                select(col(ContactAlias.source_id)).where(col(ContactAlias.target_id) == contact_id)
            )
            return list(rows.all())

    # -- the journey map -------------------------------------------------------------------------------------

    async def journey(self, *, contact: dict[str, Any], caller: str, max_touchpoints: int = 5000) -> dict[str, Any]:
        """Stages over time (from the contact events) with the touchpoints of each stage."""
        contact_id = uuid.UUID(contact["id"])
        async with self.sessionmaker() as session:
            rows = (
                await session.scalars(
                    select(ContactEvent)
                    .where(
                        col(ContactEvent.contact_id) == contact_id,
                        col(ContactEvent.original_contact_id) == contact_id,
                        col(ContactEvent.type).in_(("created", "stage_changed")),
                    )
                    .order_by(col(ContactEvent.at), col(ContactEvent.id))
                )
            ).all()
        created_at = as_utc(datetime.fromisoformat(contact["created_at"]))
        changes: list[tuple[datetime, str]] = []
        for row in rows:
            stage = row.detail.get("stage") if row.type == "created" else (row.detail.get("stage") or {}).get("to")
            if isinstance(stage, str) and (not changes or changes[-1][1] != stage):
                changes.append((as_utc(row.at), stage))
        if not changes:
            changes = [(created_at, str(contact.get("stage")))]
        family = await self.family(contact_id)
        async with self.sessionmaker() as session:
            touches = (
                await session.execute(
                    select(_ITEMS.c.at, _ITEMS.c.channel, _ITEMS.c.type)
                    .where(_ITEMS.c.contact_id.in_(family), _ITEMS.c.sort_rank == SORT_RANK["interaction"])
                    .order_by(_ITEMS.c.at.desc())
                    .limit(max_touchpoints + 1)
                )
            ).all()
        truncated = len(touches) > max_touchpoints
        touches = touches[:max_touchpoints]
        now = self.clock.now()
        stages: list[dict[str, Any]] = []
        for index, (entered, stage) in enumerate(changes):
            left = changes[index + 1][0] if index + 1 < len(changes) else None
            stages.append(
                {
                    "stage": stage,
                    "entered_at": entered,
                    "left_at": left,
                    "seconds_in_stage": max(0.0, ((left or now) - entered).total_seconds()),
                    "touchpoints": 0,
                    "touchpoints_per_channel": {},
                    "touchpoints_per_type": {},
                }
            )
        for at, channel, type_ in touches:
            at = as_utc(at)
            # A touchpoint before the first recorded stage belongs to the first stage.
            target = stages[0]
            for stage_row in stages:
                if stage_row["entered_at"] <= at:
                    target = stage_row
            target["touchpoints"] += 1
            per_channel = target["touchpoints_per_channel"]
            per_channel[channel] = per_channel.get(channel, 0) + 1
            per_type = target["touchpoints_per_type"]
            per_type[type_] = per_type.get(type_, 0) + 1
        return {
            "contact_id": contact_id,
            "stages": stages,
            "touchpoints_counted": len(touches),
            "truncated": truncated,
        }
