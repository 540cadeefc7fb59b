"""Raw floors: what the machine does with no Touchpoint code in the way, measured in the same run as the figures.

- database: bulk insert rate (rows/s), single-row insert+commit latency, point query by primary key and the
  keyset page query (one contact's newest 50 among many) latency; on SQLite and on PostgreSQL;
- NATS JetStream (file storage, ``sync_interval: always`` like the stack): acknowledged publish latency one at a
  time, publish rate with many in flight, pull-consume rate with acks;
- HTTP: a bare FastAPI endpoint served by uvicorn in its own process (same flags as the services): latency one
  request at a time and the request rate with 64 concurrent clients.

Every Touchpoint figure in bench/results/REPORT.md is shown beside the matching floor from this file.

    python -m bench.floors [--quick] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
from fastapi import FastAPI
from nats.js.api import StorageType, StreamConfig
from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, Text, Uuid, insert, select

from bench.common import client, expect, infrastructure, percentiles, remove_scratch, timed_calls, write_results
from bench.http1 import LightClient
from servicekit.db import make_engine
from servicekit.devstack import NatsProcess
from servicekit.processes import spawn
from servicekit.testing.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]

metadata = MetaData()
# The shape of a touchpoint row, without our code: the floor of insert and of the contact page query.
floor_rows = Table(
    "floor_rows",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("contact_id", Uuid, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("subject", String(200)),
    Column("body", Text),
    Index("floor_rows_contact_page", "contact_id", "occurred_at", "id"),
)


def bare_app() -> FastAPI:
    """The bare endpoint: FastAPI with one route and nothing else (``uvicorn --factory bench.floors:bare_app``)."""
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _row(contact_id: uuid.UUID, at: datetime, n: int) -> dict[str, Any]:
    return {"id": uuid.uuid4(), "contact_id": contact_id, "occurred_at": at, "channel": "email",
            "subject": f"Order {n}", "body": "Thanks for the quick delivery. " * 4}  # fmt: skip


async def database_floor(url: str, *, rows: int, samples: int) -> dict[str, Any]:
    """Insert ``rows`` rows (batches of 500), then time single inserts, point reads and one contact's page."""
    engine = make_engine(url)
    rng = random.Random(11)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
        await conn.run_sync(metadata.create_all)
    contacts = [uuid.uuid4() for _ in range(max(1, rows // 100))]
    busy = contacts[0]  # one contact with many rows: the page query's worst case
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ids: list[uuid.UUID] = []
    started = time.perf_counter()
    batch = 500
    for offset in range(0, rows, batch):
        chunk = []
        for n in range(offset, min(offset + batch, rows)):
            owner = busy if n % 10 == 0 else rng.choice(contacts)
            chunk.append(_row(owner, start + timedelta(seconds=n), n))
        ids.extend(r["id"] for r in chunk[:5])
        async with engine.begin() as conn:
            await conn.execute(insert(floor_rows), chunk)
    bulk_s = time.perf_counter() - started
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            await (await conn.execution_options(isolation_level="AUTOCOMMIT")).exec_driver_sql("ANALYZE floor_rows")

    single: list[float] = []
    for n in range(samples):
        t0 = time.perf_counter()
        async with engine.begin() as conn:
            await conn.execute(insert(floor_rows), [_row(busy, start + timedelta(days=400, seconds=n), n)])
        single.append(time.perf_counter() - t0)

    point: list[float] = []
    page: list[float] = []
    async with engine.connect() as conn:
        for _ in range(samples):
            wanted = rng.choice(ids)
            t0 = time.perf_counter()
            found = (await conn.execute(select(floor_rows).where(floor_rows.c.id == wanted))).first()
            point.append(time.perf_counter() - t0)
            assert found is not None
        for _ in range(samples):
            t0 = time.perf_counter()
            query = (
                select(floor_rows)
                .where(floor_rows.c.contact_id == busy)
                .order_by(floor_rows.c.occurred_at.desc(), floor_rows.c.id.desc())
                .limit(50)
            )
            got = (await conn.execute(query)).all()
            page.append(time.perf_counter() - t0)
            assert len(got) == 50
        await conn.rollback()
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
    await engine.dispose()
    return {
        "rows": rows,
        "bulk_insert_rows_per_second": round(rows / bulk_s, 1),
        "single_insert_commit": percentiles(single),
        "point_query": percentiles(point),
        "contact_page_query": {"contact_rows": rows // 10 + samples, **percentiles(page)},
    }


async def nats_floor(url: str, *, messages: int, samples: int) -> dict[str, Any]:
    """JetStream with acks: publish one at a time (latency), many in flight (rate), then pull-consume (rate)."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    stream = f"FLOOR_{uuid.uuid4().hex[:8].upper()}"
    await js.add_stream(StreamConfig(name=stream, subjects=[f"floor.{stream}.>"], storage=StorageType.FILE))
    payload = b'{"specversion":"1.0","type":"crm.interaction.logged.v1","data":{"channel":"email"}}' + b" " * 300
    one: list[float] = []
    for n in range(samples):
        t0 = time.perf_counter()
        await js.publish(f"floor.{stream}.one", payload, headers={"Nats-Msg-Id": f"one-{n}"})
        one.append(time.perf_counter() - t0)

    window = 256
    t0 = time.perf_counter()
    for offset in range(0, messages, window):
        batch = range(offset, min(offset + window, messages))
        await asyncio.gather(
            *(js.publish(f"floor.{stream}.many", payload, headers={"Nats-Msg-Id": f"many-{n}"}) for n in batch)
        )
    publish_s = time.perf_counter() - t0

    sub = await js.pull_subscribe(f"floor.{stream}.many", durable="floor", stream=stream)
    consumed = 0
    t0 = time.perf_counter()
    while consumed < messages:
        msgs = await sub.fetch(min(500, messages - consumed), timeout=10)
        for msg in msgs:
            await msg.ack()
        consumed += len(msgs)
    consume_s = time.perf_counter() - t0
    await js.delete_stream(stream)
    await nc.close()
    return {
        "messages": messages,
        "publish_acked": percentiles(one),
        "publish_per_second": round(messages / publish_s, 1),
        "consume_acked_per_second": round(consumed / consume_s, 1),
    }


async def http_floor(
    *, samples: int, requests: int, concurrency: int = 64, make_client: Callable[[str, int], Any] = client
) -> dict[str, Any]:
    """A bare FastAPI route in a uvicorn process, the way the services run, measured with ``make_client``
    (httpx by default; ``bench.http1.LightClient`` for the figures measured with that client)."""
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "bench.floors:bare_app", "--factory", "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log", "--log-level", "warning"]  # fmt: skip
    process = spawn(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        await asyncio.to_thread(wait_for_port, port)
        async with make_client(f"http://127.0.0.1:{port}", concurrency) as http:

            async def ping() -> None:
                expect((await http.get("/ping")).status_code, 200)

            await timed_calls([ping] * 50, 1)  # warm-up
            _, latencies, errors = await timed_calls([ping] * samples, 1)
            elapsed, _, rate_errors = await timed_calls([ping] * requests, concurrency)
    finally:
        process.terminate()
        process.wait(timeout=10)
    rate = {"per_second": round(requests / elapsed, 1), "concurrency": concurrency, "errors": len(rate_errors)}
    return {"bare_endpoint": {"errors": len(errors), **percentiles(latencies)}, "bare_endpoint_rate": rate}


async def measure(backends: list[str], quick: bool) -> dict[str, Any]:
    rows = 20_000 if quick else 200_000
    samples = 200 if quick else 1000
    result: dict[str, Any] = {"database": {}}
    for backend in backends:
        with infrastructure(backend) as infra:
            if backend == "sqlite":
                url = f"sqlite+aiosqlite:///{infra.base / 'floor.db'}"
            else:
                url = infra.database_url("floor")
            print(f"[floors] database on {backend} …", flush=True)
            result["database"][backend] = await database_floor(url, rows=rows, samples=samples)
    # The stack's own nats-server settings (sync_interval always), not the test harness defaults.
    base = Path(tempfile.mkdtemp(prefix="touchpoint-floor-nats-"))
    server = NatsProcess(base / "store", free_port(), free_port(), base / "nats.conf")
    server.start()
    try:
        print("[floors] NATS JetStream …", flush=True)
        result["nats"] = await nats_floor(server.url, messages=5_000 if quick else 50_000, samples=samples)
    finally:
        server.stop()
        remove_scratch(base)
    print("[floors] bare FastAPI endpoint …", flush=True)
    result["http"] = await http_floor(samples=samples, requests=2_000 if quick else 20_000)
    # The same endpoint with the light client bench/ingest.py loads the service with (httpx is the bottleneck).
    light = await http_floor(samples=samples, requests=5_000 if quick else 50_000, make_client=LightClient)
    result["http"]["bare_endpoint_light"] = light["bare_endpoint"]
    result["http"]["bare_endpoint_rate_light"] = light["bare_endpoint_rate"]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    os.chdir(ROOT)
    floors = asyncio.run(measure(backends, args.quick))
    write_results("floors" + ("-quick" if args.quick else ""), {"quick": args.quick, **floors})


if __name__ == "__main__":
    main()
