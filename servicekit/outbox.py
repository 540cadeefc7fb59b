"""Transactional outbox: events are rows written in the same transaction as the change.

A relay publishes them to JetStream with ``Nats-Msg-Id`` = event id (the stream's duplicate
window drops a re-send) and marks a row sent only after JetStream acknowledged it. The event's W3C trace context
(its ``traceparent``/``tracestate`` extensions, from the request that caused it) goes into the message's headers,
where consumers take it from (``servicekit.tracing``). While
NATS is down, changes still commit and their events wait; they go, in order, when it is back.
"""

from __future__ import annotations

import asyncio
import json
import uuid
import zlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    select,
    text,
    update,
)
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from servicekit.bulk import among, insert_rows
from servicekit.clock import Clock
from servicekit.db import on_commit
from servicekit.events import CloudEvent
from servicekit.logging import get_logger
from servicekit.metrics import OUTBOX_PENDING, OUTBOX_PUBLISHED
from servicekit.tracing import trace_headers_of_event

log = get_logger(__name__)

# SQLite only auto-increments an INTEGER PRIMARY KEY.
_SEQ_TYPE = BigInteger().with_variant(Integer(), "sqlite")
# session.info key: {outbox table: rows collected under Outbox.defer}.
_DEFERRED = "outbox_deferred"

# Atomic batch publish (NATS 2.12+, ADR-50): the largest batch a server takes, and the refusals that mean the
# stream or server cannot take one (disabled on the stream; Nats-Msg-Id unsupported before 2.15; a batch that
# spans streams). A batch holding an event already stored is refused as a whole (10201): sent one by one,
# the duplicate window then drops just that one.
ATOMIC_LIMIT = 1000
_ATOMIC_UNAVAILABLE = {10174, 10176, 10177}
_ATOMIC_RETRY_S = 60.0


def outbox_table(metadata: MetaData) -> Table:
    """The outbox table, declared on a service's own metadata (each service owns its database)."""
    return Table(
        "outbox",
        metadata,
        Column("seq", _SEQ_TYPE, primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False, unique=True),
        Column("subject", String(255), nullable=False),
        Column("type", String(120), nullable=False),
        Column("payload", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("published_at", DateTime(timezone=True), nullable=True),
        Index(
            "ix_outbox_unpublished",
            "seq",
            sqlite_where=text("published_at IS NULL"),
            postgresql_where=text("published_at IS NULL"),
        ),
    )


class Outbox:
    """Writes events into the outbox within the caller's transaction."""

    def __init__(self, table: Table, *, wake: Callable[[], None] | None = None) -> None:
        self.table = table
        self._wake = wake

    def set_waker(self, wake: Callable[[], None] | None) -> None:
        self._wake = wake

    def wake_after_commit(self, session: AsyncSession) -> None:
        """Wake the relay once this transaction commits: for a writer that inserted outbox rows itself
        (``servicekit.bulk.write_rows``, with its own rows in one statement)."""
        if self._wake is not None:
            on_commit(session, self._wake)

    def defer(self, session: AsyncSession) -> None:
        """Collect this transaction's events and write them in one statement just before it commits.

        For a consumer applying a batch of events in one transaction: one INSERT for the batch instead of one
        per event. The rows are still written inside the transaction (committed with it or not at all);
        ``flush`` writes them earlier, and anything reading the outbox in the transaction flushes first."""
        deferred: dict[Table, list[dict[str, Any]]] = session.sync_session.info.setdefault(_DEFERRED, {})
        deferred.setdefault(self.table, [])

    async def flush(self, session: AsyncSession) -> None:
        """Write the rows collected so far under ``defer`` (collecting goes on)."""
        rows = self.take_deferred(session)
        if rows:
            await insert_rows(session, self.table, rows)

    def take_deferred(self, session: AsyncSession) -> list[dict[str, Any]]:
        """The rows collected so far under ``defer``, for a caller that writes them itself in this transaction
        (with its own rows, in one statement: ``servicekit.bulk.write_rows``); collecting goes on."""
        rows = session.sync_session.info.get(_DEFERRED, {}).get(self.table)
        if not rows:
            return []
        taken = list(rows)
        rows.clear()
        return taken

    async def add(self, session: AsyncSession, event: CloudEvent, *, subject: str) -> None:
        await self.add_many(session, [(event, subject)])

    async def add_many(self, session: AsyncSession, events: list[tuple[CloudEvent, str]]) -> None:
        serialized = [(e.id, subject, e.type, e.to_json().decode(), e.time) for e, subject in events]
        await self.add_serialized(session, serialized)

    async def add_serialized(self, session: AsyncSession, events: list[tuple[str, str, str, str, datetime]]) -> None:
        """``add_many`` for events their writer serialized itself, each ``(event id, subject, type, the CloudEvent's
        JSON, its time)``: a writer of many events of one shape can build their JSON for less than pydantic."""
        if not events:
            return
        rows = [
            {"event_id": event_id, "subject": subject, "type": type_, "payload": payload, "created_at": at}
            for event_id, subject, type_, payload, at in events
        ]
        collected = session.sync_session.info.get(_DEFERRED, {}).get(self.table)
        if collected is not None:
            collected.extend(rows)
        else:
            # One statement for any number of events on PostgreSQL: an executemany of a batch's 500 events was a
            # Bind/Execute per row in both this process and the server.
            await insert_rows(session, self.table, rows)
        if self._wake is not None:
            on_commit(session, self._wake)

    async def redact_events(
        self, session: AsyncSession, *, subject_like: str, redact: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> None:
        """After an erase: earlier events about the person still held here carry their data. Those already
        sent are dropped; those not sent yet keep going out (consumers need them) with ``redact(data)``."""
        await self.flush(session)
        subject = self.table.c.subject.like(subject_like)
        await session.execute(delete(self.table).where(subject, self.table.c.published_at.is_not(None)))
        pending = (await session.execute(select(self.table.c.seq, self.table.c.payload).where(subject))).all()
        for row in pending:
            document = json.loads(row.payload)
            document["data"] = redact(document.get("data") or {})
            await session.execute(
                update(self.table).where(self.table.c.seq == row.seq).values(payload=json.dumps(document))
            )


@sa_event.listens_for(Session, "before_commit")
def _write_deferred(session: Session) -> None:
    # Runs inside the commit (in SQLAlchemy's greenlet under asyncio, so plain execute works): the rows
    # collected under Outbox.defer commit with the transaction that made them.
    for table, rows in session.info.pop(_DEFERRED, {}).items():
        if rows:
            session.execute(table.insert(), rows)


@sa_event.listens_for(Session, "after_soft_rollback")
def _drop_deferred(session: Session, _previous: Any) -> None:
    session.info.pop(_DEFERRED, None)


class OutboxRelay:
    """Publishes unsent outbox rows in order; one relay at a time per database."""

    def __init__(
        self,
        *,
        table: Table,
        sessionmaker: async_sessionmaker[AsyncSession],
        jetstream: Callable[[], Any],
        clock: Clock,
        name: str,
        batch: int = 500,
        poll_s: float = 0.5,
        retention_s: int = 86_400,
        publish_timeout_s: float = 5.0,
        atomic_min: int = 16,
        atomic_max: int = ATOMIC_LIMIT,
    ) -> None:
        """A round of at least ``atomic_min`` rows goes out as atomic batches of up to ``atomic_max``: with
        ``sync_interval: always`` JetStream syncs the disk for every message stored on its own but once for
        an atomic batch, so one by one a stream tops out near the disk's fsync rate (about 1,000/s on a
        loaded machine). An atomic batch costs a fixed ~15 ms, so a few rows still go one by one."""
        self.table = table
        self.sessionmaker = sessionmaker
        self._jetstream = jetstream
        self.clock = clock
        self.name = name
        self.batch = batch
        self.poll_s = poll_s
        self.retention_s = retention_s
        self.publish_timeout_s = publish_timeout_s
        self.atomic_min = max(2, atomic_min)
        self.atomic_max = max(2, min(atomic_max, ATOMIC_LIMIT))
        self._atomic_off_until = 0.0
        self._wake = asyncio.Event()
        self._lock_key = zlib.crc32(f"outbox:{name}".encode()) & 0x7FFFFFFF
        self._last_cleanup = 0.0
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Finish the current round and return (cancelling mid-query can wedge a database connection)."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        backoff = 0.2
        while not self._stopping:
            try:
                published = await self.publish_pending()
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox_publish_failed", relay=self.name, error=repr(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if published >= self.batch or self._stopping:
                continue
            await self._cleanup_if_due()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_s)
            except TimeoutError:
                pass
            self._wake.clear()

    async def publish_pending(self) -> int:
        """Publish one batch of unsent events; returns how many were acknowledged."""
        js = self._jetstream()
        if js is None:
            raise ConnectionError("not connected to NATS")
        async with self.sessionmaker() as session:
            if session.get_bind().dialect.name == "postgresql":
                async with session.begin():
                    return await self._publish_batch(session, js)
        # SQLite has one connection per process: never hold it while waiting for JetStream.
        async with self.sessionmaker() as session:
            async with session.begin():
                rows = await self._unsent(session)
            if not rows:
                return 0
            acked_through = await self._publish_in_order(js, rows)
            async with session.begin():
                return await self._mark_published(session, rows, acked_through)

    async def _unsent(self, session: AsyncSession, *, locked: bool = False) -> list[Any]:
        query = (
            select(self.table.c.seq, self.table.c.event_id, self.table.c.subject, self.table.c.payload)
            .where(self.table.c.published_at.is_(None))
            .order_by(self.table.c.seq)
            .limit(self.batch)
        )
        if locked:
            # One relay per database keeps the order: the rows come only with the transaction's advisory lock,
            # and another replica holding it gets none this round. The uncorrelated subquery is a one-time
            # filter, evaluated once before the index is read (none read without the lock), and it costs no
            # round trip of its own.
            query = query.where(text(f"(SELECT pg_try_advisory_xact_lock({self._lock_key}))"))
        rows = list((await session.execute(query)).all())
        OUTBOX_PENDING.labels(self.name).set(len(rows))
        return rows

    async def _publish_batch(self, session: AsyncSession, js: Any) -> int:
        rows = await self._unsent(session, locked=True)
        if not rows:
            return 0
        return await self._mark_published(session, rows, await self._publish_in_order(js, rows))

    async def _mark_published(self, session: AsyncSession, rows: list[Any], acked_through: int | None) -> int:
        """Mark exactly the rows that were published and acknowledged.

        Never a range (``seq <= n``): on PostgreSQL a transaction can take a lower seq and commit after a
        higher one was read, and a range would mark its row sent without it ever being published.
        """
        if acked_through is None:
            raise ConnectionError("JetStream did not acknowledge the first event")
        acked = [row.seq for row in rows if row.seq <= acked_through]
        await session.execute(
            update(self.table)
            # = ANY on PostgreSQL: one prepared statement whatever the round's size (an IN renders one each).
            .where(among(session, self.table.c.seq, acked), self.table.c.published_at.is_(None))
            .values(published_at=self.clock.now())
        )
        OUTBOX_PUBLISHED.labels(self.name).inc(len(acked))
        return len(acked)

    async def _publish_in_order(self, js: Any, rows: list[Any]) -> int | None:
        """Send the rows in order; returns the seq of the last row of the longest acknowledged prefix."""
        if len(rows) < self.atomic_min or asyncio.get_running_loop().time() < self._atomic_off_until:
            return await self._publish_each(js, rows)
        acked_through: int | None = None
        for start in range(0, len(rows), self.atomic_max):
            chunk = rows[start : start + self.atomic_max]
            stored = await self._publish_atomic(js, chunk) if len(chunk) > 1 else False
            if stored is None:
                return acked_through
            if not stored:
                rest = await self._publish_each(js, rows[start:])
                return rest if rest is not None else acked_through
            acked_through = chunk[-1].seq
        return acked_through

    async def _publish_atomic(self, js: Any, chunk: list[Any]) -> bool | None:
        """One atomic batch: True when stored whole; False when refused (nothing stored: send them one by
        one); None when no answer came (it may be stored: the next round finds out, one by one)."""
        batch_id = uuid.uuid4().hex
        core = js._nc  # the messages before the commit need no reply of their own
        for n, row in enumerate(chunk[:-1], start=1):
            headers = {"Nats-Msg-Id": row.event_id, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(n),
                       **trace_headers_of_event(row.payload)}  # fmt: skip
            await core.publish(row.subject, row.payload.encode(), headers=headers)
        last = chunk[-1]
        headers = {"Nats-Msg-Id": last.event_id, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(len(chunk)),
                   "Nats-Batch-Commit": "1", **trace_headers_of_event(last.payload)}  # fmt: skip
        try:
            # A plain request: nats-py's publish_async never resolves on an error reply to a batch commit.
            reply = await core.request(last.subject, last.payload.encode(), headers=headers,
                                       timeout=self.publish_timeout_s)  # fmt: skip
        except Exception as exc:
            log.warning("outbox_ack_missing", relay=self.name, event_id=last.event_id, error=repr(exc))
            # The next rounds go one by one: a commit that is never answered (seen after a nats-server SIGKILL)
            # would otherwise be sent again every round, and the relay stood still until its process restarted.
            self._atomic_unavailable(f"no answer to a batch commit ({type(exc).__name__})")
            return None
        try:
            answer = json.loads(reply.data)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):  # not a JetStream answer: whatever it is, one by one finds out
            self._atomic_unavailable(f"the commit was answered {reply.headers or reply.data[:100]!r}")
            return False
        error = answer.get("error")
        if error is not None:
            if error.get("err_code") in _ATOMIC_UNAVAILABLE:
                self._atomic_unavailable(str(error.get("description")))
            return False
        if answer.get("count") != len(chunk):
            # A server without atomic batches stored them as single messages, or some of them: the
            # one-by-one resend finds out which (the duplicate window drops those stored).
            self._atomic_unavailable(f"the server acknowledged {answer.get('count')} of a batch of {len(chunk)}")
            return False
        return True

    def _atomic_unavailable(self, reason: str) -> None:
        log.info("outbox_atomic_batches_off", relay=self.name, reason=reason, retry_s=_ATOMIC_RETRY_S)
        self._atomic_off_until = asyncio.get_running_loop().time() + _ATOMIC_RETRY_S

    async def _publish_each(self, js: Any, rows: list[Any]) -> int | None:
        """Send the rows one by one, pipelined, then keep the longest acknowledged prefix."""
        futures = []
        for row in rows:
            headers = {"Nats-Msg-Id": row.event_id, **trace_headers_of_event(row.payload)}
            future = await js.publish_async(row.subject, row.payload.encode(), headers=headers)
            futures.append(future)
        acked_through: int | None = None
        for row, future in zip(rows, futures, strict=True):
            try:
                await asyncio.wait_for(future, timeout=self.publish_timeout_s)
            except Exception as exc:
                log.warning("outbox_ack_missing", relay=self.name, event_id=row.event_id, error=repr(exc))
                for rest in futures:
                    rest.cancel()
                break
            acked_through = row.seq
        return acked_through

    async def _cleanup_if_due(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_cleanup < 60:
            return
        self._last_cleanup = now
        cutoff = self.clock.now() - timedelta(seconds=self.retention_s)
        try:
            async with self.sessionmaker() as session, session.begin():
                await session.execute(
                    delete(self.table).where(self.table.c.published_at.is_not(None), self.table.c.published_at < cutoff)
                )
        except Exception as exc:
            log.warning("outbox_cleanup_failed", relay=self.name, error=repr(exc))
