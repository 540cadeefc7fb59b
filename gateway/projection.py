"""The timeline projection: every timeline item, kept from the events, as the API gives it out.

One row per touchpoint, follow-up and contact event (``timeline_items``), its JSON encoded once when the event is
applied, so a page of the timeline is one indexed read and a join of stored JSON, with no call to a service.
Touchpoints are kept without their body: ``crm.interaction.logged.v1`` does not carry it (bodies stay in the
interactions database, the only place an erasure has to reach them); the item links to the touchpoint, whose
``GET`` has the body.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col
from starlette.responses import Response

from gateway.models import ContactEvent, TimelineItem
from servicekit.clock import as_utc
from servicekit.db import upsert
from servicekit.erasure import ERASED_TEXT
from servicekit.logging import get_logger

log = get_logger(__name__)

TABLE: sa.Table = TimelineItem.__table__  # type: ignore[attr-defined]
KINDS = ("interaction", "followup", "contact_event")
# Rank in the timeline order at one instant (touchpoints first); sort_rank makes the whole order descending.
RANK = {kind: rank for rank, kind in enumerate(KINDS)}
SORT_RANK = {kind: len(KINDS) - 1 - rank for kind, rank in RANK.items()}
# What an erasure removes from a touchpoint (the interactions service removes the same, and the body, and gives
# the thread a new id): what was written about the person, and the ids that may name them (mail:zelda@…).
REDACTED_FIELDS: dict[str, Any] = {
    "subject": None, "outcome": None, "attributes": {}, "thread_id": None, "external_id": None,
}  # fmt: skip
# And from a follow-up (the follow-ups service removes the same): its outcome, free text about the person, and
# its thread id; a manual follow-up's reason becomes ERASED_TEXT (a policy's reason is the policy's words).
REDACTED_FOLLOWUP_FIELDS: dict[str, Any] = {"outcome": None, "thread_id": None}


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def to_json(value: Any) -> bytes:
    """The timeline's JSON (``json.dumps`` with its default separators, times in ISO 8601)."""
    return json.dumps(value, default=json_default).encode()


def _text(value: Any) -> str:
    return str(value).replace("_", " ")


def interaction_item(doc: dict[str, Any]) -> dict[str, Any]:
    """A touchpoint (as the interactions service gives it, or as its events carry it) as a timeline item.

    The body is left out, here as in the projection: the summary is the outcome, else what kind of touch it was."""
    at = as_utc(datetime.fromisoformat(str(doc["occurred_at"])))
    kind_of = str(doc.get("type", "touchpoint"))
    channel = _text(doc.get("channel"))
    title = doc.get("subject") or f"{kind_of.replace('_', ' ').capitalize()} ({doc.get('direction')}, {channel})"
    facts = [f"{str(doc.get('direction') or '').capitalize()} {channel}".strip()]
    if doc.get("duration_s") is not None:
        facts.append(f"{doc['duration_s']} s")
    if doc.get("amount") is not None:
        facts.append(f"{doc['amount']} {doc.get('currency') or ''}".strip())
    for score in ("csat", "nps"):
        if doc.get(score) is not None:
            facts.append(f"{score.upper()} {doc[score]}")
    item = {k: v for k, v in doc.items() if k != "body"}
    item.update(
        id=str(doc["id"]),
        kind="interaction",
        at=at,
        channel=doc.get("channel"),
        type=kind_of,
        title=str(title)[:200],
        summary=str(doc.get("outcome") or ", ".join(facts))[:280],
    )
    return item


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


def item_row(item: dict[str, Any], *, contact_id: uuid.UUID, version: int, redacted: bool = False) -> dict[str, Any]:
    """The ``timeline_items`` row of a timeline item (whose ``contact_id`` must already be ``contact_id``)."""
    original = item.get("original_contact_id") or contact_id
    return {
        "id": uuid.UUID(str(item["id"])),
        "contact_id": contact_id,
        "original_contact_id": uuid.UUID(str(original)),
        "at": item["at"],
        "sort_rank": SORT_RANK[item["kind"]],
        "channel": item.get("channel"),
        "type": str(item["type"])[:30],
        "version": version,
        "redacted": redacted,
        "document": to_json(item).decode(),
    }


async def put_rows(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Stores items in one statement, each replacing the stored one when it is a newer version of it. An item of
    an erased contact is stored ``redacted`` and is never replaced by an unredacted version (which an event from
    another stream, written before the erasure, could bring)."""
    if not rows:
        return
    insert = upsert(session, TABLE).values(rows)
    new = insert.excluded
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=[TABLE.c.id],
            set_={name: getattr(new, name) for name in rows[0] if name != "id"},
            where=sa.and_(TABLE.c.version < new.version, sa.or_(sa.not_(TABLE.c.redacted), new.redacted)),
        )
    )


async def erased_among(session: AsyncSession, contact_ids: set[uuid.UUID]) -> set[uuid.UUID]:
    """The contacts among these that were erased (their erasure is a contact event here)."""
    if not contact_ids:
        return set()
    found = await session.scalars(
        select(col(ContactEvent.contact_id)).where(
            col(ContactEvent.contact_id).in_(contact_ids), col(ContactEvent.type) == "erased"
        )
    )
    return set(found.all())


def interaction_row(
    doc: dict[str, Any], contact_id: uuid.UUID, *, erased: bool, erased_at: str | None = None
) -> dict[str, Any]:
    """The row of a touchpoint (as its events carry it) filed under ``contact_id``; redacted when erased (at
    ``erased_at``, else when the touchpoint says it was redacted or last changed)."""
    doc = {**doc, "contact_id": str(contact_id)}
    if erased:
        erased_at = erased_at or doc.get("redacted_at") or doc.get("updated_at") or doc["occurred_at"]
        doc.update(REDACTED_FIELDS, redacted_at=erased_at)
    version = int(doc.get("version") or 1)
    return item_row(interaction_item(doc), contact_id=contact_id, version=version, redacted=erased)


def followup_row(
    doc: dict[str, Any], contact_id: uuid.UUID, *, erased: bool, erased_at: str | None = None
) -> dict[str, Any]:
    """The row of a follow-up (as its events carry it) filed under ``contact_id``; redacted when erased."""
    doc = {**doc, "contact_id": str(contact_id), **(REDACTED_FOLLOWUP_FIELDS if erased else {})}
    if erased and doc.get("policy") is None:
        doc["reason"] = ERASED_TEXT
    version = int(doc.get("version") or 1)
    return item_row(followup_item(doc), contact_id=contact_id, version=version, redacted=erased)


def redacted_row(document: str, sort_rank: int, erased_at: str | None = None) -> dict[str, Any]:
    """A stored touchpoint's or follow-up's row (from its JSON) once its contact is erased."""
    doc = json.loads(document)
    make_row = interaction_row if sort_rank == SORT_RANK["interaction"] else followup_row
    return make_row(doc, uuid.UUID(str(doc["contact_id"])), erased=True, erased_at=erased_at)


async def put_interaction(session: AsyncSession, doc: dict[str, Any], contact_id: uuid.UUID) -> None:
    erased = contact_id in await erased_among(session, {contact_id})
    await put_rows(session, [interaction_row(doc, contact_id, erased=erased)])


async def put_followup(session: AsyncSession, doc: dict[str, Any], contact_id: uuid.UUID) -> None:
    erased = contact_id in await erased_among(session, {contact_id})
    await put_rows(session, [followup_row(doc, contact_id, erased=erased)])


async def put_contact_event(session: AsyncSession, row: Any) -> None:
    await put_rows(session, [item_row(contact_event_item(row), contact_id=row.contact_id, version=1)])


async def rekey(session: AsyncSession, source_id: uuid.UUID, target_id: uuid.UUID) -> None:
    """A merge: the source's items become the target's (their JSON says so too; ``original_contact_id`` stays)."""
    document = sa.func.replace(TABLE.c.document, f'"contact_id": "{source_id}"', f'"contact_id": "{target_id}"')
    await session.execute(
        update(TABLE).where(TABLE.c.contact_id == source_id).values(contact_id=target_id, document=document)
    )


async def redact(session: AsyncSession, contact_id: uuid.UUID, redacted_at: datetime) -> int:
    """An erasure: the contact's touchpoints lose their personal fields (as in the interactions service) and its
    follow-ups their outcome (as in the follow-ups service, which announces only the open ones it cancels), and
    they stay so whatever arrives about them later. Returns how many items were redacted."""
    rows = (
        await session.execute(
            select(TABLE.c.id, TABLE.c.sort_rank, TABLE.c.document).where(
                or_(TABLE.c.contact_id == contact_id, TABLE.c.original_contact_id == contact_id),
                TABLE.c.sort_rank.in_([SORT_RANK["interaction"], SORT_RANK["followup"]]),
                sa.not_(TABLE.c.redacted),
            )
        )
    ).all()
    for item_id, sort_rank, document in rows:
        redacted = redacted_row(document, sort_rank, redacted_at.isoformat())
        await session.execute(
            update(TABLE).where(TABLE.c.id == item_id).values(document=redacted["document"], redacted=True)
        )
    return len(rows)


class WriteThrough:
    """Read your own writes: a touchpoint or follow-up written through the gateway is put in the projection from
    the service's answer at once, not only when its event comes back from the bus (tens of milliseconds later),
    so a client that logs a touchpoint and reads the timeline sees it. The event, when it arrives, brings the
    same version and changes nothing. A failure here is logged and the answer goes out: the event will do it."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        announce: Callable[[set[str]], Awaitable[None]],
        forget: Callable[[str], None],
    ) -> None:
        self.sessionmaker = sessionmaker
        self.announce = announce
        self.forget = forget

    async def interaction(self, response: Response) -> Response:
        return await self._put(response, put_interaction)

    async def followup(self, response: Response) -> Response:
        return await self._put(response, put_followup)

    async def contacts(self, response: Response, *contact_ids: uuid.UUID) -> Response:
        """A contact changed, merged or erased through the gateway: no process shows it as it was from its caches
        (the contact event that would tell them can come seconds later, once the bus has brought it)."""
        if 200 <= response.status_code < 300:
            for contact_id in contact_ids:
                self.forget(str(contact_id))
            await self.announce({str(contact_id) for contact_id in contact_ids})
        return response

    async def _put(
        self, response: Response, put_one: Callable[[AsyncSession, dict[str, Any], uuid.UUID], Awaitable[None]]
    ) -> Response:
        if response.status_code not in (200, 201):
            return response
        try:
            doc = json.loads(bytes(response.body))
            contact_id = uuid.UUID(str(doc["contact_id"]))
            async with self.sessionmaker() as session, session.begin():
                await put_one(session, doc, contact_id)
        except Exception as exc:  # the service stored it; the event brings it to the projection anyway
            log.warning("write_through_failed", error=repr(exc))
            return response
        self.forget(str(contact_id))
        await self.announce({str(contact_id)})
        return response
