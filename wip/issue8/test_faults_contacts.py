"""Faults under load on the real stack on PostgreSQL, through the gateway: contacts written by careful clients
while nats-server is SIGKILLed, the contacts service is SIGKILLed, PostgreSQL is stopped (fast shutdown), and
the contacts service sits behind a loopback proxy that delays or drops its connections.

After each: every accepted contact stored exactly once, its ``created`` event on JetStream exactly once, no 500,
every 503 with ``Retry-After``, nothing hung; the recovery time (first success after the restart) is printed.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from servicekit.db import make_engine
from servicekit.devstack import SERVICES
from tests.faults.harness import (
    HANG_S,
    FaultStack,
    Outage,
    Tally,
    exactly_once,
    fault_stack,
    not_in_stream,
    print_figures,
    stream_events,
    write_all,
)
from tests.faults.proxy import SlowProxy

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.stack, pytest.mark.timeout(900)]

# Writes per scenario. Contacts are written over HTTP one by one through the gateway (the slow path);
# the touchpoint scenarios, at 10,000 each, go by NATS and batches.
COUNT = int(os.environ.get("FAULT_CONTACTS", "1000"))
CONCURRENCY = 16
ABSENT = {spec.name for spec in SERVICES if not spec.installed}


@pytest.fixture(scope="module")
def stack() -> Iterator[FaultStack]:
    with fault_stack() as running:
        yield running


async def agent_key(http: httpx.AsyncClient, stack: FaultStack) -> dict[str, str]:
    made = await http.post("/api/v1/api-keys", json={"name": f"faults-{uuid.uuid4().hex[:6]}", "role": "agent"},
                           headers=stack.admin)  # fmt: skip
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['key']}"}


def contact_id_of(response: httpx.Response) -> str | None:
    body = response.json()
    return body.get("id") if response.status_code == 201 else body.get("contact_id")


async def run_scenario(stack: FaultStack, name: str, inject: Callable[[], None], lift: Callable[[], None],
                       hold_s: float = 3.0) -> tuple[Tally, Outage]:  # fmt: skip
    tag = uuid.uuid4().hex[:8]
    emails = [f"fault.{tag}.{n}@example.com" for n in range(COUNT)]
    tally = Tally()
    outage = Outage(name, inject, lift)
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=HANG_S) as http:
        headers = await agent_key(http, stack)

        async def send(client: httpx.AsyncClient, email: str) -> httpx.Response:
            return await client.post("/api/v1/contacts", json={"name": "Fault Person", "emails": [email]},
                                     headers=headers)  # fmt: skip

        started = time.monotonic()
        fault = asyncio.create_task(outage.run(tally, after=COUNT // 3, hold_s=hold_s))
        await write_all(http, emails, send, contact_id_of, concurrency=CONCURRENCY, tally=tally)
        await fault
        elapsed = time.monotonic() - started
    print_figures(name, tally, outage, elapsed, COUNT)
    await all_ready(stack)
    await verify(stack, tag, emails, tally)
    return tally, outage


async def all_ready(stack: FaultStack, timeout: float = 30) -> None:
    """After the fault every process reports ready again (database and NATS reachable) within ``timeout``."""
    async with httpx.AsyncClient(timeout=5) as http:
        for service in stack.stack.services.values():
            started = time.monotonic()
            last: httpx.Response | None = None
            while time.monotonic() - started < timeout:
                last = await http.get(f"{service.url}/readyz")
                checks = last.json().get("checks", {})
                # Services not in this checkout are down by definition; only the running stack counts.
                if last.status_code == 200 or all(
                    state == "ok" for name, state in checks.items() if name not in ABSENT
                ):
                    break
                await asyncio.sleep(0.2)
            assert last is not None and time.monotonic() - started < timeout, (
                service.spec.name,
                last.text if last else "",
            )


async def verify(stack: FaultStack, tag: str, emails: list[str], tally: Tally) -> None:
    assert not tally.problems(), tally.problems()
    assert set(tally.accepted) == set(emails), f"{len(set(emails) - set(tally.accepted))} writes never settled"
    engine = make_engine(stack.url_of("contacts"))
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(
                text("SELECT value, contact_id FROM identities WHERE kind = 'email' AND value LIKE :p"),
                {"p": f"fault.{tag}.%"},
            )).all()  # fmt: skip
            contacts = (await conn.execute(
                text("SELECT count(*) FROM contacts WHERE emails::text LIKE :p"), {"p": f"%fault.{tag}.%"}
            )).scalar_one()  # fmt: skip
    finally:
        await engine.dispose()
    stored = {value: str(contact_id) for value, contact_id in rows}
    assert stored == tally.accepted, "the ids the clients were given are not the stored ones"
    assert contacts == len(emails), f"{contacts} contact rows for {len(emails)} accepted writes"
    assert stack.stack.nats is not None
    wanted = set(stored.values())
    events = await stream_events(stack.stack.nats.url, "CRM_CONTACTS", "crm.contacts.created.>", wanted)
    ours = [e for e in events if e["subject"] in wanted]
    problems = exactly_once(ours, wanted)
    missing = sorted(wanted - {e["subject"] for e in ours})
    if missing:
        # Tell a consumer-side miss from an event the stream never held (or lost).
        absent = await not_in_stream(
            stack.stack.nats.url, "CRM_CONTACTS", [f"crm.contacts.created.{m}" for m in missing]
        )
        problems.append(f"of {len(missing)} missing, {len(absent)} are not in the stream at all: {absent[:3]}")
    assert not problems, problems
    assert {e["type"] for e in ours} == {"crm.contact.created.v1"}


async def test_nats_server_killed_and_restarted(stack: FaultStack) -> None:
    nats = stack.stack.nats
    assert nats is not None
    tally, _ = await run_scenario(stack, "nats SIGKILL", nats.kill, nats.start)
    # Writes never depended on NATS: the outbox held the events.
    assert tally.statuses[503] == 0, tally.statuses


@pytest.mark.parametrize("service", ["contacts", "gateway"])
async def test_a_service_killed_and_restarted(stack: FaultStack, service: str) -> None:
    process = stack.stack.services[service]
    tally, _ = await run_scenario(stack, f"{service} SIGKILL", process.kill, process.start)
    if service == "contacts":
        assert tally.statuses[503] > 0, "the outage was not seen: no 503 while contacts was down"


async def test_postgres_stopped_and_started(stack: FaultStack) -> None:
    def start() -> None:
        stack.pg.start()

    tally, _ = await run_scenario(stack, "PostgreSQL fast shutdown", lambda: stack.pg.stop("fast"), start)
    assert tally.statuses[503] > 0, "the outage was not seen: no 503 while PostgreSQL was down"


async def test_contacts_behind_a_slow_and_dropping_proxy(stack: FaultStack) -> None:
    """The gateway reaches contacts through a proxy that delays every connection by more than the gateway's
    timeout for a while, then drops connections, then recovers: answers are 504/503, never a hang or a 500."""
    contacts = stack.stack.services["contacts"]
    gateway = stack.stack.services["gateway"]
    proxy = SlowProxy(target_port=contacts.port)
    await proxy.start()
    old = gateway.env["GATEWAY_CONTACTS_URL"]
    gateway.env["GATEWAY_CONTACTS_URL"] = f"http://127.0.0.1:{proxy.port}"
    await asyncio.to_thread(gateway.restart)
    try:

        def slow() -> None:
            proxy.delay_s = 7.0

        def heal() -> None:
            proxy.delay_s, proxy.drop = 0.0, False

        async def drop_midway() -> None:
            await asyncio.sleep(1.5)
            proxy.drop, proxy.delay_s = True, 0.0

        dropper = asyncio.create_task(drop_midway_after(proxy, drop_midway))
        tally, _ = await run_scenario(stack, "contacts slow then dropping (proxy)", slow, heal, hold_s=3.0)
        await dropper
        assert tally.statuses[504] + tally.statuses[503] > 0, tally.statuses
        assert proxy.delayed > 0 and proxy.dropped > 0, (proxy.delayed, proxy.dropped)
    finally:
        await proxy.stop()
        gateway.env["GATEWAY_CONTACTS_URL"] = old
        await asyncio.to_thread(gateway.restart)


async def drop_midway_after(proxy: SlowProxy, then: Callable[[], Any]) -> None:
    while proxy.delay_s == 0.0:
        await asyncio.sleep(0.05)
    await then()
