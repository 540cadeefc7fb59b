"""What the interactions service publishes and consumes (documented in servicekit/catalogue/interactions.py)."""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime
from typing import Any

from servicekit.bus import StreamSpec
from servicekit.events import CloudEvent, make_event

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


def fast_ids(count: int) -> list[uuid.UUID]:
    """``count`` UUIDv7 (RFC 9562: 48 bits of Unix milliseconds, version, 74 random bits), like
    ``servicekit.ids.new_id`` but for far less: no round trip through a string, and one ``os.urandom`` for all of
    them (a batch makes two per touchpoint; a system call each was a tenth of a batch's CPU). Ids made in the same
    millisecond are unordered among themselves, which nothing relies on (pages break ties of ``occurred_at`` by
    id, events are ordered by the outbox)."""
    # The wall clock, not servicekit.clock: an id's timestamp only orders ids, it is no domain time.
    stamp = (time.time_ns() // 1_000_000) << 80 | _VERSION_7 | _VARIANT
    entropy = os.urandom(10 * count)
    ids = []
    for start in range(0, 10 * count, 10):
        random_bits = int.from_bytes(entropy[start : start + 10])
        ids.append(uuid.UUID(int=stamp | (random_bits >> 68) << 64 | random_bits & _LOW_62))
    return ids


def fast_id() -> uuid.UUID:
    """One of ``fast_ids``."""
    return fast_ids(1)[0]


_VERSION_7 = 0x7 << 76
_VARIANT = 0b10 << 62
_LOW_62 = (1 << 62) - 1


def subject_for(event_type: str, contact_id: uuid.UUID | str) -> str:
    """``crm.interaction.logged.v1`` about contact X goes to ``crm.interactions.logged.X``."""
    return f"crm.interactions.{_ACTIONS[event_type]}.{contact_id}"


def interaction_event(
    event_type: str, contact_id: uuid.UUID | str, data: dict[str, Any], at: datetime
) -> tuple[CloudEvent, str]:
    """The event and the subject it is published on."""
    event = make_event(type=event_type, source=SOURCE, subject=contact_id, data=data, time=at, event_id=str(fast_id()))
    return event, subject_for(event_type, contact_id)
