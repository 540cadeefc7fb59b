"""What the contacts service publishes (documented in servicekit/catalogue/contacts.py). What it consumes (staff
changes, for the owners a CSV import names) is in services/contacts/staff.py."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from servicekit.bus import StreamSpec
from servicekit.catalogue.contacts import CONTACTS_STREAM, CONTACTS_SUBJECTS
from servicekit.events import CloudEvent, make_event

SOURCE = "touchpoint/contacts"
STREAM = StreamSpec(name=CONTACTS_STREAM, subjects=[CONTACTS_SUBJECTS], description="Contact events")


def subject_for(event_type: str, contact_id: uuid.UUID) -> str:
    """``crm.contact.merged.v1`` about X goes to ``crm.contacts.merged.X``."""
    action = event_type.split(".")[2]
    return f"crm.contacts.{action}.{contact_id}"


def contact_event(event_type: str, contact_id: uuid.UUID, data: dict[str, Any], at: datetime) -> CloudEvent:
    return make_event(type=event_type, source=SOURCE, subject=contact_id, data=data, time=at)
