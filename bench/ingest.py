"""Interactions ingest benchmark, on SQLite and PostgreSQL, through the real service processes (contacts and
interactions as uvicorn processes, a real nats-server), every stored touchpoint's event published to JetStream:

- single ``POST /v1/interactions`` with 64 concurrent clients: requests/s, p50, p99;
- batch ingest, 500 items per ``POST /v1/interactions/batch``: touchpoints/s;
- NATS ingest (``crm.ingest.interactions``): touchpoints/s from the first publish to the last stored, one touchpoint
  per message, then the same as batch messages of 100 (``{"items": [...]}``);
- for each, the time until every ``crm.interaction.logged.v1`` event is acknowledged by JetStream;
- in the same run, the raw insert rate of the same rows straight into the database (our overhead = the ratio);
- the contact page query (``GET /v1/interactions?contact_id=…&limit=50``, first and deeper pages) for a contact
  with 10,000 touchpoints among 1,000,000, beside the same query straight on the database;
- in the same run, a bare FastAPI endpoint (same uvicorn flags) with the same client and 64 clients: the HTTP floor.

The load generator is ``bench.http1.LightClient`` (raw asyncio HTTP/1.1 keep-alive): httpx costs milliseconds of
CPU per request, which on 2 shared cores would measure the client rather than the server.

Targets (2-core machine, PostgreSQL): batch ≥ 10,000 touchpoints/s; single ≥ 1,000 requests/s with p99 ≤ 50 ms;
NATS ingest ≥ 5,000 touchpoints/s; contact page p99 ≤ 5 ms.

    python -m bench.ingest [--quick] [--backend sqlite|postgres|both] [--part all|single|batch|nats|page]

Iterating on one workload: --part batch (batches and the raw insert floor) or --part nats (NATS ingest with the
publisher running, then the backlog drain); each writes ``ingest-<part>.json``. ``all`` is the full run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import nats
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from bench.common import client, expect, infrastructure, percentiles, timed_calls, write_results
from bench.floors import http_floor
from bench.http1 import LightClient
from bench.run import figure
from bench.timeline import CpuMeter
from servicekit.db import make_engine
from servicekit.ids import new_id
from servicekit.migrations import upgrade
from services.interactions.models import Touchpoint, outbox_table
from services.interactions.service import sentiment_of

CHANNELS = ["phone", "in_person", "email", "sms", "live_chat", "social", "self_service"]
TYPES = ["inquiry", "complaint", "purchase", "return", "feedback", "survey_response", "support", "sales", "note"]
SUBJECTS = ["Where is my order?", "Thanks for the quick help", "Broken on arrival, very disappointed",
            "Question about my invoice", "Loved the new collection"]  # fmt: skip
START = datetime(2026, 1, 1, tzinfo=UTC)
NATS_BATCH = 100  # touchpoints per batch message in the batched NATS phase

SIZES = {
    False: {"contacts": 500, "single": 20_000, "batches": 100, "nats": 50_000, "raw": 50_000,
            "page_total": 1_000_000, "page_hot": 10_000, "page_samples": 1000},
    True: {"contacts": 50, "single": 600, "batches": 4, "nats": 2_000, "raw": 2_000,
           "page_total": 20_000, "page_hot": 1_000, "page_samples": 200},
}  # fmt: skip


def touchpoint(rng: random.Random, contact_id: str, n: int, run: str) -> dict[str, Any]:
    kind = rng.choice(TYPES)
    body: dict[str, Any] = {
        "contact_id": contact_id,
        "channel": rng.choice(CHANNELS),
        "direction": rng.choice(["inbound", "outbound"]),
        "type": kind,
        "occurred_at": (START + timedelta(seconds=n)).isoformat(),
        "subject": rng.choice(SUBJECTS),
        "body": f"Hello, I am writing about order {n}. Could you tell me when it will arrive?",
        "source": "bench",
        "external_id": f"{run}-{n}",
        "agent": f"agent-{n % 20}",
        "team": rng.choice(["support", "sales"]),
    }
    if kind == "purchase":
        body.update(amount=round(rng.uniform(5, 500), 2), currency="EUR")
    if kind == "survey_response":
        body.update(csat=rng.randint(1, 5), nps=rng.randint(0, 10))
    return body


def raw_row(contact_id: uuid.UUID, n: int, at: datetime, rng: random.Random) -> dict[str, Any]:
    """The row the service writes for a touchpoint (sentiment included), for the raw insert and the seed."""
    subject = rng.choice(SUBJECTS)
    body = f"Hello, I am writing about order {n}."
    return {"id": new_id(), "contact_id": contact_id, "original_contact_id": contact_id,
            "channel": rng.choice(CHANNELS), "direction": "inbound", "type": rng.choice(TYPES), "occurred_at": at,
            "received_at": at, "agent": None, "team": "support", "subject": subject, "body": body, "thread_id": None,
            "outcome": None, "csat": None, "nps": None, "duration_s": None, "amount": Decimal("10.00"),
            "currency": "EUR", "source": None, "external_id": None, "ingest_key": None, "attributes": {},
            "sentiment": sentiment_of(subject, body), "version": 1, "updated_at": at, "redacted_at": None}  # fmt: skip


async def count_stored(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(Touchpoint))).scalar_one())


async def count_unpublished(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        query = select(func.count()).select_from(outbox_table).where(outbox_table.c.published_at.is_(None))
        return int((await conn.execute(query)).scalar_one())


async def wait_published(engine: AsyncEngine, started: float, timeout: float = 600) -> float:
    """Seconds from ``started`` until every outbox event is acknowledged by JetStream."""
    deadline = time.perf_counter() + timeout
    while await count_unpublished(engine) > 0:
        if time.perf_counter() > deadline:
            raise TimeoutError("events not published")
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


async def publish_all(js: Any, messages: list[bytes], msg_id_prefix: str) -> None:
    """Publish to the ingest subject with up to 2,000 acknowledgements outstanding."""
    pending = []
    for n, payload in enumerate(messages):
        headers = {"Nats-Msg-Id": f"{msg_id_prefix}{n}"}
        pending.append(await js.publish_async("crm.ingest.interactions", payload, headers=headers))
        if len(pending) >= 2000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)


async def nats_ingest(
    js: Any, engine: AsyncEngine, meter: CpuMeter, messages: list[bytes], touchpoints: int, msg_id_prefix: str
) -> dict[str, Any]:
    """Publish ``messages`` (holding ``touchpoints`` in all) to the ingest subject: the time to the last stored
    touchpoint and to the last event acknowledged, counted from the first publish, and the CPU per touchpoint."""
    before = await count_stored(engine)
    cpu_before = meter.reading()
    started = time.perf_counter()
    await publish_all(js, messages, msg_id_prefix)
    published_in = time.perf_counter() - started
    await wait_stored(engine, before + touchpoints, started)
    stored_in = time.perf_counter() - started
    events_in = await wait_published(engine, started)
    return {"touchpoints": touchpoints, "per_second": round(touchpoints / stored_in, 1),
            "publish_s": round(published_in, 3), "stored_s": round(stored_in, 3),
            "events_published_s": round(events_in, 3), "with_events_per_second": round(touchpoints / events_in, 1),
            "cpu_ms_per_touchpoint": CpuMeter.per_call_ms(cpu_before, meter.reading(), touchpoints)}  # fmt: skip


async def wait_stored(engine: AsyncEngine, count: int, started: float, timeout: float = 900) -> None:
    while await count_stored(engine) < count:
        if time.perf_counter() - started > timeout:
            raise TimeoutError("NATS ingest did not finish")
        await asyncio.sleep(0.05)


async def single_posts(http: LightClient, bodies: list[bytes], concurrency: int) -> dict[str, Any]:
    def call(body: bytes) -> Any:
        async def post() -> None:
            response = await http.post("/v1/interactions", content=body, headers={"content-type": "application/json"})
            expect(response.status_code, 201)

        return post

    elapsed, latencies, errors = await timed_calls([call(b) for b in bodies], concurrency)
    return {"requests": len(bodies), "per_second": round(len(bodies) / elapsed, 1), "errors": len(errors),
            "elapsed_s": round(elapsed, 3), **percentiles(latencies)}  # fmt: skip


async def measure_page(
    http: LightClient, engine: AsyncEngine, hot: uuid.UUID, samples: int, meter: CpuMeter
) -> dict[str, Any]:
    """GET one contact's page (first page, and pages starting at random places of its history), with the CPU
    each page costs each process (the latencies of one client on a shared machine move more than the CPU)."""
    rng = random.Random(3)
    async with engine.connect() as conn:
        positions = (
            await conn.execute(
                select(col(Touchpoint.occurred_at), col(Touchpoint.id)).where(col(Touchpoint.contact_id) == hot)
            )
        ).all()
    befores = [None] + [
        f"{(p[0] if p[0].tzinfo else p[0].replace(tzinfo=UTC)).isoformat()}|{p[1]}"
        for p in rng.sample(list(positions), min(len(positions), samples))
    ]

    def call(before: str | None) -> Any:
        params: dict[str, str] = {"contact_id": str(hot), "limit": "50", **({"before": before} if before else {})}

        async def get() -> None:
            response = await http.get("/v1/interactions", params=params)
            expect(response.status_code, 200)

        return get

    cpu_before = meter.reading()
    _, first, _ = await timed_calls([call(None) for _ in range(samples)], 1)
    cpu_between = meter.reading()
    _, deep, errors = await timed_calls([call(b) for b in befores[1:]], 1)
    cpu = {"first_page": CpuMeter.per_call_ms(cpu_before, cpu_between, samples),
           "deeper_pages": CpuMeter.per_call_ms(cpu_between, meter.reading(), len(befores) - 1)}  # fmt: skip
    floor: list[float] = []
    async with engine.connect() as conn:
        for _ in range(samples):
            started = time.perf_counter()
            query = (
                select(Touchpoint)
                .where(col(Touchpoint.contact_id) == hot)
                .order_by(col(Touchpoint.occurred_at).desc(), col(Touchpoint.id).desc())
                .limit(51)
            )
            (await conn.execute(query)).all()
            floor.append(time.perf_counter() - started)
    return {"first_page": percentiles(first), "deeper_pages": percentiles(deep), "errors": len(errors),
            "cpu_ms_per_page": cpu, "floor_database_query": percentiles(floor)}  # fmt: skip


async def seed(engine: AsyncEngine, total: int, hot: uuid.UUID, hot_rows: int) -> float:
    rng = random.Random(11)
    others = [uuid.uuid4() for _ in range(max(1, total // 50))]
    started = time.perf_counter()
    batch = 5000
    for offset in range(0, total, batch):
        rows = []
        for n in range(offset, min(total, offset + batch)):
            owner = hot if n % max(1, total // hot_rows) == 0 and n // max(1, total // hot_rows) < hot_rows else None
            at = START - timedelta(days=400) + timedelta(seconds=n * 17)
            rows.append(raw_row(owner or rng.choice(others), n, at, rng))
        async with engine.begin() as conn:
            await conn.execute(insert(Touchpoint), rows)
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            # As after any bulk load (see bench.common.vacuum_analyze): statistics, visibility map, checkpoint.
            await autocommit.exec_driver_sql("VACUUM ANALYZE interactions")
            await autocommit.exec_driver_sql("CHECKPOINT")
    return time.perf_counter() - started


PARTS = ("all", "single", "batch", "nats", "page")


def cpu_meter(infra: Any, interactions: Any) -> CpuMeter:
    """CPU of interactions, nats-server, PostgreSQL and this load generator: what a touchpoint costs each,
    which a shared machine changes far less than the rates."""
    pids = {"interactions": interactions.process.pid, "nats": infra.nats.process.pid}
    postmaster = int((infra.pg.data_dir / "postmaster.pid").read_text().split()[0]) if infra.pg else None
    return CpuMeter(pids, postmaster)


async def run_backend(backend: str, quick: bool, part: str = "all") -> dict[str, Any]:
    size = SIZES[quick]
    rng = random.Random(7)
    result: dict[str, Any] = {"backend": backend, "sizes": size, "part": part}

    def wanted(name: str) -> bool:
        return part in ("all", name)

    if wanted("single"):
        print(f"[{backend}] bare endpoint floor (same client) …", flush=True)
        result["floor_bare_endpoint"] = await http_floor(
            samples=size["page_samples"], requests=size["single"], make_client=LightClient
        )
    with infrastructure(backend) as infra:
        contacts_url = infra.database_url("contacts")
        interactions_url = infra.database_url("interactions")
        await asyncio.to_thread(upgrade, "services/contacts/alembic.ini", contacts_url)
        await asyncio.to_thread(upgrade, "services/interactions/alembic.ini", interactions_url)
        contacts = infra.service("contacts", {"CONTACTS_DATABASE_URL": contacts_url})
        contacts.start()
        interactions = infra.service(
            "interactions",
            {"INTERACTIONS_DATABASE_URL": interactions_url, "INTERACTIONS_CONTACTS_URL": contacts.url,
             "INTERACTIONS_DB_POOL_SIZE": "20"},
        )  # fmt: skip
        interactions.start()
        engine = make_engine(interactions_url)
        run = uuid.uuid4().hex[:8]
        try:
            async with client(contacts.url, 16) as contacts_http:
                made = []

                async def create() -> None:
                    body = {"name": "Bench Customer", "emails": [f"c.{uuid.uuid4().hex}@example.com"]}
                    response = await contacts_http.post("/v1/contacts", json=body)
                    expect(response.status_code, 201)
                    made.append(response.json()["id"])

                await timed_calls([create] * size["contacts"], 16)
            ids = made
            counter = iter(range(10**9))

            def bodies(count: int) -> list[dict[str, Any]]:
                return [touchpoint(rng, rng.choice(ids), next(counter), run) for _ in range(count)]

            async with LightClient(interactions.url, 64) as http:
                # Warm-up (not measured): every contact id checked once with the contacts service.
                def warm(contact_id: str) -> Any:
                    async def post() -> None:
                        body = touchpoint(rng, contact_id, next(counter), run)
                        expect((await http.post("/v1/interactions", json=body)).status_code, 201)

                    return post

                await timed_calls([warm(c) for c in ids], 16)
                await wait_published(engine, time.perf_counter())
                if wanted("single"):
                    print(f"[{backend}] single POSTs …", flush=True)
                    encoded = [json.dumps(b).encode() for b in bodies(size["single"])]
                    meter = cpu_meter(infra, interactions)
                    cpu_before = meter.reading()
                    started = time.perf_counter()
                    single = await single_posts(http, encoded, 64)
                    single["events_published_s"] = round(await wait_published(engine, started), 3)
                    single["cpu_ms_per_request"] = CpuMeter.per_call_ms(cpu_before, meter.reading(), len(encoded))
                    result["single"] = single

                if wanted("batch"):
                    print(f"[{backend}] batches of 500 …", flush=True)
                    batches = [json.dumps({"items": bodies(500)}).encode() for _ in range(size["batches"])]

                    def batch_call(body: bytes) -> Any:
                        async def post() -> None:
                            response = await http.post(
                                "/v1/interactions/batch", content=body, headers={"content-type": "application/json"}
                            )
                            expect(response.status_code, 200)

                        return post

                    meter = cpu_meter(infra, interactions)
                    cpu_before = meter.reading()
                    started = time.perf_counter()
                    elapsed, latencies, errors = await timed_calls([batch_call(b) for b in batches], 2)
                    published = await wait_published(engine, started)
                    items = 500 * len(batches)
                    cpu = CpuMeter.per_call_ms(cpu_before, meter.reading(), items)
                    result["batch"] = {"touchpoints": items, "per_second": round(items / elapsed, 1),
                                       "errors": len(errors), "request": percentiles(latencies),
                                       "events_published_s": round(published, 3),
                                       "with_events_per_second": round(items / published, 1),
                                       "cpu_ms_per_touchpoint": cpu}  # fmt: skip

            if wanted("nats"):
                print(f"[{backend}] NATS ingest …", flush=True)
                assert infra.nats is not None
                nc = await nats.connect(infra.nats.url)
                js = nc.jetstream()
                messages = [json.dumps(b).encode() for b in bodies(size["nats"])]
                result["nats"] = {
                    **await nats_ingest(
                        js, engine, cpu_meter(infra, interactions), messages, len(messages), f"{run}-n"
                    ),
                    "note": "first publish to last stored; the publisher shares the cores",
                }

                # The same touchpoints as batch messages ({"items": [...]}, the JSON of POST /v1/interactions/batch),
                # NATS_BATCH to a message: how a high-volume system (a phone system's call records) would send them.
                print(f"[{backend}] NATS ingest, {NATS_BATCH} per message …", flush=True)
                touches = bodies(size["nats"])
                batched = [json.dumps({"items": touches[i : i + NATS_BATCH]}).encode()
                           for i in range(0, len(touches), NATS_BATCH)]  # fmt: skip
                meter = cpu_meter(infra, interactions)
                result["nats_batched"] = {
                    **await nats_ingest(js, engine, meter, batched, len(touches), f"{run}-m"),
                    "per_message": NATS_BATCH,
                }

                # The same work from a backlog: published while the service is stopped, then drained. This rate is
                # the service's own (the publisher above is not in it), counted from the moment it is ready.
                print(f"[{backend}] NATS backlog drain …", flush=True)
                await asyncio.to_thread(interactions.stop)
                backlog = [json.dumps(b).encode() for b in bodies(size["nats"])]
                await publish_all(js, backlog, f"{run}-b")
                await nc.close()
                before = await count_stored(engine)
                started = time.perf_counter()
                await asyncio.to_thread(interactions.start)
                ready = time.perf_counter()
                meter = cpu_meter(infra, interactions)
                cpu_before = meter.reading()
                during_startup = await count_stored(engine) - before
                await wait_stored(engine, before + len(backlog), started)
                drained_in = time.perf_counter() - ready
                events_in = await wait_published(engine, ready)
                cpu = CpuMeter.per_call_ms(cpu_before, meter.reading(), len(backlog))
                result["nats_backlog"] = {"touchpoints": len(backlog),
                                          "per_second": round((len(backlog) - during_startup) / drained_in, 1),
                                          "startup_s": round(ready - started, 3),
                                          "stored_during_startup": during_startup,
                                          "drained_s": round(drained_in, 3), "events_published_s": round(events_in, 3),
                                          "with_events_per_second": round(len(backlog) / events_in, 1),
                                          "cpu_ms_per_touchpoint": cpu}  # fmt: skip

            if wanted("batch"):
                print(f"[{backend}] raw insert floor …", flush=True)
                raw = [raw_row(uuid.UUID(rng.choice(ids)), n, START, rng) for n in range(size["raw"])]
                started = time.perf_counter()
                for offset in range(0, len(raw), 500):
                    async with engine.begin() as conn:
                        await conn.execute(insert(Touchpoint), raw[offset : offset + 500])
                raw_elapsed = time.perf_counter() - started
                result["raw_insert"] = {
                    "rows": len(raw), "per_second": round(len(raw) / raw_elapsed, 1),
                    "note": "500 rows a transaction, no outbox, sentiment computed before"}  # fmt: skip
                result["overhead_ratio_batch"] = round(
                    result["raw_insert"]["per_second"] / result["batch"]["per_second"], 2
                )

            if wanted("page"):
                print(f"[{backend}] seeding {size['page_total']:,} touchpoints for the page query …", flush=True)
                hot = uuid.uuid4()
                already = await count_stored(engine)
                seed_s = await seed(engine, max(0, size["page_total"] - already), hot, size["page_hot"])
                async with LightClient(interactions.url, 4) as http:
                    page = await measure_page(http, engine, hot, size["page_samples"], cpu_meter(infra, interactions))
                async with engine.connect() as conn:
                    hot_rows = (
                        await conn.execute(select(func.count()).where(col(Touchpoint.contact_id) == hot))
                    ).scalar_one()
                    if engine.dialect.name == "postgresql":
                        plan = (await conn.execute(text(
                            "EXPLAIN SELECT * FROM interactions WHERE contact_id = :c "
                            "ORDER BY occurred_at DESC, id DESC LIMIT 51"), {"c": hot})).scalars().all()  # fmt: skip
                        page["plan"] = list(plan)
                result["contact_page"] = {"total_rows": await count_stored(engine), "contact_rows": int(hot_rows),
                                          "seed_s": round(seed_s, 1), **page}  # fmt: skip
        finally:
            await engine.dispose()
    return result


def figures_of(run: dict[str, Any], quick: bool) -> list[dict[str, Any]]:
    backend = run["backend"]
    on_pg = backend == "postgres" and not quick
    page = run["contact_page"]
    scale = f" ({page['contact_rows']:,} of {page['total_rows']:,} rows)"
    return [
        figure("single POST /v1/interactions (64 clients)", run["single"]["per_second"], "req/s",
               target=1000 if on_pg else None, better="higher", floor="http_rate_light", backend=backend),
        figure("single POST p99 (64 clients)", run["single"]["p99_ms"], "ms", target=50 if on_pg else None,
               floor="http_p99_ms_light", backend=backend),
        figure("single POST p50 (64 clients)", run["single"]["p50_ms"], "ms", floor="http_p50_ms", backend=backend),
        figure("batch ingest (500 per request)", run["batch"]["per_second"], "touchpoints/s",
               target=10_000 if on_pg else None, better="higher", floor="db_insert_rate", backend=backend),
        figure("NATS ingest", run["nats"]["per_second"], "touchpoints/s", target=5000 if on_pg else None,
               better="higher", floor="nats_consume_rate", backend=backend),
        figure(f"NATS ingest, {NATS_BATCH} touchpoints per message", run["nats_batched"]["per_second"],
               "touchpoints/s", target=5000 if on_pg else None, better="higher", floor="nats_consume_rate",
               backend=backend),
        figure("NATS ingest, backlog drained by the service alone", run["nats_backlog"]["per_second"],
               "touchpoints/s", target=5000 if on_pg else None, better="higher", floor="nats_consume_rate",
               backend=backend),
        figure("raw insert of the same rows", run["raw_insert"]["per_second"], "rows/s", better="higher",
               floor="db_insert_rate", backend=backend),
        figure("contact page p99" + scale, page["first_page"]["p99_ms"], "ms", target=5 if on_pg else None,
               floor="db_page_p99_ms", backend=backend),
        figure("contact page, deeper pages p99" + scale, page["deeper_pages"].get("p99_ms"), "ms",
               target=5 if on_pg else None, floor="db_page_p99_ms", backend=backend),
    ]  # fmt: skip


def summary(run: dict[str, Any]) -> str:
    parts = [f"[{run['backend']}]"]
    if "single" in run:
        spent = run["single"]["cpu_ms_per_request"]
        parts.append(f"single {run['single']['per_second']} req/s p50 {run['single']['p50_ms']} ms "
                     f"p99 {run['single']['p99_ms']} ms (CPU µs/request: interactions "
                     f"{spent['interactions'] * 1000:.0f}, total {spent['total'] * 1000:.0f})")  # fmt: skip

    def cpu(phase: dict[str, Any]) -> str:
        spent = phase["cpu_ms_per_touchpoint"]
        return f"CPU µs/tp: interactions {spent['interactions'] * 1000:.0f}, total {spent['total'] * 1000:.0f}"

    if "batch" in run:
        parts.append(f"batch {run['batch']['per_second']} tp/s (with events {run['batch']['with_events_per_second']}; "
                     f"{cpu(run['batch'])})")  # fmt: skip
    if "nats" in run:
        parts.append(f"NATS {run['nats']['per_second']} tp/s ({cpu(run['nats'])}) "
                     f"batched {run['nats_batched']['per_second']} tp/s ({cpu(run['nats_batched'])}) "
                     f"backlog {run['nats_backlog']['per_second']} tp/s ({cpu(run['nats_backlog'])})")  # fmt: skip
    if "raw_insert" in run:
        parts.append(f"raw insert {run['raw_insert']['per_second']} rows/s")
    if "contact_page" in run:
        page = run["contact_page"]
        parts.append(f"page p99 {page['first_page']['p99_ms']} ms, deeper {page['deeper_pages']['p99_ms']} ms "
                     f"(CPU µs/page: interactions {page['cpu_ms_per_page']['first_page']['interactions'] * 1000:.0f}"
                     f"/{page['cpu_ms_per_page']['deeper_pages']['interactions'] * 1000:.0f}), "
                     f"database alone {page['floor_database_query']['p99_ms']} ms")  # fmt: skip
    if "floor_bare_endpoint" in run:
        parts.append(f"bare endpoint {run['floor_bare_endpoint']['bare_endpoint_rate']['per_second']} req/s")
    return " | ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--part", choices=PARTS, default="all", help="which workload to run (all: the full run)")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    runs = [asyncio.run(run_backend(b, args.quick, args.part)) for b in backends]
    for run in runs:
        print(summary(run), flush=True)
    if args.part == "all":
        name = "ingest" + ("-quick" if args.quick else "")
        write_results(name, {"quick": args.quick, "runs": runs,
                             "figures": [f for run in runs for f in figures_of(run, args.quick)]})  # fmt: skip
    else:  # a partial run is for iterating: git-ignored, never read by the report
        write_results(f"ingest-{args.part}" + ("-quick" if args.quick else ""), {"quick": args.quick, "runs": runs})


if __name__ == "__main__":
    main()
