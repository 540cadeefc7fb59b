"""Outbound webhooks end to end: nats-server and all four services as real processes; a contact and a touchpoint
made through the gateway reach a real HTTP receiver as signed CloudEvents (SQLite; PostgreSQL too in CI)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from gateway.tests.test_webhooks import receiving, reference_signature
from gateway.webhooks import consumers
from servicekit.devstack import Stack
from servicekit.events import CloudEvent
from servicekit.testing.plugin import eventually
from tests.whole_stack import running_stack

pytestmark = pytest.mark.stack

ADMIN_KEY = "tp_webhooks_admin_key_" + uuid.uuid4().hex
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def stack(db_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(
        admin_key=ADMIN_KEY,
        db_backend=db_backend,
        request=request,
        tmp_path=tmp_path,
        database_prefix="w",
        extra={"GATEWAY_WEBHOOKS_ALLOW_PRIVATE": "true"},
    ) as running:
        yield running


async def webhook_durables_ready(nats_url: str) -> None:
    """The gateway's webhook durables exist: they start with the events that follow them."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()

    async def ready() -> bool:
        for stream, durable, _subjects in consumers():
            try:
                await js.consumer_info(stream, durable)
            except Exception:
                return False
        return True

    try:
        await eventually(ready, timeout=60)
    finally:
        await nc.close()


async def test_a_contact_and_a_touchpoint_reach_the_receiver_signed(stack: Stack) -> None:
    assert stack.nats is not None
    async with (
        receiving(["ok"]) as receiver,
        httpx.AsyncClient(base_url=stack.services["gateway"].url, timeout=30) as api,
    ):
        made = await api.post(
            "/api/v1/webhooks",
            json={"url": receiver.url, "events": ["crm.contact.created.v1", "crm.interaction.logged.v1"]},
            headers=ADMIN,
        )
        assert made.status_code == 201, made.text
        hook = made.json()
        await webhook_durables_ready(stack.nats.url)

        contact = await api.post(
            "/api/v1/contacts", json={"name": "Ada Webhook", "emails": [f"ada-{uuid.uuid4().hex[:6]}@example.com"]},
            headers=ADMIN,
        )  # fmt: skip
        assert contact.status_code == 201, contact.text
        contact_id = contact.json()["id"]
        touch = await api.post(
            "/api/v1/interactions",
            json={"contact_id": contact_id, "channel": "email", "direction": "inbound", "type": "inquiry",
                  "occurred_at": datetime.now(UTC).isoformat(), "subject": "Where is my order?"},
            headers=ADMIN,
        )  # fmt: skip
        assert touch.status_code == 201, touch.text

        await eventually(lambda: len(receiver.answered_ok) == 2, timeout=60)
        got = [CloudEvent.from_json(r["body"]) for r in receiver.received]
        assert sorted(e.type for e in got) == ["crm.contact.created.v1", "crm.interaction.logged.v1"]
        for request, event in zip(receiver.received, got, strict=True):
            headers = request["headers"]
            assert headers["webhook-id"] == event.id
            assert headers["webhook-signature"] == reference_signature(
                hook["secret"], event.id, headers["webhook-timestamp"], request["body"]
            )
        listed = await api.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=ADMIN)
        items: list[dict[str, Any]] = listed.json()["items"]
        assert [d["status"] for d in items] == ["delivered", "delivered"]
    assert sum(receiver.answered_ok.values()) == 2
