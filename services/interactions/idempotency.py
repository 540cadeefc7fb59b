"""Idempotency-Key (IETF draft-ietf-httpapi-idempotency-key-header), scoped per caller.

The same key with the same request replays the first response (status and body); with another
request it is a 422; while the first request is still running, a 409. Only completed requests
are kept: a request that failed releases its key, so the client may retry it.

When the contact of a stored response is erased, the response goes (it holds the touchpoint's subject and
body) and so does the request's fingerprint (a hash of what was written about the person); the key stays,
so a replay answers 410 instead of running the request again and recreating what was erased."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from servicekit.clock import Clock, as_utc
from servicekit.db import upsert
from servicekit.logging import get_logger
from servicekit.problems import Conflict, ProblemError, Unprocessable
from services.interactions.models import IdempotencyRecord

log = get_logger(__name__)

MAX_KEY_LENGTH = 255
RELEASE_RETRY_S = 0.5
MAX_CALLER_LENGTH = 200
ANONYMOUS = "anonymous"
# The fingerprint of a key whose response was erased: no request has it, whatever it was.
ERASED = "erased"


class InvalidIdempotencyKey(ProblemError):
    status, slug, title = 400, "invalid-idempotency-key", "Invalid Idempotency-Key"


class KeyInFlight(Conflict):
    slug, title = "idempotency-key-in-flight", "A request with this Idempotency-Key is still being processed"


class KeyReused(Unprocessable):
    slug, title = "idempotency-key-reused", "Idempotency-Key reused for another request"


class ResponseErased(ProblemError):
    """A replay of a request whose touchpoint's contact was erased since. Not its 201 again (that would hand
    out the erased subject and body, or a redacted record that is not what the request made), and not the
    request run again (that would store the erased data anew): the first request did happen, and what it
    made is gone."""

    status, slug, title = 410, "idempotent-response-erased", "The response to this request was erased"


@dataclass(frozen=True)
class Claim:
    caller: str
    key: str
    fingerprint: str
    claimed_at: datetime | None = None  # the record's created_at: which claim of the key is ours


@dataclass(frozen=True)
class Replay:
    status: int
    body: str


def fingerprint(method: str, path: str, raw_body: bytes) -> str:
    """The request's identity: method, path and the JSON body in canonical form (key order and
    whitespace do not matter)."""
    try:
        canonical: Any = json.dumps(json.loads(raw_body), sort_keys=True, separators=(",", ":"))
    except (ValueError, UnicodeDecodeError):
        canonical = raw_body.hex()
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def checked_key(key: str | None, caller: str | None) -> tuple[str | None, str]:
    if key is not None and not (0 < len(key) <= MAX_KEY_LENGTH and key.isprintable()):
        raise InvalidIdempotencyKey(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters.")
    caller = (caller or "").strip() or ANONYMOUS
    if len(caller) > MAX_CALLER_LENGTH:
        raise InvalidIdempotencyKey(f"X-Touchpoint-Caller must be at most {MAX_CALLER_LENGTH} characters.")
    return key, caller


class IdempotencyKeys:
    def __init__(
        self, *, sessionmaker: async_sessionmaker[AsyncSession], clock: Clock, ttl_s: int, in_flight_s: int
    ) -> None:
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.ttl = timedelta(seconds=ttl_s)
        self.in_flight = timedelta(seconds=in_flight_s)
        self._releasing: set[asyncio.Task[None]] = set()

    async def claim(self, *, caller: str, key: str, fingerprint: str) -> Claim | Replay:
        """Take the key for this request, or say what to answer instead (raises 409 or 422)."""
        for _attempt in range(3):
            now = self.clock.now()
            async with self.sessionmaker() as session, session.begin():
                inserted = await session.execute(
                    upsert(session, IdempotencyRecord)
                    .values(caller=caller, key=key, fingerprint=fingerprint, created_at=now, expires_at=now + self.ttl)
                    .on_conflict_do_nothing()
                    .returning(col(IdempotencyRecord.key))
                )
                if inserted.first() is not None:
                    return Claim(caller, key, fingerprint, now)
                record = await session.get(
                    IdempotencyRecord, (caller, key), with_for_update=True, populate_existing=True
                )
                if record is None:
                    # Released between our insert and our read (the request holding it failed; on PostgreSQL
                    # another replica's): the key is free, so take it. This was a 500 under faults.
                    continue
                return self._decide(record, caller=caller, key=key, fingerprint=fingerprint, now=now)
        raise KeyInFlight(
            "The first request with this Idempotency-Key is still being processed; retry shortly.",
            headers={"Retry-After": "1"},
        )

    def _decide(
        self, record: IdempotencyRecord, *, caller: str, key: str, fingerprint: str, now: datetime
    ) -> Claim | Replay:
        """The key is held by ``record`` (locked by the caller's transaction): take it over or say what to answer."""
        abandoned = record.status is None and as_utc(record.created_at) + self.in_flight <= now
        if as_utc(record.expires_at) <= now or abandoned:
            record.fingerprint, record.status, record.response = fingerprint, None, None
            record.created_at, record.expires_at = now, now + self.ttl
            return Claim(caller, key, fingerprint, now)
        if record.fingerprint == ERASED:
            raise ResponseErased(
                "The first request with this Idempotency-Key succeeded, then its contact was erased; its response "
                "is not kept and the request is not run again."
            )
        if record.fingerprint != fingerprint:
            raise KeyReused("This Idempotency-Key was used for a different request; use a new key.")
        if record.status is None or record.response is None:
            raise KeyInFlight(
                "The first request with this Idempotency-Key is still being processed; retry shortly.",
                headers={"Retry-After": "1"},
            )
        return Replay(record.status, record.response)

    async def complete(
        self, *, session: AsyncSession, claim: Claim, status: int, body: str, touchpoint_id: uuid.UUID | None = None
    ) -> None:
        """Store the response in the transaction that stores the effect: both or neither. ``touchpoint_id``:
        the touchpoint the response shows, so an erase of its contact finds the response."""
        record = await session.get(IdempotencyRecord, (claim.caller, claim.key))
        if record is not None and record.fingerprint == claim.fingerprint:
            record.status, record.response, record.touchpoint_id = status, body, touchpoint_id

    async def release(self, claim: Claim) -> None:
        """Free the key of a request that failed, so its client's retry is served at once.

        When the database is what failed, the release cannot be written either; it is tried again in the
        background until it is, or the claim counts as abandoned anyway. Without that, every retry after a
        database outage met 409 for ``in_flight_s`` (60 s), long after the database was back."""
        try:
            await self._delete(claim)
        except Exception as exc:
            log.warning("idempotency_release_deferred", error=repr(exc))
            task = asyncio.create_task(self._release_later(claim))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)

    async def _release_later(self, claim: Claim) -> None:
        # Past this moment the claim is abandoned and another request may hold the key: leave it alone.
        until = as_utc(claim.claimed_at or self.clock.now()) + self.in_flight
        while self.clock.now() < until:
            await asyncio.sleep(RELEASE_RETRY_S)
            try:
                await self._delete(claim)
                return
            except Exception:
                continue

    async def _delete(self, claim: Claim) -> None:
        conditions = [
            col(IdempotencyRecord.caller) == claim.caller,
            col(IdempotencyRecord.key) == claim.key,
            col(IdempotencyRecord.status).is_(None),
        ]
        if claim.claimed_at is not None:  # only our claim, never one a later request took over
            conditions.append(col(IdempotencyRecord.created_at) == claim.claimed_at)
        async with self.sessionmaker() as session, session.begin():
            await session.execute(delete(IdempotencyRecord).where(*conditions))

    async def close(self) -> None:
        for task in list(self._releasing):
            task.cancel()

    async def purge_expired(self) -> int:
        async with self.sessionmaker() as session, session.begin():
            result = await session.execute(
                delete(IdempotencyRecord).where(col(IdempotencyRecord.expires_at) <= self.clock.now())
            )
        return int(getattr(result, "rowcount", 0) or 0)


async def erase_responses(*, session: AsyncSession, touchpoint_ids: Any) -> None:
    """The stored responses showing these touchpoints (a select of their ids) are erased: a replay is a 410."""
    await session.execute(
        update(IdempotencyRecord)
        .where(col(IdempotencyRecord.touchpoint_id).in_(touchpoint_ids))
        .values(fingerprint=ERASED, status=410, response=None)
        .execution_options(synchronize_session=False)
    )
