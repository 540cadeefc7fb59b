"""What the interactions service consumes: touchpoints published straight onto NATS, and the contacts
service's merge and erase events."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from nats.aio.msg import Msg
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.bus import Bus, PermanentError
from servicekit.events import CloudEvent
from servicekit.inbox import EventHandler
from servicekit.logging import get_logger
from servicekit.metrics import EVENTS_CONSUMED
from servicekit.problems import ProblemError
from services.interactions import events
from services.interactions.directory import ContactsUnavailable
from services.interactions.flows import Ingestion, invalid
from services.interactions.schemas import TouchpointCreate
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


class NatsIngest:
    """Consumes ``crm.ingest.interactions`` (work queue): a message is acknowledged only once its
    touchpoint is committed (or was already stored); one that can never be valid is dead-lettered
    with the reason; one that failed for a passing cause (contacts or the database unreachable) is
    redelivered with a growing delay. Nothing is dropped."""

    def __init__(self, *, ingestion: Ingestion, bus: Bus, retry_max_s: float, name: str = events.INGEST_DURABLE):
        self.ingestion = ingestion
        self.bus = bus
        self.retry_max_s = retry_max_s
        self.name = name

    async def handle_batch(self, msgs: list[Msg]) -> None:
        touchpoints = self.ingestion.touchpoints
        valid: list[tuple[Msg, TouchpointCreate]] = []
        for msg in msgs:
            try:
                item = TouchpointCreate.model_validate_json(msg.data)
                touchpoints.check(item)
            except ValidationError as exc:
                problem = invalid(exc)
                await self._dead_letter(msg, f"invalid touchpoint: {problem.extensions['errors']}")
                continue
            except ProblemError as exc:
                await self._dead_letter(msg, f"invalid touchpoint: {exc.detail}")
                continue
            valid.append((msg, item))
        links = await self.ingestion.link_all([item for _, item in valid])
        ready: list[tuple[Msg, Prepared]] = []
        for (msg, item), link in zip(valid, links, strict=True):
            if isinstance(link, ContactsUnavailable):
                await self._retry(msg, link.detail or "contacts unavailable")
            elif isinstance(link, ProblemError):
                await self._dead_letter(msg, f"{link.title}: {link.detail}")
            else:
                ready.append((msg, touchpoints.prepare(item=item, link=link, ingest_key=ingest_key(msg))))
        if not ready:
            return
        try:
            async with self.ingestion.sessionmaker() as session, session.begin():
                outcomes = await touchpoints.store(session=session, prepared=[p for _, p in ready])
        except Exception as exc:
            log.warning("ingest_store_failed", error=repr(exc), messages=len(ready))
            for msg, _ in ready:
                await self._retry(msg, "database unavailable")
            return
        stored = 0
        for (msg, _), outcome in zip(ready, outcomes, strict=True):
            if outcome.status in (200, 201):
                stored += 1
                await msg.ack()
            elif outcome.status == 409 or outcome.problem is None:
                await self._retry(msg, "concurrent write of the same touchpoint")
            else:
                await self._dead_letter(msg, f"{outcome.problem.title}: {outcome.problem.detail}")
        EVENTS_CONSUMED.labels(self.name, "applied").inc(stored)

    async def _retry(self, msg: Msg, why: str) -> None:
        delivered = max(1, msg.metadata.num_delivered)
        delay = min(self.retry_max_s, RETRY_FIRST_S * 2 ** (delivered - 1))
        EVENTS_CONSUMED.labels(self.name, "retry").inc()
        log.info("ingest_retry", why=why, delivered=delivered, delay_s=delay)
        await msg.nak(delay=delay)

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        log.warning("ingest_dead_lettered", reason=reason[:500])
        try:
            await self.bus.dead_letter(
                events.DEADLETTER_SUBJECT,
                reason=reason,
                payload=msg.data,
                origin=msg.subject,
                headers=dict(msg.headers or {}),
                msg_id=ingest_key(msg),
            )
        except Exception as exc:
            # Not parked yet: keep the message rather than lose it.
            await self._retry(msg, f"dead letter not published: {exc!r}")
            return
        EVENTS_CONSUMED.labels(self.name, "dead_letter").inc()
        await msg.ack()


def contact_handlers(touchpoints: TouchpointService) -> dict[str, EventHandler]:
    """Handlers of the contacts service's events, applied through the inbox (once per event)."""

    async def merged(session: AsyncSession, event: CloudEvent) -> None:
        source_id, target_id = _ids(event, "source_id", "target_id")
        await touchpoints.rekey(session=session, source_id=source_id, target_id=target_id)

    async def erased(session: AsyncSession, event: CloudEvent) -> None:
        (contact_id,) = _ids(event, "contact_id")
        await touchpoints.redact_contact(session=session, contact_id=contact_id)

    return {events.CONTACT_MERGED: merged, events.CONTACT_ERASED: erased}


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
                if name in event.data and event.type in (events.CONTACT_MERGED, events.CONTACT_ERASED):
                    forget(uuid.UUID(str(event.data[name])))

    return after_commit
