"""What the interactions service publishes and consumes (documented in servicekit/catalogue/interactions.py)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from servicekit.bus import StreamSpec
from servicekit.events import CloudEvent, make_event
from servicekit.ids import new_id

SOURCE = "touchpoint/interactions"
STREAM = StreamSpec(name="CRM_INTERACTIONS", subjects=["crm.interactions.>"], description="Interaction events")
INGEST_STREAM = StreamSpec(
    name="CRM_INGEST",
    subjects=["crm.ingest.interactions"],
    work_queue=True,
    description="Touchpoints published by external systems, consumed once by the interactions service",
)
INGEST_SUBJECT = "crm.ingest.interactions"
INGEST_DURABLE = "interactions-ingest"
DEADLETTER_SUBJECT = "crm.ingest.deadletter"

LOGGED = "crm.interaction.logged.v1"
UPDATED = "crm.interaction.updated.v1"
THREAD_RESOLVED = "crm.thread.resolved.v1"
REDACTED = "crm.interaction.redacted.v1"

# Consumed from the contacts service.
CONTACTS_STREAM = "CRM_CONTACTS"
CONTACTS_DURABLE = "interactions-contacts"
CONTACTS_SUBJECTS = ["crm.contacts.merged.*", "crm.contacts.erased.*"]
CONTACT_MERGED = "crm.contact.merged.v1"
CONTACT_ERASED = "crm.contact.erased.v1"

_ACTIONS = {LOGGED: "logged", UPDATED: "updated", THREAD_RESOLVED: "thread_resolved", REDACTED: "redacted"}


def subject_for(event_type: str, contact_id: uuid.UUID | str) -> str:
    """``crm.interaction.logged.v1`` about contact X goes to ``crm.interactions.logged.X``."""
    return f"crm.interactions.{_ACTIONS[event_type]}.{contact_id}"


def interaction_event(
    event_type: str, contact_id: uuid.UUID | str, data: dict[str, Any], at: datetime
) -> tuple[CloudEvent, str]:
    """The event and the subject it is published on."""
    event = make_event(type=event_type, source=SOURCE, subject=contact_id, data=data, time=at, event_id=str(new_id()))
    return event, subject_for(event_type, contact_id)
