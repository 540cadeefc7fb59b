"""Faults under load on the real stack on PostgreSQL: nats-server, contacts, two replicas of interactions, two of
followups and the gateway as processes. Each scenario drives a steady stream of touchpoints (one by one and in
batches through the gateway, and straight onto NATS) and of contacts (one by one through the gateway) while it
applies its faults, then counts:

- every accepted touchpoint stored exactly once under its ``(source, external_id)``, with the id its client got;
- every stored touchpoint's ``crm.interaction.logged.v1`` in the stream exactly once (read with a consumer of
  our own, straight on the stream);
- exactly the follow-ups the policy calls for (three per purchase), none twice, none missing, each announced
  once on CRM_FOLLOWUPS;
- every accepted contact stored once with the id its client got, and its ``created`` event once;
- a sample contact's timeline through the gateway: all its touchpoints and follow-ups;
- no 500 (nor 502), every 503/429/409 with ``Retry-After``, nothing hung past 15 s, every process ready again.

Figures (rates, answers seen, outage and recovery times, follow-up drain) are printed (run with ``-s``).
``FAULT_TOUCHPOINTS`` (5,000 by default, the CI size; ``make faults`` sets 10,000) and ``FAULT_CONTACTS`` (200)
size each scenario.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import text

from servicekit.db import make_engine
from servicekit.devstack import start_together
from servicekit.testing.plugin import eventually
from tests.faults.harness import HANG_S, FaultStack, Tally, exactly_once, not_in_stream, replicated_stack, settle
from tests.faults.touchpoints import (
    Made,
    Pace,
    Plan,
    followups_as_policies_say,
    followups_made,
    log_batches,
    log_singles,
    logged_once,
    new_tag,
    publish,
    read_from,
    stored_touchpoints,
    stream_sequence,
    unaccounted,
    whole_timeline,
)

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.stack, pytest.mark.timeout(600)]

TOUCHPOINTS = int(os.environ.get("FAULT_TOUCHPOINTS", "5000"))
CONTACTS = int(os.environ.get("FAULT_CONTACTS", "200"))
POOL = 100  # contacts the touchpoints are logged for (by id), made before the load starts
DRAIN_S = 240.0  # how long the follow-ups may take to catch up once the load has stopped


@pytest.fixture(scope="module")
def stack() -> Any:
    with replicated_stack(replicas=2) as running:
        yield running


@dataclass
class Fault:
    name: str
    inject: Callable[[], None]
    lift: Callable[[], None]
    hold_s: float = 3.0
    lifted_at: float | None = None
    outage_s: float = 0.0


@dataclass
class Run:
    plan: Plan
    tallies: dict[str, Tally]
    faults: list[Fault]
    elapsed: float
    figures: dict[str, Any] = field(default_factory=dict)

    def seen(self, *statuses: int, writers: tuple[str, ...] = ("single", "batch", "contacts")) -> int:
        return sum(self.tallies[w].statuses[s] for w in writers for s in statuses)


async def make_key(http: httpx.AsyncClient, stack: FaultStack, role: str) -> dict[str, str]:
    made = await http.post("/api/v1/api-keys", json={"name": f"faults-{role}-{new_tag()}", "role": role},
                           headers=stack.admin)  # fmt: skip
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['key']}"}


def contact_id_of(response: httpx.Response) -> str | None:
    body = response.json()
    return body.get("id") if response.status_code == 201 else body.get("contact_id")


async def make_pool(http: httpx.AsyncClient, headers: dict[str, str], tag: str) -> list[str]:
    tally = Tally()

    async def send(client: httpx.AsyncClient, email: str) -> httpx.Response:
        return await client.post("/api/v1/contacts", json={"name": "Pool Buyer", "emails": [email]}, headers=headers)

    emails = [f"pool.{tag}.{n}@example.com" for n in range(POOL)]
    await asyncio.gather(*(settle(http, e, send, tally, contact_id_of) for e in emails))
    assert not tally.problems() and len(tally.accepted) == POOL, tally.problems()
    return [tally.accepted[e] for e in emails]


async def write_contacts(
    http: httpx.AsyncClient, tag: str, headers: dict[str, str], tally: Tally, rate: float
) -> list[str]:
    """Contacts one by one through the gateway, each settled by a careful client (a 409 after an unknown
    outcome names the contact the first attempt made)."""
    emails = [f"fault.{tag}.{n}@example.com" for n in range(CONTACTS)]
    pace = Pace(rate)
    queue = iter(emails)

    async def send(client: httpx.AsyncClient, email: str) -> httpx.Response:
        return await client.post("/api/v1/contacts", json={"name": "Fault Person", "emails": [email]},
                                 headers=headers)  # fmt: skip

    async def worker() -> None:
        for email in queue:
            await pace.take()
            await settle(http, email, send, tally, contact_id_of)

    await asyncio.gather(*(worker() for _ in range(8)))
    return emails


async def apply_faults(faults: list[Fault], *, after_s: float, gap_s: float) -> None:
    await asyncio.sleep(after_s)
    for fault in faults:
        started = time.monotonic()
        await asyncio.to_thread(fault.inject)
        await asyncio.sleep(fault.hold_s)
        fault.lifted_at = time.monotonic()
        await asyncio.to_thread(fault.lift)
        fault.outage_s = time.monotonic() - started
        await asyncio.sleep(gap_s)


async def run(stack: FaultStack, name: str, faults: list[Fault], *, seconds: float, gap_s: float = 1.0) -> Run:
    """The load for ``seconds`` (paced), the faults one after another from a fifth of the way in, then the
    count. Returns what the clients saw, for the scenario's own checks."""
    assert stack.stack.nats is not None
    nats_url = stack.stack.nats.url
    tag = new_tag()
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=HANG_S) as http:
        ingest, agent = await make_key(http, stack, "ingest"), await make_key(http, stack, "agent")
        pool = await make_pool(http, agent, tag)
        single = TOUCHPOINTS // 20
        over_nats = TOUCHPOINTS * 2 // 5
        plan = Plan(tag, pool, single=single, batched=TOUCHPOINTS - single - over_nats, nats=over_nats)
        streams = ("CRM_INTERACTIONS", "CRM_CONTACTS", "CRM_FOLLOWUPS")
        after = {s: await stream_sequence(nats_url, s) for s in streams}
        tallies = {w: Tally() for w in ("single", "batch", "nats", "contacts")}
        started = time.monotonic()
        faulting = asyncio.create_task(apply_faults(faults, after_s=seconds / 5, gap_s=gap_s))
        writers = asyncio.gather(
            log_singles(http, plan, ingest, tallies["single"], plan.single / seconds),
            log_batches(http, plan, ingest, tallies["batch"], plan.batched / seconds),
            publish(nats_url, plan, tallies["nats"], plan.nats / seconds),
            write_contacts(http, tag, agent, tallies["contacts"], CONTACTS / seconds),
        )
        try:
            *_, emails = await writers
        finally:
            await faulting
        elapsed = time.monotonic() - started
        result = Run(plan, tallies, faults, elapsed)
        result.figures["finished_s"] = {w: round(max(t.successes_at) - started, 1) for w, t in tallies.items()}
        load_ended = max(t for tally in tallies.values() for t in tally.successes_at)
        for fault in faults:
            assert fault.lifted_at is not None and load_ended > fault.lifted_at + 1, (
                f"the load ended before {fault.name} was over: size the scenario longer"
            )
        print_run(name, result)

        problems = {w: t.problems() for w, t in tallies.items() if t.problems()}
        assert not problems, problems
        for writer, count in (("single", plan.single), ("batch", plan.batched), ("nats", plan.nats),
                              ("contacts", CONTACTS)):  # fmt: skip
            assert len(tallies[writer].accepted) == count, f"{writer}: {len(tallies[writer].accepted)} of {count}"
        await all_ready(stack)

        accepted = {k: v for w in ("single", "batch", "nats") for k, v in tallies[w].accepted.items()}
        stored = await stored_touchpoints(stack.url_of("interactions"), plan, accepted)
        assert not stored.problems, stored.problems
        wanted = set(stored.contact_of)
        events = await read_from(
            nats_url,
            "CRM_INTERACTIONS",
            after["CRM_INTERACTIONS"],
            lambda got: wanted <= {e["data"].get("id") for e in got if e["type"] == "crm.interaction.logged.v1"},
        )
        event_of, problems_found = logged_once(events, stored)
        assert not problems_found, problems_found

        contacts = set(stored.contact_of.values())
        made = await drain_followups(stack, contacts, event_of, result)
        assert not (wrong := followups_as_policies_say(made, event_of)), wrong
        await followup_events_once(nats_url, after["CRM_FOLLOWUPS"], made)
        await contacts_stored_once(stack, tag, emails, tallies["contacts"], after["CRM_CONTACTS"])

        sample = pool[0]
        touchpoints_of_sample = {t for t, c in stored.contact_of.items() if c == sample}
        followups_of_sample = {f.id for f in made if f.contact == sample}

        async def complete_timeline() -> list[dict[str, Any]]:
            # The gateway's projection catches up from its durable consumers, whatever the faults did to them.
            items = await whole_timeline(http, sample, agent)
            shown = {kind: {i["id"] for i in items if i["kind"] == kind} for kind in ("interaction", "followup")}
            complete = shown == {"interaction": touchpoints_of_sample, "followup": followups_of_sample}
            return items if complete else []

        timeline: list[dict[str, Any]]
        try:
            timeline = cast(list[dict[str, Any]], await eventually(complete_timeline, timeout=60.0, interval=1.0))
        except AssertionError:
            timeline = await whole_timeline(http, sample, agent)  # to say below what is missing
        shown = Counter(item["kind"] for item in timeline)
        assert {i["id"] for i in timeline if i["kind"] == "interaction"} == touchpoints_of_sample, shown
        assert {i["id"] for i in timeline if i["kind"] == "followup"} == followups_of_sample, shown
        assert len(timeline) == len({(i["kind"], i["id"]) for i in timeline}), "an item shown twice"
        print(f"[faults] {name}: counted {len(stored.ids)} touchpoints stored once, {len(event_of)} logged "
              f"events once, taken by {len(made)} follow-ups as the policy says (drained "
              f"{result.figures['drain_s']:.1f} s after the load), {CONTACTS} contacts; sample timeline "
              f"{dict(shown)}")  # fmt: skip
    return result


async def drain_followups(stack: FaultStack, contacts: set[str], event_of: dict[str, str], result: Run) -> list[Made]:
    """Wait until every logged purchase is taken by a follow-up for each step of the policy (made, covered or
    re-anchored; then a moment more, for late duplicates); the time it took after the load is a figure."""
    url = stack.url_of("followups")
    started = time.monotonic()
    made = await followups_made(url, contacts)
    while unaccounted(made, event_of) and time.monotonic() - started < DRAIN_S:
        await asyncio.sleep(1)
        made = await followups_made(url, contacts)
    result.figures["drain_s"] = time.monotonic() - started
    await asyncio.sleep(2)
    return await followups_made(url, contacts)


async def followup_events_once(nats_url: str, after_seq: int, made: list[Made]) -> None:
    """Each follow-up made is announced once (``scheduled``, or ``skipped`` when no channel is left), and once
    more (``scheduled``, its next version) for each later trigger it covered or re-anchored to: no change
    unannounced, none announced twice."""
    made_types = {"crm.followup.scheduled.v1", "crm.followup.skipped.v1"}
    wanted = {f.id: 1 + len(f.later) for f in made}

    def versions(events: list[dict[str, Any]]) -> Counter[tuple[str, int]]:
        return Counter(
            (e["data"]["id"], e["data"]["version"])
            for e in events
            if e["type"] in made_types and e["data"]["id"] in wanted
        )

    def enough(events: list[dict[str, Any]]) -> bool:
        per_followup = Counter(fid for fid, _ in versions(events))
        return all(per_followup[fid] >= n for fid, n in wanted.items())

    counted = versions(await read_from(nats_url, "CRM_FOLLOWUPS", after_seq, enough))
    per_followup = Counter(fid for fid, _ in counted)
    missing = [fid for fid, n in wanted.items() if per_followup[fid] < n]
    extra = [fid for fid, n in wanted.items() if per_followup[fid] > n]
    twice = [key for key, n in counted.items() if n > 1]
    assert not missing and not extra and not twice, (
        f"{len(missing)} follow-ups with a change never announced, {len(extra)} with more announcements than "
        f"changes, {len(twice)} versions announced twice"
    )


async def contacts_stored_once(stack: FaultStack, tag: str, emails: list[str], tally: Tally, after_seq: int) -> None:
    """Every accepted contact stored once with the id the client was given, and its ``created`` event once (a
    subject missing from our read is looked up in the stream directly, to tell a reader's miss from a loss)."""
    assert set(tally.accepted) == set(emails)
    engine = make_engine(stack.url_of("contacts"))
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(
                text("SELECT value, contact_id FROM identities WHERE kind = 'email' AND value LIKE :p"),
                {"p": f"fault.{tag}.%"},
            )).all()  # fmt: skip
            count = (await conn.execute(
                text("SELECT count(*) FROM contacts WHERE emails::text LIKE :p"), {"p": f"%fault.{tag}.%"}
            )).scalar_one()  # fmt: skip
    finally:
        await engine.dispose()
    stored = {value: str(contact_id) for value, contact_id in rows}
    assert stored == tally.accepted, "the ids the clients were given are not the stored ones"
    assert count == len(emails), f"{count} contact rows for {len(emails)} accepted writes"
    assert stack.stack.nats is not None
    wanted = set(stored.values())
    events = await read_from(
        stack.stack.nats.url,
        "CRM_CONTACTS",
        after_seq,
        lambda got: wanted <= {e["subject"] for e in got},
        subjects="crm.contacts.created.>",
    )
    ours = [e for e in events if e["subject"] in wanted]
    problems = exactly_once(ours, wanted)
    missing = sorted(wanted - {e["subject"] for e in ours})
    if missing:
        absent = await not_in_stream(
            stack.stack.nats.url, "CRM_CONTACTS", [f"crm.contacts.created.{m}" for m in missing]
        )
        problems.append(f"of {len(missing)} missing, {len(absent)} are not in the stream at all: {absent[:3]}")
    assert not problems, problems


async def all_ready(stack: FaultStack, timeout: float = 30) -> None:
    """Every process reports ready again (database and NATS reachable) within ``timeout``."""
    async with httpx.AsyncClient(timeout=5) as http:
        for name, service in stack.stack.services.items():
            deadline = time.monotonic() + timeout
            while True:
                try:
                    ready = await http.get(f"{service.url}/readyz")
                    if ready.status_code == 200:
                        break
                    last = ready.text
                except httpx.TransportError as exc:
                    last = repr(exc)
                assert time.monotonic() < deadline, f"{name} not ready {timeout} s after the faults: {last}"
                await asyncio.sleep(0.2)


def print_run(name: str, result: Run) -> None:
    plan = result.plan
    print(f"\n[faults] {name}: {plan.total} touchpoints ({plan.single} single, {plan.batched} in batches, "
          f"{plan.nats} over NATS) and {CONTACTS} contacts in {result.elapsed:.1f} s "
          f"({plan.total / result.elapsed:.0f} touchpoints/s)")  # fmt: skip
    for writer, tally in result.tallies.items():
        print(f"[faults]   {writer:<8} done at {result.figures['finished_s'][writer]} s; answers "
              f"{dict(sorted(tally.statuses.items()))}; refusals {dict(tally.refusals)}; "
              f"transport errors {dict(tally.transport_errors)}")  # fmt: skip
    for fault in result.faults:
        assert fault.lifted_at is not None
        recovery = {
            w: f"{r:.2f} s" if (r := t.first_success_after(fault.lifted_at)) is not None else "n/a"
            for w, t in result.tallies.items()
        }
        print(f"[faults]   {fault.name}: outage {fault.outage_s:.1f} s; recovery (first success after the "
              f"restart began) {recovery}")  # fmt: skip


# ---- the scenarios


async def test_nats_server_killed_and_restarted(stack: FaultStack) -> None:
    nats = stack.stack.nats
    assert nats is not None
    result = await run(stack, "nats-server SIGKILL", [Fault("nats-server SIGKILL", nats.kill, nats.start)], seconds=20)
    # HTTP writes never wait for NATS: the outbox holds their events until it is back. (On a busy machine a
    # slow contacts service may still refuse a new contact's touchpoint for a moment, or the gateway time out
    # and the retry meet the first request still in flight: never a refusal because of NATS.)
    for writer in ("single", "batch", "contacts"):
        refusals = result.tallies[writer].refusals
        allowed = {"503 contacts-unavailable", "-503 contacts-unavailable", "504 gateway-timeout",
                   "409 idempotency-key-in-flight"}  # fmt: skip
        assert set(refusals) <= allowed, (writer, refusals)
    assert result.tallies["nats"].transport_errors, "the NATS publishers never saw the outage"
    await both_replicas_worked(stack)


async def both_replicas_worked(stack: FaultStack) -> None:
    """Every scenario runs two replicas of interactions and of followups (the first scenario's count was made
    with both up, none restarted yet): each replica took a share of the work, and the counts above show none
    of it was done twice. The gateway's address hands HTTP to both; their durable consumers share NATS."""
    async with httpx.AsyncClient(timeout=5) as http:
        for service in ("interactions", "followups"):
            applied = [consumed((await http.get(p.metrics_url)).text) for p in stack.replicas(service)]
            print(f"[faults]   {service} replicas applied {applied} events")
            assert len(applied) == 2 and all(n > 0 for n in applied), (service, applied)


def kill_all(processes: list[Any]) -> Callable[[], None]:
    def kill() -> None:
        for process in processes:
            process.kill()

    return kill


async def test_each_service_killed_in_turn(stack: FaultStack) -> None:
    """contacts, then both interactions replicas, then both followups replicas, then the gateway: SIGKILL, a
    few seconds down, started again, all while the load goes on."""
    faults = []
    for service in ("contacts", "interactions", "followups", "gateway"):
        processes = stack.replicas(service)
        restart = partial(start_together, processes)
        faults.append(Fault(f"{service} SIGKILL (x{len(processes)})", kill_all(processes), restart, 2.0))
    result = await run(stack, "each service SIGKILLed in turn", faults, seconds=45)
    assert result.tallies["contacts"].statuses[503] > 0, "no 503 while contacts was down"
    assert result.seen(503, writers=("single", "batch")) > 0, "no 503 while interactions was down"


async def test_postgres_fast_shutdown(stack: FaultStack) -> None:
    def start() -> None:
        stack.pg.start()

    fault = Fault("PostgreSQL fast shutdown", lambda: stack.pg.stop("fast"), start)
    result = await run(stack, "PostgreSQL fast shutdown", [fault], seconds=20)
    assert result.seen(503) > 0, "no 503 while PostgreSQL was down"


async def test_contacts_slow_then_dropping(stack: FaultStack) -> None:
    """Everything that calls contacts reaches it through the proxy: first it holds every request longer than
    any caller waits (interactions 2 s, the gateway 5 s), then it drops connections, then it heals."""
    proxy = stack.proxies["contacts"]
    delayed, dropped = proxy.delayed, proxy.dropped

    def slow() -> None:
        proxy.delay_s = 6.0

    def fast() -> None:
        proxy.delay_s = 0.0

    def drop() -> None:
        proxy.drop = True

    def heal() -> None:
        proxy.drop = False

    faults = [Fault("contacts slow (6 s)", slow, fast, 4.0), Fault("contacts dropping connections", drop, heal, 3.0)]
    result = await run(stack, "contacts slow, then dropping (proxy)", faults, seconds=25, gap_s=0.0)
    assert proxy.delayed > delayed and proxy.dropped > dropped, (proxy.delayed, proxy.dropped)
    assert result.seen(503, 504, -503) > 0, "the callers never noticed contacts misbehaving"


def consumed(metrics: str) -> float:
    """Events this process applied, by its own counter (every consumer, ``applied`` outcome)."""
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("events_consumed_total{") and 'outcome="applied"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total
