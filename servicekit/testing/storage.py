"""Search what a stack keeps on disk, not what its APIs answer: the proof that an erase left nothing behind.

``StorageScan`` gathers the places (SQLite database files with their ``-wal`` and ``-shm`` files, read byte for
byte; PostgreSQL databases, dumped as text with ``pg_dump``; log files; any other files or folders, such as a
JetStream store) and ``StorageScan.find`` reports every place that holds one of the given strings. Case is
ignored, and a phone number is also looked for as digits only (how search terms keep it)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

from servicekit.testing.postgres import postgres_bin_dir

if TYPE_CHECKING:
    from servicekit.devstack import Stack


@dataclass(frozen=True)
class Hit:
    needle: str
    place: str
    context: str

    def __str__(self) -> str:
        return f"{self.needle!r} in {self.place}: …{self.context}…"


def variants(needle: str) -> set[str]:
    """The forms a value may be stored in: as given, lowered, and a phone number's digits."""
    found = {needle, needle.lower()}
    digits = "".join(c for c in needle if c.isdigit())
    if needle.startswith("+") and len(digits) >= 8:
        found.add(digits)
    return found


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or not parsed.database:
        return None
    return Path(parsed.database)


def dump_postgres(url: str) -> str:
    """Every table of the database as text (``pg_dump --data-only``: COPY rows, one per line)."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise RuntimeError("pg_dump not found")
    parsed = make_url(url).set(drivername="postgresql")
    result = subprocess.run(
        [str(bin_dir / "pg_dump"), "--data-only", "--no-owner", "--dbname", parsed.render_as_string(False)],
        check=True,
        capture_output=True,
    )
    return result.stdout.decode("utf-8", errors="replace")


@dataclass
class StorageScan:
    """The places to search. ``add_database`` takes a service's database URL (SQLite or PostgreSQL)."""

    files: list[Path] = field(default_factory=list)
    postgres_urls: list[str] = field(default_factory=list)

    def add_database(self, url: str) -> None:
        path = sqlite_path(url)
        if path is None:
            self.postgres_urls.append(url)
            return
        self.files += [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]

    def add_files(self, paths: Iterable[Path]) -> None:
        """Files, or folders searched recursively (a JetStream store, a log folder)."""
        for path in paths:
            self.files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]

    def contents(self) -> Iterable[tuple[str, bytes]]:
        for path in self.files:
            if path.is_file():
                yield str(path), path.read_bytes()
        for url in self.postgres_urls:
            yield f"pg_dump of {make_url(url).database}", dump_postgres(url).encode()

    def find(self, needles: Iterable[str]) -> list[Hit]:
        """Every place holding one of ``needles`` (each once per place), with a little of what surrounds it."""
        wanted = {variant.lower().encode(): needle for needle in needles for variant in variants(needle)}
        hits: list[Hit] = []
        for place, content in self.contents():
            lowered = content.lower()
            for variant, needle in wanted.items():
                at = lowered.find(variant)
                if at >= 0:
                    context = content[max(0, at - 60) : at + len(variant) + 60].decode("utf-8", errors="replace")
                    hits.append(Hit(needle, place, context.replace("\n", " ")))
        return hits

    async def assert_clean(self, needles: Iterable[str], *, timeout: float = 30.0) -> None:
        """Wait until no place holds any of ``needles`` (an erase's checkpoint and the relays' clean-up run just
        after it), then fail listing every hit if some remain."""
        wanted = list(needles)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            hits = await asyncio.to_thread(self.find, wanted)
            if not hits or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.5)
        assert not hits, f"{len(hits)} leftovers:\n" + "\n".join(map(str, hits))


def stack_storage(stack: Stack, *, jetstream: bool = False) -> StorageScan:
    """Everything a ``devstack.Stack`` keeps on disk: each service's database and every log file of its folder.
    ``jetstream``: the JetStream store files too (an erased contact's messages leave them once every consumer has
    the erasure: ``servicekit.purge``)."""
    scan = StorageScan()
    for service in stack.services.values():
        scan.add_database(service.env[f"{service.spec.prefix}DATABASE_URL"])
    store = stack.nats.store_dir.resolve() if stack.nats is not None else None
    logs = sorted(p for p in stack.var_dir.rglob("*.log") if store is None or store not in p.resolve().parents)
    scan.add_files(logs)
    if jetstream and store is not None:
        scan.add_files([store])
    return scan
