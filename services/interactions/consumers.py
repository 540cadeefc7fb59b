"""What the interactions service consumes: touchpoints published straight onto NATS, and the contacts
service's events (merges and erasures for the touchpoints; created, updated, merged and erased for the copy of the
identity directory)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.bus import Bus, PermanentError
from servicekit.catalogue.contacts import CONTACT_CREATED, CONTACT_ERASED, CONTACT_MERGED, CONTACT_UPDATED
from servicekit.events import CloudEvent
from servicekit.inbox import EventHandler
from servicekit.logging import get_logger
from servicekit.metrics import EVENTS_CONSUMED
from servicekit.problems import ContactsUnavailable, ProblemError
from servicekit.tracing import message_trace_headers
from services.interactions import events
from services.interactions.flows import Ingestion, invalid
from services.interactions.identities import IdentityCopy
from services.interactions.schemas import MAX_BATCH, TouchpointCreate
from services.interactions.service import Prepared, TouchpointService

log = get_logger(__name__)

RETRY_FIRST_S = 0.5


def ingest_key(msg: Msg) -> str:
    """What makes a redelivered message the same touchpoint: its Nats-Msg-Id, else its place in the stream."""
    msg_id = (msg.headers or {}).get("Nats-Msg-Id")
    if msg_id:
        return f"msg:{msg_id}"[:300]
    meta = msg.metadata
    return f"seq:{meta.sequence.stream}@{meta.timestamp.isoformat()}"


@dataclass
class _Unit:
    """One touchpoint of a message: the whole message, or one item of a batch message (``index`` set)."""

    msg: Msg
    index: int | None
    raw: Any
    key: str
    item: TouchpointCreate | None = None
    refused: str | None = None  # why it can never be stored (dead-lettered)
    prepared: Prepared | None = None


class NatsIngest:
    """Consumes ``crm.ingest.interactions`` (work queue): a message is acknowledged only once its
    touchpoints are committed (or were already stored); one that can never be valid is dead-lettered
    with the reason; one that failed for a passing cause (contacts or the database unreachable) is
    redelivered with a growing delay. Nothing is dropped.

    A message holds one touchpoint (the JSON of ``POST /v1/interactions``) or up to ``MAX_BATCH`` of them
    (the JSON of ``POST /v1/interactions/batch``, ``{"items": [...]}``). A batch message is all or nothing for
    passing causes (redelivered whole; what was stored of it is recognised by its key, message id and index),
    and item by item for lasting ones: its invalid items are dead-lettered one by one, with their index, once
    the others are committed."""

    def __init__(self, *, ingestion: Ingestion, bus: Bus, retry_max_s: float, name: str = events.INGEST_DURABLE):
        self.ingestion = ingestion
        self.bus = bus
        self.retry_max_s = retry_max_s
        self.name = name

    def _units(self, msg: Msg) -> list[_Unit] | str:
        """The touchpoints of a message, or why the message as a whole can never be valid."""
        key = ingest_key(msg)
        batch = _batch_items(msg.data)
        if batch is None:
            return [_Unit(msg, None, msg.data, key)]
        if isinstance(batch, str):
            return batch
        return [_Unit(msg, index, raw, f"{key}#{index}") for index, raw in enumerate(batch)]

    def _check(self, unit: _Unit) -> None:
        try:
            if unit.index is None:
                unit.item = TouchpointCreate.model_validate_json(unit.raw)
            else:
                unit.item = TouchpointCreate.model_validate(unit.raw)
            self.ingestion.touchpoints.check(unit.item)
        except ValidationError as exc:
            unit.item, unit.refused = None, f"invalid touchpoint: {invalid(exc).extensions['errors']}"
        except ProblemError as exc:
            unit.item, unit.refused = None, f"invalid touchpoint: {exc.detail}"

    async def handle_batch(self, msgs: list[Msg]) -> None:
        group: list[tuple[Msg, list[_Unit]]] = []
        size = 0
        for msg in msgs:
            units = self._units(msg)
            if isinstance(units, str):
                await self._dead_letter(msg, units)
                continue
            for unit in units:
                self._check(unit)
            # A fetch of batch messages can hold many thousands of touchpoints: stored a transaction's worth at a
            # time, so each commit (and the acks after it) comes well within the messages' ack wait.
            if group and size + len(units) > MAX_BATCH:
                await self._handle(group)
                group, size = [], 0
            group.append((msg, units))
            size += len(units)
        if group:
            await self._handle(group)

    async def _handle(self, by_message: list[tuple[Msg, list[_Unit]]]) -> None:
        touchpoints = self.ingestion.touchpoints
        valid = [unit for _, units in by_message for unit in units if unit.item is not None]
        links = await self.ingestion.link_all([unit.item for unit in valid if unit.item is not None])
        waiting: set[int] = set()  # messages to redeliver whole (a passing cause)
        # The sender's W3C trace context, from each message's headers: its touchpoints' events carry it on.
        traces = {id(msg): message_trace_headers(msg.headers) for msg, _ in by_message}
        for unit, link in zip(valid, links, strict=True):
            if isinstance(link, ContactsUnavailable):
                waiting.add(id(unit.msg))
            elif isinstance(link, ProblemError):
                unit.refused = f"{link.title}: {link.detail}"
            elif unit.item is not None:
                unit.prepared = touchpoints.prepare(item=unit.item, link=link, ingest_key=unit.key,
                                                    request=traces[id(unit.msg)])  # fmt: skip
        for msg, _ in by_message:
            if id(msg) in waiting:
                await self._retry(msg, "contacts unavailable")
        by_message = [(msg, units) for msg, units in by_message if id(msg) not in waiting]
        ready = [unit for _, units in by_message for unit in units if unit.prepared is not None]
        if ready:
            try:
                async with self.ingestion.sessionmaker() as session, session.begin():
                    outcomes = await touchpoints.store(
                        session=session, prepared=[u.prepared for u in ready if u.prepared is not None]
                    )
            except Exception as exc:
                log.warning("ingest_store_failed", error=repr(exc), messages=len(by_message))
                for msg, units in by_message:
                    if any(unit.prepared is not None for unit in units):
                        await self._retry(msg, "database unavailable")
                    else:
                        await self._settle(msg, units)
                return
            for unit, outcome in zip(ready, outcomes, strict=True):
                if outcome.status in (200, 201):
                    continue
                if outcome.status == 409 or outcome.problem is None:
                    waiting.add(id(unit.msg))
                else:
                    unit.refused = f"{outcome.problem.title}: {outcome.problem.detail}"
        stored = 0
        for msg, units in by_message:
            if id(msg) in waiting:
                await self._retry(msg, "concurrent write of the same touchpoint")
                continue
            stored += sum(1 for unit in units if unit.prepared is not None and unit.refused is None)
            await self._settle(msg, units)
        EVENTS_CONSUMED.labels(self.name, "applied").inc(stored)

    async def _settle(self, msg: Msg, units: list[_Unit]) -> None:
        """A message whose touchpoints are all stored or refused: its refused ones are parked, then it is acked."""
        if len(units) == 1 and units[0].index is None:
            if units[0].refused is not None:
                await self._dead_letter(msg, units[0].refused)
            else:
                await msg.ack()
            return
        for unit in units:
            if unit.refused is not None:
                reason = f"item {unit.index} of a batch message: {unit.refused}"
                if not await self._park(msg, reason, payload=json.dumps(unit.raw).encode(), key=unit.key):
                    await self._retry(msg, "dead letter not published")
                    return
        await msg.ack()

    async def _retry(self, msg: Msg, why: str) -> None:
        delivered = max(1, msg.metadata.num_delivered)
        delay = min(self.retry_max_s, RETRY_FIRST_S * 2 ** (delivered - 1))
        EVENTS_CONSUMED.labels(self.name, "retry").inc()
        log.info("ingest_retry", why=why, delivered=delivered, delay_s=delay)
        await msg.nak(delay=delay)

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        if await self._park(msg, reason, payload=msg.data, key=ingest_key(msg)):
            await msg.ack()
        else:
            # Not parked yet: keep the message rather than lose it.
            await self._retry(msg, "dead letter not published")

    async def _park(self, msg: Msg, reason: str, *, payload: bytes, key: str) -> bool:
        """Publishes a dead letter (the reason and the payload); whether it was published."""
        log.warning("ingest_dead_lettered", reason=reason[:500])
        try:
            await self.bus.dead_letter(
                events.DEADLETTER_SUBJECT,
                reason=reason,
                payload=payload,
                origin=msg.subject,
                headers=dict(msg.headers or {}),
                msg_id=key,
            )
        except Exception as exc:
            log.warning("dead_letter_failed", error=repr(exc))
            return False
        EVENTS_CONSUMED.labels(self.name, "dead_letter").inc()
        return True


def _batch_items(data: bytes) -> list[Any] | str | None:
    """The items of a batch message (``{"items": [...]}``), why it is not a valid one, or None for a message
    of one touchpoint (which never has an ``items`` field: a touchpoint's extra fields are refused)."""
    if b'"items"' not in data[:64]:
        return None
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None  # refused as a touchpoint, with the parser's reason
    if not isinstance(body, dict) or set(body) != {"items"}:
        return None
    items = body["items"]
    if not isinstance(items, list) or not items:
        return 'a batch message holds {"items": [...]} with at least one touchpoint'
    if len(items) > MAX_BATCH:
        return f"a batch message holds at most {MAX_BATCH} touchpoints; this one has {len(items)}"
    return items


def contact_handlers(touchpoints: TouchpointService) -> dict[str, EventHandler]:
    """Handlers of the contacts service's events, applied through the inbox (once per event): merges and erasures
    reach the touchpoints, and every event that changes who holds an identity reaches the local copy of the
    identity directory (services/interactions/identities.py)."""

    def identities() -> IdentityCopy:
        copy = touchpoints.identities
        assert copy is not None, "the contacts consumer keeps the identity copy"
        return copy

    async def created(session: AsyncSession, event: CloudEvent) -> None:
        contact = event.data.get("contact")
        if not isinstance(contact, dict) or "id" not in contact:
            raise PermanentError(f"{event.type} {event.id} lacks its contact")
        await identities().contact_created(session=session, contact=contact, at=event.time)

    async def updated(session: AsyncSession, event: CloudEvent) -> None:
        (contact_id,) = _ids(event, "contact_id")
        changed, previous = event.data.get("changed"), event.data.get("previous")
        if isinstance(changed, dict):
            await identities().contact_updated(session=session, contact_id=contact_id, changed=changed,
                                             previous=previous if isinstance(previous, dict) else {},
                                             at=event.time)  # fmt: skip

    async def merged(session: AsyncSession, event: CloudEvent) -> None:
        source_id, target_id = _ids(event, "source_id", "target_id")
        await touchpoints.rekey(session=session, source_id=source_id, target_id=target_id)
        target = event.data.get("contact")
        await identities().contact_merged(
            session=session, target_id=target_id, target=target if isinstance(target, dict) else None, at=event.time
        )

    async def erased(session: AsyncSession, event: CloudEvent) -> None:
        (contact_id,) = _ids(event, "contact_id")
        merged_ids = [uuid.UUID(str(ident)) for ident in event.data.get("merged_ids") or []]
        await touchpoints.redact_contact(session=session, contact_id=contact_id, merged_ids=merged_ids)

    return {CONTACT_CREATED: created, CONTACT_UPDATED: updated, CONTACT_MERGED: merged, CONTACT_ERASED: erased}


def _ids(event: CloudEvent, *names: str) -> list[uuid.UUID]:
    try:
        return [uuid.UUID(str(event.data[name])) for name in names]
    except (KeyError, ValueError) as exc:
        raise PermanentError(f"{event.type} {event.id} lacks a valid {exc}") from None


def forget_dead_contacts(forget: Callable[[uuid.UUID], None]) -> Callable[[list[CloudEvent]], object]:
    """After the inbox committed merges and erasures: the in-memory list of live contacts drops them."""

    async def after_commit(applied: list[CloudEvent]) -> None:
        for event in applied:
            for name in ("source_id", "contact_id"):
                if name in event.data and event.type in (CONTACT_MERGED, CONTACT_ERASED):
                    forget(uuid.UUID(str(event.data[name])))

    return after_commit
