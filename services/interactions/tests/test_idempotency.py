"""The Idempotency-Key records on a real database (SQLite and PostgreSQL), time moved by the clock."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from servicekit.clock import MovableClock
from servicekit.db import make_engine, make_sessionmaker
from servicekit.migrations import upgrade
from servicekit.testing.plugin import eventually
from services.interactions.idempotency import Claim, IdempotencyKeys, KeyInFlight, KeyReused, Replay
from services.interactions.models import IdempotencyRecord
from services.interactions.tests.conftest import ALEMBIC_INI


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


class Reachable:
    """The database as the service sees it: there, or away (a real connection to a port where nothing
    listens, refused as a stopped PostgreSQL refuses it)."""

    def __init__(self, up: async_sessionmaker[AsyncSession]) -> None:
        self.up = up
        self.away = make_sessionmaker(make_engine("postgresql+asyncpg://nobody@127.0.0.1:9/none"))
        self.there = True

    def __call__(self) -> AsyncSession:
        return (self.up if self.there else self.away)()


async def claimable(keys: IdempotencyKeys, key: str) -> bool:
    try:
        return isinstance(await keys.claim(caller="c", key=key, fingerprint="f"), Claim)
    except KeyInFlight:
        return False


async def test_a_release_the_database_refused_is_written_once_it_is_back(
    sessionmaker: async_sessionmaker[AsyncSession], clock: MovableClock
) -> None:
    """A request failed because the database went away, so its release could not be written either: the
    fault suite saw its client's retries answered 409 for the whole in-flight window (60 s) after a 5 s
    database outage. The release is written once the database is back."""
    db = Reachable(sessionmaker)
    keys = IdempotencyKeys(sessionmaker=db, clock=clock, ttl_s=86_400, in_flight_s=60)  # type: ignore[arg-type]
    claim = await keys.claim(caller="c", key="outage", fingerprint="f")
    assert isinstance(claim, Claim)
    db.there = False
    await keys.release(claim)  # does not raise: it is deferred
    db.there = True
    await eventually(lambda: claimable(keys, "outage"), timeout=5)
    await keys.close()


async def test_a_deferred_release_never_frees_a_claim_taken_over_since(
    sessionmaker: async_sessionmaker[AsyncSession], clock: MovableClock
) -> None:
    db = Reachable(sessionmaker)
    keys = IdempotencyKeys(sessionmaker=db, clock=clock, ttl_s=86_400, in_flight_s=60)  # type: ignore[arg-type]
    first = await keys.claim(caller="c", key="taken", fingerprint="f")
    assert isinstance(first, Claim)
    db.there = False
    await keys.release(first)
    clock.advance(seconds=61)  # the first claim is abandoned: another request takes the key over
    db.there = True
    second = await keys.claim(caller="c", key="taken", fingerprint="f")
    assert isinstance(second, Claim) and second.claimed_at != first.claimed_at
    await asyncio.sleep(1.5)  # the deferred release has had its chances
    assert not await claimable(keys, "taken"), "the deferred release freed the claim that took over"
    await keys.release(second)
    assert await claimable(keys, "taken")
    await keys.close()


async def test_a_key_released_while_its_retry_looks_at_it_is_taken_not_a_500(
    keys: IdempotencyKeys, engine: AsyncEngine
) -> None:
    """Under faults a client's retry arrived while its first request, failing, released the key: the retry's
    insert met the claim, its read found it gone, and an assertion made it a 500. Reproduced on PostgreSQL by
    holding the row while the retry looks, then deleting it (SQLite's single writer cannot interleave them)."""
    first = await keys.claim(caller="c", key="race", fingerprint="f")
    assert isinstance(first, Claim)
    if engine.dialect.name != "postgresql":
        await keys.release(first)
        assert isinstance(await keys.claim(caller="c", key="race", fingerprint="f"), Claim)
        return
    async with engine.connect() as failing_request:
        where = "caller = 'c' AND key = 'race'"
        await failing_request.execute(text(f"SELECT 1 FROM idempotency_keys WHERE {where} FOR UPDATE"))
        retry = asyncio.create_task(keys.claim(caller="c", key="race", fingerprint="f"))
        await asyncio.sleep(0.5)  # the retry met the claim and waits for the row
        await failing_request.execute(text(f"DELETE FROM idempotency_keys WHERE {where}"))
        await failing_request.commit()
        claimed = await asyncio.wait_for(retry, timeout=10)
    assert isinstance(claimed, Claim)
    with pytest.raises(KeyInFlight):  # and it holds the key now
        await keys.claim(caller="c", key="race", fingerprint="f")


async def test_the_migration_links_the_stored_responses_to_their_touchpoints(
    db_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Responses stored before the touchpoint_id column are found by an erase too (issue 18.1)."""
    if db_backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'interactions.db'}"
    else:
        url = request.getfixturevalue("pg_cluster").create_database(f"m_{uuid.uuid4().hex[:12]}")
    await asyncio.to_thread(upgrade, ALEMBIC_INI, url, "7cebc03481fd")
    touchpoint_id = uuid.uuid4()
    now = datetime(2026, 1, 5, tzinfo=UTC)
    compact = (",", ":")  # as the service stores them
    responses: dict[str, str | None] = {
        "single": json.dumps({"id": str(touchpoint_id), "subject": "Hi"}, separators=compact),
        "batch": json.dumps({"results": [{"index": 0, "id": str(uuid.uuid4())}]}, separators=compact),
        "in-flight": None,
    }
    engine = make_engine(url)
    try:
        async with engine.begin() as connection:
            for key, response in responses.items():
                await connection.execute(
                    sa.text(
                        "INSERT INTO idempotency_keys (caller, key, fingerprint, status, response, created_at,"
                        " expires_at) VALUES ('c', :key, 'f', 201, :response, :now, :now)"
                    ),
                    {"key": key, "response": response, "now": now},
                )
        await asyncio.to_thread(upgrade, ALEMBIC_INI, url)
        async with engine.connect() as connection:
            linked: dict[str, uuid.UUID | None] = dict(
                (await connection.execute(select(IdempotencyRecord.key, IdempotencyRecord.touchpoint_id))).all()  # type: ignore[call-overload]
            )
    finally:
        await engine.dispose()
    assert linked == {"single": touchpoint_id, "batch": None, "in-flight": None}
