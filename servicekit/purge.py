"""Forgetting on the bus: an erased contact's messages leave every stream, bytes and all.

Every event about a contact is published on a subject that ends in the contact's id
(``crm.<stream root>.<action>.<contact_id>``), so a contact's messages are found by subject. When a producer applies
an erasure (contacts: the erase itself; interactions and follow-ups: their handler of ``crm.contact.erased.v1``), it
adds a purge request to its outbox in the same transaction: ``crm.purge.<stream root>.<contact_id>`` on the
``CRM_PURGES`` work queue, naming the erased contact and every contact merged into it (their earlier events sit on
their own ids). The producer's own ``BusPurger`` consumes its requests and, for each message on those subjects:

- deletes it once every durable consumer of the stream whose filter matches it has acknowledged it (so the erasure
  events themselves, and what the erasure made, reach every consumer before they go);
- deletes it with JetStream's message delete, which overwrites the message in its block: a purge or a work-queue ack
  only marks it deleted and its bytes stay on disk until the block is compacted (measured on nats-server 2.15).

Messages some consumer still owes an ack, or events still in the producer's outbox, leave the request to be
retried (``retry_s``); it is acknowledged, and so removed, when no message about the contacts is left. A consumer
that never comes back (an abandoned durable) holds the purge back: it is logged, and deleting the durable frees it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nats.aio.msg import Msg
from nats.js.errors import NotFoundError
from sqlalchemy import Table, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.bus import Bus, DurableConsumer, StreamSpec
from servicekit.catalogue.bus import PURGE_REQUESTED
from servicekit.events import make_event
from servicekit.logging import get_logger

log = get_logger(__name__)

PURGE_STREAM = StreamSpec(
    name="CRM_PURGES",
    subjects=["crm.purge.>"],
    work_queue=True,
    description="Requests to remove an erased contact's messages from a stream (ids only)",
)


def purge_request(root: str, contact_ids: Sequence[str], at: datetime) -> tuple[str, str, str, str, datetime]:
    """The outbox row (``Outbox.add_serialized``) asking the ``root`` stream's owner to purge these contacts: a
    CloudEvent like every outbox row, its data the contacts' ids and nothing else."""
    ids = list(dict.fromkeys(str(c) for c in contact_ids))
    event = make_event(type=PURGE_REQUESTED, source=f"touchpoint/{root}", subject=ids[0], data={"contact_ids": ids},
                       time=at)  # fmt: skip
    return event.id, f"crm.purge.{root}.{ids[0]}", event.type, event.to_json().decode(), at


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for n, token in enumerate(want):
        if token == ">":
            return len(have) > n
        if n >= len(have) or (token != "*" and token != have[n]):
            return False
    return len(want) == len(have)


@dataclass
class BusPurger:
    """Consumes ``crm.purge.<root>.*`` and removes the named contacts' messages from ``stream``."""

    bus: Bus
    stream: str
    root: str
    sessionmaker: async_sessionmaker[AsyncSession]
    outbox: Table
    retry_s: float = 2.0
    # Other streams whose messages about a contact this purger removes too: (stream, subject with {contact}).
    also: tuple[tuple[str, str], ...] = ()

    @property
    def durable(self) -> str:
        return f"{self.root}-purge"

    def consumer(self) -> DurableConsumer:
        return DurableConsumer(
            bus=self.bus,
            stream=PURGE_STREAM.name,
            durable=self.durable,
            filter_subjects=[f"crm.purge.{self.root}.*"],
            handle_batch=self.handle_batch,
            batch=10,
            ack_wait_s=120.0,
        )

    async def handle_batch(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            try:
                contact_ids = [str(c) for c in json.loads(msg.data)["data"]["contact_ids"]]
            except (ValueError, KeyError, TypeError):
                log.error("purge_request_invalid", subject=msg.subject)
                await msg.term()
                continue
            try:
                left = await self.purge(contact_ids)
            except Exception as exc:
                log.warning("purge_failed", stream=self.stream, error=repr(exc))
                left = -1
            if left:
                await msg.nak(delay=self.retry_s)
            else:
                log.info("purged", stream=self.stream, contacts=len(contact_ids))
                await msg.ack()

    async def purge(self, contact_ids: Sequence[str]) -> int:
        """Deletes what every consumer is done with; returns how many messages (or unsent events) are left."""
        if await self._unsent(contact_ids):
            return 1
        left = await self._purge_stream(self.stream, f"crm.{self.root}.*.{{contact}}", contact_ids)
        for stream, subject in self.also:
            left += await self._purge_stream(stream, subject, contact_ids)
        return left

    async def _purge_stream(self, stream: str, subject: str, contact_ids: Sequence[str]) -> int:
        js = self.bus.jetstream()
        if js is None:
            return 1
        state = (await js.stream_info(stream)).state
        consumers = await js.consumers_info(stream)
        done_through = [(_filters(c), _done_through(c, state.last_seq)) for c in consumers]
        left = 0
        for contact_id in contact_ids:
            seq = max(int(state.first_seq), 1)
            while True:
                try:
                    found = await js.get_msg(stream, seq=seq, subject=subject.format(contact=contact_id), next=True)
                except NotFoundError:
                    break
                assert found.seq is not None and found.subject is not None
                waiting = [f for f, through in done_through if _wanted(f, found.subject) and found.seq > through]
                if waiting:
                    left += 1
                else:
                    # Without no_erase the server overwrites the message's bytes in its block.
                    await js.delete_msg(stream, found.seq)
                seq = found.seq + 1
        if left:
            held = [c.name for c in consumers if _done_through(c, state.last_seq) < state.last_seq]
            log.info("purge_waiting", stream=stream, messages=left, consumers=held)
        return left

    async def _unsent(self, contact_ids: Sequence[str]) -> bool:
        subject = self.outbox.c.subject
        unsent = or_(*(subject.like(f"crm.{self.root}.%.{c}") for c in contact_ids))
        async with self.sessionmaker() as session:
            query = select(exists().where(unsent, self.outbox.c.published_at.is_(None)))
            return bool(await session.scalar(query))


def _filters(info: Any) -> list[str]:
    config = info.config
    return list(config.filter_subjects or ([config.filter_subject] if config.filter_subject else [">"]))


def _wanted(filters: list[str], subject: str) -> bool:
    return any(subject_matches(f, subject) for f in filters)


def _done_through(info: Any, last_seq: int) -> int:
    """The stream sequence up to which the consumer has acknowledged every message it will be given. A filtered
    consumer's ack floor stops at the last message it matched, so one with nothing pending and nothing unacked
    is done with the whole stream as it was before its info was read."""
    floor = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
    if not info.num_pending and not info.num_ack_pending:
        return max(floor, int(last_seq))
    return floor
