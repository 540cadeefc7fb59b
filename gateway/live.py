"""Live fan-out for timeline streams and the timeline caches: one plain NATS subscription per gateway process.

The gateway process whose consumer applied an event to the projection announces, after the commit, which
contacts changed (``gateway.projected.<contact_id>``, core NATS, nothing stored). Every gateway process
subscribes: its open streams re-read the page, its caches forget the contact. Announcing after the commit, not
on the producer's event, means a stream never re-reads before the item is there. A stream that missed an
announcement (reconnect, gateway restart) catches up by position (``Last-Event-ID``) and a periodic re-read.

The same subscription ends streams: a revoked key, a disabled user or a signed-out session is announced
(``gateway.revoked.<key, user or session id>``) and every process ends the streams opened with it. A stream also
re-checks its credential against the database every few seconds, for an announcement NATS did not deliver.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from servicekit.bus import Bus
from servicekit.catalogue.contacts import CONTACT_MERGED
from servicekit.events import CloudEvent
from servicekit.logging import get_logger
from servicekit.problems import ProblemError

log = get_logger(__name__)
PROJECTED = "gateway.projected"
REVOKED = "gateway.revoked"


def changed_contacts(events: list[CloudEvent]) -> set[str]:
    """The contacts whose timeline these applied events changed (a merge changes its source's too)."""
    found: set[str] = set()
    for event in events:
        if event.subject:
            found.add(str(event.subject))
        source = event.data.get("source_id") if event.type == CONTACT_MERGED else None
        if source:
            found.add(str(source))
    return found


async def announce(bus: Bus, events: list[CloudEvent]) -> None:
    """After a commit of these events: see ``announce_contacts``."""
    await announce_contacts(bus, changed_contacts(events))


async def announce_revoked(bus: Bus, credential_id: str) -> None:
    """Tells every gateway process that a credential ended (an API key revoked, a user disabled, a session signed
    out): none trusts it from its cache any longer, and every stream opened with it ends."""
    await _tell(bus, [f"{REVOKED}.{credential_id}"])


async def announce_contacts(bus: Bus, contact_ids: set[str]) -> None:
    """Tells every gateway process which contacts the projection just changed for (best effort: a missed
    announcement costs a stream a periodic re-read and a cache its time to live)."""
    await _tell(bus, [f"{PROJECTED}.{contact_id}" for contact_id in contact_ids])


async def _tell(bus: Bus, subjects: list[str]) -> None:
    """Empty core NATS messages to every gateway process (nothing is stored; NATS down: nobody is told)."""
    if bus.nc is None or not bus.connected:
        return
    with contextlib.suppress(Exception):
        for subject in subjects:
            await bus.nc.publish(subject, b"")


class TooManyStreams(ProblemError):
    status, slug, title = 429, "too-many-streams", "Too many open streams"


@dataclass(eq=False)
class Stream:
    """One open timeline stream: woken by its contacts' announcements, ended when a credential it was opened
    with (the key, the user, the session) ends."""

    caller: str
    credentials: frozenset[str]
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False


class LiveFeed:
    def __init__(
        self,
        bus: Bus,
        on_event: Callable[[str], None] | None = None,
        on_revoked: Callable[[str], None] | None = None,
    ) -> None:
        self.bus = bus
        self.subjects = [f"{PROJECTED}.*", f"{REVOKED}.*"]
        self.on_event = on_event
        self.on_revoked = on_revoked
        self._listeners: dict[str, set[asyncio.Event]] = {}
        self._streams: dict[str, set[Stream]] = {}  # by caller
        self._subs: list[Any] = []
        # Set once the server has the subscriptions: what was announced before then never reaches this process.
        self.subscribed = asyncio.Event()

    def open_stream(self, *, caller: str, credentials: set[str], contact_ids: list[str], limit: int) -> Stream:
        """A stream for ``caller`` woken by ``contact_ids``; a 429 problem when the caller has ``limit`` open in
        this process already (each stream holds a connection and re-reads the timeline on every change)."""
        open_now = self._streams.setdefault(caller, set())
        if len(open_now) >= limit:
            raise TooManyStreams(
                f"At most {limit} timeline streams may be open at once per caller; close one first.",
                headers={"Retry-After": "10"},
                max_streams=limit,
            )
        stream = Stream(caller=caller, credentials=frozenset(credentials))
        open_now.add(stream)
        for contact_id in contact_ids:
            self._listeners.setdefault(contact_id, set()).add(stream.wake)
        return stream

    def close_stream(self, stream: Stream) -> None:
        self.unlisten(stream.wake)
        open_now = self._streams.get(stream.caller)
        if open_now is not None:
            open_now.discard(stream)
            if not open_now:
                del self._streams[stream.caller]

    def open_streams(self, caller: str) -> int:
        return len(self._streams.get(caller, ()))

    def end_streams(self, credential_id: str) -> None:
        """Ends, in this process, every stream opened with this key, user or session."""
        for streams in self._streams.values():
            for stream in streams:
                if credential_id in stream.credentials:
                    stream.ended = True
                    stream.wake.set()

    def unlisten(self, wake: asyncio.Event) -> None:
        for contact_id in list(self._listeners):
            self._listeners[contact_id].discard(wake)
            if not self._listeners[contact_id]:
                del self._listeners[contact_id]

    def poke(self, contact_id: str) -> None:
        if self.on_event is not None:
            self.on_event(contact_id)
        for wake in self._listeners.get(contact_id, ()):
            wake.set()

    async def _on_message(self, msg: Any) -> None:
        prefix, _, ident = msg.subject.rpartition(".")
        if prefix == REVOKED:
            if self.on_revoked is not None:
                self.on_revoked(ident)
            self.end_streams(ident)
            return
        self.poke(ident)

    async def run(self) -> None:
        """Subscribe once connected (nats-py re-subscribes core subscriptions after a reconnect)."""
        while self.bus.nc is None or not self.bus.connected:
            await asyncio.sleep(0.1)
        nc = self.bus.nc
        for subject in self.subjects:
            self._subs.append(await nc.subscribe(subject, cb=self._on_message))
        await nc.flush()  # the round trip: the server has the interest once it answers
        self.subscribed.set()
        log.info("live_feed_subscribed", subjects=self.subjects)
        try:
            await asyncio.Event().wait()
        finally:
            for sub in self._subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
