"""What the interactions service publishes and consumes (documented in servicekit/catalogue/interactions.py)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from servicekit.bus import StreamSpec
from servicekit.catalogue.interactions import INTERACTION_LOGGED as LOGGED
from servicekit.catalogue.interactions import INTERACTION_REDACTED as REDACTED
from servicekit.catalogue.interactions import INTERACTION_UPDATED as UPDATED
from servicekit.catalogue.interactions import INTERACTIONS_STREAM, INTERACTIONS_SUBJECTS, THREAD_RESOLVED
from servicekit.events import CloudEvent, make_event
from servicekit.ids import new_id

SOURCE = "touchpoint/interactions"
STREAM = StreamSpec(name=INTERACTIONS_STREAM, subjects=[INTERACTIONS_SUBJECTS], description="Interaction events")
INGEST_STREAM = StreamSpec(
    name="CRM_INGEST",
    subjects=["crm.ingest.interactions"],
    work_queue=True,
    description="Touchpoints published by external systems, consumed once by the interactions service",
)
INGEST_SUBJECT = "crm.ingest.interactions"
INGEST_DURABLE = "interactions-ingest"
DEADLETTER_SUBJECT = "crm.ingest.deadletter"

# Consumed from the contacts service.
CONTACTS_DURABLE = "interactions-contacts"
CONTACTS_SUBJECTS = [
    "crm.contacts.created.*",
    "crm.contacts.updated.*",
    "crm.contacts.merged.*",
    "crm.contacts.erased.*",
]

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
