from __future__ import annotations

from gateway.caches import ExpiringCache


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
