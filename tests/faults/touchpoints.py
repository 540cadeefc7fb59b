"""Touchpoint writers and counts for the fault suite: a steady, paced stream of purchases logged one by one and
in batches through the gateway and straight onto NATS, then the count of what was stored, announced and
scheduled.

Every touchpoint is an in-person purchase, so exactly one policy applies to it (``purchase-2-2-2``: three
steps; in-person touchpoints have no response SLA, and no score or complaint triggers anything else). A
purchase of a contact whose step is still open makes no second follow-up: it is recorded on the open one (the
policy's ``repeat``), so the count is of purchases taken, each by exactly one follow-up per step. Each
carries its own ``(source, external_id)``: a careful client re-sends it until it is settled, and the service
must store it once however many times it arrived.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import nats
from nats.js.api import ConsumerConfig, DeliverPolicy
from sqlalchemy import text

from servicekit.db import make_engine
from tests.faults.harness import HANG_S, Tally, json_or_none

INGEST_SUBJECT = "crm.ingest.interactions"
POLICY = "purchase-2-2-2"
STEPS = ("thank-you", "check-in-2-weeks", "check-in-2-months")
# How each step takes a purchase while one of its follow-ups is open for the contact (the policy's ``repeat``).
REPEAT = {"thank-you": "covered", "check-in-2-weeks": "reanchored", "check-in-2-months": "reanchored"}
BATCH = 100
NATS_IN_FLIGHT = 32


class Pace:
    """A steady rate: ``take(n)`` returns when ``n`` more items may go, so a writer spreads its share of the
    stream over the whole scenario instead of finishing before the faults."""

    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self.next = time.monotonic()

    async def take(self, n: int = 1) -> None:
        now = time.monotonic()
        start = max(self.next, now)
        self.next = start + n / self.per_second
        if start > now:
            await asyncio.sleep(start - now)


@dataclass
class Plan:
    """One scenario's touchpoints: ``single`` one by one over HTTP, ``batched`` in batches of ``BATCH``, and
    ``nats`` published to ``crm.ingest.interactions``; one in ``new_every`` names its contact by a new email
    (resolved or created by the contacts service, so contacts' faults reach ingestion), the rest a contact
    of the pool by id."""

    tag: str
    pool: list[str]
    single: int
    batched: int
    nats: int
    new_every: int = 50
    source: str = ""
    started: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        self.source = f"faults-{self.tag}"

    @property
    def total(self) -> int:
        return self.single + self.batched + self.nats

    def body(self, kind: str, n: int) -> tuple[str, dict[str, Any]]:
        key = f"{kind}-{n}"
        contact: dict[str, Any] = (
            {"contact": {"email": f"tp.{self.tag}.{key}@example.com", "name": "Fault Buyer"}}
            if n % self.new_every == self.new_every - 1
            else {"contact_id": self.pool[n % len(self.pool)]}
        )
        return key, {
            **contact,
            "channel": "in_person",
            "direction": "inbound",
            "type": "purchase",
            "occurred_at": (self.started - timedelta(milliseconds=n)).isoformat(),
            "subject": "Bought a kettle",
            "amount": "49.90",
            "currency": "EUR",
            "source": self.source,
            "external_id": key,
        }


def _retry_after(response: httpx.Response, tally: Tally) -> float:
    tally.refused(response.status_code, json_or_none(response))
    if "retry-after" not in response.headers:
        if response.status_code != 504:  # a timeout names no time to wait; every other refusal must
            tally.missing_retry_after.append(f"{response.status_code} {response.text[:200]}")
        return 0.5
    try:
        return min(float(response.headers["retry-after"]), 1.0)
    except ValueError:
        tally.server_errors.append(f"bad Retry-After {response.headers['retry-after']!r}")
        return 1.0


async def _send(tally: Tally, call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response | None:
    """One HTTP attempt; None when it never got an answer (counted, and the caller sends it again)."""
    try:
        response = await call()
    except httpx.TimeoutException:
        tally.hangs += 1
        return None
    except httpx.TransportError as exc:
        tally.transport_errors[type(exc).__name__] += 1
        await asyncio.sleep(0.2)
        return None
    tally.statuses[response.status_code] += 1
    return response


async def log_singles(http: httpx.AsyncClient, plan: Plan, headers: dict[str, str], tally: Tally, rate: float) -> None:
    """One by one with an ``Idempotency-Key`` each; 409 (the same key still in flight), 429, 503 and 504 are
    waited out and sent again, with the same key and body."""
    pace = Pace(rate)
    queue = iter(range(plan.single))

    async def worker() -> None:
        for n in queue:
            await pace.take()
            key, body = plan.body("single", n)
            sent = {**headers, "Idempotency-Key": f"{plan.tag}-{key}"}

            def call(b: dict[str, Any] = body, h: dict[str, str] = sent) -> Awaitable[httpx.Response]:
                return http.post("/api/v1/interactions", json=b, headers=h)

            for _attempt in range(400):
                response = await _send(tally, call)
                if response is None:
                    continue
                if response.status_code in (200, 201):
                    tally.accepted[key] = response.json()["id"]
                    tally.successes_at.append(time.monotonic())
                    break
                if response.status_code in (409, 429, 503, 504):
                    await asyncio.sleep(_retry_after(response, tally))
                    continue
                tally.server_errors.append(f"{key}: {response.status_code} {response.text[:300]}")
                break
            else:
                tally.server_errors.append(f"{key}: never settled")

    await asyncio.gather(*(worker() for _ in range(8)))


async def log_batches(http: httpx.AsyncClient, plan: Plan, headers: dict[str, str], tally: Tally, rate: float) -> None:
    """Batches of ``BATCH``; an item answered 503 (contacts unreachable) goes again in the next attempt, a batch
    refused as a whole (503, 504, 429, dropped) goes again whole: already-stored items come back as 200."""
    pace = Pace(rate)
    starts = iter(range(0, plan.batched, BATCH))

    async def worker() -> None:
        for start in starts:
            count = min(BATCH, plan.batched - start)
            await pace.take(count)
            pending = dict(plan.body("batch", n) for n in range(start, start + count))
            for _attempt in range(400):
                items = list(pending.values())

                def call(i: list[dict[str, Any]] = items) -> Awaitable[httpx.Response]:
                    return http.post("/api/v1/interactions/batch", json={"items": i}, headers=headers)

                response = await _send(tally, call)
                if response is None:
                    continue
                if response.status_code == 200:
                    keys = list(pending)
                    waited = False
                    for result in response.json()["results"]:
                        key = keys[result["index"]]
                        if result["status"] in (200, 201):
                            tally.accepted[key] = result["id"]
                            del pending[key]
                        elif result["status"] == 503:
                            tally.statuses[-503] += 1  # an item refused for now (shown as -503)
                            tally.refused(-503, result.get("problem"))
                            waited = True
                        else:
                            tally.server_errors.append(f"{key}: item {result}")
                            del pending[key]
                    tally.successes_at.append(time.monotonic())
                    if not pending:
                        break
                    await asyncio.sleep(1.0 if waited else 0.2)
                    continue
                if response.status_code in (429, 503, 504):
                    await asyncio.sleep(_retry_after(response, tally))
                    continue
                tally.server_errors.append(f"batch at {start}: {response.status_code} {response.text[:300]}")
                break
            else:
                tally.server_errors.append(f"batch at {start}: never settled")

    await asyncio.gather(*(worker() for _ in range(4)))


async def publish(nats_url: str, plan: Plan, tally: Tally, rate: float) -> None:
    """Straight onto NATS with ``Nats-Msg-Id``: a publish is settled by JetStream's ack; one without an ack
    (the server away, a timeout) is published again with the same id."""
    nc = await nats.connect(
        nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2, error_cb=_quiet
    )
    js = nc.jetstream(timeout=2)
    pace = Pace(rate)
    gate = asyncio.Semaphore(NATS_IN_FLIGHT)

    async def one(n: int) -> None:
        key, body = plan.body("nats", n)
        payload = json.dumps(body).encode()
        async with gate:
            for _attempt in range(600):
                try:
                    await js.publish(INGEST_SUBJECT, payload, headers={"Nats-Msg-Id": f"{plan.tag}-{key}"})
                except Exception as exc:  # no ack: unknown outcome, so the same message again
                    tally.transport_errors[type(exc).__name__] += 1
                    await asyncio.sleep(0.2)
                    continue
                tally.statuses[1] += 1  # an acknowledged publish (shown as 1)
                tally.accepted[key] = ""
                tally.successes_at.append(time.monotonic())
                return
            tally.server_errors.append(f"{key}: never acknowledged")

    try:
        tasks = []
        for n in range(plan.nats):
            await pace.take()
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
    finally:
        await nc.close()


async def _quiet(_exc: Exception) -> None:
    """The outage is the point: its connection errors are counted per publish, not logged per reconnect."""


# ---- the count


async def stream_sequence(nats_url: str, stream: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        return int((await nc.jetstream().stream_info(stream)).state.last_seq)
    finally:
        await nc.close()


async def read_from(
    nats_url: str,
    stream: str,
    after_seq: int,
    done: Callable[[list[dict[str, Any]]], bool],
    subjects: str | None = None,
    timeout: float = 120,
) -> list[dict[str, Any]]:
    """The stream's messages after ``after_seq`` (a consumer of our own, straight on the stream, none of the
    services' consumers), until ``done`` says enough and nothing more came for a second, or the timeout."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_seq + 1, ack_wait=60,
            inactive_threshold=60, filter_subject=subjects,
        )  # fmt: skip
        sub = await js.pull_subscribe(subjects or ">", durable=None, stream=stream, config=config)
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(1000, timeout=0.5)
            except Exception:
                if done(got) and time.monotonic() - quiet_since > 1:
                    break
                continue
            quiet_since = time.monotonic()
            for msg in msgs:
                got.append(json.loads(msg.data))
                await msg.ack()
        await sub.unsubscribe()
        return got
    finally:
        await nc.close()


@dataclass
class Stored:
    ids: dict[str, str]  # external_id -> touchpoint id
    contact_of: dict[str, str]  # touchpoint id -> contact id
    problems: list[str] = field(default_factory=list)


async def stored_touchpoints(database_url: str, plan: Plan, accepted: dict[str, str]) -> Stored:
    """Every accepted touchpoint stored once under its ``(source, external_id)``, with the id its client was
    given; nothing stored that was not accepted."""
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(
                text("SELECT external_id, id, contact_id FROM interactions WHERE source = :s"), {"s": plan.source}
            )).all()  # fmt: skip
    finally:
        await engine.dispose()
    problems = []
    per_key = Counter(external_id for external_id, _, _ in rows)
    doubled = [k for k, n in per_key.items() if n > 1]
    if doubled:
        problems.append(f"{len(doubled)} touchpoints stored more than once, e.g. {doubled[:3]}")
    ids = {external_id: str(tid) for external_id, tid, _ in rows}
    missing = set(accepted) - set(ids)
    if missing:
        problems.append(f"{len(missing)} accepted touchpoints not stored, e.g. {sorted(missing)[:3]}")
    extra = set(ids) - set(accepted)
    if extra:
        problems.append(f"{len(extra)} stored touchpoints no client saw accepted, e.g. {sorted(extra)[:3]}")
    wrong = [k for k, given in accepted.items() if given and ids.get(k) not in (None, given)]
    if wrong:
        problems.append(f"{len(wrong)} clients were given another id than the stored one, e.g. {wrong[:3]}")
    return Stored(ids, {str(tid): str(cid) for _, tid, cid in rows}, problems)


def logged_once(events: list[dict[str, Any]], stored: Stored) -> tuple[dict[str, str], list[str]]:
    """Each stored touchpoint's ``crm.interaction.logged.v1`` exactly once; returns touchpoint id -> event id."""
    wanted = set(stored.contact_of)
    ours = [e for e in events if e.get("type") == "crm.interaction.logged.v1" and e["data"]["id"] in wanted]
    per_touchpoint = Counter(e["data"]["id"] for e in ours)
    problems = []
    twice = [t for t, n in per_touchpoint.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} touchpoints announced more than once, e.g. {twice[:3]}")
    missing = wanted - set(per_touchpoint)
    if missing:
        problems.append(f"{len(missing)} stored touchpoints never announced, e.g. {sorted(missing)[:3]}")
    return {e["data"]["id"]: e["id"] for e in ours}, problems


@dataclass(frozen=True)
class Made:
    """A follow-up as the count reads it: what made it, what later triggers it took, where it stands."""

    id: str
    contact: str
    policy: str | None
    step: str | None
    thread: str | None
    status: str
    version: int
    trigger_event: str
    later: tuple[tuple[str, str], ...]  # (event id, how it was handled) of each later trigger it took

    @property
    def trigger_events(self) -> list[str]:
        """Every trigger event this follow-up stands for: the one that made it, then those it covered or
        re-anchored to."""
        return [self.trigger_event, *(event for event, _ in self.later)]


async def followups_made(database_url: str, contacts: set[str]) -> list[Made]:
    """Every follow-up of these contacts."""
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT id, contact_id, policy, step, thread_id, status, version, trigger_event_id, triggers "
                "FROM followups"
            ))).all()  # fmt: skip
    finally:
        await engine.dispose()
    made = []
    for fid, contact, policy, step, thread, status, version, trigger, later in rows:
        if str(contact) not in contacts:
            continue
        records = json.loads(later) if isinstance(later, str) else later or []
        made.append(Made(str(fid), str(contact), policy, step, thread, status, int(version), str(trigger),
                         tuple((str(r["event_id"]), str(r["handled"])) for r in records)))  # fmt: skip
    return made


def unaccounted(made: list[Made], event_of: dict[str, str]) -> set[tuple[str, str]]:
    """The (logged event, step) pairs no follow-up stands for yet."""
    expected = {(event, step) for event in event_of.values() for step in STEPS}
    return expected - {(event, f.step or "") for f in made if f.policy == POLICY for event in f.trigger_events}


def followups_as_policies_say(made: list[Made], event_of: dict[str, str]) -> list[str]:
    """Every logged purchase is taken by exactly one ``purchase-2-2-2`` follow-up per step: made by it, or
    recorded on the one already open for its (contact, step, thread) as the policy's ``repeat`` says (thank-you
    covered, check-ins re-anchored). None lost (a pair no follow-up took), none applied twice (a pair taken
    twice, as a follow-up and a recorded trigger or two of either), no piles (two open for the same contact,
    step and thread), nothing no policy calls for."""
    expected = {(event, step) for event in event_of.values() for step in STEPS}
    taken = Counter((event, f.step or "") for f in made if f.policy == POLICY for event in f.trigger_events)
    problems = []
    if missing := expected - set(taken):
        problems.append(f"{len(missing)} (purchase event, step) taken by no follow-up, e.g. {sorted(missing)[:3]}")
    if twice := [pair for pair, n in taken.items() if n > 1]:
        problems.append(f"{len(twice)} (purchase event, step) taken more than once, e.g. {twice[:3]}")
    if extra := set(taken) - expected:
        problems.append(f"{len(extra)} follow-ups or triggers for no logged purchase, e.g. {sorted(extra)[:3]}")
    if other := [f for f in made if f.policy != POLICY or f.step not in STEPS]:
        problems.append(f"{len(other)} follow-ups no policy calls for, e.g. {[(f.policy, f.step) for f in other][:3]}")
    open_per_key = Counter((f.contact, f.step, f.thread) for f in made if f.status in ("scheduled", "due"))
    if piles := [key for key, n in open_per_key.items() if n > 1]:
        problems.append(f"{len(piles)} (contact, step, thread) with more than one open follow-up, e.g. {piles[:3]}")
    wrong_repeat = [(f.step, how) for f in made for _, how in f.later if how != REPEAT.get(f.step or "")]
    if wrong_repeat:
        problems.append(f"{len(wrong_repeat)} later triggers not handled as the policy says, e.g. {wrong_repeat[:3]}")
    return problems


async def whole_timeline(http: httpx.AsyncClient, contact_id: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        for _ in range(20):
            page = await http.get(f"/api/v1/contacts/{contact_id}/timeline", params=params, headers=headers,
                                  timeout=HANG_S)  # fmt: skip
            if page.status_code != 429:
                break
            await asyncio.sleep(1)
        assert page.status_code == 200, page.text
        body = page.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if not cursor or not body["items"]:
            return items


def new_tag() -> str:
    return uuid.uuid4().hex[:8]
