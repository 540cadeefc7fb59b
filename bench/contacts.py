"""Contacts benchmark: create and resolve rates, GET by id, resolve and prefix search latency at 10k and
100k contacts, on SQLite and PostgreSQL, through the real service process; beside the raw database floor.

Targets (2-core machine): resolve of an existing identity p99 ≤ 10 ms and prefix search p99 ≤ 20 ms at 100k.
Latency figures are measured one request at a time (no queueing in the figure); rates with 16 concurrent clients.

    python -m bench.contacts [--quick] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
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
from servicekit.db import is_sqlite, make_engine
from servicekit.migrations import upgrade
from servicekit.testing.ports import free_port
from services.contacts.models import Contact, Identity, SearchTerm, SearchTrigram, outbox_table
from services.contacts.search import trigram_rows
from services.contacts.service import identities_of, list_contacts, search_terms_of

FIRST = ["ada", "grace", "alan", "edsger", "barbara", "donald", "margaret", "linus", "guido", "katherine", "john",
         "frances", "dennis", "ken", "radia", "tim", "vint", "hedy", "niklaus", "shafi", "leslie", "sophie",
         "yukihiro", "bjarne", "anders", "james", "adele", "jean", "carol", "lynn"]  # fmt: skip
LAST = ["lovelace", "hopper", "turing", "dijkstra", "liskov", "knuth", "hamilton", "torvalds", "rossum", "johnson",
        "mccarthy", "allen", "ritchie", "thompson", "perlman", "berners", "cerf", "lamarr", "wirth", "goldwasser",
        "lamport", "wilson", "matsumoto", "stroustrup", "hejlsberg", "gosling", "goldberg", "sammet", "shaw",
        "conway"]  # fmt: skip
COMPANIES = ["Analytical Engines", "Navy Labs", "Bletchley", "Mathematisch Centrum", "Stanford", "Apollo Guidance",
             "Bell Labs", "CERN", "Xerox PARC", "Acme Retail", "Globex", "Initech", "Umbrella", "Hooli"]  # fmt: skip


def make_contact(rng: random.Random, n: int, now: datetime) -> Contact:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return Contact(
        name=f"{first.title()} {last.title()}",
        company=rng.choice(COMPANIES),
        emails=[f"{first}.{last}.{n}@example.com"],
        phones=[f"+1202{n:07d}"],
        tier="premium" if n % 10 == 0 else "standard",
        tags=["vip"] if n % 7 == 0 else [],
        stage=rng.choice(["lead", "prospect", "customer", "repeat"]),
        created_at=now,
        updated_at=now,
    )


async def load_contacts(database_url: str, start: int, count: int, rng: random.Random) -> list[uuid.UUID]:
    """Bulk-load contacts with the same rows the service writes (identities, search terms): COPY on
    PostgreSQL, a Core bulk insert on SQLite. Returns their ids."""
    now = datetime.now(UTC)
    ids: list[uuid.UUID] = []
    batch = 5000
    for offset in range(start, start + count, batch):
        contacts = [make_contact(rng, n, now) for n in range(offset, min(offset + batch, start + count))]
        ids += [c.id for c in contacts]
        await copy_rows(database_url, Contact, [c.model_dump() for c in contacts])
        await copy_rows(database_url, Identity, [
            {"kind": k, "value": v, "contact_id": c.id} for c in contacts for k, v in identities_of(c)
        ])  # fmt: skip
        await copy_rows(database_url, SearchTerm, [
            {"contact_id": c.id, "field": f, "term": t} for c in contacts for f, t in search_terms_of(c)
        ])  # fmt: skip
    if is_sqlite(database_url):
        await load_vocabulary(database_url)
    return ids


async def load_vocabulary(database_url: str) -> None:
    """SQLite's typo search vocabulary (services/contacts/search.py) for the name words loaded without it."""
    engine = make_engine(database_url)
    async with engine.connect() as conn:
        words = set((await conn.execute(select(col(SearchTerm.term)).where(col(SearchTerm.field) == "name"))).scalars())
        known = set((await conn.execute(select(col(SearchTrigram.term)).distinct())).scalars())
    await engine.dispose()
    await copy_rows(database_url, SearchTrigram, trigram_rows(words - known))


async def seed(database_url: str, start: int, count: int, rng: random.Random) -> float:
    """Load contacts, then VACUUM ANALYZE as autovacuum would (index-only scans of the search terms need the
    visibility map). Returns the seconds it took."""
    started = time.perf_counter()
    await load_contacts(database_url, start, count, rng)
    await vacuum_analyze(database_url)
    return time.perf_counter() - started


async def raw_floor(database_url: str, emails: list[str], prefixes: list[str]) -> dict[str, Any]:
    """The same lookups straight against the database: the floor our HTTP figures sit on."""
    engine = make_engine(database_url)
    resolve: list[float] = []
    search: list[float] = []
    async with engine.connect() as conn:
        for email in emails:
            started = time.perf_counter()
            by_email = select(col(Identity.contact_id)).where(
                col(Identity.kind) == "email", col(Identity.value) == email
            )
            identity = (await conn.execute(by_email)).first()
            assert identity is not None
            (await conn.execute(select(Contact).where(col(Contact.id) == identity[0]))).first()
            resolve.append(time.perf_counter() - started)
    # The service's own search queries, without HTTP and JSON.
    async with AsyncSession(engine) as session:
        for prefix in prefixes:
            started = time.perf_counter()
            await list_contacts(session=session, q=prefix, limit=20)
            search.append(time.perf_counter() - started)
            session.expunge_all()
    await engine.dispose()
    return {"resolve_existing": percentiles(resolve), "search_prefix": percentiles(search)}


async def measure(base_url: str, database_url: str, size: int, quick: bool, rng: random.Random) -> dict[str, Any]:
    n_rate = 300 if quick else 2000
    n_latency = 200 if quick else 1000
    known = [rng.randrange(size) for _ in range(n_latency)]
    result: dict[str, Any] = {"contacts": size}
    async with client(base_url, 16) as http:
        # The seeded emails are first.last.n@example.com; find them through the API's own search.
        emails = []
        for n in known:
            page = (await http.get("/v1/contacts", params={"q": f"+1202{n:07d}", "limit": 1})).json()
            emails.append(page["items"][0]["emails"][0])
        ids: list[str] = []

        async def create() -> None:
            body = {"name": "Bench Person", "emails": [f"bench.{uuid.uuid4().hex}@example.com"], "tags": ["bench"]}
            response = await http.post("/v1/contacts", json=body)
            expect(response.status_code, 201)
            ids.append(response.json()["id"])

        elapsed, latencies, errors = await timed_calls([create] * n_rate, 16)
        result["create"] = {"per_second": round(n_rate / elapsed, 1), "errors": len(errors), **percentiles(latencies)}

        def resolve_call(email: str) -> Any:
            async def call() -> None:
                response = await http.post("/v1/contacts/resolve", json={"email": email})
                expect(response.status_code, 200)

            return call

        elapsed, latencies, errors = await timed_calls([resolve_call(rng.choice(emails)) for _ in range(n_rate)], 16)
        result["resolve_existing_rate"] = {"per_second": round(n_rate / elapsed, 1), "errors": len(errors)}
        _, latencies, errors = await timed_calls([resolve_call(e) for e in emails], 1)
        result["resolve_existing"] = {"errors": len(errors), **percentiles(latencies)}

        async def resolve_new() -> None:
            response = await http.post("/v1/contacts/resolve", json={"email": f"new.{uuid.uuid4().hex}@example.com"})
            expect(response.status_code, 201)

        elapsed, latencies, errors = await timed_calls([resolve_new] * n_rate, 16)
        result["resolve_new_rate"] = {"per_second": round(n_rate / elapsed, 1), "errors": len(errors)}

        def get_call(contact_id: str) -> Any:
            async def call() -> None:
                expect((await http.get(f"/v1/contacts/{contact_id}")).status_code, 200)

            return call

        _, latencies, errors = await timed_calls([get_call(rng.choice(ids)) for _ in range(n_latency)], 1)
        result["get_by_id"] = {"errors": len(errors), **percentiles(latencies)}

        prefixes = [rng.choice([rng.choice(FIRST)[:3], rng.choice(LAST)[:4], e[:5]]) for e in emails]

        def search_call(prefix: str) -> Any:
            async def call() -> None:
                expect((await http.get("/v1/contacts", params={"q": prefix, "limit": 20})).status_code, 200)

            return call

        _, latencies, errors = await timed_calls([search_call(p) for p in prefixes], 1)
        result["search_prefix"] = {"errors": len(errors), **percentiles(latencies)}

        async def healthz() -> None:
            expect((await http.get("/healthz")).status_code, 200)

        _, latencies, _ = await timed_calls([healthz] * n_latency, 1)
        result["floor_bare_endpoint"] = percentiles(latencies)
    result["floor_database"] = await raw_floor(database_url, emails, prefixes)
    return result


async def run_backend(backend: str, quick: bool) -> dict[str, Any]:
    rng = random.Random(7)
    sizes = [1_000, 5_000] if quick else [10_000, 100_000]
    with infrastructure(backend) as infra:
        database_url = infra.database_url("contacts")
        await asyncio.to_thread(upgrade, "services/contacts/alembic.ini", database_url)
        process = infra.service("contacts", {"CONTACTS_DATABASE_URL": database_url,
                                             "CONTACTS_PORT": str(free_port())})  # fmt: skip
        process.start()
        seeded = 0
        figures = []
        for size in sizes:
            seed_s = await seed(database_url, seeded, size - seeded, rng)
            seeded = size
            print(f"[{backend}] seeded {size} contacts ({seed_s:.1f} s); measuring …", flush=True)
            figures.append(await measure(process.url, database_url, size, quick, rng))
        # The seeded rows wrote no outbox rows; the ones made over HTTP were published as usual.
        engine = make_engine(database_url)
        async with engine.begin() as conn:
            await conn.execute(update(outbox_table).values(published_at=datetime.now(UTC)))
        await engine.dispose()
    return {"backend": backend, "sizes": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    runs = [asyncio.run(run_backend(b, args.quick)) for b in backends]
    targets = {"resolve_existing_p99_ms_at_100k": 10, "search_prefix_p99_ms_at_100k": 20}
    verdicts = {}
    for run in runs:
        largest = run["sizes"][-1]
        verdicts[run["backend"]] = {
            "resolve_existing_p99_ms": largest["resolve_existing"]["p99_ms"],
            "search_prefix_p99_ms": largest["search_prefix"]["p99_ms"],
            "resolve_met": largest["resolve_existing"]["p99_ms"] <= targets["resolve_existing_p99_ms_at_100k"],
            "search_met": largest["search_prefix"]["p99_ms"] <= targets["search_prefix_p99_ms_at_100k"],
        }
    write_results("contacts" + ("-quick" if args.quick else ""),
                  {"quick": args.quick, "targets": targets, "verdicts": verdicts, "runs": runs})  # fmt: skip


if __name__ == "__main__":
    main()
