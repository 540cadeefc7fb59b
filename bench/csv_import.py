"""CSV import benchmark: 100,000 rows into the contacts service (a real process), streamed, on SQLite and
PostgreSQL; rows per second and the service's resident memory (its process tree, sampled every 0.2 s) before,
at peak and after. Memory bounded means the peak grows by a few chunks' worth, not by the file (14 MB here).

    python -m bench.csv_import [--rows N] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from bench.common import infrastructure, write_results
from servicekit.migrations import upgrade


def _tree(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        for child in children:
            found += _tree(int(child))
    return found


def rss_bytes(pid: int) -> int:
    total = 0
    for each in _tree(pid):
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except FileNotFoundError:
            continue
    return total


async def rows_of(count: int) -> AsyncIterator[bytes]:
    yield b"name,email,phone,company,tier,tags,external_id.shop,consent.email\n"
    for first in range(0, count, 1_000):
        yield "".join(
            f'Person {i},person{i}@example.com,+1212{2_000_000 + i:07d},"Company, {i % 97}",'
            f"{'premium' if i % 10 == 0 else 'standard'},t{i % 5};vip,S-{i},{'true' if i % 2 else 'false'}\n"
            for i in range(first, min(first + 1_000, count))
        ).encode()


async def run_backend(backend: str, rows: int) -> dict[str, Any]:
    with infrastructure(backend) as infra:
        database_url = infra.database_url("contacts")
        await asyncio.to_thread(upgrade, "services/contacts/alembic.ini", database_url)
        process = infra.service("contacts", {"CONTACTS_DATABASE_URL": database_url})
        process.start()
        assert process.process is not None
        pid = process.process.pid
        size = sum([len(chunk) async for chunk in rows_of(rows)])
        before = rss_bytes(pid)
        peak = before
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_bytes(pid))
                await asyncio.sleep(0.2)

        sampler = asyncio.create_task(sample())
        started = time.perf_counter()
        async with httpx.AsyncClient(base_url=process.url, timeout=httpx.Timeout(3_600, connect=5)) as client:
            response = await client.post(
                "/v1/contacts/import", content=rows_of(rows), headers={"Content-Type": "text/csv"}
            )
        elapsed = time.perf_counter() - started
        done.set()
        await sampler
        report = response.json()
        assert response.status_code == 200 and report["created"] == rows, (response.status_code, report["errors"][:3])
        return {
            "backend": backend, "rows": rows, "body_bytes": size, "seconds": round(elapsed, 1),
            "rows_per_s": round(rows / elapsed), "rss_before_mb": round(before / 2**20, 1),
            "rss_peak_mb": round(peak / 2**20, 1), "rss_growth_mb": round((peak - before) / 2**20, 1),
            "rss_after_mb": round(rss_bytes(pid) / 2**20, 1),
        }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    runs = [asyncio.run(run_backend(b, args.rows)) for b in backends]
    write_results("csv_import", {"runs": runs})


if __name__ == "__main__":
    main()
