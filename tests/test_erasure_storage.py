"""Issue 18.5: an erase leaves no personal data in the raw storage of any service.

The whole stack runs as processes (nats-server, the three services and the gateway; SQLite, and PostgreSQL in a
throwaway cluster). A contact with a merged duplicate gets touchpoints on every channel, threads whose ids hold
an email, external ids, idempotent requests, manual follow-ups (one completed with an outcome) and the policies'
follow-ups; then the contact is erased, and what the stack keeps on disk is searched, not what its APIs answer:
each SQLite database file byte for byte with its -wal and -shm files, or a pg_dump of every PostgreSQL database,
every log file and the JetStream store files (once every consumer has the erasure, each producer deletes the
contact's messages, bytes and all: docs/privacy.md, The event bus), for the names, companies, each email, phone
and handle, each subject, body, note, reason and outcome."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicekit.channels import CHANNELS
from servicekit.devstack import Stack
from servicekit.testing.plugin import eventually
from servicekit.testing.storage import stack_storage
from tests.whole_stack import running_stack

pytestmark = pytest.mark.stack

ADMIN_KEY = "tp_erasure_admin_key_" + uuid.uuid4().hex
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
SLOW = 60.0


@pytest.fixture
def stack(db_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(
        admin_key=ADMIN_KEY,
        db_backend=db_backend,
        request=request,
        tmp_path=tmp_path,
        database_prefix="e",
        log_level="INFO",  # every request is logged: the logs are searched too
    ) as running:
        yield running


def at(minutes_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


class Person:
    """A customer's identity and what is written about them, each value distinctive so a hit is theirs."""

    def __init__(self, first: str, tag: str) -> None:
        self.name = f"{first}{tag} Quist"
        self.company = f"{first}co{tag}"
        self.email = f"{first.lower()}.{tag}@example.org"
        self.phone = f"+1202555{random.randint(1000, 9999)}"
        self.handle = f"@{first.lower()}{tag}"
        self.note = f"Prefers{tag}{first} mornings"
        self.written: list[str] = []  # subjects, bodies, reasons, outcomes

    def profile(self) -> dict[str, Any]:
        return {"name": self.name, "company": self.company, "emails": [self.email], "phones": [self.phone],
                "handles": {"twitter": self.handle}, "attributes": {"note": self.note}}  # fmt: skip

    def text(self, what: str) -> str:
        value = f"{what} {self.name.split()[0]} {uuid.uuid4().hex[:6]}"
        self.written.append(value)
        return value

    def needles(self) -> list[str]:
        return [self.name, self.name.split()[0], self.company, self.email, self.phone, self.handle, self.note,
                *self.written]  # fmt: skip


async def test_an_erase_leaves_no_personal_data_in_any_database_or_log(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:8]
    zelda, zed = Person("Zelda", tag), Person("Zed", tag)
    async with httpx.AsyncClient(base_url=stack.services["gateway"].url, timeout=30) as api:
        keys = {}
        for role in ("ingest", "agent"):
            made = await api.post("/api/v1/api-keys", json={"name": f"erase {role}", "role": role}, headers=ADMIN)
            assert made.status_code == 201, made.text
            keys[role] = {"Authorization": f"Bearer {made.json()['key']}"}
        agent, ingest = keys["agent"], keys["ingest"]
        ids = {}
        for person in (zelda, zed):
            made = await api.post("/api/v1/contacts", json=person.profile(), headers=agent)
            assert made.status_code == 201, made.text
            ids[person.name] = made.json()["id"]
        zelda_id, zed_id = ids[zelda.name], ids[zed.name]

        async def log(person: Person, headers: dict[str, str], **fields: Any) -> httpx.Response:
            body = {"contact_id": ids[person.name], "direction": "inbound", "type": "inquiry",
                    "subject": person.text("Subject"), "body": person.text("Body"), **fields}  # fmt: skip
            logged = await api.post("/api/v1/interactions", json=body, headers=headers)
            assert logged.status_code == 201, logged.text
            return logged

        # Every channel; the email ones on a thread named after the address, from a mailer with external ids.
        touches = []
        for i, channel in enumerate(CHANNELS):
            mail = {"thread_id": f"mail:{zelda.email}", "source": "mailer", "external_id": f"mail:{zelda.email}/{i}"}
            extra = mail if channel == "email" else {}
            touches.append(await log(zelda, agent, channel=channel, occurred_at=at(300 - i), **extra))
        purchase = await log(zelda, agent, channel="in_person", type="purchase", occurred_at=at(200), amount=42.0,
                             currency="EUR")  # fmt: skip
        complaint_thread = f"call:{zelda.phone}"
        complaint = await log(zelda, agent, channel="phone", type="complaint", occurred_at=at(100),
                              thread_id=complaint_thread)  # fmt: skip
        resolved = await api.patch(f"/api/v1/interactions/{complaint.json()['id']}",
                                   json={"thread_status": "resolved"}, headers=agent)  # fmt: skip
        assert resolved.status_code == 200, resolved.text
        # Idempotent requests: by contact id, and by identity from an ingest key.
        replayable = {"contact_id": zelda_id, "channel": "live_chat", "direction": "inbound", "type": "support",
                      "occurred_at": at(50), "subject": zelda.text("Chat"),
                      "body": zelda.text("Chat body")}  # fmt: skip
        key = {**ingest, "Idempotency-Key": f"chat-{tag}"}
        first = await api.post("/api/v1/interactions", json=replayable, headers=key)
        assert first.status_code == 201, first.text
        by_email = {"contact": {"email": zelda.email}, "channel": "sms", "direction": "inbound", "type": "inquiry",
                    "occurred_at": at(40), "subject": zelda.text("Sms"), "body": zelda.text("Sms body")}  # fmt: skip
        second = await api.post(
            "/api/v1/interactions", json=by_email, headers={**ingest, "Idempotency-Key": f"sms-{tag}"}
        )
        assert second.status_code == 201 and second.json()["contact_id"] == zelda_id, second.text
        # The duplicate's own history, before the merge.
        await log(zed, {**ingest, "Idempotency-Key": f"zed-{tag}"}, channel="email", occurred_at=at(250),
                  thread_id=f"mail:{zed.email}", source="mailer", external_id=f"mail:{zed.email}/1")  # fmt: skip
        await log(zed, agent, channel="phone", type="complaint", occurred_at=at(240))
        # Manual follow-ups: one open, one completed with an outcome, one for the duplicate.
        manual = []
        for person, thread in ((zelda, f"mail:{zelda.email}"), (zelda, None), (zed, f"mail:{zed.email}")):
            body = {"contact_id": ids[person.name], "reason": person.text("Call back"), "due_at": at(-60),
                    "thread_id": thread}  # fmt: skip
            made = await api.post("/api/v1/followups", json=body, headers=agent)
            assert made.status_code == 201, made.text
            manual.append(made.json())
        done = await api.post(f"/api/v1/followups/{manual[1]['id']}/complete",
                              json={"outcome": zelda.text("Spoke to")}, headers=agent)  # fmt: skip
        assert done.status_code == 200, done.text

        merged = await api.post(f"/api/v1/contacts/{zelda_id}/merge", json={"source_id": zed_id}, headers=agent)
        assert merged.status_code == 200, merged.text

        # Every service has applied everything (the policies' follow-ups included) before the erase.
        async def settled() -> bool:
            page = await api.get("/api/v1/followups", params={"contact_id": zelda_id, "limit": "100"}, headers=agent)
            policies = {f.get("policy") for f in page.json()["items"]} if page.status_code == 200 else set()
            timeline = await api.get(f"/api/v1/contacts/{zelda_id}/timeline", params={"limit": "100"}, headers=agent)
            kinds = [i["kind"] for i in timeline.json()["items"]] if timeline.status_code == 200 else []
            return {"purchase-2-2-2", "complaint-callback"} <= policies and kinds.count("interaction") >= 13

        await eventually(settled, timeout=SLOW)
        needles = zelda.needles() + zed.needles() + [complaint_thread]
        # The search finds what is there: before the erase, every service's database holds some of it.
        before = await asyncio.to_thread(stack_storage(stack).find, needles)
        for service in stack.services.values():
            database = service.env[f"{service.spec.prefix}DATABASE_URL"]
            name = Path(database).name if database.startswith("sqlite") else database.rsplit("/", 1)[-1]
            assert any(name in hit.place for hit in before), (service.spec.name, sorted({h.place for h in before}))

        assert (await api.delete(f"/api/v1/contacts/{zelda_id}", headers=ADMIN)).status_code == 204

        async def erased_everywhere() -> bool:
            page = await api.get("/api/v1/interactions", params={"contact_id": zelda_id, "limit": "100"},
                                 headers=agent)  # fmt: skip
            touchpoints = page.json()["items"] if page.status_code == 200 else [{}]
            followups = await api.get("/api/v1/followups", params={"contact_id": zelda_id, "limit": "100"},
                                      headers=agent)  # fmt: skip
            open_left = [f for f in followups.json()["items"] if f["status"] in ("scheduled", "due")]
            return all(t.get("redacted_at") for t in touchpoints) and not open_left

        await eventually(erased_everywhere, timeout=SLOW)
        replay = await api.post("/api/v1/interactions", json=replayable, headers=key)
        assert replay.status_code == 410, replay.text
        assert zelda.name not in replay.text and replayable["subject"] not in replay.text
        assert touches and purchase.status_code == 201

        running = stack_storage(stack, jetstream=True)
        await running.assert_clean(needles, timeout=SLOW)
    stack.stop()
    stopped = stack_storage(stack, jetstream=True)
    assert {Path(f).name for f in stopped.files} >= {"contacts.log", "gateway.log"}
    await stopped.assert_clean(needles, timeout=0)
    # The run was logged (a line per request), so silence is not mistaken for discretion.
    assert any(b'"route": "/contacts"' in f.read_bytes() for f in stopped.files if f.name == "gateway.log")
