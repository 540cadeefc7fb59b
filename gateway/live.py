"""Live fan-out for timeline streams: one plain NATS subscription per gateway process.

JetStream stores the events; a core subscription on the same subjects sees each one as it is
published, which is all a live view needs. A stream that missed something (reconnect, gateway
restart) catches up from the sources by position (``Last-Event-ID``), not from this feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from servicekit.bus import Bus
from servicekit.logging import get_logger

log = get_logger(__name__)


class LiveFeed:
    def __init__(self, bus: Bus, subjects: list[str], on_event: Callable[[str], None] | None = None) -> None:
        self.bus = bus
        self.subjects = subjects
        self.on_event = on_event
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
        contact_id = msg.subject.rsplit(".", 1)[-1]
        self.poke(contact_id)
        if ".merged." in msg.subject:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self.poke(str(json.loads(msg.data)["data"]["source_id"]))

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
