"""What every benchmark shares: throwaway infrastructure, timing, and the JSON/print of results."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from servicekit.devstack import SERVICES, ServiceProcess
from servicekit.testing.nats import NatsServer
from servicekit.testing.ports import free_port
from servicekit.testing.postgres import PostgresCluster

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """A description of the machine the figures were measured on."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_kb = 0
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal"):
                memory_kb = int(line.split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def percentiles(samples_s: list[float]) -> dict[str, float]:
    if not samples_s:
        return {"n": 0}
    ordered = sorted(samples_s)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {"n": len(ordered), "p50_ms": pick(0.50), "p90_ms": pick(0.90), "p99_ms": pick(0.99),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 3)}  # fmt: skip


async def timed_calls(
    calls: list[Callable[[], Awaitable[Any]]], concurrency: int
) -> tuple[float, list[float], list[BaseException]]:
    """Run the calls with at most ``concurrency`` in flight; returns (elapsed s, latencies s, errors)."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    queue = iter(calls)

    async def worker() -> None:
        for call in queue:
            started = time.perf_counter()
            try:
                await call()
            except Exception as exc:
                errors.append(exc)
                continue
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, errors


def expect(status: int, *allowed: int) -> None:
    if status not in allowed:
        raise RuntimeError(f"unexpected HTTP status {status}")


@dataclass
class Infra:
    """nats-server, an optional PostgreSQL cluster and service processes in one temp dir."""

    backend: str
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="touchpoint-bench-")))
    nats: NatsServer | None = None
    pg: PostgresCluster | None = None
    processes: list[ServiceProcess] = field(default_factory=list)

    def start(self) -> Infra:
        self.nats = NatsServer(self.base / "nats").start()
        if self.backend == "postgres":
            self.pg = PostgresCluster(self.base / "pg", durable=True).init().start()
        return self

    def database_url(self, name: str) -> str:
        if self.pg is not None:
            return self.pg.create_database(name)
        return f"sqlite+aiosqlite:///{self.base / (name + '.db')}"

    def service(self, name: str, extra_env: dict[str, str] | None = None) -> ServiceProcess:
        spec = next(s for s in SERVICES if s.name == name)
        assert self.nats is not None
        env = {**os.environ, f"{spec.prefix}PORT": str(free_port()), f"{spec.prefix}NATS_URL": self.nats.url,
               f"{spec.prefix}LOG_LEVEL": "WARNING", **(extra_env or {})}  # fmt: skip
        if f"{spec.prefix}DATABASE_URL" not in env:
            env[f"{spec.prefix}DATABASE_URL"] = self.database_url(name)
        process = ServiceProcess(spec, env, self.base / "logs" / f"{name}.log")
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        if self.nats is not None:
            self.nats.stop()
        if self.pg is not None:
            self.pg.destroy()
        remove_scratch(self.base)


def remove_scratch(directory: Path) -> None:
    """Delete a run's temp dir (servers' stores, databases, logs): a full ingest run leaves 1.3 GB, and a
    next run on the same disk would share it with the kernel writing that back."""
    shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def infrastructure(backend: str) -> Iterator[Infra]:
    infra = Infra(backend).start()
    try:
        yield infra
    finally:
        infra.stop()


def write_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {"benchmark": name, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": machine(), **results}  # fmt: skip
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))
    print(f"written: {path}")
    return path


def postmaster_pid(pg: PostgresCluster | None) -> int | None:
    """The pid of a running cluster's postmaster (its backends are its children), or None."""
    pid_file = pg.data_dir / "postmaster.pid" if pg is not None else None
    if pid_file is None or not pid_file.exists():
        return None
    return int(pid_file.read_text().split()[0])


async def make_api_keys(http: Any, admin_key: str, roles: list[str], prefix: str) -> dict[str, dict[str, str]]:
    """An API key per role, made through the gateway's API with the admin key: each role's Authorization header."""
    keys = {}
    for role in roles:
        made = await http.post("/api/v1/api-keys", json={"name": f"{prefix}-{role}", "role": role},
                               headers={"Authorization": f"Bearer {admin_key}"})  # fmt: skip
        if made.status_code != 201:
            raise RuntimeError(f"making the {role} key: {made.status_code} {made.content[:200]!r}")
        keys[role] = {"Authorization": f"Bearer {made.json()['key']}"}
    return keys


def client(base_url: str, concurrency: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30)


async def copy_rows(database_url: str, table: Any, rows: list[dict[str, Any]]) -> None:
    """Bulk-load rows into one table (a ``Table`` or a table model) of a migrated database: COPY on PostgreSQL
    (several times faster than INSERT), a Core bulk insert on SQLite. JSON columns take their Python value."""
    if not rows:
        return
    table = getattr(table, "__table__", table)
    columns = [column.name for column in table.columns]
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        from servicekit.db import make_engine

        engine = make_engine(database_url)
        try:
            async with engine.begin() as conn:
                for start in range(0, len(rows), 5000):
                    await conn.execute(table.insert(), rows[start : start + 5000])
        finally:
            await engine.dispose()
        return
    as_json = {column.name for column in table.columns if isinstance(column.type, sa.JSON)}
    records = [tuple(json.dumps(row[c]) if c in as_json else row.get(c) for c in columns) for row in rows]
    connection = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        await connection.copy_records_to_table(table.name, records=records, columns=columns)
    finally:
        await connection.close()


async def vacuum_analyze(database_url: str) -> None:
    """What autovacuum would do after a bulk load: fresh statistics and a visibility map (index-only scans); then
    a checkpoint, so the load's dirty pages are on disk before anything is timed (on a durable cluster the
    checkpointer would otherwise write them out in the middle of the measurement)."""
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        connection = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
        try:
            await connection.execute("VACUUM ANALYZE")
            await connection.execute("CHECKPOINT")
        finally:
            await connection.close()
