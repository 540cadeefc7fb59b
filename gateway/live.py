"""Live fan-out for timeline streams and the timeline caches: one plain NATS subscription per gateway process.

The gateway process whose consumer applied an event to the projection announces, after the commit, which
contacts changed (``gateway.projected.<contact_id>``, core NATS, nothing stored). Every gateway process
subscribes: its open streams re-read the page, its caches forget the contact. Announcing after the commit, not
on the producer's event, means a stream never re-reads before the item is there. A stream that missed an
announcement (reconnect, gateway restart) catches up by position (``Last-Event-ID``) and a periodic re-read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from servicekit.bus import Bus
from servicekit.events import CloudEvent
from servicekit.logging import get_logger

log = get_logger(__name__)
PROJECTED = "gateway.projected"
REVOKED = "gateway.revoked"


def changed_contacts(events: list[CloudEvent]) -> set[str]:
    """The contacts whose timeline these applied events changed (a merge changes its source's too)."""
    found: set[str] = set()
    for event in events:
        if event.subject:
            found.add(str(event.subject))
        source = event.data.get("source_id") if event.type == "crm.contact.merged.v1" else None
        if source:
            found.add(str(source))
    return found


async def announce(bus: Bus, events: list[CloudEvent]) -> None:
    """After a commit of these events: see ``announce_contacts``."""
    await announce_contacts(bus, changed_contacts(events))


async def announce_revoked(bus: Bus, key_id: str) -> None:
    """Tells every gateway process that an API key was revoked, so none trusts it from its cache any longer."""
    await _tell(bus, [f"{REVOKED}.{key_id}"])


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
        self._subs: list[Any] = []

    def listen(self, *contact_ids: str) -> asyncio.Event:
        wake = asyncio.Event()
        for contact_id in contact_ids:
            self._listeners.setdefault(contact_id, set()).add(wake)
        return wake

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
            return
        self.poke(ident)

    async def run(self) -> None:
        """Subscribe once connected (nats-py re-subscribes core subscriptions after a reconnect)."""
        while self.bus.nc is None or not self.bus.connected:
            await asyncio.sleep(0.1)
        nc = self.bus.nc
        for subject in self.subjects:
            self._subs.append(await nc.subscribe(subject, cb=self._on_message))
        log.info("live_feed_subscribed", subjects=self.subjects)
        try:
            await asyncio.Event().wait()
        finally:
            for sub in self._subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
