"""The Idempotency-Key records on a real database (SQLite and PostgreSQL), time moved by the clock."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.clock import MovableClock
from services.interactions.idempotency import Claim, IdempotencyKeys, KeyInFlight, KeyReused, Replay


@pytest.fixture
def keys(sessionmaker: async_sessionmaker[AsyncSession], clock: MovableClock) -> IdempotencyKeys:
    return IdempotencyKeys(sessionmaker=sessionmaker, clock=clock, ttl_s=86_400, in_flight_s=60)


async def complete(keys: IdempotencyKeys, claim: Claim | Replay, status: int, body: str) -> None:
    assert isinstance(claim, Claim)
    async with keys.sessionmaker() as session, session.begin():
        await keys.complete(session=session, claim=claim, status=status, body=body)


async def test_claim_replay_conflict_and_in_flight(keys: IdempotencyKeys, clock: MovableClock) -> None:
    claim = await keys.claim(caller="shop", key="k", fingerprint="f1")
    assert isinstance(claim, Claim)
    with pytest.raises(KeyInFlight):
        await keys.claim(caller="shop", key="k", fingerprint="f1")
    with pytest.raises(KeyReused):
        await keys.claim(caller="shop", key="k", fingerprint="f2")
    assert isinstance(await keys.claim(caller="phone", key="k", fingerprint="f2"), Claim)  # another caller
    await complete(keys, claim, 201, '{"id": 1}')
    assert await keys.claim(caller="shop", key="k", fingerprint="f1") == Replay(201, '{"id": 1}')
    with pytest.raises(KeyReused):
        await keys.claim(caller="shop", key="k", fingerprint="f2")
    clock.advance(hours=23, minutes=59)
    assert isinstance(await keys.claim(caller="shop", key="k", fingerprint="f1"), Replay)
    clock.advance(minutes=1)  # 24 h: the key is forgotten, and may be used for anything
    assert isinstance(await keys.claim(caller="shop", key="k", fingerprint="f2"), Claim)


async def test_released_and_abandoned_keys_can_be_claimed_again(keys: IdempotencyKeys, clock: MovableClock) -> None:
    claim = await keys.claim(caller="c", key="failed", fingerprint="f")
    assert isinstance(claim, Claim)
    await keys.release(claim)
    assert isinstance(await keys.claim(caller="c", key="failed", fingerprint="f"), Claim)
    assert isinstance(await keys.claim(caller="c", key="crashed", fingerprint="f"), Claim)
    clock.advance(seconds=61)  # the process holding it died: the claim is taken over
    assert isinstance(await keys.claim(caller="c", key="crashed", fingerprint="f"), Claim)
    clock.advance(days=2)
    assert await keys.purge_expired() == 2
