"""Search benchmark: the contacts service's search (services/contacts/search.py) over 100,000 contacts on SQLite and
PostgreSQL, straight against the database (no HTTP: bench/contacts.py measures the route), one query at a time.

Workloads: a name typed exactly, a prefix, a name with one typo, a phone number in national format, and the
second page of a common name (every tier). Beside them, the raw floor: one indexed term look-up. On PostgreSQL the
typo query's plan is shown, to prove the trigram scan uses the GIN index.

Target (2-core machine): p99 <= 50 ms for each workload at 100k contacts.

    python -m bench.search [--quick] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from bench.common import infrastructure, percentiles, vacuum_analyze, write_results
from bench.contacts import FIRST, LAST, load_contacts
from servicekit.db import make_engine
from servicekit.migrations import upgrade
from services.contacts.search import DEFAULT_SIMILARITY
from services.contacts.service import list_contacts

TARGET_P99_MS = 50


def typo(rng: random.Random, word: str) -> str:
    """One letter dropped or replaced, not the first (agents rarely miss the first letter)."""
    at = rng.randrange(1, len(word))
    if rng.random() < 0.5:
        return word[:at] + word[at + 1 :]
    return word[:at] + rng.choice("aeiourstn") + word[at + 1 :]


def workloads(rng: random.Random, size: int, n: int) -> dict[str, list[str]]:
    return {
        "exact_name": [rng.choice(LAST) for _ in range(n)],
        "prefix": [rng.choice(LAST)[:4] for _ in range(n)],
        "typo_name": [typo(rng, rng.choice([*FIRST, *LAST])) for _ in range(n)],
        "typo_full_name": [f"{typo(rng, rng.choice(FIRST))} {rng.choice(LAST)}" for _ in range(n)],
        # bench/contacts.py's phones are +1202nnnnnnn: typed as (202) nnn-nnnn, US style
        "phone_national": [
            f"(202) {m // 10_000:03d}-{m % 10_000:04d}" for m in (rng.randrange(size) for _ in range(n))
        ],
    }


async def timed_search(session: AsyncSession, q: str, *, cursor: str | None = None) -> tuple[float, Any]:
    started = time.perf_counter()
    page = await list_contacts(session=session, q=q, limit=25, cursor=cursor, region="US")
    elapsed = time.perf_counter() - started
    session.expunge_all()
    await session.rollback()  # a fresh transaction a request, as the service has
    return elapsed, page


async def measure(database_url: str, size: int, n: int, rng: random.Random) -> dict[str, Any]:
    engine = make_engine(database_url)
    result: dict[str, Any] = {"contacts": size}
    found: dict[str, int] = {}
    async with AsyncSession(engine, expire_on_commit=False) as session:
        for name, queries in workloads(rng, size, n).items():
            samples = []
            hits = 0
            for q in queries:
                elapsed, (rows, _) = await timed_search(session, q)
                samples.append(elapsed)
                hits += bool(rows)
            result[name] = percentiles(samples)
            found[name] = hits
        samples = []
        for _ in range(n):
            _, (_, cursor) = await timed_search(session, rng.choice(FIRST))
            elapsed, _ = await timed_search(session, rng.choice(FIRST), cursor=cursor)
            samples.append(elapsed)
        result["second_page"] = percentiles(samples)
    result["queries_with_results"] = {name: f"{hits}/{n}" for name, hits in found.items()}
    async with engine.connect() as conn:
        samples = []
        for _ in range(n):
            term = rng.choice(LAST)
            started = time.perf_counter()
            lookup = sa.text("SELECT contact_id FROM search_terms WHERE field = 'q' AND term = :t LIMIT 26")
            (await conn.execute(lookup, {"t": term})).all()
            samples.append(time.perf_counter() - started)
        result["floor_term_lookup"] = percentiles(samples)
        if engine.dialect.name == "postgresql":
            await conn.execute(sa.text(f"SET pg_trgm.similarity_threshold = {DEFAULT_SIMILARITY}"))
            explain = "EXPLAIN SELECT contact_id FROM search_terms WHERE field = 'name' AND term % 'lovlace'"
            result["typo_plan"] = [row[0] for row in (await conn.execute(sa.text(explain))).all()]
    await engine.dispose()
    return result


async def run_backend(backend: str, quick: bool) -> dict[str, Any]:
    rng = random.Random(11)
    size = 5_000 if quick else 100_000
    n = 50 if quick else 200
    with infrastructure(backend) as infra:
        database_url = infra.database_url("contacts")
        await asyncio.to_thread(upgrade, "services/contacts/alembic.ini", database_url)
        started = time.perf_counter()
        await load_contacts(database_url, 0, size, rng)
        await vacuum_analyze(database_url)
        print(f"[{backend}] seeded {size} contacts ({time.perf_counter() - started:.1f} s); measuring …", flush=True)
        figures = await measure(database_url, size, n, rng)
    return {"backend": backend, **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5,000 contacts, for a smoke run")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    runs = [asyncio.run(run_backend(b, args.quick)) for b in backends]
    kinds = ["exact_name", "prefix", "typo_name", "typo_full_name", "phone_national", "second_page"]
    verdicts = {run["backend"]: {kind: run[kind]["p99_ms"] <= TARGET_P99_MS for kind in kinds} for run in runs}
    document = {"quick": args.quick, "target_p99_ms": TARGET_P99_MS, "verdicts": verdicts, "runs": runs}
    write_results("search" + ("-quick" if args.quick else ""), document)


if __name__ == "__main__":
    main()
