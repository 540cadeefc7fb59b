"""The follow-up events this service serializes itself are the documents pydantic would make."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

from structlog.contextvars import bound_contextvars

from servicekit.events import CloudEvent, json_value, make_event
from servicekit.ids import new_id
from services.followups import events
from services.followups.models import Followup
from services.followups.policybook import shipped_policies
from services.followups.rules import ContactFacts, decide, manual_plan
from services.followups.schemas import FollowupRead
from services.followups.service import document, new_followup

MONDAY_10 = datetime(2026, 1, 5, 10, 0, 0, 123456, tzinfo=UTC)


def made_rows() -> list[dict]:  # type: ignore[type-arg]
    """A reply owed (made even with every consent off), a call-back skipped (no consented channel left: times and
    reasons differ), and one a later trigger covered."""
    policies = {p.id: p for p in shipped_policies()}
    touch = {"id": str(new_id()), "contact_id": str(new_id()), "channel": "email", "direction": "inbound",
             "type": "complaint", "agent": "ana", "team": None, "thread_id": "t-1", "csat": None, "nps": None,
             "outcome": None, "occurred_at": MONDAY_10.isoformat()}  # fmt: skip
    opted_out = {"email": False, "sms": False, "phone": False, "live_chat": False}
    facts = ContactFacts(tier="standard", timezone="Europe/Paris", preferred_channel="email", consent=opted_out)
    rows = []
    for policy in (policies["response-sla"], policies["complaint-callback"]):
        decision = decide(policy=policy, version=3, step=policy.steps[0], touch=touch, anchor_at=MONDAY_10,
                          contact=facts, default_timezone="UTC")  # fmt: skip
        assert decision is not None
        rows.append(new_followup(decision=decision, contact_id=uuid.UUID(touch["contact_id"]),
                                 trigger_event_id=str(new_id()), now=MONDAY_10))  # fmt: skip
    assert [(row["status"], row["channel"]) for row in rows] == [("scheduled", "email"), ("skipped", None)]
    covered = {**rows[0], "id": new_id(), "triggers": [
        {"event_id": str(new_id()), "interaction_id": str(new_id()), "at": json_value(MONDAY_10), "handled": "covered"}
    ]}  # fmt: skip
    return [*rows, covered]


def test_the_document_of_a_row_or_an_object_is_what_followup_read_dumps() -> None:
    for row in made_rows():
        assert document(row) == FollowupRead.model_validate(row).model_dump(mode="json")
    # A stored follow-up as the ORM gives it (SQLite hands back naive UTC; another zone is the same instant).
    stored = Followup(id=new_id(), contact_id=new_id(), reason="Call back", channel="phone", priority="high",
                      priority_rank=1, due_at=datetime(2026, 1, 6, 9, 0), plan=manual_plan("phone"),
                      timeline_at=datetime(2026, 1, 6, 9, 0), created_at=MONDAY_10,
                      updated_at=MONDAY_10.astimezone(timezone(timedelta(hours=-5))), status="completed",
                      completed_at=MONDAY_10, interaction_id=new_id(), outcome="Ça va", escalation_level=2,
                      version=4)  # fmt: skip
    assert document(stored) == FollowupRead.model_validate(stored).model_dump(mode="json")


def test_a_serialized_followup_event_is_the_cloud_event_pydantic_makes() -> None:
    row = made_rows()[0]
    for context in (
        {},
        {"request_id": "req-1", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    ):
        with bound_contextvars(**context):
            event_id, subject, kind, payload, at = events.followup_outbox_row("scheduled", document(row), MONDAY_10)
            expected = make_event(type="crm.followup.scheduled.v1", source=events.SOURCE, subject=row["contact_id"],
                                  data=FollowupRead.model_validate(row).model_dump(mode="json"), time=MONDAY_10,
                                  event_id=event_id)  # fmt: skip
        assert json.loads(payload) == json.loads(expected.to_json())
        assert CloudEvent.from_json(payload) == expected
        assert (subject, kind, at) == (f"crm.followups.scheduled.{row['contact_id']}", expected.type, MONDAY_10)
        assert uuid.UUID(event_id).version == 7
