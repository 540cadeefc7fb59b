from __future__ import annotations

import asyncio

import pytest

from gateway.caches import Coalescer, ExpiringCache


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lives_its_ttl_and_expired_ones_are_dropped_as_new_ones_arrive() -> None:
    ticks = Ticks()
    cache: ExpiringCache[int, str] = ExpiringCache(2.0, 1_000, monotonic=ticks)
    for n in range(500):
        cache.put(n, f"page {n}")
    assert cache.get(7) == "page 7"
    ticks.now = 2.5
    assert cache.get(7) is None
    cache.put(1_000, "fresh")
    # Memory follows what was read in the last ttl, not everything read before.
    assert len(cache) == 1
    assert cache.get(1_000) == "fresh"


def test_storing_again_renews_an_entry_and_the_size_is_capped_oldest_first() -> None:
    ticks = Ticks()
    cache: ExpiringCache[str, int] = ExpiringCache(10.0, 3, monotonic=ticks)
    cache.put("a", 1)
    ticks.now = 1
    cache.put("b", 2)
    cache.put("c", 3)
    ticks.now = 9
    cache.put("a", 4)  # renewed: now the newest
    cache.put("d", 5)  # over the cap: the oldest ("b") goes
    assert [cache.get(k) for k in "abcd"] == [4, None, 3, 5]
    ticks.now = 11.5  # "c" (stored at 1) has expired, "a" (stored at 9) has not
    assert cache.get("c") is None
    assert cache.get("a") == 4
    cache.pop("a")
    assert cache.get("a") is None


async def test_concurrent_callers_of_one_key_share_one_computation_and_its_outcome() -> None:
    coalescer: Coalescer[str, int] = Coalescer()
    started = 0
    release = asyncio.Event()

    async def read() -> int:
        nonlocal started
        started += 1
        await release.wait()
        return 42

    callers = [asyncio.create_task(coalescer.run("page", read)) for _ in range(16)]
    await asyncio.sleep(0)
    callers[0].cancel()  # a client that goes away does not cancel the read for the others
    await asyncio.sleep(0)
    release.set()
    assert [await c for c in callers[1:]] == [42] * 15
    assert started == 1 and len(coalescer) == 0
    assert callers[0].cancelled()

    async def fail() -> int:
        raise RuntimeError("down")

    failing = [asyncio.create_task(coalescer.run("page", fail)) for _ in range(3)]
    for caller in failing:
        with pytest.raises(RuntimeError):
            await caller
    assert await coalescer.run("page", read) == 42  # done: the next miss reads again
    assert started == 2
