"""The whole stack, measured only through the public door (issue 21).

Every process of the stack runs (contacts, interactions, follow-ups with its consumers and scheduler, the gateway
with its projection and webhook consumers, nats-server with ``sync_interval: always``) on a throwaway PostgreSQL
cluster and on the default SQLite files. Traffic goes only through the gateway with an ingest key made through the
API, on 64 connections: 90% of touchpoints for customers seeded beforehand through the API, 10% for new ones, each
identified as real senders do (a third by email, a third by phone, a third by the sender's own customer id), with
bodies on all seven channels and the share of inbound inquiries, complaints and purchases that make follow-ups
under the shipped policies.

Reported, per backend:
- the sustained rate of single ``POST /api/v1/interactions``: the offered rate is stepped up (open loop, Poisson
  arrivals, at most 64 unanswered); a step is sustained when no arrival was missed or refused and, within 5 s of
  its end, every durable consumer's pending count (JetStream consumer info: not yet delivered + not yet acked) is
  at most one batch. The highest sustained step gives the rate, its POSTs' p50 and p99 (timed from arrival) and
  the CPU per touchpoint of each process (CPU times of each pid before the step and after its backlog drained);
- the time from a POST's answer to the touchpoint and every follow-up it makes being on the customer's timeline
  read through the gateway (p99), for a sample of touchpoints to new customers during a step at a fixed rate
  (300/s; each sample polled every 50 ms, so figures are ±50 ms);
- floors in the same run, same processes: the gateway's ``/healthz`` and the interactions service alone
  (``POST /v1/interactions`` with ``contact_id``), closed loop on 64 connections, beside the gateway's own closed-
  loop single POST; each figure's ratio to them;
- batches of 500 through the gateway (``POST /api/v1/interactions/batch``): touchpoints/s from the first send
  until every consumer has caught up, beside the same batches on the interactions service alone;
- the mixed load at its peak: ``bench.load.run`` in closed loop (its own stack, after this one stops).

The gateway's rate limit is raised for the run (GATEWAY_RATE_LIMIT_PER_MINUTE / _BURST): its default, 1,200
requests a minute per key, would measure the limiter (429s at 20 requests/s).

    python -m bench.e2e [--quick] [--backend postgres|sqlite|both] [--no-mixed]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats

from bench import load
from bench.common import expect, make_api_keys, percentiles, postmaster_pid, remove_scratch, write_results
from bench.http1 import LightClient
from bench.load import Operation, Tally, drive_closed, drive_open, start_stack
from bench.run import figure
from bench.timeline import CpuMeter
from servicekit.bus import DurableConsumer
from servicekit.devstack import Stack
from servicekit.testing.postgres import PostgresCluster
from services.followups.policybook import shipped_policies
from services.followups.rules import ContactFacts, PolicyDocument, decide

CONNECTIONS = 64
# What a durable consumer fetches at once (servicekit.bus.DurableConsumer): "kept up" is at most this many pending.
_BATCH_DEFAULT = next(f.default for f in fields(DurableConsumer) if f.name == "batch")
assert isinstance(_BATCH_DEFAULT, int)
ONE_BATCH: int = _BATCH_DEFAULT
KEEP_UP_WITHIN_S = 5.0
DRAIN_TIMEOUT_S = 120.0
# The fixed rate the time to the timeline is measured at (issue 21's target: p99 ≤ 500 ms at 300 touchpoints/s).
VISIBILITY_RATE = 300.0
POLL_S = 0.05
BATCH_ITEMS = 500
MIXED_BASELINE_OPS = 28.7  # where the mixed load (bench.load, PostgreSQL) saturated when issue 21 was filed

SIZES: dict[bool, dict[str, Any]] = {
    False: {"contacts": 2000, "step_s": 20.0, "rates": [100.0, 200.0, 300.0, 400.0, 500.0, 650.0, 800.0, 1000.0],
            "visibility_s": 20.0, "sample_share": 0.03, "floor_s": 15.0, "batch_s": 20.0, "batch_clients": 4,
            "mixed_minutes": 2.0, "mixed_contacts": 2000, "mixed_history": 10_000, "mixed_warmup_s": 30.0},
    True: {"contacts": 60, "step_s": 4.0, "rates": [20.0, 40.0], "visibility_s": 4.0, "sample_share": 0.25,
           "visibility_rate": 20.0, "floor_s": 2.0, "batch_s": 1.0, "batch_clients": 1, "mixed_minutes": 0.1,
           "mixed_contacts": 30, "mixed_history": 0, "mixed_warmup_s": 0.0},
}  # fmt: skip

# Issue 21's targets (2 cores, every process of the stack running and keeping up).
TARGET_SUSTAINED = {"postgres": 500.0, "sqlite": 300.0}  # touchpoints/s
TARGET_P99_MS = 100.0
TARGET_BATCH_RATE = 5000.0  # touchpoints/s
TARGET_VISIBLE_P99_MS = 500.0
TARGET_CPU_MS = 3.0  # per touchpoint, the whole stack
TARGET_MIXED_PEAK = 10 * MIXED_BASELINE_OPS

# --- what senders send ----------------------------------------------------------------------------------------------

CHANNELS = ["phone", "in_person", "email", "sms", "live_chat", "social", "self_service"]
# (type, weight): inquiries, complaints and purchases are the ones the shipped policies make follow-ups from
# (services/followups/policies: response-sla on every inbound, complaint-callback, purchase-2-2-2, low-score-recovery).
TYPE_WEIGHTS = {"inquiry": 30, "complaint": 8, "purchase": 20, "return": 4, "feedback": 8, "survey_response": 6,
                "support": 14, "sales": 5, "note": 5}  # fmt: skip
BODIES = {
    "email": (
        "Where is my order?",
        "Hello,\n\nI ordered a pair of boots on Monday (order {n}) and the tracking "
        "page has not moved since. Could you tell me when they will arrive?\n\nKind regards",
    ),
    "sms": (None, "Hi, my parcel {n} says delivered but it is not here. Can you check?"),
    "live_chat": (None, "Customer: hi, the discount code SPRING{n} is refused at checkout\nAgent: let me look"),
    "phone": ("Call about invoice {n}", "Customer called: charged twice for invoice {n}, asked for a refund."),
    "in_person": ("Store visit", "Came to the store to try the new collection; bought two shirts (receipt {n})."),
    "social": (None, "@shop loved the quick delivery of order {n}, thanks!"),
    "self_service": ("Return requested", "Return started on the portal for order {n}: wrong size."),
}


def identity_of(n: int) -> dict[str, Any]:
    """How a sender names customer ``n``: by email, phone or its own customer id, a third each."""
    kind = n % 3
    if kind == 0:
        return {"email": f"e2e.customer.{n}@example.com"}
    if kind == 1:
        return {"phone": f"+4930{n:08d}"}
    return {"external_id": {"source": "webshop", "value": f"cust-{n}"}}


def touchpoint(rng: random.Random, contact: dict[str, Any], n: int, *, kind: str | None = None,
               direction: str | None = None) -> dict[str, Any]:  # fmt: skip
    kind = kind or rng.choices(list(TYPE_WEIGHTS), list(TYPE_WEIGHTS.values()))[0]
    channel = rng.choice(CHANNELS)
    subject, text = BODIES[channel]
    body: dict[str, Any] = {
        "contact": contact,
        "channel": channel,
        "direction": direction or rng.choices(["inbound", "outbound", "internal"], [60, 35, 5])[0],
        "type": kind,
        "occurred_at": datetime.now(UTC).isoformat(),
        "body": text.format(n=n),
        "source": "e2e-bench",
        "external_id": uuid.uuid4().hex,
    }
    if subject is not None:
        body["subject"] = subject.format(n=n)
    if channel == "phone":
        body["duration_s"] = rng.randrange(60, 900)
    if kind == "purchase":
        body |= {"amount": f"{rng.randrange(5, 500)}.00", "currency": "EUR"}
    if kind == "survey_response":
        body["csat"] = rng.randint(1, 5)
    return body


def expected_followups(body: dict[str, Any], policies: list[PolicyDocument] | None = None) -> int:
    """The follow-ups the shipped policies (those the follow-ups service installs at its start) make from this
    touchpoint for a new customer, decided by the service's own rules: a step skipped for want of a channel is a
    follow-up too (shown on the timeline as skipped); a step for another event (a thread resolved) is not."""
    now, made = datetime.now(UTC), 0
    for policy in shipped_policies() if policies is None else policies:
        for step in policy.steps:
            if policy.trigger_of(step).event != "interaction.logged":
                continue
            decision = decide(policy=policy, version=1, step=step, touch=body, anchor_at=now, contact=ContactFacts(),
                              default_timezone="UTC")  # fmt: skip
            made += decision is not None
    return made


# --- the pure parts: stepping and the keep-up decision -----------------------------------------------------------


def keeps_up(pending: dict[str, int], batch: int = ONE_BATCH) -> bool:
    """Every durable consumer has at most one batch left to do."""
    return all(count <= batch for count in pending.values())


@dataclass
class Step:
    rate: float
    stored: int
    missed: int
    errors: int
    kept_up: bool
    pending_at_end: dict[str, int] = field(default_factory=dict)

    @property
    def sustained(self) -> bool:
        return self.kept_up and self.missed == 0 and self.errors == 0


def sustained_rate(steps: list[Step]) -> Step | None:
    """The highest step sustained below the first one that was not (a step that passes after a failure is luck)."""
    best = None
    for step in sorted(steps, key=lambda s: s.rate):
        if not step.sustained:
            break
        best = step
    return best


def next_rate(rates: list[float], steps: list[Step]) -> float | None:
    """The next offered rate of the ladder, or None once a step was not sustained (or the ladder is done)."""
    if steps and not steps[-1].sustained:
        return None
    return rates[len(steps)] if len(steps) < len(rates) else None


# --- the stack under test ---------------------------------------------------------------------------------------


async def pending_per_consumer(js_manager: Any) -> dict[str, int]:
    """Each durable consumer of every stream: messages not yet delivered plus delivered and not yet acked."""
    pending: dict[str, int] = {}
    for stream in await js_manager.streams_info():
        for consumer in await js_manager.consumers_info(stream.config.name):
            name = consumer.config.durable_name or consumer.name
            pending[f"{stream.config.name}/{name}"] = (consumer.num_pending or 0) + (consumer.num_ack_pending or 0)
    return pending


async def wait_pending(js_manager: Any, *, within_s: float, at_most: int) -> tuple[bool, dict[str, int], float]:
    """Wait up to ``within_s`` for every consumer to be at or under ``at_most`` pending: (reached, last, seconds)."""
    started = time.perf_counter()
    while True:
        pending = await pending_per_consumer(js_manager)
        if keeps_up(pending, at_most):
            return True, pending, time.perf_counter() - started
        if time.perf_counter() - started > within_s:
            return False, pending, time.perf_counter() - started
        await asyncio.sleep(0.1)


def cpu_meter(stack: Stack, pg: PostgresCluster | None) -> CpuMeter:
    processes = {name: s.process.pid for name, s in stack.services.items() if s.process is not None}
    if stack.nats is not None and stack.nats.process is not None:
        processes["nats-server"] = stack.nats.process.pid
    return CpuMeter(processes, postmaster_pid(pg))


def cpu_per_touchpoint(meter: CpuMeter, before: dict[str, Any], after: dict[str, Any], n: int) -> dict[str, float]:
    """ms of CPU per touchpoint of each process of the stack; the load generator shown apart, not in the total."""
    per = meter.per_call_ms(before, after, n)
    generator = per.pop("load_generator")
    if meter.postmaster is None:
        del per["postgres"]  # the SQLite stack has no database server
    per["total"] = round(per["total"] - generator, 3)
    return {**per, "load_generator (not in total)": generator}


@dataclass
class Senders:
    """The ingest and agent keys, the seeded customers and what the senders send."""

    ingest: dict[str, str]
    agent: dict[str, str]
    existing: list[int]
    contact_ids: list[str]
    fresh: int = 1_000_000  # customer numbers past the seeded ones: new customers
    policies: list[PolicyDocument] = field(default_factory=shipped_policies)
    sent: int = 0

    def next_customer(self, rng: random.Random) -> dict[str, Any]:
        if rng.random() < 0.9:
            return identity_of(rng.choice(self.existing))
        self.fresh += 1
        return identity_of(self.fresh)


async def seed(http: LightClient, stack: Stack, contacts: int) -> Senders:
    keys = await make_api_keys(http, stack.env["TOUCHPOINT_ADMIN_KEY"], ["ingest", "agent"], "e2e")
    seeding = asyncio.Semaphore(8)

    async def one(n: int) -> str:
        body = {**identity_of(n), "create": {"name": f"Customer {n}", "tier": "premium" if n % 10 == 0 else "standard"}}
        async with seeding:
            made = await http.post("/api/v1/contacts/resolve", json=body, headers=keys["ingest"])
        if made.status_code not in (200, 201):
            raise RuntimeError(f"seeding contact {n}: {made.status_code} {made.content[:200]!r}")
        return str(made.json()["id"])

    ids = list(await asyncio.gather(*(one(n) for n in range(contacts))))
    return Senders(keys["ingest"], keys["agent"], list(range(contacts)), ids)


@dataclass
class Visibility:
    """Sampled touchpoints: seconds from the POST's answer until the timeline shows it and its follow-ups."""

    seconds: list[float] = field(default_factory=list)
    timed_out: int = 0
    # What the timeline showed of a sample that never got there, for the first few: which part was missing.
    missing: list[dict[str, Any]] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


async def watch_timeline(http: LightClient, senders: Senders, answer: dict[str, Any], body: dict[str, Any],
                         answered: float, visibility: Visibility, timeout_s: float = 30.0) -> None:  # fmt: skip
    path = f"/api/v1/contacts/{answer['contact_id']}/timeline"
    touchpoint_id = str(answer["id"])
    followups = expected_followups(body, senders.policies)
    shown, made, status = False, 0, 0
    while time.perf_counter() - answered < timeout_s:
        page = await http.request("GET", path, params={"limit": "50"}, headers=senders.agent)
        status = page.status_code
        if page.status_code == 200:
            items = page.json()["items"]
            shown = any(i["kind"] == "interaction" and str(i["id"]) == touchpoint_id for i in items)
            made = sum(
                1 for i in items if i["kind"] == "followup" and str(i.get("trigger_interaction_id")) == touchpoint_id
            )
            if shown and made >= followups:
                visibility.seconds.append(time.perf_counter() - answered)
                return
        await asyncio.sleep(POLL_S)
    visibility.timed_out += 1
    if len(visibility.missing) < 5:
        visibility.missing.append({"identity": next(iter(body["contact"])), "channel": body["channel"],
                                   "type": body["type"], "direction": body["direction"], "last_status": status,
                                   "touchpoint_shown": shown, "followups_expected": followups,
                                   "followups_shown": made})  # fmt: skip


def single_post(http: LightClient, senders: Senders, *, sample_share: float = 0.0, poller: LightClient | None = None,
                visibility: Visibility | None = None) -> Operation:  # fmt: skip
    """One touchpoint through the gateway; a ``sample_share`` of them go to a new customer with an inbound inquiry,
    complaint or purchase, and their way to the timeline is watched."""

    async def post(rng: random.Random) -> None:
        senders.sent += 1
        sampled = visibility is not None and rng.random() < sample_share
        if sampled:
            senders.fresh += 1
            kind = rng.choice(["inquiry", "complaint", "purchase"])
            body = touchpoint(rng, identity_of(senders.fresh), senders.sent, kind=kind, direction="inbound")
        else:
            body = touchpoint(rng, senders.next_customer(rng), senders.sent)
        reply = await http.post("/api/v1/interactions", json=body, headers=senders.ingest)
        if reply.status_code not in (200, 201):
            raise load.UnexpectedStatus(f"POST /api/v1/interactions: {reply.status_code} {reply.content[:200]!r}")
        if sampled and poller is not None and visibility is not None:
            task = asyncio.create_task(watch_timeline(poller, senders, reply.json(), body,
                                                      time.perf_counter(), visibility))  # fmt: skip
            visibility.tasks.add(task)
            task.add_done_callback(visibility.tasks.discard)

    return Operation("POST /api/v1/interactions", 1, post)


def figures_of_tally(tally: Tally, elapsed: float) -> dict[str, Any]:
    done = [x for v in tally.latencies.values() for x in v]
    return {"per_second": round(len(done) / elapsed, 1), "errors": sum(tally.errors.values()), "missed": tally.missed,
            "error_samples": tally.samples[:5], **percentiles(done)}  # fmt: skip


async def closed(operation: Operation, seconds: float, clients: int = CONNECTIONS) -> dict[str, Any]:
    tally, elapsed = await drive_closed([operation], seconds=seconds, clients=clients)
    return figures_of_tally(tally, elapsed)


async def step_up(http: LightClient, senders: Senders, js_manager: Any, meter: CpuMeter, rates: list[float],
                  seconds: float) -> tuple[list[Step], dict[float, dict[str, Any]]]:  # fmt: skip
    steps: list[Step] = []
    detail: dict[float, dict[str, Any]] = {}
    while (rate := next_rate(rates, steps)) is not None:
        print(f"[e2e]   {rate:g} touchpoints/s offered for {seconds:g} s …", flush=True)
        before = meter.reading()
        tally, elapsed = await drive_open([single_post(http, senders)], seconds=seconds, rate=rate,
                                          max_in_flight=CONNECTIONS)  # fmt: skip
        kept_up, pending, _ = await wait_pending(js_manager, within_s=KEEP_UP_WITHIN_S, at_most=ONE_BATCH)
        drained, _, drain_s = await wait_pending(js_manager, within_s=DRAIN_TIMEOUT_S, at_most=0)
        after = meter.reading()
        result = figures_of_tally(tally, elapsed)
        stored = sum(len(v) for v in tally.latencies.values())
        step = Step(rate, stored, tally.missed, result["errors"], kept_up, pending)
        steps.append(step)
        detail[rate] = {**result, "kept_up_within_5s": kept_up, "pending_after_step": pending,
                        "drained_after_s": round(drain_s, 2), "drained": drained, "sustained": step.sustained,
                        "cpu_ms_per_touchpoint": cpu_per_touchpoint(meter, before, after, stored)}  # fmt: skip
        print(f"[e2e]   {rate:g}/s: {result['per_second']}/s, p99 {result.get('p99_ms')} ms, "
              f"{'sustained' if step.sustained else 'NOT sustained'}", flush=True)  # fmt: skip
        if not drained:
            break
    return steps, detail


async def batches(http: LightClient, senders: Senders, js_manager: Any, *, seconds: float, clients: int,
                  gateway: bool, contact_ids: list[str]) -> dict[str, Any]:  # fmt: skip
    """Batches of BATCH_ITEMS for ``seconds``: touchpoints/s from the first send until every consumer caught up."""

    async def post(rng: random.Random) -> None:
        items = []
        for _ in range(BATCH_ITEMS):
            senders.sent += 1
            item = touchpoint(rng, senders.next_customer(rng), senders.sent)
            if not gateway:
                del item["contact"]
                item["contact_id"] = rng.choice(contact_ids)
            items.append(item)
        path = "/api/v1/interactions/batch" if gateway else "/v1/interactions/batch"
        reply = await http.post(path, json={"items": items}, headers=senders.ingest if gateway else None)
        if reply.status_code != 200:
            raise load.UnexpectedStatus(f"POST {path}: {reply.status_code} {reply.content[:200]!r}")
        failed = [r for r in reply.json()["results"] if r["status"] not in (200, 201)]
        if failed:
            raise load.UnexpectedStatus(f"{len(failed)} batch items refused: {failed[:2]}")

    started = time.perf_counter()
    tally, elapsed = await drive_closed([Operation("batch", 1, post)], seconds=seconds, clients=clients)
    drained, _, _ = await wait_pending(js_manager, within_s=DRAIN_TIMEOUT_S, at_most=0)
    end_to_end = time.perf_counter() - started
    done = len(tally.latencies["batch"])
    return {"batches": done, "errors": tally.errors["batch"], "error_samples": tally.samples[:3],
            "touchpoints_per_second_answered": round(done * BATCH_ITEMS / elapsed, 1),
            "touchpoints_per_second_end_to_end": round(done * BATCH_ITEMS / end_to_end, 1) if drained else None,
            "drained": drained, **percentiles(tally.latencies["batch"])}  # fmt: skip


async def measure_stack(backend: str, sizes: dict[str, Any]) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="touchpoint-e2e-"))
    # The limiter sized for the run: its default would throttle the sender at 20 requests/s.
    extra = {"GATEWAY_RATE_LIMIT_PER_MINUTE": "100000000", "GATEWAY_RATE_LIMIT_BURST": "10000000"}
    print(f"[e2e] {backend}: starting the stack …", flush=True)
    stack, pg = start_stack(base, backend, extra)
    result: dict[str, Any] = {"backend": backend}
    try:
        assert stack.nats is not None
        connection = await nats.connect(stack.nats.url)
        js_manager = connection.jsm()
        gateway_url = stack.services["gateway"].url
        async with LightClient(gateway_url, CONNECTIONS) as http, LightClient(gateway_url, 16) as poller, \
                LightClient(stack.services["interactions"].url, CONNECTIONS) as alone:  # fmt: skip
            print(f"[e2e] {backend}: seeding {sizes['contacts']} customers through the gateway …", flush=True)
            senders = await seed(http, stack, sizes["contacts"])
            await wait_pending(js_manager, within_s=DRAIN_TIMEOUT_S, at_most=0)
            meter = cpu_meter(stack, pg)

            print(f"[e2e] {backend}: floors (64 connections, closed loop) …", flush=True)

            async def healthz(rng: random.Random) -> None:
                expect((await http.get("/healthz")).status_code, 200)

            async def interactions_alone(rng: random.Random) -> None:
                senders.sent += 1
                body = touchpoint(rng, {}, senders.sent)
                del body["contact"]
                body["contact_id"] = rng.choice(senders.contact_ids)
                expect((await alone.post("/v1/interactions", json=body)).status_code, 201)

            floors = {
                "gateway_healthz": await closed(Operation("healthz", 1, healthz), sizes["floor_s"]),
                "interactions_alone": await closed(Operation("alone", 1, interactions_alone), sizes["floor_s"]),
            }
            await wait_pending(js_manager, within_s=DRAIN_TIMEOUT_S, at_most=0)
            floors["gateway_single_closed_loop"] = await closed(single_post(http, senders), sizes["floor_s"])
            await wait_pending(js_manager, within_s=DRAIN_TIMEOUT_S, at_most=0)
            result["floors"] = floors

            print(f"[e2e] {backend}: stepping the offered rate …", flush=True)
            steps, detail = await step_up(http, senders, js_manager, meter, sizes["rates"], sizes["step_s"])
            best = sustained_rate(steps)
            result["steps"] = {f"{rate:g}": d for rate, d in detail.items()}
            result["sustained"] = None if best is None else {"rate": best.rate, **detail[best.rate]}

            rate = sizes.get("visibility_rate", VISIBILITY_RATE)
            print(f"[e2e] {backend}: time to the timeline at {rate:g}/s …", flush=True)
            visibility = Visibility()
            operation = single_post(http, senders, sample_share=sizes["sample_share"], poller=poller,
                                    visibility=visibility)  # fmt: skip
            tally, elapsed = await drive_open([operation], seconds=sizes["visibility_s"], rate=rate,
                                              max_in_flight=CONNECTIONS)  # fmt: skip
            if visibility.tasks:
                await asyncio.wait(set(visibility.tasks))
            result["visibility"] = {"offered_per_second": rate, "poll_s": POLL_S,
                                    "timed_out": visibility.timed_out, "timed_out_samples": visibility.missing,
                                    "posts": figures_of_tally(tally, elapsed),
                                    **percentiles(visibility.seconds)}  # fmt: skip
            await wait_pending(js_manager, within_s=DRAIN_TIMEOUT_S, at_most=0)

            print(f"[e2e] {backend}: batches of {BATCH_ITEMS} …", flush=True)
            result["batches"] = {
                "gateway": await batches(http, senders, js_manager, seconds=sizes["batch_s"],
                                         clients=sizes["batch_clients"], gateway=True, contact_ids=senders.contact_ids),
                "interactions_alone": await batches(alone, senders, js_manager, seconds=sizes["batch_s"],
                                                    clients=sizes["batch_clients"], gateway=False,
                                                    contact_ids=senders.contact_ids),
            }  # fmt: skip
        await connection.close()
        result["crashed"] = stack.crashed()
    finally:
        stack.stop()
        if pg is not None:
            pg.destroy()
        remove_scratch(base)
    return result


def ratio(value: Any, floor: Any) -> float | None:
    if isinstance(value, int | float) and isinstance(floor, int | float) and floor:
        return round(value / floor, 3)
    return None


def figures_of_run(run: dict[str, Any]) -> list[dict[str, Any]]:
    backend = run["backend"]
    floors = run.get("floors", {})
    healthz = floors.get("gateway_healthz", {}).get("per_second")
    alone = floors.get("interactions_alone", {})
    sustained = run.get("sustained") or {}
    cpu = sustained.get("cpu_ms_per_touchpoint", {})
    batch = run.get("batches", {})
    batch_rate = batch.get("gateway", {}).get("touchpoints_per_second_end_to_end")
    batch_alone = batch.get("interactions_alone", {}).get("touchpoints_per_second_end_to_end")
    closed_loop = floors.get("gateway_single_closed_loop", {})
    figures = [
        figure("single POST through the gateway, sustained (every consumer keeps up)", sustained.get("rate"),
               "touchpoints/s", target=TARGET_SUSTAINED[backend], better="higher", backend=backend),
        figure("single POST at the sustained rate: p50", sustained.get("p50_ms"), "ms", backend=backend,
               floor="http_p50_ms"),
        figure("single POST at the sustained rate: p99", sustained.get("p99_ms"), "ms", target=TARGET_P99_MS,
               backend=backend, floor="http_p99_ms"),
        figure("CPU per touchpoint, whole stack", cpu.get("total"), "ms", target=TARGET_CPU_MS,
               backend=backend),
        *[figure(f"CPU per touchpoint, {name}", value, "ms", backend=backend)
          for name, value in cpu.items() if name not in ("total", "load_generator (not in total)")],
        figure(f"POST answered to touchpoint and follow-ups on the timeline p99, at "
               f"{run.get('visibility', {}).get('offered_per_second', VISIBILITY_RATE):g}/s",
               run.get("visibility", {}).get("p99_ms"), "ms", target=TARGET_VISIBLE_P99_MS, backend=backend),
        figure("sampled touchpoints not on the timeline with their follow-ups within 30 s",
               run.get("visibility", {}).get("timed_out"), "", target=0, backend=backend),
        figure("batches of 500 through the gateway, end to end", batch_rate, "touchpoints/s",
               target=TARGET_BATCH_RATE, better="higher", backend=backend),
        figure("batches of 500 on the interactions service alone, end to end", batch_alone, "touchpoints/s",
               better="higher", backend=backend),
        figure("floor: gateway /healthz, 64 connections", healthz, "req/s", better="higher", backend=backend),
        figure("floor: POST /v1/interactions on the service alone (contact_id), 64 connections",
               alone.get("per_second"), "req/s", better="higher", backend=backend),
        figure("single POST through the gateway, 64 connections closed loop", closed_loop.get("per_second"),
               "req/s", better="higher", backend=backend),
        figure("sustained / interactions alone", ratio(sustained.get("rate"), alone.get("per_second")), "x",
               better="higher", backend=backend),
        figure("sustained / gateway /healthz", ratio(sustained.get("rate"), healthz), "x", better="higher",
               backend=backend),
        figure("gateway closed loop / interactions alone",
               ratio(closed_loop.get("per_second"), alone.get("per_second")), "x", better="higher", backend=backend),
        figure("gateway batches / interactions-alone batches", ratio(batch_rate, batch_alone), "x", better="higher",
               backend=backend),
        figure("processes that crashed", len(run.get("crashed", [])), "", target=0, backend=backend),
    ]  # fmt: skip
    return figures


async def measure(backends: list[str], sizes: dict[str, Any], mixed: bool) -> dict[str, Any]:
    runs = [await measure_stack(backend, sizes) for backend in backends]
    figures = [f for run in runs for f in figures_of_run(run)]
    result: dict[str, Any] = {"runs": runs, "one_batch": ONE_BATCH, "connections": CONNECTIONS}
    if mixed:
        print("[e2e] the mixed load at its peak (bench.load, closed loop) …", flush=True)
        peak = await load.run("postgres", sizes["mixed_minutes"], rate=None, clients=16,
                              contacts=sizes["mixed_contacts"], history=sizes["mixed_history"],
                              warmup_s=sizes["mixed_warmup_s"])  # fmt: skip
        throughput = next(f["value"] for f in peak["figures"] if f["name"] == "throughput, all operations")
        result["mixed_peak"] = {k: v for k, v in peak.items() if k != "figures"}
        figures.append(figure("mixed load peak (bench.load --peak), all operations", throughput, "ops/s",
                              target=TARGET_MIXED_PEAK, better="higher", backend="postgres"))  # fmt: skip
    result["figures"] = figures
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a check that it runs (about a minute)")
    parser.add_argument("--backend", choices=["postgres", "sqlite", "both"], default=None,
                        help="the stack's databases (default both; quick: postgres)")  # fmt: skip
    parser.add_argument("--no-mixed", action="store_true", help="leave out the mixed load's peak")
    args = parser.parse_args(argv)
    backend = args.backend or ("postgres" if args.quick else "both")
    backends = ["postgres", "sqlite"] if backend == "both" else [backend]
    os.chdir(Path(__file__).resolve().parents[1])
    result = asyncio.run(measure(backends, SIZES[args.quick], mixed=not args.no_mixed))
    write_results("e2e" + ("-quick" if args.quick else ""), {"quick": args.quick, **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
