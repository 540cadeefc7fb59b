"""Logging touchpoints, step by step: check, find each contact (the local copy of the identity directory; HTTP to
contacts, outside any transaction, for what it does not know), then store them all in one transaction with their
events and the idempotent response."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.logging import current_request_context
from servicekit.problems import ProblemError, Unprocessable, problem_body
from services.interactions.directory import ContactDirectory, ContactLink
from services.interactions.idempotency import Claim, IdempotencyKeys, Replay
from services.interactions.identities import IdentityCopy
from services.interactions.schemas import MAX_BATCH, BatchItemResult, BatchResult, ContactByIdentity, TouchpointCreate
from services.interactions.service import Outcome, Prepared, TouchpointService


class BatchTooLarge(ProblemError):
    status, slug, title = 413, "batch-too-large", "Too many items in the batch"


def invalid(exc: ValidationError) -> Unprocessable:
    errors = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")} for e in exc.errors()
    ]
    return Unprocessable("The touchpoint does not match the schema.", errors=errors)


def as_problem(exc: ProblemError) -> dict[str, Any]:
    return problem_body(exc.status, title=exc.title, detail=exc.detail, slug=exc.slug, **exc.extensions)


class Ingestion:
    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        touchpoints: TouchpointService,
        directory: ContactDirectory,
        keys: IdempotencyKeys,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.touchpoints = touchpoints
        self.directory = directory
        self.keys = keys
        self.writer = GroupCommit(sessionmaker=sessionmaker, touchpoints=touchpoints, keys=keys)
        assert touchpoints.identities is not None, "ingestion looks identities up in the local copy"
        self.identities: IdentityCopy = touchpoints.identities

    async def link_all(self, items: list[TouchpointCreate]) -> list[ContactLink | ProblemError]:
        """The contact of each item. By id: one call per distinct contact not known live, calls in parallel
        (bounded). By identity: the local copy of the identity directory first (one query), then one resolve-many
        call for the identities it does not know (one per 500 of them)."""
        # The id itself, not its text: formatting a UUID is Python code, once per item of a batch.
        keys: list[uuid.UUID | str] = [
            item.contact_id if item.contact_id is not None else item.contact.cache_key()  # type: ignore[union-attr]
            for item in items
        ]
        by_id: dict[uuid.UUID, TouchpointCreate] = {}
        by_identity: dict[str, ContactByIdentity] = {}
        for key, item in zip(keys, items, strict=True):
            if isinstance(key, uuid.UUID):
                by_id.setdefault(key, item)
            elif item.contact is not None:
                by_identity.setdefault(key, item.contact)

        async def one(contact_id: uuid.UUID) -> ContactLink | ProblemError:
            try:
                return await self.directory.link_by_id(contact_id)
            except ProblemError as exc:
                return exc

        found: dict[uuid.UUID | str, ContactLink | ProblemError] = {}
        found.update(zip(by_id, await asyncio.gather(*(one(contact_id) for contact_id in by_id)), strict=True))
        found.update(await self._link_identities(by_identity))
        return [found[key] for key in keys]

    async def _link_identities(self, contacts: dict[str, ContactByIdentity]) -> dict[str, ContactLink | ProblemError]:
        if not contacts:
            return {}
        digests = {key: self.identities.digest_of(contact) for key, contact in contacts.items()}
        async with self.sessionmaker() as session:
            known = await self.identities.lookup(session=session, digests=[d for d in digests.values() if d])
        found: dict[str, ContactLink | ProblemError] = {}
        unknown: list[str] = []
        for key, digest in digests.items():
            if digest is not None and digest in known:
                found[key] = ContactLink(known[digest], known[digest])
            else:
                unknown.append(key)
        if unknown:
            try:
                answers = await self.directory.resolve_many([contacts[key] for key in unknown])
            except ProblemError as exc:
                return {**found, **{key: exc for key in unknown}}
            for key, answer in zip(unknown, answers, strict=True):
                found[key] = answer if isinstance(answer, ProblemError) else ContactLink(answer, answer, digests[key])
        return found

    async def _link_one(self, item: TouchpointCreate, digest: bytes | None) -> ContactLink:
        """The contact of one touchpoint the local copy could not tell: asked of the contacts service."""
        if item.contact_id is not None:
            return await self.directory.link_by_id(item.contact_id)
        assert item.contact is not None
        (answer,) = await self.directory.resolve_many([item.contact])
        if isinstance(answer, ProblemError):
            raise answer
        return ContactLink(answer, answer, digest)

    async def _idempotent(
        self, claim: Claim | None, store: Callable[[AsyncSession], Awaitable[tuple[int, str]]]
    ) -> tuple[int, str]:
        try:
            async with self.sessionmaker() as session, session.begin():
                status, body = await store(session)
                if claim is not None:
                    await self.keys.complete(session=session, claim=claim, status=status, body=body)
            return status, body
        except BaseException:
            if claim is not None:
                await self.keys.release(claim)
            raise

    async def claim(self, *, caller: str, key: str | None, fingerprint: str) -> Claim | Replay | None:
        if key is None:
            return None
        return await self.keys.claim(caller=caller, key=key, fingerprint=fingerprint)

    async def log_one(self, *, item: TouchpointCreate, claim: Claim | None) -> tuple[int, str, uuid.UUID]:
        """201 with the stored touchpoint, or 200 with the one already stored under (source, external_id): the
        status, the touchpoint's JSON and its id."""
        try:
            self.touchpoints.check(item)
            # By identity: looked up in the local copy in the write transaction itself (no query, nor call, of its
            # own); only an identity the copy does not know goes to the contacts service, then is written again.
            digest = self.identities.digest_of(item.contact) if item.contact is not None else None
            link = None if digest is not None else await self._link_one(item, None)
            prepared = self.touchpoints.prepare(item=item, link=link, identity=digest)
            outcome = await self.writer.submit(prepared, claim)
            if outcome.needs_contact:
                prepared.link = await self._link_one(item, digest)
                outcome = await self.writer.submit(prepared, claim)
        except BaseException:
            if claim is not None:
                await self.keys.release(claim)
            raise
        if outcome.problem is not None:
            if claim is not None:
                await self.keys.release(claim)
            raise outcome.problem
        assert outcome.id is not None
        return outcome.status, outcome.json(), outcome.id

    async def log_batch(self, *, raw_items: list[dict[str, Any]], claim: Claim | None) -> tuple[int, str]:
        """Each item stored or refused on its own; the valid ones in one transaction."""
        results: list[BatchItemResult | None] = [None] * len(raw_items)
        try:
            if len(raw_items) > MAX_BATCH:
                raise BatchTooLarge(
                    f"A batch holds at most {MAX_BATCH} touchpoints; this one has {len(raw_items)}.",
                    max_items=MAX_BATCH,
                )
            valid: list[tuple[int, TouchpointCreate]] = []
            for index, raw in enumerate(raw_items):
                try:
                    item = TouchpointCreate.model_validate(raw)
                    self.touchpoints.check(item)
                    valid.append((index, item))
                except ValidationError as exc:
                    results[index] = _failed(index, invalid(exc))
                except ProblemError as exc:
                    results[index] = _failed(index, exc)
            links = await self.link_all([item for _, item in valid])
            prepared: list[tuple[int, Prepared]] = []
            request = current_request_context()
            for (index, item), link in zip(valid, links, strict=True):
                if isinstance(link, ProblemError):
                    results[index] = _failed(index, link)
                else:
                    prepared.append((index, self.touchpoints.prepare(item=item, link=link, request=request)))
        except BaseException:
            if claim is not None:
                await self.keys.release(claim)
            raise

        async def store(session: AsyncSession) -> tuple[int, str]:
            outcomes = await self.touchpoints.store(session=session, prepared=[p for _, p in prepared])
            for (index, _), outcome in zip(prepared, outcomes, strict=True):
                results[index] = _result(index, outcome)
            # Serialized in one call (a model_dump per item and json.dumps cost twice as much).
            body = BatchResult(results=[r for r in results if r is not None])
            return 200, body.model_dump_json(exclude_none=True)

        return await self._idempotent(claim, store)


class GroupCommit:
    """Single touchpoints logged at the same time share one transaction (group commit).

    While one transaction is being written, the touchpoints that arrive queue up and go together in the
    next: one commit (one fsync on SQLite, whose single writer would otherwise serialise every request)
    for many requests, and no added wait when requests come one at a time. If the shared transaction
    fails, each touchpoint is retried alone so one cannot fail the others."""

    MAX_ITEMS = 500

    def __init__(
        self, *, sessionmaker: async_sessionmaker[AsyncSession], touchpoints: TouchpointService, keys: IdempotencyKeys
    ) -> None:
        self.sessionmaker = sessionmaker
        self.touchpoints = touchpoints
        self.keys = keys
        self._queue: list[tuple[Prepared, Claim | None, asyncio.Future[Outcome]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, prepared: Prepared, claim: Claim | None) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append((prepared, claim, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.MAX_ITEMS], self._queue[self.MAX_ITEMS :]
            try:
                outcomes = await self._write(batch)
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][2], exc)
                    continue
                for entry in batch:
                    try:
                        (outcome,) = await self._write([entry])
                    except Exception as single_exc:
                        _settle(entry[2], single_exc)
                    else:
                        _settle(entry[2], outcome)
                continue
            for (_, _, future), outcome in zip(batch, outcomes, strict=True):
                _settle(future, outcome)

    async def _write(self, batch: list[tuple[Prepared, Claim | None, asyncio.Future[Outcome]]]) -> list[Outcome]:
        async with self.sessionmaker() as session, session.begin():
            outcomes = await self.touchpoints.store(session=session, prepared=[p for p, _, _ in batch])
            for (_, claim, _), outcome in zip(batch, outcomes, strict=True):
                if claim is not None and outcome.row is not None:
                    await self.keys.complete(
                        session=session,
                        claim=claim,
                        status=outcome.status,
                        body=outcome.json(),
                        touchpoint_id=outcome.id,
                    )
        return outcomes


def _settle(future: asyncio.Future[Outcome], result: Outcome | BaseException) -> None:
    if future.done():  # the request was cancelled meanwhile
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def _failed(index: int, exc: ProblemError) -> BatchItemResult:
    return BatchItemResult(index=index, status=exc.status, problem=as_problem(exc))


def _result(index: int, outcome: Outcome) -> BatchItemResult:
    if outcome.problem is not None:
        return _failed(index, outcome.problem)
    return BatchItemResult(index=index, status=outcome.status, id=outcome.id)
