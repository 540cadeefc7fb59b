from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import nats

from servicekit.clock import MovableClock
from servicekit.testing.apps import EventTap, running_app
from servicekit.testing.nats import NatsServer
from services.contacts.app import create_app
from services.contacts.settings import ContactsSettings
from services.contacts.tests.conftest import contact_factory


async def test_every_change_is_published_as_a_cloudevent(
    contacts_settings: ContactsSettings, clock: MovableClock, js: object
) -> None:
    async with running_app(create_app(contacts_settings, clock=clock)) as client:
        a = (await client.post("/v1/contacts", json=contact_factory())).json()
        b = (await client.post("/v1/contacts", json=contact_factory())).json()
        await client.patch(
            f"/v1/contacts/{a['id']}",
            json={"stage": "customer", "consent": {"sms": False}},
            headers={"X-Request-ID": "req-42"},
        )
        await client.post(f"/v1/contacts/{a['id']}/merge", json={"source_id": b["id"]})
        await client.delete(f"/v1/contacts/{a['id']}")
        tap = await EventTap(js, "CRM_CONTACTS", f"crm.contacts.*.{a['id']}", durable=f"t{uuid.uuid4().hex}").start()
        got = await tap.take(4)
        await tap.assert_no_more()
    assert [e.type for e in got] == [
        "crm.contact.created.v1",
        "crm.contact.updated.v1",
        "crm.contact.merged.v1",
        "crm.contact.erased.v1",
    ]
    created, updated, merged, erased = got
    assert all(e.specversion == "1.0" and e.source == "touchpoint/contacts" and e.subject == a["id"] for e in got)
    # Whether or not the erase redacted them before they left the outbox, the ids and the
    # non-personal changes every consumer acts on are still there.
    assert created.data["contact"]["id"] == a["id"]
    assert updated.data["changed"] == {"stage": "customer", "consent": {"sms": False}}
    assert updated.data["previous"]["stage"] == "lead"
    assert updated.requestid == "req-42"
    assert merged.data["source_id"] == b["id"] and merged.data["target_id"] == a["id"]
    assert erased.data["contact_id"] == a["id"]
    assert len({e.id for e in got}) == 4


async def test_events_wait_while_nats_is_down_and_all_go_once_in_order(
    contacts_db: str, clock: MovableClock, nats_factory: Callable[[], NatsServer], tmp_path: Path
) -> None:
    server = nats_factory()
    settings = ContactsSettings(database_url=contacts_db, nats_url=server.url, log_json=False, outbox_poll_s=0.05)
    async with running_app(create_app(settings, clock=clock)) as client:
        contact = (await client.post("/v1/contacts", json=contact_factory())).json()
        nc = await nats.connect(server.url)
        tap = await EventTap(nc.jetstream(), "CRM_CONTACTS", "crm.contacts.>", durable="downstream").start()
        assert len(await tap.take(1)) == 1
        await nc.close()

        server.stop()
        for n in range(10):
            response = await client.patch(f"/v1/contacts/{contact['id']}", json={"attributes": {"n": n}})
            assert response.status_code == 200, response.text  # changes succeed while NATS is down
        server.start()

        nc = await nats.connect(server.url)
        tap = await EventTap(nc.jetstream(), "CRM_CONTACTS", "crm.contacts.>", durable="downstream").start()
        got = await tap.take(10, timeout=30)
        await tap.assert_no_more(wait=2)
        await nc.close()
    assert [e.data["changed"]["attributes"]["n"] for e in got] == list(range(10))
    assert [e.data["version"] for e in got] == list(range(2, 12))
    assert len({e.id for e in got}) == 10


def test_redaction_keeps_ids_and_drops_personal_fields() -> None:
    from services.contacts.service import redact_event_data

    data = {
        "source_id": "s", "target_id": "t",
        "contact": {"id": "t", "name": "Ada", "emails": ["a@x.io"], "stage": "customer", "tier": "premium"},
        "changed": {"phones": ["+1"], "stage": "customer"}, "previous": {"phones": [], "stage": "lead"},
    }  # fmt: skip
    redacted = redact_event_data(data)
    assert redacted["source_id"] == "s" and redacted["target_id"] == "t" and redacted["redacted"] is True
    assert redacted["contact"] == {"id": "t", "stage": "customer", "tier": "premium"}
    assert redacted["changed"] == {"stage": "customer"} and redacted["previous"] == {"stage": "lead"}
