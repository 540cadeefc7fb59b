"""Real events from the bus match the AsyncAPI document: the whole stack runs (nats-server and the four services as
processes), a customer's story through the gateway makes every event type of the catalogue at least once, and each
message taken off NATS is validated against its type's schema (the CloudEvent with its data) and its channel's
address."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import nats
import pytest

from servicekit.asyncapi import build, event_schemas
from servicekit.catalogue import all_events
from servicekit.devstack import Stack
from servicekit.purge import subject_matches
from servicekit.testing.plugin import eventually
from tests.whole_stack import running_stack

pytestmark = pytest.mark.stack

ADMIN_KEY = "tp_asyncapi_admin_key_" + uuid.uuid4().hex
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
SLOW = 60.0


@pytest.fixture
def stack(db_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(
        admin_key=ADMIN_KEY, db_backend=db_backend, request=request, tmp_path=tmp_path, database_prefix="aa"
    ) as running:
        yield running


def format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker()  # uuid among them; date-time needs a package not installed, so:

    @checker.checks("date-time", raises=ValueError)
    def date_time(value: object) -> bool:
        return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None

    return checker


def at(hours_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours_ago)).isoformat()


async def test_an_event_of_every_type_from_the_bus_matches_its_schema(stack: Stack) -> None:
    assert stack.nats is not None
    received: list[tuple[str, dict[str, Any]]] = []
    async with await nats.connect(stack.nats.url) as bus:

        async def keep(message: Any) -> None:
            received.append((message.subject, json.loads(message.data)))

        await bus.subscribe("crm.>", cb=keep)
        await bus.flush()

        def seen() -> set[str]:
            return {event.get("type", "") for _, event in received}

        async with httpx.AsyncClient(base_url=stack.services["gateway"].url, timeout=30) as api:

            async def call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
                answer = await api.request(method, path, json=body, headers=ADMIN)
                assert answer.status_code < 300, (method, path, answer.text)
                return answer.json() if answer.content else {}

            n = uuid.uuid4().hex[:6]
            await call("POST", "/api/v1/users", {"email": f"jorge.{n}@example.com", "password": "a long password 1",
                                                 "role": "agent", "name": "Jorge"})  # fmt: skip
            ada = await call("POST", "/api/v1/contacts", {"name": f"Ada {n}", "emails": [f"ada.{n}@example.com"]})
            await call("PATCH", f"/api/v1/contacts/{ada['id']}", {"stage": "customer"})
            # A complaint a day and more ago: its call-back is due, overdue and escalated at once.
            thread = f"complaint-{n}"
            complaint = await call("POST", "/api/v1/interactions",
                                   {"contact_id": ada["id"], "channel": "phone", "direction": "inbound",
                                    "type": "complaint", "occurred_at": at(30), "thread_id": thread,
                                    "subject": "Broken screen"})  # fmt: skip
            # A customer who accepts no channel the complaint policy may use: its call-back is skipped.
            refused = {"phone": False, "email": False, "sms": False}
            muted = await call("POST", "/api/v1/contacts", {"name": f"Muted {n}", "consent": refused})
            await call("POST", "/api/v1/interactions", {"contact_id": muted["id"], "channel": "phone",
                                                        "direction": "inbound", "type": "complaint",
                                                        "occurred_at": at(1)})  # fmt: skip
            await eventually(lambda: {"crm.followup.escalated.v1", "crm.followup.skipped.v1"} <= seen(), timeout=SLOW)
            await call("PATCH", f"/api/v1/interactions/{complaint['id']}", {"outcome": "replacement promised"})
            # The call-back done by an outbound call on the thread; the thread resolved schedules a satisfaction check.
            await call("POST", "/api/v1/interactions", {"contact_id": ada["id"], "channel": "phone",
                                                        "direction": "outbound", "type": "support",
                                                        "occurred_at": at(0), "thread_id": thread})  # fmt: skip
            await eventually(lambda: "crm.followup.completed.v1" in seen(), timeout=SLOW)
            await call("PATCH", f"/api/v1/interactions/{complaint['id']}", {"thread_status": "resolved"})
            await eventually(lambda: [e for _, e in received if e.get("type") == "crm.followup.scheduled.v1"
                                      and e["data"]["step"] == "satisfaction-check"], timeout=SLOW)  # fmt: skip
            await call("POST", f"/api/v1/contacts/{ada['id']}/merge", {"source_id": muted["id"]})
            # The erasure cancels the open check, redacts the touchpoints and purges the bus.
            answer = await api.delete(f"/api/v1/contacts/{ada['id']}", headers=ADMIN)
            assert answer.status_code == 204, answer.text
            expected = {doc.type for doc in all_events()}
            await eventually(lambda: expected <= seen(), timeout=SLOW)
        await bus.flush()  # every message taken off the wire is in received

    document = build()
    addresses = {
        channel["title"]: re.sub(r"\{\w+\}", "*", channel["address"]) for channel in document["channels"].values()
    }
    schemas = event_schemas()
    checker = format_checker()
    validated: dict[str, int] = {}
    for subject, event in received:
        if subject.startswith("crm.ingest."):
            continue  # the ingest input, not an event of the catalogue
        kind = event.get("type")
        assert kind in schemas, (subject, event)
        errors = [
            f"{list(error.absolute_path)}: {error.message}"
            for error in jsonschema.Draft7Validator(schemas[kind], format_checker=checker).iter_errors(event)
        ]
        assert errors == [], (kind, errors, event)
        assert subject_matches(addresses[kind], subject), (kind, subject, addresses[kind])
        validated[kind] = validated.get(kind, 0) + 1
    assert set(validated) == expected
    assert sum(validated.values()) >= 25, validated
