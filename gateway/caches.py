"""Short-lived caches of the gateway: entries live a few seconds and are dropped as soon as they expire."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
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
