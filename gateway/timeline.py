"""The customer's timeline: touchpoints, follow-ups and contact events in one list, newest first.

Order: ``at`` descending, then kind rank (interaction, followup, contact_event), then id descending.
A page is a k-way merge of the three sources, each read with a strict keyset ``before`` computed from
the last emitted position, so pages never repeat or skip an item, also while new ones arrive (a new
item lands above the cursor). The cursor is that position, HMAC-signed and bound to the contact and
the filters: a tampered or foreign cursor is a 400 problem.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import and_, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from gateway.caches import Coalescer, ExpiringCache
from gateway.models import ContactAlias, ContactEvent, FollowupState, TouchSummary
from gateway.schemas_services import FOLLOWUP_STATUSES, INTERACTION_TYPES
from gateway.upstream import ServiceClient, UpstreamAnswer
from servicekit.clock import Clock, as_utc
from servicekit.problems import ProblemError

KINDS = ("interaction", "followup", "contact_event")
RANK = {kind: rank for rank, kind in enumerate(KINDS)}
CONTACT_EVENT_TYPES = ("created", "stage_changed", "consent_changed", "tier_changed", "merged", "erased")
MIN_ID = uuid.UUID(int=0)
MAX_ID = uuid.UUID(int=(1 << 128) - 1)
_CONTACT_EVENTS = cast(sa.Table, ContactEvent.__table__)  # type: ignore[attr-defined]
CHANNEL_FILTER_ROUNDS = 5  # follow-up pages read at most to fill a page when filtering by channel


class InvalidCursor(ProblemError):
    status, slug, title = 400, "invalid-cursor", "Invalid cursor"


@dataclass(frozen=True)
class Position:
    """Where an item sits in the timeline order."""

    at: datetime
    rank: int
    id: uuid.UUID

    def key(self) -> tuple[datetime, int, int]:
        # Sorting by this key *descending* gives the timeline order.
        return (self.at, -self.rank, self.id.int)

    def before_for(self, kind: str) -> tuple[datetime, uuid.UUID]:
        """The strict ``(at, id) <`` bound of one source for the items after this position."""
        rank = RANK[kind]
        if rank == self.rank:
            return self.at, self.id
        # Same instant: a lower rank came before us (all emitted), a higher rank comes after (none emitted).
        return self.at, MIN_ID if rank < self.rank else MAX_ID


def position_of(item: dict[str, Any]) -> Position:
    return Position(item["at"], RANK[item["kind"]], uuid.UUID(str(item["id"])))


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def to_json(value: Any) -> bytes:
    """The timeline's JSON (``json.dumps`` with its default separators, times in ISO 8601)."""
    return json.dumps(value, default=json_default).encode()


@dataclass
class PageEntry:
    """One page as read (its items and the last position when more may follow), and, once a response
    needed it, the page as JSON: a cached page is answered without encoding 50 items again."""

    items: list[dict[str, Any]]
    last: Position | None
    encoded: bytes | None = None


# --- signed tokens --------------------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(payload: dict[str, Any], key: bytes) -> str:
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    mac = hmac.new(key, body, hashlib.sha256).digest()[:16]
    return f"{_b64(body)}.{_b64(mac)}"


def unsign(token: str, key: bytes) -> dict[str, Any]:
    try:
        body_part, mac_part = token.split(".", 1)
        body = _unb64(body_part)
        expected = hmac.new(key, body, hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(expected, _unb64(mac_part)):
            raise ValueError("bad signature")
        payload = json.loads(body)
        if not isinstance(payload, dict):
            raise ValueError("not an object")
        return payload
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor("The cursor is not one this API gave out (or it was changed).") from None


def encode_position(position: Position, *, contact_id: uuid.UUID, scope: str, key: bytes) -> str:
    return sign(
        {"at": position.at.isoformat(), "r": position.rank, "id": str(position.id), "c": str(contact_id), "s": scope},
        key,
    )


def decode_position(token: str, *, contact_id: uuid.UUID, scope: str, key: bytes) -> Position:
    payload = unsign(token, key)
    if payload.get("c") != str(contact_id) or payload.get("s") != scope:
        raise InvalidCursor("This cursor belongs to another timeline or other filters.")
    try:
        return Position(as_utc(datetime.fromisoformat(payload["at"])), int(payload["r"]), uuid.UUID(payload["id"]))
    except (KeyError, ValueError, TypeError):
        raise InvalidCursor("The cursor is not one this API gave out.") from None


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


def _family(contact_id: uuid.UUID) -> Any:
    """The contact and the contacts merged into it. Projections re-key on a merge, but an event about a
    source applied concurrently with its merge may still land under the source: reading both is exact."""
    aliases = select(col(ContactAlias.source_id)).where(col(ContactAlias.target_id) == contact_id)
    return select(literal(contact_id, type_=sa.Uuid)).union_all(aliases)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _key_param(bound: tuple[datetime, uuid.UUID]) -> str:
    return f"{bound[0].isoformat()}|{bound[1]}"


def interaction_item(doc: dict[str, Any]) -> dict[str, Any]:
    at = as_utc(datetime.fromisoformat(doc["occurred_at"]))
    kind_of = str(doc.get("type", "touchpoint"))
    title = doc.get("subject") or f"{kind_of.replace('_', ' ').capitalize()} ({doc.get('direction')}, " + (
        f"{str(doc.get('channel')).replace('_', ' ')})"
    )
    summary = doc.get("body") or doc.get("outcome") or ""
    return {
        **doc,
        "id": str(doc["id"]),
        "kind": "interaction",
        "at": at,
        "channel": doc.get("channel"),
        "type": kind_of,
        "title": str(title)[:200],
        "summary": str(summary)[:280],
    }


def followup_item(doc: dict[str, Any]) -> dict[str, Any]:
    stamp = doc.get("timeline_at") or doc.get("due_at")
    at = as_utc(datetime.fromisoformat(str(stamp)))
    status = str(doc.get("status"))
    title = doc.get("reason") or f"Follow-up {doc.get('policy') or ''}".strip()
    who = doc.get("assignee") or doc.get("team")
    summary = f"{status.capitalize()}; due {doc.get('due_at')}" + (f"; for {who}" if who else "")
    return {
        **doc,
        "id": str(doc["id"]),
        "kind": "followup",
        "at": at,
        "channel": doc.get("channel"),
        "type": status,
        "title": str(title)[:200],
        "summary": summary,
    }


def contact_event_item(row: Any) -> dict[str, Any]:
    """A contact event (a ``ContactEvent`` or a plain row of its table) as a timeline item."""
    return {
        "id": str(row.id),
        "kind": "contact_event",
        "at": as_utc(row.at),
        "channel": None,
        "type": row.type,
        "title": row.title,
        "summary": row.summary,
        "contact_id": str(row.contact_id),
        "original_contact_id": str(row.original_contact_id),
        "detail": row.detail,
    }


class Timeline:
    """Reads one contact's timeline from the services and the local projection."""

    def __init__(
        self,
        *,
        interactions: ServiceClient,
        followups: ServiceClient,
        contacts: ServiceClient,
        sessionmaker: async_sessionmaker[AsyncSession],
        clock: Clock,
        signing_key: bytes,
        header_cache_s: float,
        page_cache_s: float = 0.0,
    ) -> None:
        self.interactions = interactions
        self.followups = followups
        self.contacts = contacts
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.signing_key = signing_key
        self.header_cache_s = header_cache_s
        self._headers: ExpiringCache[uuid.UUID, tuple[dict[str, Any], bytes]] = ExpiringCache(header_cache_s, 10_000)
        self._contacts: ExpiringCache[uuid.UUID, dict[str, Any]] = ExpiringCache(header_cache_s, 10_000)
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
            response = await self.contacts.request("GET", f"/v1/contacts/{contact_id}", caller=caller)
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
        async with self.sessionmaker() as session:
            rows = (
                await session.scalars(select(TouchSummary).where(col(TouchSummary.contact_id).in_(_family(contact_id))))
            ).all()
            # Counted in the database: a customer with hundreds of open follow-ups would otherwise load them all
            # as ORM rows whenever the header is rebuilt (after every event about the contact).
            is_overdue = and_(
                col(FollowupState.status) == "due",
                or_(col(FollowupState.overdue), col(FollowupState.due_at) < now),
            )
            open_followups, overdue_followups = (
                await session.execute(
                    select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.case((is_overdue, 1), else_=0)), 0)).where(
                        col(FollowupState.contact_id).in_(_family(contact_id)),
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

    # -- the sources ---------------------------------------------------------------------------------------

    async def _interactions(
        self, contact_id: uuid.UUID, bound: tuple[datetime, uuid.UUID] | None, limit: int, f: Filters, caller: str
    ) -> list[dict[str, Any]]:
        params = {
            "contact_id": str(contact_id),
            "limit": limit,
            "before": _key_param(bound) if bound else None,
            "channel": f.channel,
            "type": f.type,
            "since": _iso(f.since),
        }
        page = await self.interactions.json("GET", "/v1/interactions", caller=caller, params=params)
        return [interaction_item(doc) for doc in page["items"]]

    async def _followups(
        self, contact_id: uuid.UUID, bound: tuple[datetime, uuid.UUID] | None, limit: int, f: Filters, caller: str
    ) -> tuple[list[dict[str, Any]], Position | None]:
        """Follow-ups (the service has no channel filter: filtered here, a few pages at most). When the
        rounds run out before the end, also the last position scanned: below it, nothing is known yet."""
        found: list[dict[str, Any]] = []
        frontier: Position | None = None
        for round_ in range(CHANNEL_FILTER_ROUNDS if f.channel else 1):
            params = {
                "contact_id": str(contact_id),
                "order": "timeline",
                "limit": limit,
                "before": _key_param(bound) if bound else None,
                "status": f.type,
            }
            page = await self.followups.json("GET", "/v1/followups", caller=caller, params=params)
            items = [followup_item(doc) for doc in page["items"]]
            found.extend(i for i in items if f.channel is None or i["channel"] == f.channel)
            if len(items) < limit or len(found) >= limit:
                break
            last = items[-1]
            bound = (last["at"], uuid.UUID(last["id"]))
            if round_ == CHANNEL_FILTER_ROUNDS - 1:
                frontier = position_of(last)
        return found, frontier

    async def _contact_events(
        self, contact_id: uuid.UUID, bound: tuple[datetime, uuid.UUID] | None, limit: int, f: Filters
    ) -> list[dict[str, Any]]:
        # Plain rows, not ORM objects: read on every page a cache does not answer, and tracked instances cost
        # more than the indexed query.
        query = select(_CONTACT_EVENTS).where(col(ContactEvent.contact_id).in_(_family(contact_id)))
        if bound is not None:
            at, id_ = bound
            query = query.where(
                or_(col(ContactEvent.at) < at, and_(col(ContactEvent.at) == at, col(ContactEvent.id) < id_))
            )
        if f.type is not None:
            query = query.where(col(ContactEvent.type) == f.type)
        query = query.order_by(col(ContactEvent.at).desc(), col(ContactEvent.id).desc()).limit(limit)
        async with self.sessionmaker() as session:
            rows = (await session.execute(query)).all()
        return [contact_event_item(row) for row in rows]

    async def _fetch(
        self,
        kind: str,
        contact_id: uuid.UUID,
        bound: tuple[datetime, uuid.UUID] | None,
        limit: int,
        f: Filters,
        caller: str,
    ) -> tuple[list[dict[str, Any]], Position | None]:
        if kind == "interaction":
            return await self._interactions(contact_id, bound, limit, f, caller), None
        if kind == "followup":
            return await self._followups(contact_id, bound, limit, f, caller)
        return await self._contact_events(contact_id, bound, limit, f), None

    # -- a page --------------------------------------------------------------------------------------------

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
        entry = await self._page_entry(contact_id=contact_id, filters=filters, limit=limit, after=after, caller=caller)
        return entry.items, entry.last

    async def _page_entry(
        self, *, contact_id: uuid.UUID, filters: Filters, limit: int, after: Position | None, caller: str
    ) -> PageEntry:
        if self.page_cache_s <= 0:
            items, last = await self._page(
                contact_id=contact_id, filters=filters, limit=limit, after=after, caller=caller
            )
            return PageEntry(items, last)
        key = (contact_id, filters, limit, after)
        generation = self._generation.get(contact_id, 0)
        cached = self._pages.get(key)
        if cached is not None and cached[0] == generation:
            return cached[1]

        async def read() -> PageEntry:
            items, last = await self._page(
                contact_id=contact_id, filters=filters, limit=limit, after=after, caller=caller
            )
            entry = PageEntry(items, last)
            if self._generation.get(contact_id, 0) == generation:  # nothing happened to the contact meanwhile
                self._pages.put(key, (generation, entry))
            return entry

        found: PageEntry = await self._reading.run(("page", *key, generation), read)
        return found

    async def render(
        self, *, contact_id: uuid.UUID, filters: Filters, limit: int, cursor: str | None, caller: str
    ) -> bytes:
        """The timeline response as JSON: ``{"contact": header, "items": […], "next_cursor": …}``.

        Assembled from the header's and the page's cached JSON, so a page read again within its cache time
        costs dictionary look-ups, not a rebuild (the cursor is signed once per page too)."""
        contact = await self.resolve_contact(contact_id=contact_id, caller=caller)
        surviving = uuid.UUID(contact["id"])
        after = self.read_cursor(cursor, contact_id=surviving, filters=filters) if cursor else None
        cached_header = self._headers.get(surviving)
        if cached_header is not None:
            header = cached_header
            entry = await self._page_entry(
                contact_id=surviving, filters=filters, limit=limit, after=after, caller=caller
            )
        else:
            header, entry = await asyncio.gather(
                self._header_entry(contact),
                self._page_entry(contact_id=surviving, filters=filters, limit=limit, after=after, caller=caller),
            )
        if entry.encoded is None:
            token = self.cursor(entry.last, contact_id=surviving, filters=filters) if entry.last else None
            entry.encoded = to_json(entry.items) + b', "next_cursor": ' + to_json(token)
        return b'{"contact": ' + header[1] + b', "items": ' + entry.encoded + b"}"

    async def _page(
        self,
        *,
        contact_id: uuid.UUID,
        filters: Filters,
        limit: int,
        after: Position | None,
        caller: str,
    ) -> tuple[list[dict[str, Any]], Position | None]:
        kinds = filters.sources()

        def bound_for(kind: str) -> tuple[datetime, uuid.UUID] | None:
            bounds = []
            if after is not None:
                bounds.append(after.before_for(kind))
            if filters.until is not None:
                bounds.append((filters.until, MIN_ID))
            return min(bounds, key=lambda b: (b[0], b[1].int)) if bounds else None

        fetched = await asyncio.gather(
            *(self._fetch(kind, contact_id, bound_for(kind), limit + 1, filters, caller) for kind in kinds)
        )
        merged = sorted(
            (item for items, _ in fetched for item in items), key=lambda i: position_of(i).key(), reverse=True
        )
        frontiers = [frontier for _, frontier in fetched if frontier is not None]
        # A source that stopped early knows nothing below its frontier: the page ends there.
        cut = max(frontiers, key=Position.key) if frontiers else None
        if cut is not None:
            merged = [item for item in merged if position_of(item).key() > cut.key()]
        if filters.since is not None:
            merged = [item for item in merged if item["at"] >= filters.since]
        page = merged[:limit]
        if len(merged) > limit:
            return page, position_of(page[-1])
        if cut is not None and filters.since is not None and cut.at < filters.since:
            return page, None  # all that is left is older than the window
        return page, cut

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
        touchpoints: list[dict[str, Any]] = []
        bound: tuple[datetime, uuid.UUID] | None = None
        truncated = False
        while True:
            params = {"contact_id": str(contact_id), "limit": 100, "before": _key_param(bound) if bound else None}
            page = await self.interactions.json("GET", "/v1/interactions", caller=caller, params=params)
            touchpoints.extend(page["items"])
            if len(page["items"]) < 100:
                break
            if len(touchpoints) >= max_touchpoints:
                truncated = True
                break
            last = page["items"][-1]
            bound = (as_utc(datetime.fromisoformat(last["occurred_at"])), uuid.UUID(last["id"]))
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
        for doc in touchpoints:
            at = as_utc(datetime.fromisoformat(doc["occurred_at"]))
            # A touchpoint before the first recorded stage belongs to the first stage.
            target = stages[0]
            for stage_row in stages:
                if stage_row["entered_at"] <= at:
                    target = stage_row
            target["touchpoints"] += 1
            per_channel = target["touchpoints_per_channel"]
            per_channel[doc["channel"]] = per_channel.get(doc["channel"], 0) + 1
            per_type = target["touchpoints_per_type"]
            per_type[doc["type"]] = per_type.get(doc["type"], 0) + 1
        return {
            "contact_id": contact_id,
            "stages": stages,
            "touchpoints_counted": len(touchpoints),
            "truncated": truncated,
        }
