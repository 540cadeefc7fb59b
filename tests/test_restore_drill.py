"""The restore drill (docs/operations.md, "The restore drill"), on the compose topology run as processes
(tests/deploy_support/topology.py), on PostgreSQL, with the operator's own steps:

1. a stack holding data: contacts, a touchpoint on every channel, follow-ups (the policies' and one by hand),
   an API key and a staff user, all on the timeline;
2. a backup set taken (``docker compose exec backup backup.sh once``) while a client keeps posting touchpoints
   through the gateway;
3. the services stopped and PostgreSQL's volume lost (a new, empty cluster, as compose makes on an empty volume);
4. ``restore.sh`` (the newest set), every durable consumer deleted (docs/backups.md, "After a restore"), the
   stack started again.

Then every record the set holds is back, once, and the timeline is whole; the key and the staff password work;
the consumers, replaying the streams into restored inboxes, apply nothing twice; a new touchpoint flows through.

What happens to a write acknowledged after the set was taken: its row is not in the set, so the source of truth
(interactions) no longer has it; its event is still in CRM_INTERACTIONS (the streams keep 7 days), and the
replay applies it once to the consumers that had not applied it in their restored state: the gateway's
timeline shows it and the follow-ups service has what its policies make of it. Then the operator's
``python -m gateway.rebuild_timeline --prune-received-before <restart>`` takes it off the timeline and the
header's count, which then match what the interactions service holds. The test asserts each step;
docs/backups.md, "After a restore", says what an operator does about such writes (the client resends).
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import nats
import pytest

from servicekit.channels import CHANNELS
from servicekit.testing.plugin import eventually
from tests.deploy_support.topology import Topology
from tests.test_deploy_topology import PACE_S, Journey, events_of
from tests.test_deploy_topology import env_file as env_file  # fixtures reused: this module gets a stack of its own
from tests.test_deploy_topology import topology as topology

# The stack starts twice (about 40 s each on an idle 2-core machine; three times that under load) around the
# drill's own minute.
pytestmark = [pytest.mark.stack, pytest.mark.postgres, pytest.mark.nats, pytest.mark.timeout(600)]

APP_SERVICES = ("contacts", "interactions", "followups", "gateway")
# What docs/backups.md stops before a restore ("Restore"), in that order.
STOPPED_FOR_RESTORE = ("proxy", "gateway", "followups", "interactions", "contacts", "pgbouncer")
STAFF_PASSWORD = "restore drill password 2026"


@dataclass
class Sent:
    """A touchpoint the client posted: when it was sent, when the gateway acknowledged it, its id."""

    key: str
    sent_at: float
    acknowledged_at: float = 0.0
    touchpoint_id: str = ""


@dataclass
class Sender:
    """A client that keeps posting touchpoints through the gateway, each until acknowledged."""

    journey: Journey
    contact_id: str
    sent: list[Sent] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        clock = asyncio.get_running_loop().time
        async with httpx.AsyncClient() as client:
            while not stop.is_set():
                item = Sent(key=f"drill-{uuid.uuid4().hex}", sent_at=clock())
                item.touchpoint_id = await self.journey.log_until_stored(client, self.contact_id, item.key)
                item.acknowledged_at = clock()
                self.sent.append(item)
                await asyncio.sleep(PACE_S)

    def acknowledged(self, *, before: float | None = None, sent_after: float | None = None) -> set[str]:
        return {
            s.touchpoint_id
            for s in self.sent
            if (before is None or s.acknowledged_at < before) and (sent_after is None or s.sent_at > sent_after)
        }


async def call(journey: Journey, client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A request through the gateway with the admin key, waiting out its rate limit as a client does."""
    for _ in range(30):
        response = await client.request(method, f"{journey.api('gateway')}{path}", headers=journey.headers,
                                        timeout=10, **kwargs)  # fmt: skip
        if response.status_code != 429:
            return response
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
    raise AssertionError(f"still rate-limited: {method} {path}")


async def ok(journey: Journey, client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> Any:
    response = await call(journey, client, method, path, **kwargs)
    assert response.status_code in (200, 201), (method, path, response.status_code, response.text)
    return response.json()


@dataclass
class Seeded:
    contacts: dict[str, dict[str, Any]]
    touchpoints: dict[str, str]  # id -> channel, all on the first contact
    api_key: str
    staff_email: str


async def seed(journey: Journey, client: httpx.AsyncClient) -> Seeded:
    contacts: dict[str, dict[str, Any]] = {}
    for _ in range(3):
        created = await journey.create_contact(client, uuid.uuid4().hex[:8])
        assert created.status_code == 201, created.text
        contacts[created.json()["id"]] = created.json()
    first = next(iter(contacts))
    # One touchpoint on every channel: a complaint on the phone (a call-back), a purchase in person (2+2+2).
    touchpoints: dict[str, str] = {}
    for n, channel in enumerate(CHANNELS):
        kind = {"phone": "complaint", "in_person": "purchase"}.get(channel, "inquiry")
        at = (datetime.now(UTC) - timedelta(minutes=len(CHANNELS) - n)).isoformat()
        touchpoint_id = await journey.log_until_stored(
            client, first, f"seed-{uuid.uuid4().hex}", channel=channel, type=kind, occurred_at=at
        )
        touchpoints[touchpoint_id] = channel
    due = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    await ok(journey, client, "POST", "/followups",
             json={"contact_id": first, "reason": "Call back about the restore drill", "due_at": due})  # fmt: skip
    key = await ok(journey, client, "POST", "/api-keys", json={"name": "restore drill", "role": "agent"})
    email = f"drill-{uuid.uuid4().hex[:8]}@example.com"
    await ok(journey, client, "POST", "/users",
             json={"email": email, "password": STAFF_PASSWORD, "role": "agent", "name": "Drill Agent"})  # fmt: skip
    return Seeded(contacts, touchpoints, key["key"], email)


async def followups_of(journey: Journey, client: httpx.AsyncClient, contact_id: str) -> dict[str, dict[str, Any]]:
    items = await journey.followups_of(client, contact_id)
    ids = [f["id"] for f in items]
    assert len(ids) == len(set(ids)), f"a follow-up listed twice: {ids}"
    return {f["id"]: f for f in items}


async def timeline_ids(journey: Journey, client: httpx.AsyncClient, contact_id: str, kind: str) -> list[str]:
    return [item["id"] for item in await journey.timeline(client, contact_id) if item["kind"] == kind]


async def delete_every_durable(topology: Topology) -> list[str]:
    """docs/backups.md, "After a restore": the services recreate them at start and replay the streams."""
    nc = await nats.connect(**topology.nats_connect_options())
    deleted: list[str] = []
    try:
        js = nc.jetstream()
        for stream in await js.streams_info():
            name = str(stream.config.name)
            for consumer in await js.consumers_info(name):
                await js.delete_consumer(name, str(consumer.name))
                deleted.append(f"{name}/{consumer.name}")
    finally:
        await nc.close()
    return deleted


def start_again(topology: Topology) -> None:
    """``docker compose up -d``: what was stopped, in compose's order, the migrations (no-ops) before them."""
    for name in topology.order():
        if name == "pgbouncer":
            topology.processes["pgbouncer"].start()
        elif name == "proxy":
            topology.start_proxy()
        elif name.startswith("migrate-"):
            topology.run_once(name)
        elif name in STOPPED_FOR_RESTORE:
            topology.start_service(name)
    for name in STOPPED_FOR_RESTORE:
        topology.wait_healthy(name)


async def test_a_backup_taken_under_traffic_restores_into_an_empty_cluster(
    topology: Topology, env_file: dict[str, str]
) -> None:
    journey = Journey(topology, env_file)
    assert journey.via_gateway and all(journey.has(s) for s in APP_SERVICES), topology.skipped
    clock = asyncio.get_running_loop().time
    async with httpx.AsyncClient() as client:
        seeded = await seed(journey, client)
        first, busy = list(seeded.contacts)[:2]
        # The policies made their follow-ups and the gateway's projection shows them all before the backup.
        expected_followups: dict[str, dict[str, Any]] = {}

        async def projected() -> bool:
            expected_followups.update(await followups_of(journey, client, first))
            policies = {f["policy"] for f in expected_followups.values()}
            shown = set(await timeline_ids(journey, client, first, "followup"))
            return {"complaint-callback", "purchase-2-2-2", None} <= policies and set(expected_followups) <= shown

        await eventually(projected, timeout=30)
        users_before = {u["email"]: u for u in (await ok(journey, client, "GET", "/users"))["items"]}
        keys_before = {k["id"] for k in (await ok(journey, client, "GET", "/api-keys"))["items"]}

        # The backup, while a client keeps posting touchpoints through the gateway.
        sender = Sender(journey, busy)
        stop = asyncio.Event()
        sending = asyncio.create_task(sender.run(stop))
        await eventually(lambda: len(sender.sent) >= 3, timeout=30)
        backup_began = clock()
        made = await asyncio.to_thread(topology.exec, "backup", "/bin/sh", "/etc/touchpoint/backup/backup.sh", "once")
        backup_ended = clock()
        assert made.returncode == 0, made.stdout + made.stderr
        await eventually(lambda: len(sender.acknowledged(sent_after=backup_ended)) >= 3, timeout=30)
        stop.set()
        await sending
        in_the_set = sender.acknowledged(before=backup_began)
        after_the_set = sender.acknowledged(sent_after=backup_ended)
        assert len(in_the_set) >= 3 and len(after_the_set) >= 3
        # The events of the writes after the set are in the stream (they stay there through the restore).
        logged_after: set[str] = set()

        async def published() -> bool:
            logged_after.update(
                e["data"]["id"] for e in await events_of(topology, "CRM_INTERACTIONS")
                if e["type"] == "crm.interaction.logged.v1" and e["data"]["id"] in after_the_set
            )  # fmt: skip
            return logged_after == after_the_set

        await eventually(published, timeout=30)

    # The first bad day: the services stopped, PostgreSQL's volume lost.
    # docker compose stop: each gets SIGTERM at once and drains on its own (its shutdown is another test's).
    for name in STOPPED_FOR_RESTORE:
        popen = topology.processes[name].popen
        assert popen is not None
        popen.send_signal(signal.SIGTERM)
    for name in STOPPED_FOR_RESTORE:
        await asyncio.to_thread(topology.processes[name].stop)
    await asyncio.to_thread(topology.lose_postgres_volume)
    assert topology.postgres is not None
    assert topology.postgres.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", "contacts") == "0"

    # The restore, as the operator runs it: the newest set, every durable deleted, the stack started again.
    restored = await asyncio.to_thread(topology.exec, "backup", "/bin/sh", "/etc/touchpoint/backup/restore.sh")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert sorted(line.split()[1] for line in restored.stdout.splitlines()) == sorted(APP_SERVICES)
    deleted = await delete_every_durable(topology)
    assert any(d.endswith("/followups-interactions") for d in deleted), deleted
    restarted_at = datetime.now(UTC)
    await asyncio.to_thread(start_again, topology)

    async with httpx.AsyncClient() as client:
        # Every contact, as it was.
        for contact_id, contact in seeded.contacts.items():
            read = await ok(journey, client, "GET", f"/contacts/{contact_id}")
            assert {k: read[k] for k in ("name", "emails", "tags", "version")} == {
                k: contact[k] for k in ("name", "emails", "tags", "version")
            }
        # The touchpoint of every channel, once.
        listed = await journey.touchpoints_of(client, first)
        assert sorted(listed) == sorted(seeded.touchpoints) and set(seeded.touchpoints.values()) == set(CHANNELS)
        # The busy contact: every write acknowledged before the set began is back, once; none after it is.
        busy_listed = await journey.touchpoints_of(client, busy)
        assert len(busy_listed) == len(set(busy_listed)), "a touchpoint stored twice"
        assert in_the_set <= set(busy_listed), in_the_set - set(busy_listed)
        assert not after_the_set & set(busy_listed), "a write after the set is not in the restored database"
        for touchpoint_id in after_the_set:
            gone = await call(journey, client, "GET", f"/interactions/{touchpoint_id}")
            assert gone.status_code == 404, gone.text
        # The staff user signs in with their password, the key made before the backup works, the others are there.
        users_after = {u["email"]: u for u in (await ok(journey, client, "GET", "/users"))["items"]}
        assert users_after == users_before
        sign_in = {"email": seeded.staff_email, "password": STAFF_PASSWORD}
        login = await client.post(f"{journey.api('gateway')}/auth/login", json=sign_in, timeout=10)
        assert login.status_code == 200, login.text
        assert {k["id"] for k in (await ok(journey, client, "GET", "/api-keys"))["items"]} == keys_before
        with_key = await client.get(f"{journey.api('gateway')}/contacts/{first}", timeout=10,
                                    headers={"Authorization": f"Bearer {seeded.api_key}"})  # fmt: skip
        assert with_key.status_code == 200, with_key.text

        # Follow-ups: each one back, none twice; the timeline whole, once each.
        followups_after = await followups_of(journey, client, first)
        assert set(followups_after) == set(expected_followups)

        # As they were (their status may have moved on since: a chat's reply SLA falls due within minutes).
        def what(followups: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
            return {i: (f["policy"], f["step"], f["reason"], f["trigger_interaction_id"]) for i, f in followups.items()}

        assert what(followups_after) == what(expected_followups)
        timeline_interactions = await timeline_ids(journey, client, first, "interaction")
        assert sorted(timeline_interactions) == sorted(seeded.touchpoints)
        timeline_followups = await timeline_ids(journey, client, first, "followup")
        assert sorted(timeline_followups) == sorted(expected_followups)

        # The consumers resume: the replayed stream applies each event once. The writes after the set are
        # applied to the consumers that lacked them (the timeline shows each once); the rest were already in
        # their restored inboxes and change nothing.
        async def replayed() -> bool:
            shown = await timeline_ids(journey, client, busy, "interaction")
            assert len(shown) == len(set(shown)), f"a touchpoint twice on the timeline: {Counter(shown)}"
            return in_the_set | after_the_set <= set(shown)

        await eventually(replayed, timeout=60)

        # The operator's last step (docs/backups.md, "After a restore"): the timeline rebuilt from the restored
        # services, pruned of what they no longer hold and was received before the restart. The writes after
        # the set leave the timeline and the header's count; everything the set holds stays, once.
        pruned = await asyncio.to_thread(
            topology.exec, "gateway", sys.executable, "-m", "gateway.rebuild_timeline",
            "--prune-received-before", restarted_at.isoformat(),
        )  # fmt: skip
        assert pruned.returncode == 0, pruned.stdout + pruned.stderr
        # At least those; with them the follow-ups made for them before the crash, which the replay of the
        # follow-ups' stream brought back (the follow-ups service, replaying the touchpoints, made its own anew).
        found = re.search(r"(\d+) pruned", pruned.stdout)
        assert found and int(found.group(1)) >= len(after_the_set), pruned.stdout
        busy_listed = await journey.touchpoints_of(client, busy)

        async def consistent() -> bool:
            timeline = await journey.get(client, f"{journey.api('gateway')}/contacts/{busy}/timeline", limit=100)
            body = timeline.json()
            shown = [i["id"] for i in body["items"] if i["kind"] == "interaction"]
            emails = {c["channel"]: c["touches"] for c in body["contact"]["last_touch_per_channel"]}.get("email")
            return sorted(shown) == sorted(busy_listed) and emails == len(busy_listed)

        await eventually(consistent, timeout=30)
        busy_followups = await followups_of(journey, client, busy)
        triggers = Counter(
            (f["policy"], f["step"], f["trigger_interaction_id"]) for f in busy_followups.values() if f["policy"]
        )
        assert all(n == 1 for n in triggers.values()), f"a follow-up made twice: {triggers}"

        # A new complaint flows through: stored, its call-back scheduled once, both on the timeline (the quiet
        # contact's: the first one's open call-back would take the new complaint in rather than make another).
        quiet = list(seeded.contacts)[2]
        complaint = await journey.log_until_stored(client, quiet, f"after-{uuid.uuid4().hex}", channel="phone",
                                                   type="complaint")  # fmt: skip
        made_for_it: list[dict[str, Any]] = []

        async def called_back() -> bool:
            made_for_it[:] = [
                f for f in (await followups_of(journey, client, quiet)).values()
                if f["trigger_interaction_id"] == complaint and f["policy"] == "complaint-callback"
            ]  # fmt: skip
            shown = await journey.timeline(client, quiet)
            return bool(made_for_it) and {complaint, made_for_it[0]["id"]} <= {i["id"] for i in shown}

        await eventually(called_back, timeout=30)
        assert len(made_for_it) == 1, made_for_it
