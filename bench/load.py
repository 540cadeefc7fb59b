"""The mixed load run: the multi-process stack on PostgreSQL, driven through the gateway's /api/v1 for 10 minutes.

Operations at realistic ratios (weights below): touchpoints logged one by one and in batches (ingest key), timeline
reads, contact searches, the follow-up work queue and follow-ups completed (agent key). Reported: throughput, p50
and p99 per operation, errors (must be 0), and the resident memory of every process (services, nats-server,
PostgreSQL) at the start and at the end (growth must stay under 20%).

By default the load is open loop: ``--rate`` operations/s arrive (printed), each started on time and timed from its
arrival, at most ``--clients`` unanswered (an arrival beyond that is counted as missed). ``--peak`` runs closed loop
instead (``--clients`` workers back to back), which finds the machine's peak throughput at 100% CPU.

The stack starts in service: 2,000 contacts and 10,000 past touchpoints are seeded first. The memory baseline is
taken after a warm-up of the same load (``--warmup-s``, 120 s by default; not counted in the figures): caches that
fill once (connection pools, compiled queries, the gateway's page cache, the allocator's arenas, JetStream's
duplicate window) are not growth; what grows after them over the run would be a leak.

    python -m bench.load [--minutes 10] [--rate 15 | --peak] [--clients N] [--quick] [--backend postgres|sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import client, make_api_keys, percentiles, postmaster_pid, remove_scratch, write_results
from servicekit.devstack import SERVICES, Stack
from servicekit.testing.ports import free_port
from servicekit.testing.postgres import PostgresCluster

CHANNELS = ["phone", "in_person", "email", "sms", "live_chat", "social", "self_service"]
TYPES = ["inquiry", "complaint", "purchase", "return", "feedback", "survey_response", "support", "sales", "note"]
GROWTH_LIMIT = 0.20
# The offered rate of the open-loop run, operations/s: about half of what the same mix reached at saturation on the
# 2-core Intel machine with a durable PostgreSQL (28.7 ops/s achieved of 30 offered, with 504s), the load a capacity
# plan would run a box at. 30 was two thirds of the peak on an earlier AMD machine with commits not synced.
RATE = 15.0
# Touchpoints already stored when the run starts, as on a stack in service: timelines have pages to read, and each
# event stream is past its first 8 MB JetStream file block. nats-server keeps the block being written in memory, so
# from an empty store it grows until that block is full (about 7,000 events of a stream), then stays level.
HISTORY = 10_000
# The warm-up before the memory baseline lasts JetStream's duplicate window (Bus.duplicate_window_s, 2 min): the
# message ids nats-server remembers for de-duplication fill it once, then as many expire as arrive.
WARMUP_S = 120.0


def start_stack(
    base: Path, backend: str, extra_env: dict[str, str] | None = None
) -> tuple[Stack, PostgresCluster | None]:
    """nats-server and every installed service as processes on free ports, on PostgreSQL or SQLite files."""
    pg = PostgresCluster(base / "pg", durable=True).init().start() if backend == "postgres" else None
    overrides = {
        "TOUCHPOINT_NATS_PORT": str(free_port()),
        "TOUCHPOINT_NATS_MONITOR_PORT": str(free_port()),
        "TOUCHPOINT_ADMIN_KEY": "tp_load_" + secrets.token_urlsafe(24),
        "GATEWAY_DEV_MODE": "false",
        "GATEWAY_SECRET_KEY": secrets.token_urlsafe(32),
        **(extra_env or {}),
    }
    for spec in SERVICES:
        overrides.setdefault(f"{spec.prefix}PORT", str(free_port()))
        if pg is not None:
            overrides.setdefault(f"{spec.prefix}DATABASE_URL", pg.create_database(spec.name))
    stack = Stack.from_environment(base / "var", overrides)
    try:
        stack.start()
    except BaseException:
        stack.stop()
        if pg is not None:
            pg.destroy()
        raise
    return stack, pg


def resident_memory(stack: Stack, pg: PostgresCluster | None) -> dict[str, float]:
    """RSS in MiB of each service process and nats-server; PostgreSQL as the sum of its cluster's processes."""
    memory: dict[str, float] = {}
    for name, service in stack.services.items():
        if service.process is not None:
            memory[name] = round(psutil.Process(service.process.pid).memory_info().rss / 2**20, 1)
    if stack.nats is not None and stack.nats.process is not None:
        memory["nats-server"] = round(psutil.Process(stack.nats.process.pid).memory_info().rss / 2**20, 1)
    if (pid := postmaster_pid(pg)) is not None:
        postmaster = psutil.Process(pid)
        total = postmaster.memory_info().rss + sum(c.memory_info().rss for c in postmaster.children())
        memory["postgresql"] = round(total / 2**20, 1)
    return memory


class UnexpectedStatus(Exception):
    pass


def check(response: httpx.Response, *allowed: int) -> httpx.Response:
    if response.status_code not in allowed:
        raise UnexpectedStatus(f"{response.request.method} {response.request.url.path}: {response.status_code} "
                               f"{response.text[:200]}")  # fmt: skip
    return response


@dataclass
class Operation:
    name: str
    weight: int
    run: Callable[[random.Random], Awaitable[None]]


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    # Open loop only: arrivals not started because ``max_in_flight`` operations were still waiting for answers.
    missed: int = 0
    peak_in_flight: int = 0


async def _timed(op: Operation, rng: random.Random, tally: Tally, started: float) -> None:
    try:
        await op.run(rng)
    except Exception as exc:
        tally.errors[op.name] += 1
        if len(tally.samples) < 20:
            tally.samples.append(f"{op.name}: {type(exc).__name__}: {exc}"[:300])
        return
    tally.latencies[op.name].append(time.perf_counter() - started)


async def drive_closed(
    operations: list[Operation], *, seconds: float, clients: int, seed: int = 3
) -> tuple[Tally, float]:
    """Peak throughput: ``clients`` workers, each starting its next operation as soon as its last one answered.

    The machine runs saturated, so latencies are queueing time (Little's law: clients ÷ throughput)."""
    tally = Tally({op.name: [] for op in operations}, {op.name: 0 for op in operations})
    weights = [op.weight for op in operations]
    deadline = time.monotonic() + seconds

    async def worker(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        while time.monotonic() < deadline:
            await _timed(rng.choices(operations, weights)[0], rng, tally, time.perf_counter())

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(clients)))
    tally.peak_in_flight = clients
    return tally, time.perf_counter() - started


async def drive_open(
    operations: list[Operation], *, seconds: float, rate: float, max_in_flight: int, seed: int = 3
) -> tuple[Tally, float]:
    """A steady offered load: operations arrive at ``rate`` per second (Poisson arrivals, as from many independent
    users), each started at its arrival time whether or not earlier ones have answered.

    A latency is counted from the arrival, so a stack that falls behind shows it in its latencies, not by slowing
    the generator down (no coordinated omission). An arrival that finds ``max_in_flight`` operations unanswered is
    not started and counted as missed: the stack did not sustain the rate."""
    tally = Tally({op.name: [] for op in operations}, {op.name: 0 for op in operations})
    weights = [op.weight for op in operations]
    rng = random.Random(seed)
    in_flight: set[asyncio.Task[None]] = set()
    started = time.perf_counter()
    arrival = started
    while (arrival := arrival + rng.expovariate(rate)) < started + seconds:
        delay = arrival - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= max_in_flight:
            tally.missed += 1
            continue
        op_rng = random.Random(rng.getrandbits(64))
        task = asyncio.create_task(_timed(rng.choices(operations, weights)[0], op_rng, tally, arrival))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        tally.peak_in_flight = max(tally.peak_in_flight, len(in_flight))
    if in_flight:
        await asyncio.wait(in_flight)
    return tally, time.perf_counter() - started


def touchpoint(rng: random.Random, email: str, *, at: datetime | None = None) -> dict[str, Any]:
    kind = rng.choices(TYPES, [30, 8, 20, 4, 8, 6, 14, 5, 5])[0]
    body: dict[str, Any] = {
        "contact": {"email": email},
        "channel": rng.choice(CHANNELS),
        "direction": rng.choices(["inbound", "outbound", "internal"], [60, 35, 5])[0],
        "type": kind,
        "occurred_at": (at or datetime.now(UTC) - timedelta(seconds=rng.randrange(3600))).isoformat(),
        "subject": "Order question",
        "body": "Hello, I would like to know where my parcel is. Thank you!",
        "source": "loadgen",
        "external_id": uuid.uuid4().hex,
    }
    if kind == "purchase":
        body |= {"amount": f"{rng.randrange(5, 500)}.00", "currency": "EUR"}
    if kind == "survey_response":
        body["csat"] = rng.randint(1, 5)
    return body


async def gateway_operations(stack: Stack, http: httpx.AsyncClient, contacts: int, history: int = 0) -> list[Operation]:
    """Make an ingest and an agent key with the admin key, seed contacts and ``history`` past touchpoints (in batches
    of 50, over the last 30 days), and return the gateway mix."""
    keys = await make_api_keys(http, stack.env["TOUCHPOINT_ADMIN_KEY"], ["ingest", "agent"], "load")
    ingest, agent = keys["ingest"], keys["agent"]
    emails = [f"load.{n}.{uuid.uuid4().hex[:6]}@example.com" for n in range(contacts)]
    seeding = asyncio.Semaphore(8)

    async def seed(n: int, email: str) -> str:
        body = {
            "email": email,
            "create": {"name": f"Load Customer {n}", "tier": "premium" if n % 10 == 0 else "standard"},
        }
        async with seeding:
            made = check(await http.post("/api/v1/contacts/resolve", json=body, headers=ingest), 200, 201)
        return str(made.json()["id"])

    ids = list(await asyncio.gather(*(seed(n, email) for n, email in enumerate(emails))))

    async def post_batch(items: list[dict[str, Any]]) -> None:
        results = check(await http.post("/api/v1/interactions/batch", json={"items": items}, headers=ingest),
                        200).json()["results"]  # fmt: skip
        failed = [r for r in results if r["status"] not in (200, 201)]
        if failed:
            raise UnexpectedStatus(f"batch items failed: {failed[:2]}")

    rng, now = random.Random(7), datetime.now(UTC)

    batches = asyncio.Semaphore(2)  # a batch costs the stack about 50 single writes: two at a time stay in time

    async def seed_history() -> None:
        items = [touchpoint(rng, rng.choice(emails), at=now - timedelta(seconds=rng.randrange(30 * 86_400)))
                 for _ in range(50)]  # fmt: skip
        async with batches:
            for _ in range(5):
                # Set-up, not measured: a batch that timed out (504) and items refused for a passing cause (503) are
                # sent again after the Retry-After (5 s), as the API asks of an ingest client; the same external_id
                # is stored once, so what the timed-out attempt stored is not stored twice.
                response = await http.post("/api/v1/interactions/batch", json={"items": items}, headers=ingest)
                if response.status_code in (503, 504):
                    await asyncio.sleep(5)
                    continue
                results = check(response, 200).json()["results"]
                if any(r["status"] not in (200, 201, 503) for r in results):
                    raise UnexpectedStatus(f"seed batch items failed: {results[:2]}")
                items = [items[r["index"]] for r in results if r["status"] == 503]
                if not items:
                    return
                await asyncio.sleep(5)
            raise UnexpectedStatus(f"seed batch: {len(items)} items still refused (503) or timed out (504)")

    await asyncio.gather(*(seed_history() for _ in range(history // 50)))
    open_followups: list[str] = []

    async def log_one(rng: random.Random) -> None:
        email = rng.choice(emails) if rng.random() < 0.9 else f"new.{uuid.uuid4().hex}@example.com"
        check(await http.post("/api/v1/interactions", json=touchpoint(rng, email),
                              headers={**ingest, "Idempotency-Key": uuid.uuid4().hex}), 201)  # fmt: skip

    async def log_batch(rng: random.Random) -> None:
        await post_batch([touchpoint(rng, rng.choice(emails)) for _ in range(50)])

    async def timeline(rng: random.Random) -> None:
        contact = rng.choice(ids)
        page = check(await http.get(f"/api/v1/contacts/{contact}/timeline", params={"limit": 50}, headers=agent),
                     200).json()  # fmt: skip
        if page.get("next_cursor") and rng.random() < 0.3:
            params = {"limit": 50, "cursor": page["next_cursor"]}
            check(await http.get(f"/api/v1/contacts/{contact}/timeline", params=params, headers=agent), 200)

    async def search(rng: random.Random) -> None:
        prefix = rng.choice(["load", "Load Cust", rng.choice(emails)[:9]])
        check(await http.get("/api/v1/contacts", params={"q": prefix, "limit": 20}, headers=agent), 200)

    async def work_queue(rng: random.Random) -> None:
        params: dict[str, Any] = {"limit": 20}
        if rng.random() < 0.5:
            params["contact_id"] = rng.choice(ids)
        page = check(await http.get("/api/v1/followups", params=params, headers=agent), 200).json()
        open_followups.extend(f["id"] for f in page["items"] if f["status"] in ("scheduled", "due"))
        del open_followups[:-500]

    async def complete(rng: random.Random) -> None:
        if not open_followups:
            await work_queue(rng)
            return
        followup = open_followups.pop(rng.randrange(len(open_followups)))
        response = await http.post(f"/api/v1/followups/{followup}/complete", json={"outcome": "done"}, headers=agent)
        # Another worker may have completed the same follow-up first (the queue is shared): a 409 is the rule.
        check(response, 200, 409)

    return [
        Operation("log touchpoint", 35, log_one),
        Operation("log batch of 50", 4, log_batch),
        Operation("timeline page", 25, timeline),
        Operation("search contacts", 15, search),
        Operation("follow-up queue", 13, work_queue),
        Operation("complete follow-up", 8, complete),
    ]


async def run(
    backend: str, minutes: float, *, rate: float | None, clients: int, contacts: int, history: int, warmup_s: float
) -> dict[str, Any]:
    """``rate`` operations/s offered (open loop, at most ``clients`` in flight), or ``clients`` closed-loop workers
    at the machine's peak when ``rate`` is None."""
    base = Path(tempfile.mkdtemp(prefix="touchpoint-load-"))
    extra = {"GATEWAY_RATE_LIMIT_PER_MINUTE": "10000000", "GATEWAY_RATE_LIMIT_BURST": "1000000"}
    stack, pg = start_stack(base, backend, extra)

    async def drive(seconds: float) -> tuple[Tally, float]:
        if rate is None:
            return await drive_closed(operations, seconds=seconds, clients=clients)
        return await drive_open(operations, seconds=seconds, rate=rate, max_in_flight=clients)

    mode = f"closed loop, {clients} clients (peak)" if rate is None else f"open loop, {rate:g} ops/s offered"
    try:
        async with client(stack.services["gateway"].url, clients) as http:
            print(f"[load] seeding {contacts} contacts and {history} touchpoints through the gateway …", flush=True)
            operations = await gateway_operations(stack, http, contacts, history)
            if warmup_s > 0:
                print(f"[load] warm-up {warmup_s:.0f} s, {mode} (not counted) …", flush=True)
                await drive(warmup_s)
            memory_start = resident_memory(stack, pg)
            print(f"[load] {minutes} min, {mode} …", flush=True)
            tally, elapsed = await drive(minutes * 60)
            memory_end = resident_memory(stack, pg)
        crashed = stack.crashed()
    finally:
        stack.stop()
        if pg is not None:
            pg.destroy()
        remove_scratch(base)
    per_op = {}
    for op in operations:
        done = tally.latencies[op.name]
        per_op[op.name] = {"per_second": round(len(done) / elapsed, 1), "errors": tally.errors[op.name],
                           **percentiles(done)}  # fmt: skip
    growth = {name: round(memory_end[name] / memory_start[name] - 1, 3) for name in memory_start if name in memory_end}
    total = sum(len(v) for v in tally.latencies.values())
    errors = sum(tally.errors.values())
    figures: list[dict[str, Any]] = [
        {"name": "throughput, all operations", "value": round(total / elapsed, 1), "unit": "ops/s",
         "target": None, "better": "higher", "floor": "http_rate", "backend": backend},
        {"name": "errors", "value": errors, "unit": "", "target": 0, "better": "lower", "backend": backend},
        # Arrivals the stack left unstarted (open loop): it did not sustain the offered rate.
        {"name": "arrivals missed", "value": tally.missed, "unit": "", "target": 0 if rate is not None else None,
         "better": "lower", "backend": backend},
        {"name": "processes that crashed", "value": len(crashed), "unit": "", "target": 0, "better": "lower",
         "backend": backend},
    ]  # fmt: skip
    for name, figures_of_op in per_op.items():
        figures += [
            {"name": f"{name}: p50", "value": figures_of_op.get("p50_ms"), "unit": "ms", "floor": "http_p50_ms",
             "backend": backend, "better": "lower", "target": None},
            {"name": f"{name}: p99", "value": figures_of_op.get("p99_ms"), "unit": "ms", "floor": "http_p99_ms",
             "backend": backend, "better": "lower", "target": None},
            {"name": f"{name}: rate", "value": figures_of_op["per_second"], "unit": "ops/s", "backend": backend,
             "better": "higher", "target": None},
        ]  # fmt: skip
    for process_name, value in growth.items():
        # PostgreSQL's RSS grows as its shared buffers are first touched (a cache, by design): shown, no target.
        limit = None if process_name == "postgresql" else GROWTH_LIMIT * 100
        figures.append({"name": f"RSS growth of {process_name}", "value": round(value * 100, 1), "unit": "%",
                        "target": limit, "better": "lower", "backend": backend})  # fmt: skip
    return {
        "backend": backend,
        "through": "gateway /api/v1",
        "minutes": minutes,
        "warmup_s": warmup_s,
        "mode": "closed" if rate is None else "open",
        "offered_per_second": rate,
        "max_in_flight" if rate is not None else "clients": clients,
        "peak_in_flight": tally.peak_in_flight,
        "arrivals_missed": tally.missed,
        "seed_contacts": contacts,
        "seed_touchpoints": history,
        "elapsed_s": round(elapsed, 1),
        "operations": per_op,
        "error_samples": tally.samples,
        "crashed": crashed,
        "memory_mib_start": memory_start,
        "memory_mib_end": memory_end,
        "memory_growth": growth,
        "figures": figures,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=None, help="length of the run (default 10; quick 0.5)")
    parser.add_argument("--quick", action="store_true", help="a 30-second smoke run with a small seed")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--rate", type=float, default=RATE, help=f"operations/s offered, open loop (default {RATE:g})")
    parser.add_argument("--peak", action="store_true", help="closed loop instead: --clients workers at full speed")
    parser.add_argument("--clients", type=int, default=None,
                        help="closed loop: workers (16); open loop: operations in flight at most (64)")  # fmt: skip
    parser.add_argument(
        "--warmup-s", type=float, default=None, help=f"warm-up before the memory baseline ({WARMUP_S:g}; quick 5)"
    )
    args = parser.parse_args(argv)
    warmup_s = args.warmup_s if args.warmup_s is not None else (5.0 if args.quick else WARMUP_S)
    minutes = args.minutes if args.minutes is not None else (0.5 if args.quick else 10.0)
    contacts, history = (100, 500) if args.quick else (2000, HISTORY)
    clients = args.clients if args.clients is not None else (16 if args.peak else 64)
    rate = None if args.peak else args.rate
    os.chdir(Path(__file__).resolve().parents[1])
    result = asyncio.run(
        run(args.backend, minutes, rate=rate, clients=clients, contacts=contacts, history=history, warmup_s=warmup_s)
    )
    name = "load" + ("-peak" if args.peak else "") + ("-quick" if args.quick else "")
    write_results(name, {"quick": args.quick, **result})
    bad = [f for f in result["figures"] if f.get("target") is not None and f["value"] > f["target"]]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
