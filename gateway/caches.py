"""Short-lived caches of the gateway: entries live a few seconds and are dropped as soon as they expire."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ExpiringCache(Generic[K, V]):
    """A map whose entries live ``ttl_s`` seconds, oldest first, at most ``max_entries`` of them.

    Expired entries are dropped whenever one is stored, so memory follows what was read in the last
    ``ttl_s`` rather than everything read since the last overflow (the 10-minute load run saw the gateway
    grow by 150% with thousands of stale timeline pages kept until a size cap cleared them)."""

    def __init__(self, ttl_s: float, max_entries: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._monotonic = monotonic
        self._entries: dict[K, tuple[float, V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None or self._monotonic() - entry[0] >= self.ttl_s:
            return None
        return entry[1]

    def put(self, key: K, value: V) -> None:
        now = self._monotonic()
        self._entries.pop(key, None)  # re-inserted at the end: the dict stays in storing order
        self._entries[key] = (now, value)
        while self._entries:  # only the expired or surplus head is visited, not every entry
            oldest = next(iter(self._entries))
            if now - self._entries[oldest][0] < self.ttl_s and len(self._entries) <= self.max_entries:
                break
            del self._entries[oldest]

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()


class Coalescer(Generic[K, V]):
    """Concurrent requests for the same missing value share one computation (single flight).

    When a cached timeline page expires, all the readers of that page miss at the same instant: 16 readers
    made 16 identical calls to every service, the stack's CPU for 16 pages at once, which was most of the
    cached benchmark's p99. The computation runs as its own task: a caller that goes away (a client that
    disconnects) does not cancel it for the others, and its error reaches every caller waiting for it."""

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._running)

    async def run(self, key: K, make: Callable[[], Awaitable[V]]) -> V:
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(make())
            self._running[key] = task
            task.add_done_callback(partial(self._done, key))
        return await asyncio.shield(task)

    def _done(self, key: K, task: asyncio.Future[V]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved: when every caller went away, the error is not "never retrieved"
