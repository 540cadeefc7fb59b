"""The logged event a batch serializes itself is the document the CloudEvent model makes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from pydantic_core import PydanticSerializationError

from servicekit.clock import MovableClock
from servicekit.ids import new_id
from servicekit.outbox import Outbox
from services.interactions import events
from services.interactions.directory import ContactLink
from services.interactions.models import outbox_table
from services.interactions.schemas import TouchpointCreate
from services.interactions.service import TouchpointService, logged_outbox_row, row_event_data

NOW = datetime(2026, 1, 5, 9, 0, 0, 123456, tzinfo=UTC)


def row(**changes: Any) -> dict[str, Any]:
    contact = uuid.uuid4()
    base = {"id": new_id(), "contact_id": contact, "original_contact_id": uuid.uuid4(), "channel": "email",
            "direction": "inbound", "type": "purchase", "occurred_at": NOW - timedelta(hours=1), "received_at": NOW,
            "agent": "agent-1", "team": "support", "subject": "Café ✓ \"quoted\" \\ \u2028", "body": "secret body",
            "thread_id": "T-1", "outcome": None, "csat": 5, "nps": 10, "duration_s": 61.5,
            "amount": Decimal("19.90"), "currency": "EUR", "source": "shop", "external_id": "o-1",
            "ingest_key": "msg:1", "attributes": {"order": "A-17", "nested": {"list": [1, 2.5, None, True]}},
            "sentiment": -0.4767, "version": 1, "updated_at": NOW, "redacted_at": None}  # fmt: skip
    return {**base, **changes}


# No amount, sentiment, subject or attributes; a time sent with an offset, as the row holds it (in UTC: see
# test_a_row_holds_the_sent_time_in_utc).
BARE: dict[str, Any] = {
    "amount": None, "currency": None, "sentiment": None, "subject": None, "attributes": {}, "csat": None,
    "occurred_at": datetime(2026, 1, 5, 10, 0, tzinfo=timezone(timedelta(hours=2))).astimezone(UTC),
}  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "request_context"),
    [
        ({}, {"request_id": "req-1", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}),
        ({}, {}),
        ({}, {"request_id": "req-2"}),
        (BARE, {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}),
        ({"received_at": NOW.replace(microsecond=0), "updated_at": NOW.replace(microsecond=0)}, {}),
    ],
)
def test_logged_row_is_the_cloud_event(changes: dict[str, Any], request_context: dict[str, Any]) -> None:
    touchpoint = row(**changes)
    at = touchpoint["received_at"]
    event_id, subject, event_type, payload, created_at = logged_outbox_row(touchpoint, at, request_context)
    event, expected_subject = events.interaction_event(events.LOGGED, touchpoint["contact_id"],
                                                       row_event_data(touchpoint), at)  # fmt: skip
    event.id = event_id
    event.requestid = request_context.get("request_id")
    event.traceparent = request_context.get("traceparent")
    assert (subject, event_type, created_at) == (expected_subject, events.LOGGED, at)
    assert json.loads(payload) == json.loads(event.to_json())
    document = json.loads(payload)
    assert "body" not in document["data"] and "ingest_key" not in document["data"]
    assert touchpoint["body"] == "secret body"  # the row itself is left as it was
    assert uuid.UUID(event_id).version == 7


def test_a_value_json_cannot_hold_is_refused() -> None:
    with pytest.raises(PydanticSerializationError):
        logged_outbox_row(row(attributes={"x": object()}), NOW, {})


def test_a_row_holds_the_sent_time_in_utc() -> None:
    """logged_outbox_row writes the row's times as they are: the row must hold them in UTC (a ``Z`` time in the
    event), whatever offset the sender gave."""
    item = TouchpointCreate.model_validate(
        {"contact_id": str(uuid.uuid4()), "channel": "email", "direction": "inbound", "type": "note",
         "occurred_at": "2026-01-05T10:00:00+02:00"}
    )  # fmt: skip
    service = TouchpointService(clock=MovableClock(NOW), outbox=Outbox(outbox_table))
    link = ContactLink(contact_id=item.contact_id, original=item.contact_id)  # type: ignore[arg-type]
    built = service._row(service.prepare(item=item, link=link), link, new_id(), link.contact_id, NOW)
    assert built["occurred_at"].utcoffset() == timedelta(0)
    _, _, _, payload, _ = logged_outbox_row(built, NOW, {})
    assert json.loads(payload)["data"]["occurred_at"] == "2026-01-05T08:00:00Z"
