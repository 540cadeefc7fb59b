"""Timeline benchmark: one customer's timeline through the gateway, beside the same page straight from the
interactions database (the floor).

A contact with 10,000 touchpoints and 300 follow-ups among 1,000,000 touchpoints and 100,000 contacts;
pages of 50 read by 16 concurrent readers: p50 and p99 of the first page and of a page 100 pages deep.
Targets (2-core machine, PostgreSQL): p99 ≤ 25 ms on both pages, and within 5 times the floor.

Every service runs as its own process (nats-server, contacts, interactions, follow-ups, and the gateway as two
worker processes). The touchpoints and contacts are COPYed into each service's database after its migrations,
with the rows the service writes, and into the gateway's database what its consumer makes of each touchpoint's
event (its timeline projection); the follow-ups are made through the follow-ups API and reach the gateway's
projection as events. The gateway reads a page from its projection. The headline figures are cache misses:
they come from a gateway with its 2 s timeline page cache off (``GATEWAY_TIMELINE_CACHE_S=0``); the
``*_cached`` figures, from a second gateway with the cache on, are what 16 readers of one hot page get (nearly
all cache hits). Each phase also reports the CPU milliseconds one page costs in each process (gateway,
services, PostgreSQL, this load generator), which stay meaningful when other work shares the machine.

    python -m bench.timeline [--quick] [--backend postgres|sqlite] [--samples N]

``--quick`` (20,000 touchpoints, a hot contact with 1,000 and 30 follow-ups, page 10 deep, 200 reads per
phase) takes under a minute, for iteration; its figures have no target.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import nats
from sqlalchemy import and_, or_, select
from sqlalchemy.engine import make_url
from sqlmodel import col

from bench.common import (
    client,
    copy_rows,
    expect,
    infrastructure,
    percentiles,
    timed_calls,
    vacuum_analyze,
    write_results,
)
from bench.contacts import load_contacts
from bench.http1 import LightClient
from bench.run import figure
from gateway import projection
from gateway.models import TimelineItem, TouchSummary
from servicekit.db import make_engine
from servicekit.devstack import SERVICES
from servicekit.events import json_value
from servicekit.ids import new_id
from servicekit.migrations import upgrade
from services.interactions.models import Touchpoint
from services.interactions.service import sentiment_of

ADMIN_KEY = "tp_bench_admin_key_" + uuid.uuid4().hex
SIZES = {
    False: {"touchpoints": 1_000_000, "contacts": 100_000, "hot_touchpoints": 10_000, "hot_followups": 300,
            "deep_page": 100, "samples": 2000},
    True: {"touchpoints": 20_000, "contacts": 2_000, "hot_touchpoints": 1_000, "hot_followups": 30,
           "deep_page": 10, "samples": 200},
}  # fmt: skip
READERS = 16
# Two gateway processes for the two cores (GATEWAY_WORKERS, as deploy/ runs it): one Python process is one core.
GATEWAY_WORKERS = 2
PAGE = 50
CHUNK = 50_000  # rows per COPY
CHANNELS = ["phone", "in_person", "email", "sms", "live_chat", "social", "self_service"]
TYPES = ["inquiry", "complaint", "purchase", "return", "feedback", "survey_response", "support", "sales", "note"]
SUBJECTS = ["Where is my order?", "Thanks for the quick help", "Broken on arrival, very disappointed",
            "Question about my invoice", "Love the new collection", "Still waiting for a refund"]  # fmt: skip
START = datetime(2026, 1, 1, tzinfo=UTC)


class CpuMeter:
    """CPU seconds used by each process of the stack (and PostgreSQL's backends, and this load generator)
    between two readings: what one page costs, whatever else runs on the machine."""

    def __init__(self, processes: dict[str, int], postmaster: int | None) -> None:
        self.processes = processes
        self.postmaster = postmaster

    @staticmethod
    def _cpu_s(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _children_s(self, parent: int) -> dict[int, float]:
        found = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid == parent:
                    found[int(entry.name)] = self._cpu_s(int(entry.name))
        return found

    def _postgres_s(self) -> dict[int, float]:
        return {} if self.postmaster is None else self._children_s(self.postmaster)

    def _tree_s(self, pid: int) -> float:
        """A process and its children: uvicorn's supervisor and its workers (``--workers``)."""
        return self._cpu_s(pid) + sum(self._children_s(pid).values())

    def reading(self) -> dict[str, Any]:
        times = os.times()
        return {"load_generator": times.user + times.system, "postgres": self._postgres_s(),
                **{name: self._tree_s(pid) for name, pid in self.processes.items()}}  # fmt: skip

    @staticmethod
    def per_call_ms(before: dict[str, Any], after: dict[str, Any], calls: int) -> dict[str, float]:
        spent = {name: after[name] - before[name] for name in after if name != "postgres"}
        # Backends that lived through the phase count their difference, new ones all they used.
        spent["postgres"] = sum(v - before["postgres"].get(pid, 0.0) for pid, v in after["postgres"].items())
        per_call = {name: round(seconds * 1000 / max(1, calls), 3) for name, seconds in spent.items()}
        per_call["total"] = round(sum(per_call.values()), 3)
        return per_call


async def seed_touchpoints(
    database_url: str,
    gateway_url: str,
    total: int,
    hot: uuid.UUID,
    hot_rows: int,
    others: list[uuid.UUID],
    rng: random.Random,
) -> None:
    """``total`` touchpoints, every (total / hot_rows)-th of them the hot contact's, the rest spread over the
    other contacts; the rows the service writes (sentiment scored once per subject: the bodies differ only in
    a number, which does not move the score). And in the gateway's database what its consumer makes of each
    one's ``crm.interaction.logged.v1`` (the same ``gateway.projection`` functions): the timeline item, and the
    first/last touch per contact and channel."""
    touches: dict[tuple[uuid.UUID, str], dict[str, Any]] = {}
    sentiment = {subject: sentiment_of(subject, "Hello, I am writing about order 1.") for subject in SUBJECTS}
    step = max(1, total // hot_rows)
    for start in range(0, total, CHUNK):
        rows: list[dict[str, Any]] = []
        for n in range(start, min(total, start + CHUNK)):
            owner: uuid.UUID = hot if n % step == 0 and n // step < hot_rows else rng.choice(others)
            at = START - timedelta(days=400) + timedelta(seconds=n * 17)
            subject = rng.choice(SUBJECTS)
            rows.append({"id": new_id(), "contact_id": owner, "original_contact_id": owner,
                         "channel": rng.choice(CHANNELS), "direction": "inbound", "type": rng.choice(TYPES),
                         "occurred_at": at, "received_at": at, "team": "support", "subject": subject,
                         "body": f"Hello, I am writing about order {n}.", "amount": Decimal("10.00"),
                         "currency": "EUR", "attributes": {}, "sentiment": sentiment[subject], "version": 1,
                         "updated_at": at})  # fmt: skip
        await copy_rows(database_url, Touchpoint, rows)
        items = []
        for row in rows:
            # The event's data: the row as the interactions service announces it (no body).
            doc = {k: json_value(v) for k, v in row.items() if k != "body"}
            doc.update(agent=None, thread_id=None, outcome=None, csat=None, nps=None, duration_s=None, source=None,
                       external_id=None, redacted_at=None)  # fmt: skip
            items.append(projection.item_row(projection.interaction_item(doc), contact_id=row["contact_id"], version=1))
            seen = touches.setdefault((row["contact_id"], row["channel"]), {"first_at": row["occurred_at"], "n": 0})
            seen["last_at"], seen["n"] = row["occurred_at"], seen["n"] + 1
        await copy_rows(gateway_url, TimelineItem, items)
    summaries = [
        {"contact_id": contact_id, "channel": channel, "first_at": t["first_at"], "last_at": t["last_at"],
         "touches": t["n"], "csat_sum": 0, "csat_count": 0}
        for (contact_id, channel), t in touches.items()
    ]  # fmt: skip
    for start in range(0, len(summaries), CHUNK):
        await copy_rows(gateway_url, TouchSummary, summaries[start : start + CHUNK])


def followups_installed() -> bool:
    return next(s for s in SERVICES if s.name == "followups").installed


async def make_followups(base_url: str, contact_id: str, count: int) -> int:
    """Follow-ups by hand through the follow-ups API, due over the contact's history."""
    made = 0
    async with client(base_url, 8) as http:

        async def one(n: int) -> None:
            nonlocal made
            due = datetime(2026, 1, 1, tzinfo=UTC) - timedelta(days=n)
            body = {"contact_id": contact_id, "reason": f"Check-in {n}", "due_at": due.isoformat(),
                    "channel": "phone", "priority": "normal"}  # fmt: skip
            response = await http.post("/v1/followups", json=body)
            expect(response.status_code, 201)
            made += 1

        def call(n: int) -> Any:
            return lambda: one(n)

        _, _, errors = await timed_calls([call(n) for n in range(count)], 8)
    if errors:
        print(f"follow-ups: {len(errors)} failed, first: {errors[0]!r}", flush=True)
    return made


async def followups_settled(base_url: str, contact_id: str, timeout_s: float = 120.0) -> float:
    """Wait until the scheduler has fired every follow-up (all are due in the past), so that its burst of
    events (each one retires the contact's cached pages in the gateway) is not part of the measurement."""
    started = time.perf_counter()
    async with client(base_url, 1) as http:
        while time.perf_counter() - started < timeout_s:
            params = {"contact_id": contact_id, "status": "scheduled", "limit": "1"}
            response = await http.get("/v1/followups", params=params)
            expect(response.status_code, 200)
            if not response.json()["items"]:
                break
            await asyncio.sleep(0.5)
    await asyncio.sleep(2)  # their events reach the gateway's projections
    return round(time.perf_counter() - started, 1)


async def projection_settled(nats_url: str, quiet_s: float = 3.0, timeout_s: float = 180.0) -> float:
    """Wait until the gateway's consumers have applied every event and no new one has come for ``quiet_s``: the
    follow-ups made above keep producing events for a while (due, then overdue and escalated by the scheduler),
    and each one about the hot contact retires its cached header in every gateway process. The figures are those
    of a steady timeline; a contact with events arriving meanwhile pays a header rebuild per event."""
    started = time.perf_counter()
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        last: tuple[int, ...] = ()
        quiet_since = time.perf_counter()
        while time.perf_counter() - started < timeout_s:
            state = []
            for stream, durable in (("CRM_FOLLOWUPS", "gateway-followups"),
                                    ("CRM_INTERACTIONS", "gateway-interactions"),
                                    ("CRM_CONTACTS", "gateway-contacts")):  # fmt: skip
                info = await js.consumer_info(stream, durable)
                state += [info.num_pending or 0, info.num_ack_pending or 0, info.delivered.stream_seq or 0]
            if tuple(state) != last or any(state[i] for i in (0, 1, 3, 4, 6, 7)):
                last, quiet_since = tuple(state), time.perf_counter()
            elif time.perf_counter() - quiet_since >= quiet_s:
                break
            await asyncio.sleep(0.25)
    finally:
        await nc.close()
    return round(time.perf_counter() - started, 1)


async def floor(
    database_url: str,
    hot: uuid.UUID,
    bound: tuple[datetime, uuid.UUID] | None,
    samples: int,
    meter: CpuMeter,
) -> dict[str, Any]:
    """The same page (51 rows, to know whether more follow) straight from the interactions database: the
    service's own query (every column, the keyset bound as a row comparison), read by ``READERS`` concurrent
    asyncpg connections from this process. asyncpg itself, not SQLAlchemy: through an ORM engine the 16
    readers of one Python process measured the client (p99 117-156 ms, where one reader gets 0.6 ms)."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return await _floor_sqlite(database_url, hot, bound, samples)
    sql = f"SELECT * FROM {Touchpoint.__tablename__} WHERE contact_id = $1"
    args: list[Any] = [hot]
    if bound is not None:
        sql += " AND (occurred_at, id) < ($2, $3)"
        args += list(bound)
    sql += f" ORDER BY occurred_at DESC, id DESC LIMIT {PAGE + 1}"
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    pool = await asyncpg.create_pool(dsn, min_size=READERS, max_size=READERS)

    async def read() -> None:
        async with pool.acquire() as conn:
            rows = await conn.fetch(sql, *args)
            assert rows

    try:
        await timed_calls([read] * (READERS * 4), READERS)  # every connection has prepared the statement
        before = meter.reading()
        _, latencies, errors = await timed_calls([read] * samples, READERS)
        cpu = CpuMeter.per_call_ms(before, meter.reading(), samples)
    finally:
        await pool.close()
    return {**percentiles(latencies), "errors": len(errors),
            "cpu_ms_per_page": {"load_generator": cpu["load_generator"], "postgres": cpu["postgres"]}}  # fmt: skip


async def _floor_sqlite(
    database_url: str, hot: uuid.UUID, bound: tuple[datetime, uuid.UUID] | None, samples: int
) -> dict[str, Any]:
    engine = make_engine(database_url, pool_size=READERS)
    query = select(Touchpoint).where(col(Touchpoint.contact_id) == hot)
    if bound is not None:
        at, id_ = bound
        query = query.where(
            or_(col(Touchpoint.occurred_at) < at, and_(col(Touchpoint.occurred_at) == at, col(Touchpoint.id) < id_))
        )
    query = query.order_by(col(Touchpoint.occurred_at).desc(), col(Touchpoint.id).desc()).limit(PAGE + 1)

    async def read() -> None:
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            assert rows

    try:
        _, latencies, errors = await timed_calls([read] * samples, READERS)
    finally:
        await engine.dispose()
    return {**percentiles(latencies), "errors": len(errors)}


async def run_backend(backend: str, quick: bool, samples: int | None = None) -> dict[str, Any]:
    size = {**SIZES[quick], **({"samples": samples} if samples else {})}
    with_followups = followups_installed()
    kinds = "interaction,followup,contact_event" if with_followups else "interaction,contact_event"
    result: dict[str, Any] = {"backend": backend, "sizes": size, "readers": READERS, "page": PAGE, "kinds": kinds}
    with infrastructure(backend) as infra:
        urls = {name: infra.database_url(name) for name in ("contacts", "interactions", "followups", "gateway")}
        for name in ("contacts", "interactions", "gateway") + (("followups",) if with_followups else ()):
            spec = next(s for s in SERVICES if s.name == name)
            await asyncio.to_thread(upgrade, spec.alembic_ini, urls[name])
        print(
            f"[{backend}] seeding {size['contacts']:,} contacts and {size['touchpoints']:,} touchpoints …", flush=True
        )
        started = time.perf_counter()
        rng = random.Random(5)
        others = await load_contacts(urls["contacts"], 0, size["contacts"], rng)
        await vacuum_analyze(urls["contacts"])
        result["seed_contacts_s"] = round(time.perf_counter() - started, 1)
        contacts = infra.service("contacts", {"CONTACTS_DATABASE_URL": urls["contacts"]})
        contacts.start()
        async with client(contacts.url, 1) as http:
            response = await http.post("/v1/contacts", json={"name": "Hot Customer", "tier": "premium"})
            expect(response.status_code, 201)
            hot = uuid.UUID(response.json()["id"])
        started = time.perf_counter()
        await seed_touchpoints(
            urls["interactions"], urls["gateway"], size["touchpoints"], hot, size["hot_touchpoints"], others, rng
        )
        await vacuum_analyze(urls["interactions"])
        await vacuum_analyze(urls["gateway"])
        result["seed_touchpoints_s"] = round(time.perf_counter() - started, 1)
        print(f"[{backend}] seeded in {result['seed_contacts_s']} s + {result['seed_touchpoints_s']} s", flush=True)
        interactions = infra.service(
            "interactions",
            {"INTERACTIONS_DATABASE_URL": urls["interactions"], "INTERACTIONS_CONTACTS_URL": contacts.url,
             "INTERACTIONS_DB_POOL_SIZE": "20", "INTERACTIONS_LOG_LEVEL": "WARNING"},
        )  # fmt: skip
        interactions.start()
        gateway_env = {
            "GATEWAY_DATABASE_URL": urls["gateway"], "GATEWAY_CONTACTS_URL": contacts.url,
            "GATEWAY_INTERACTIONS_URL": interactions.url, "GATEWAY_DEV_MODE": "false",
            "TOUCHPOINT_ADMIN_KEY": ADMIN_KEY, "GATEWAY_SECRET_KEY": uuid.uuid4().hex,
            "GATEWAY_RATE_LIMIT_PER_MINUTE": "100000000", "GATEWAY_RATE_LIMIT_BURST": "1000000",
            "GATEWAY_DB_POOL_SIZE": "20", "GATEWAY_WORKERS": str(GATEWAY_WORKERS),
        }  # fmt: skip
        if with_followups:
            followups = infra.service(
                "followups",
                {"FOLLOWUPS_DATABASE_URL": urls["followups"], "FOLLOWUPS_CONTACTS_URL": contacts.url,
                 "FOLLOWUPS_INTERACTIONS_URL": interactions.url, "FOLLOWUPS_LOG_LEVEL": "WARNING"},
            )  # fmt: skip
            followups.start()
            gateway_env["GATEWAY_FOLLOWUPS_URL"] = followups.url
            result["followups_made"] = await make_followups(followups.url, str(hot), size["hot_followups"])
            result["followups_settled_s"] = await followups_settled(followups.url, str(hot))
        else:
            result["followups_made"] = 0
            result["note"] = "the follow-ups service is not in this checkout: timeline read without follow-ups"
        # Two gateways: the headline figures come from one with its 2 s page cache off, so every read is a
        # cache miss that goes to the services; the other shows what readers of one hot page get from the cache.
        uncached = infra.service("gateway", {**gateway_env, "GATEWAY_TIMELINE_CACHE_S": "0"})
        uncached.start()
        cached = infra.service("gateway", gateway_env)
        cached.start()
        pids = {p.spec.name: p.process.pid for p in (contacts, interactions) if p.process is not None}
        if with_followups and followups.process is not None:
            pids["followups"] = followups.process.pid
        postmaster = None
        if infra.pg is not None:
            postmaster = int((infra.pg.data_dir / "postmaster.pid").read_text().split()[0])

        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with client(uncached.url, READERS) as http:
            response = await http.post("/api/v1/api-keys", json={"name": "bench", "role": "readonly"}, headers=headers)
            expect(response.status_code, 201)
            reader = {"Authorization": f"Bearer {response.json()['key']}"}
            path = f"/api/v1/contacts/{hot}/timeline"
            # Walk to the deep page once (sequentially), keeping its cursor and the position it starts after.
            cursor: str | None = None
            last_interaction: dict[str, Any] | None = None
            for _ in range(size["deep_page"] - 1):
                params = {"limit": str(PAGE), "kinds": kinds, **({"cursor": cursor} if cursor else {})}
                page = await http.get(path, params=params, headers=reader)
                expect(page.status_code, 200)
                body = page.json()
                cursor = body["next_cursor"]
                touch = [i for i in body["items"] if i["kind"] == "interaction"]
                last_interaction = touch[-1] if touch else last_interaction
                assert cursor is not None, "the timeline ended before the deep page"
            assert last_interaction is not None
            bound = (datetime.fromisoformat(last_interaction["at"]), uuid.UUID(last_interaction["id"]))
        first_params = {"limit": str(PAGE), "kinds": kinds}
        deep_params = {**first_params, "cursor": cursor or ""}
        assert infra.nats is not None
        result["events_settled_s"] = await projection_settled(infra.nats.url)
        for name, gateway in (("", uncached), ("_cached", cached)):
            meter = CpuMeter({**pids, "gateway": gateway.process.pid if gateway.process else 0}, postmaster)
            # The light client: httpx would cost this load generator about 1 ms of CPU per page on the same cores.
            async with LightClient(gateway.url, READERS) as light:

                def read(params: dict[str, str], http: LightClient = light) -> Any:
                    async def get() -> None:
                        response = await http.request("GET", path, params=params, headers=reader)
                        expect(response.status_code, 200)

                    return get

                await timed_calls([read(first_params)] * 50, READERS)  # warm-up, not measured
                print(f"[{backend}] measuring{' with the page cache' if name else ''} …", flush=True)
                for page_name, params in (("first_page", first_params), ("deep_page", deep_params)):
                    before = meter.reading()
                    _, latencies, errors = await timed_calls([read(params)] * size["samples"], READERS)
                    result[f"{page_name}{name}"] = {
                        **percentiles(latencies),
                        "errors": len(errors),
                        "cpu_ms_per_page": CpuMeter.per_call_ms(before, meter.reading(), size["samples"]),
                    }
        result["deep_page"]["depth"] = size["deep_page"]
        meter = CpuMeter(pids, postmaster)
        result["floor_first_page"] = await floor(urls["interactions"], hot, None, size["samples"], meter)
        result["floor_deep_page"] = await floor(urls["interactions"], hot, bound, size["samples"], meter)
        for page_name in ("first_page", "deep_page"):
            floor_p99 = result[f"floor_{page_name}"].get("p99_ms")
            ratio = round(result[page_name]["p99_ms"] / floor_p99, 2) if floor_p99 else None
            result[page_name]["p99_over_floor"] = ratio
    return result


def figures_of(run: dict[str, Any], quick: bool) -> list[dict[str, Any]]:
    backend = run["backend"]
    on_pg = backend == "postgres" and not quick
    figures = []
    for key, label in (("first_page", "first page"), ("deep_page", f"page {run['deep_page']['depth']} deep")):
        figures += [
            figure(f"timeline {label} p50 ({READERS} readers)", run[key]["p50_ms"], "ms", backend=backend),
            figure(f"timeline {label} p99 ({READERS} readers)", run[key]["p99_ms"], "ms",
                   target=25 if on_pg else None, floor="db_page_p99_ms", backend=backend),
            figure(f"timeline {label} p99 / same page from the database", run[key]["p99_over_floor"], "times",
                   target=5 if on_pg else None, backend=backend),
            figure(f"same {label} from the interactions database p99", run[f"floor_{key}"]["p99_ms"], "ms",
                   backend=backend),
            figure(f"timeline {label} p99, page cache on ({READERS} readers of one page)",
                   run[f"{key}_cached"]["p99_ms"], "ms", backend=backend),
        ]  # fmt: skip
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="postgres")
    parser.add_argument("--samples", type=int, help="reads per phase (default 2000, or 200 with --quick)")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    runs = [asyncio.run(run_backend(b, args.quick, args.samples)) for b in backends]
    for run in runs:
        print(f"[{run['backend']}] first page p50 {run['first_page']['p50_ms']} ms p99 {run['first_page']['p99_ms']} ms"
              f" | deep page p50 {run['deep_page']['p50_ms']} ms p99 {run['deep_page']['p99_ms']} ms"
              f" | floor p99 {run['floor_first_page']['p99_ms']} / {run['floor_deep_page']['p99_ms']} ms",
              flush=True)  # fmt: skip
    write_results(
        "timeline" + ("-quick" if args.quick else ""),
        {"quick": args.quick, "runs": runs, "figures": [f for run in runs for f in figures_of(run, args.quick)]},
    )


if __name__ == "__main__":
    main()
