"""Idempotent event handling: an inbox of processed event ids, written with the handler's effects."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Generic, Protocol, TypeVar, cast

from nats.aio.msg import Msg
from pydantic import ValidationError
from sqlalchemy import Column, DateTime, MetaData, String, Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.bulk import insert_new
from servicekit.bus import Bus, PermanentError
from servicekit.clock import Clock
from servicekit.events import CloudEvent
from servicekit.logging import get_logger
from servicekit.metrics import EVENTS_CONSUMED
from servicekit.tracing import batch_span, consuming, message_trace_headers, recording

log = get_logger(__name__)

EventHandler = Callable[[AsyncSession, CloudEvent], Awaitable[None]]

Batch = TypeVar("Batch")


class BatchKind(Protocol[Batch]):
    """How a consumer applies a fetched batch of events in one transaction: ``open`` makes the one batch object
    its handlers are handed (it can load in one query what each handler would otherwise fetch one by one, and
    collect what they make); ``finish`` writes what they collected, in the same transaction, after the last
    handler. A handler reaches the session through the batch: nothing hides in ``session.info``."""

    async def open(self, session: AsyncSession, events: list[CloudEvent]) -> Batch: ...

    async def finish(self, batch: Batch) -> None: ...


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("event_id", String(64), primary_key=True),
        Column("type", String(120), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False),
    )


class EventInbox(Generic[Batch]):
    """Applies CloudEvents to the database exactly once.

    A fetched batch is applied in one transaction (fast); if that fails, each message is
    retried alone so one bad event cannot hold back the others. A message that is not a
    valid event, or whose handler raises ``PermanentError``, is dead-lettered and
    acknowledged; any other failure is nak'ed with a delay and comes back.

    Handlers are called with the batch object ``batches`` opens (``BatchKind``), or with the session when none
    is given.

    Trace context: each handler runs in its own event's context, taken from its message's headers
    (``servicekit.tracing.consuming``), so the events it emits and its log lines carry that event's trace, even
    in a batch of events from many requests. With the SDK on, that is a CONSUMER span per event, the child of
    its producer; the batch's shared work (the inbox insert, ``prepare``/``finish``, the commit) is one span
    linked to every event's context, since it has many parents. Without the SDK no span is made: the two
    header values are bound while the handler runs.
    """

    def __init__(
        self,
        *,
        table: Table,
        sessionmaker: async_sessionmaker[AsyncSession],
        handlers: Mapping[str, Callable[[Batch, CloudEvent], Awaitable[None]]],
        clock: Clock,
        bus: Bus,
        name: str,
        retry_delay_s: float = 2.0,
        after_commit: Callable[[list[CloudEvent]], Awaitable[None]] | None = None,
        prepare: Callable[[AsyncSession, list[CloudEvent]], Awaitable[None]] | None = None,
        finish: Callable[[AsyncSession, list[CloudEvent]], Awaitable[None]] | None = None,
        batches: BatchKind[Batch] | None = None,
    ) -> None:
        """``batches`` opens the object a batch's handlers are handed (see ``BatchKind``).

        ``prepare`` runs in the batch's transaction before its handlers, with the events not applied yet:
        it can load in one query what each handler would otherwise fetch one by one. ``finish`` runs after
        them, in the same transaction: it writes in one statement what the handlers collected."""
        self.table = table
        self.sessionmaker = sessionmaker
        self.handlers = handlers
        self.clock = clock
        self.bus = bus
        self.name = name
        self.retry_delay_s = retry_delay_s
        self.after_commit = after_commit
        self.prepare = prepare
        self.finish = finish
        self.batches = batches

    async def handle_batch(self, msgs: list[Msg]) -> None:
        decoded: list[tuple[Msg, CloudEvent]] = []
        contexts: dict[str, dict[str, str]] = {}
        for msg in msgs:
            try:
                event = CloudEvent.from_json(msg.data)
            except (ValidationError, ValueError) as exc:
                await self._dead_letter(msg, f"not a CloudEvent: {exc}")
                continue
            decoded.append((msg, event))
            contexts[event.id] = message_trace_headers(msg.headers)
        if not decoded:
            return
        try:
            await self._apply([event for _, event in decoded], contexts)
        except Exception as exc:
            if len(decoded) == 1:
                await self._fail(decoded[0][0], decoded[0][1], exc)
                return
            for msg, event in decoded:
                try:
                    await self._apply([event], contexts)
                except Exception as single_exc:
                    await self._fail(msg, event, single_exc)
                else:
                    await msg.ack()
            return
        for msg, _ in decoded:
            await msg.ack()

    async def _apply(self, events: list[CloudEvent], contexts: Mapping[str, Mapping[str, str]] | None = None) -> None:
        """Apply ``events`` in one transaction, each handler in its event's trace context (``contexts``, by event
        id: the W3C headers its message came with)."""
        contexts = contexts or {}
        if not recording():
            await self._apply_in_transaction(events, contexts)
            return
        with batch_span(f"{self.name} apply", [contexts.get(event.id, {}) for event in events],
                        attributes={"messaging.system": "nats", "messaging.consumer.group.name": self.name,
                                    "messaging.batch.message_count": len(events)}):  # fmt: skip
            await self._apply_in_transaction(events, contexts)

    async def _apply_in_transaction(self, events: list[CloudEvent], contexts: Mapping[str, Mapping[str, str]]) -> None:
        applied: list[CloudEvent] = []
        async with self.sessionmaker() as session, session.begin():
            # The batch's inbox rows go in first, in one statement that skips the ids already stored: what it
            # inserted is what this transaction applies (and its rows are rolled back with it if a handler
            # fails). Sorted ids: two replicas inserting overlapping batches wait for each other in one order.
            now = self.clock.now()
            types: dict[str, str] = {}
            for event in events:
                types.setdefault(event.id, event.type)
            rows = [{"event_id": ident, "type": types[ident], "processed_at": now} for ident in sorted(types)]
            claimed = await insert_new(session, self.table, rows, key="event_id")
            fresh: list[CloudEvent] = []
            for event in events:
                if event.id not in claimed:
                    EVENTS_CONSUMED.labels(self.name, "duplicate").inc()
                    continue
                claimed.discard(event.id)
                fresh.append(event)
            if not fresh:
                return
            if self.prepare is not None:
                await self.prepare(session, fresh)
            batch = await self.batches.open(session, fresh) if self.batches is not None else cast(Batch, session)
            for event in fresh:
                handler = self.handlers.get(event.type)
                if handler is not None:
                    with consuming(contexts.get(event.id, {}), name=f"{event.type} process",
                                   attributes={"messaging.system": "nats", "messaging.message.id": event.id,
                                               "messaging.consumer.group.name": self.name}):  # fmt: skip
                        await handler(batch, event)
                    applied.append(event)
            if self.batches is not None:
                await self.batches.finish(batch)
            if self.finish is not None:
                await self.finish(session, fresh)
        EVENTS_CONSUMED.labels(self.name, "applied").inc(len(applied))
        if self.after_commit is not None and applied:
            await self.after_commit(applied)

    async def _fail(self, msg: Msg, event: CloudEvent, exc: Exception) -> None:
        if isinstance(exc, PermanentError):
            await self._dead_letter(msg, str(exc), event_id=event.id)
            return
        if _is_duplicate_key(exc):
            # Another replica applied it between our check and our commit.
            EVENTS_CONSUMED.labels(self.name, "duplicate").inc()
            await msg.ack()
            return
        log.warning("event_retry", consumer=self.name, event_id=event.id, type=event.type, error=repr(exc))
        EVENTS_CONSUMED.labels(self.name, "retry").inc()
        await msg.nak(delay=self.retry_delay_s)

    async def _dead_letter(self, msg: Msg, reason: str, event_id: str | None = None) -> None:
        log.error("event_dead_lettered", consumer=self.name, subject=msg.subject, reason=reason[:500])
        EVENTS_CONSUMED.labels(self.name, "dead_letter").inc()
        # In the event's trace: the dead letter's headers carry it on (Bus.publish), so it is found from the request.
        with consuming(message_trace_headers(msg.headers), name=f"{self.name} dead-letter"):
            await self.bus.dead_letter(
                # Our events' subjects end in the contact's id; so does the dead letter's, so an erasure finds it.
                f"crm.deadletter.{self.name}.{msg.subject.rsplit('.', 1)[-1]}",
                reason=reason,
                payload=msg.data,
                origin=msg.subject,
                # Per consumer: two consumers parking the same event made one dead letter, the other a duplicate.
                msg_id=f"{self.name}:{event_id}" if event_id else None,
            )
        await msg.ack()


def _is_duplicate_key(exc: BaseException) -> bool:
    text = repr(exc).lower()
    return ("unique" in text and "inbox" in text) or ("duplicate key" in text and "inbox" in text)
