"""What the follow-ups service publishes (documented in servicekit/catalogue/followups.py) and consumes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from servicekit.bus import StreamSpec
from servicekit.events import event_json
from servicekit.ids import new_id
from servicekit.logging import current_request_context

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


_TYPES = {action: event_type(action) for action in ACTIONS}


def followup_outbox_row(action: str, document: dict[str, Any], at: datetime) -> tuple[str, str, str, str, datetime]:
    """The event about a follow-up (data = the follow-up as ``document`` gives it, in JSON form; subject
    ``crm.followups.<action>.<contact>``), serialized for ``Outbox.add_serialized``: (id, subject, type, JSON,
    time). It is the document ``make_event(...).to_json()`` makes (a test compares the two), by the JSON
    encoder pydantic itself uses (pydantic_core.to_json): building and dumping a pydantic event for every
    follow-up made was a fifth of the consumer's CPU at 1,000 touchpoints per second."""
    kind = _TYPES[action]
    contact_id = document["contact_id"]
    event_id = str(new_id())
    payload = event_json(type=kind, source=SOURCE, subject=str(contact_id), data=document, time=at,
                         event_id=event_id, request=current_request_context())  # fmt: skip
    return event_id, f"crm.followups.{action}.{contact_id}", kind, payload, at
