"""What the follow-ups service publishes (documented in servicekit/catalogue/followups.py) and consumes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from servicekit.bus import StreamSpec
from servicekit.events import CloudEvent, make_event

SOURCE = "touchpoint/followups"
STREAM = StreamSpec(name="CRM_FOLLOWUPS", subjects=["crm.followups.>"], description="Follow-up events")

ACTIONS = ("scheduled", "due", "overdue", "escalated", "completed", "cancelled", "skipped")

# Consumed from the interactions service.
INTERACTIONS_STREAM = "CRM_INTERACTIONS"
INTERACTIONS_DURABLE = "followups-interactions"
INTERACTIONS_SUBJECTS = ["crm.interactions.logged.*", "crm.interactions.thread_resolved.*"]
INTERACTION_LOGGED = "crm.interaction.logged.v1"
THREAD_RESOLVED = "crm.thread.resolved.v1"

# Consumed from the contacts service.
CONTACTS_STREAM = "CRM_CONTACTS"
CONTACTS_DURABLE = "followups-contacts"
CONTACTS_SUBJECTS = ["crm.contacts.>"]
CONTACT_CREATED = "crm.contact.created.v1"
CONTACT_UPDATED = "crm.contact.updated.v1"
CONTACT_MERGED = "crm.contact.merged.v1"
CONTACT_ERASED = "crm.contact.erased.v1"


def event_type(action: str) -> str:
    return f"crm.followup.{action}.v1"


def followup_event(action: str, document: dict[str, Any], at: datetime) -> tuple[CloudEvent, str]:
    """The event about a follow-up (data = the follow-up) and its subject ``crm.followups.<action>.<contact>``."""
    assert action in ACTIONS, action
    contact_id = document["contact_id"]
    event = make_event(type=event_type(action), source=SOURCE, subject=contact_id, data=document, time=at)
    return event, f"crm.followups.{action}.{contact_id}"
