"""An erasure reaches the bus: once every consumer has applied it, none of the contact's messages, nor those of the
contacts merged into it, is left in any stream, and the JetStream store files hold none of their personal data
(a raw byte search of the store directory). SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.js.api import ConsumerConfig
from nats.js.errors import NotFoundError

from servicekit.clock import MovableClock
from servicekit.purge import subject_matches
from servicekit.testing.apps import running_app, served
from servicekit.testing.nats import NatsServer
from servicekit.testing.plugin import eventually
from services.contacts.app import create_app as create_contacts_app
from services.contacts.settings import ContactsSettings
from services.followups.app import create_app as create_followups_app
from services.followups.settings import FollowupsSettings
from services.interactions.app import create_app as create_interactions_app
from services.interactions.settings import InteractionsSettings

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
SLOW = 60.0
STREAMS = ("CRM_CONTACTS", "CRM_INTERACTIONS", "CRM_FOLLOWUPS", "CRM_INGEST", "CRM_DEADLETTER")


def hits_in_store(store: Path, needles: list[str]) -> dict[str, list[str]]:
    """Which of the needles occur in which file under ``store``, byte for byte (UTF-8 and JSON-escaped)."""
    found: dict[str, list[str]] = {}
    files = [p for p in store.rglob("*") if p.is_file()]
    for needle in needles:
        forms = {needle.encode(), json.dumps(needle).strip('"').encode()}
        for path in files:
            data = path.read_bytes()
            if any(form in data for form in forms):
                found.setdefault(needle, []).append(str(path.relative_to(store)))
    return found


@pytest.fixture
def databases(database_factory: Callable[[Path], str]) -> dict[str, str]:
    return {
        name: database_factory(ROOT / f"services/{name}/alembic.ini")
        for name in ("contacts", "interactions", "followups")
    }


def test_nats_subject_matching() -> None:
    assert subject_matches("crm.contacts.>", "crm.contacts.created.x")
    assert subject_matches("crm.contacts.*.x", "crm.contacts.created.x")
    assert not subject_matches("crm.contacts.*.x", "crm.contacts.created.y")
    assert not subject_matches("crm.contacts.>", "crm.contacts")
    assert not subject_matches("crm.interactions.logged.*", "crm.interactions.logged.x.y")


async def test_an_erasure_leaves_none_of_the_contacts_messages_on_the_bus_nor_in_its_store_files(
    databases: dict[str, str], nats_factory: Callable[[], NatsServer], clock: MovableClock
) -> None:
    clock.set(NOW)
    server = nats_factory()
    common: dict[str, Any] = {"nats_url": server.anonymous_url, "log_json": False, "outbox_poll_s": 0.05}

    def user(name: str) -> dict[str, Any]:  # each service as its own NATS user, as deployed
        return {"nats_user": name, "nats_password": server.passwords[name]}

    contacts_app = create_contacts_app(
        ContactsSettings(database_url=databases["contacts"], **common, **user("contacts")), clock=clock
    )
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    try:
        async with served(contacts_app) as contacts_url, httpx.AsyncClient(base_url=contacts_url) as contacts:
            interactions_settings = InteractionsSettings(
                database_url=databases["interactions"], contacts_url=contacts_url, **common, **user("interactions")
            )
            followups_settings = FollowupsSettings(
                database_url=databases["followups"],
                contacts_url=contacts_url,
                scheduler_enabled=False,
                **common,
                **user("followups"),
            )
            async with (
                running_app(create_interactions_app(interactions_settings, clock=clock)) as interactions,
                running_app(create_followups_app(followups_settings, clock=clock)) as followups,
            ):
                zelda = (await contacts.post("/v1/contacts", json={
                    "name": "Zelda Quillfeather", "emails": ["zelda.quill@example.org"], "phones": ["+33612345678"],
                    "handles": {"instagram": "zeldaquillgram"}, "attributes": {"favourite": "quillfeather-teal"},
                    "company": "Quill Kettles",
                })).json()  # fmt: skip
                twin = (await contacts.post("/v1/contacts", json={
                    "name": "Dorotea Vexmoor", "emails": ["dorotea.vex@example.org"], "phones": ["+33698765432"],
                    "company": "Vexmoor Fabrics",
                })).json()  # fmt: skip
                personal = [zelda["name"], *zelda["emails"], *zelda["phones"], "zeldaquillgram", "quillfeather-teal",
                            "Quill Kettles", twin["name"], *twin["emails"], *twin["phones"],
                            "Vexmoor Fabrics"]  # fmt: skip

                async def log(contact_id: str, subject: str, **fields: Any) -> None:
                    body = {"contact_id": contact_id, "occurred_at": clock.now().isoformat(), "channel": "email",
                            "direction": "inbound", "type": "complaint", "subject": subject,
                            "body": f"the body of {subject}", **fields}  # fmt: skip
                    response = await interactions.post("/v1/interactions", json=body)
                    assert response.status_code == 201, response.text
                    personal.extend([subject, f"the body of {subject}"])

                await log(zelda["id"], "Kettle whistles off-key for Zelda", thread_id="mail:zelda.quill@example.org")
                await log(twin["id"], "Dorotea wants her curtains back", outcome="Dorotea was promised a refund")
                personal.append("Dorotea was promised a refund")
                ingested = {"contact_id": zelda["id"], "occurred_at": clock.now().isoformat(), "channel": "sms",
                            "direction": "inbound", "type": "inquiry", "subject": "Zelda texts about teal lids",
                            "body": "ingested body for Zelda", "source": "sms-gw", "external_id": "sms-1"}  # fmt: skip
                await eventually(lambda: _stream_exists(js, "CRM_INGEST"), timeout=SLOW)
                await js.publish("crm.ingest.interactions", json.dumps(ingested).encode())
                personal.extend([ingested["subject"], ingested["body"]])
                reason = "Call back Zelda Quillfeather about the kettle"
                made = await followups.post("/v1/followups", json={
                    "contact_id": zelda["id"], "reason": reason, "due_at": (NOW + timedelta(days=1)).isoformat(),
                })  # fmt: skip
                assert made.status_code == 201, made.text
                personal.append(reason)

                async def logged(count: int) -> bool:
                    page = await interactions.get("/v1/interactions", params={"contact_id": zelda["id"]})
                    return len(page.json()["items"]) >= count

                await eventually(lambda: logged(2), timeout=SLOW)  # Zelda's own and the ingested one
                merged = await contacts.post(f"/v1/contacts/{zelda['id']}/merge", json={"source_id": twin["id"]})
                assert merged.status_code == 200, merged.text
                await eventually(lambda: logged(3), timeout=SLOW)

                # An event about Zelda that the consumers can never apply: parked as a dead letter, payload and all.
                forged = {"specversion": "1.0", "id": "forged-1", "source": "test", "type": "crm.contact.merged.v1",
                          "subject": zelda["id"], "time": NOW.isoformat(),
                          "data": {"source_id": "not-an-id", "target_id": zelda["id"],
                                   "note": "Zelda Quillfeather dead-letter note"}}  # fmt: skip
                await js.publish(f"crm.contacts.merged.{zelda['id']}", json.dumps(forged).encode())
                personal.append("Zelda Quillfeather dead-letter note")
                for consumer in ("interactions-contacts", "followups-contacts"):  # each parks its own
                    parked = f"crm.deadletter.{consumer}.{zelda['id']}"
                    await eventually(lambda: _has(_subjects(js, "CRM_DEADLETTER"), parked), timeout=SLOW)  # noqa: B023

                # A consumer of the touchpoint events that lags behind: nothing it has not acknowledged may go.
                await js.add_consumer("CRM_INTERACTIONS", ConsumerConfig(durable_name="lagging-reader"))
                assert hits_in_store(server.store_dir / "jetstream", personal), "the test's data never reached NATS"

                assert (await contacts.delete(f"/v1/contacts/{zelda['id']}")).status_code == 204
                ids = [zelda["id"], twin["id"]]

                async def left_on_bus(stream: str) -> list[str]:
                    subjects: list[str] = []
                    seq = 1
                    while True:
                        try:
                            msg = await js.get_msg(stream, seq=seq, subject=">", next=True)
                        except NotFoundError:
                            return subjects
                        assert msg.seq is not None and msg.subject is not None
                        if any(subject_matches(f"crm.*.*.{i}", msg.subject) for i in ids):
                            subjects.append(msg.subject)
                        seq = msg.seq + 1

                async def gone(stream: str) -> bool:
                    return not await left_on_bus(stream)

                await eventually(lambda: gone("CRM_CONTACTS"), timeout=SLOW)
                await eventually(lambda: gone("CRM_FOLLOWUPS"), timeout=SLOW)
                redacted = f"crm.interactions.redacted.{zelda['id']}"
                await eventually(lambda: _has(left_on_bus("CRM_INTERACTIONS"), redacted), timeout=SLOW)
                held = await left_on_bus("CRM_INTERACTIONS")
                assert f"crm.interactions.logged.{twin['id']}" in held, held  # the lagging reader has not read it

                reader = await js.pull_subscribe_bind("lagging-reader", stream="CRM_INTERACTIONS")
                while True:
                    try:
                        batch = await reader.fetch(100, timeout=0.5)
                    except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either when none is left
                        break
                    for msg in batch:
                        await msg.ack_sync()
                await eventually(lambda: gone("CRM_INTERACTIONS"), timeout=SLOW)
                for stream in STREAMS:
                    assert await left_on_bus(stream) == [], stream
                assert (await js.stream_info("CRM_PURGES")).state.messages == 0
    finally:
        await nc.close()
        server.stop()
    assert hits_in_store(server.store_dir / "jetstream", personal) == {}


async def _has(found: Any, subject: str) -> bool:
    return subject in await found


async def _stream_exists(js: Any, name: str) -> bool:
    try:
        await js.stream_info(name)
    except NotFoundError:
        return False
    return True


async def _subjects(js: Any, stream: str) -> list[str]:
    subjects: list[str] = []
    seq = 1
    while True:
        try:
            msg = await js.get_msg(stream, seq=seq, subject=">", next=True)
        except NotFoundError:
            return subjects
        assert msg.seq is not None and msg.subject is not None
        subjects.append(msg.subject)
        seq = msg.seq + 1
