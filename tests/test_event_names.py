"""Every event type a service publishes or handles is one the catalogue (servicekit/catalogue/) declares, and
every stream a consumer reads is one a producer declares: the names are declared there once, so a renamed or
misspelt type cannot leave a handler listening for an event nobody sends."""

from __future__ import annotations

from typing import Any

from gateway import events as gateway_events
from gateway import staff as gateway_staff
from servicekit.catalogue import all_events
from servicekit.catalogue.staff import STAFF_STREAM
from services.contacts import events as contacts_events
from services.contacts import staff as contacts_staff
from services.followups import events as followups_events
from services.followups import staff as followups_staff
from services.interactions import consumers as interactions_consumers
from services.interactions import events as interactions_events

CATALOGUED = {doc.type for doc in all_events()}
NOBODY: Any = None  # the handler tables close over their service without calling it


def test_every_handled_event_type_is_catalogued() -> None:
    handled = {
        "gateway": {
            *gateway_events.CONTACT_HANDLERS,
            *gateway_events.INTERACTION_HANDLERS,
            *gateway_events.FOLLOWUP_HANDLERS,
        },
        "contacts": set(contacts_staff.staff_handlers()),
        "interactions": set(interactions_consumers.contact_handlers(NOBODY)),
        "followups": {
            *followups_events.interaction_handlers(NOBODY),
            *followups_events.contact_handlers(NOBODY),
            *followups_staff.staff_handlers(NOBODY),
        },
    }
    for consumer, types in handled.items():
        assert types, consumer
        assert types <= CATALOGUED, (consumer, types - CATALOGUED)


def test_every_published_event_type_is_catalogued_and_the_follow_up_statuses_cover_them_all() -> None:
    followup_types = {followups_events.event_type(action) for action in followups_events.ACTIONS}
    assert followup_types <= CATALOGUED
    assert set(gateway_events.FOLLOWUP_STATUS_OF_EVENT) == followup_types
    assert {doc.type for doc in all_events() if doc.producer == "followups"} == followup_types
    assert gateway_staff.STAFF_CHANGED in CATALOGUED
    for produced in (
        interactions_events.LOGGED,
        interactions_events.UPDATED,
        interactions_events.REDACTED,
        interactions_events.THREAD_RESOLVED,
    ):
        assert produced in CATALOGUED


def test_every_consumed_stream_is_a_producers_stream() -> None:
    produced = {
        contacts_events.STREAM.name,
        interactions_events.STREAM.name,
        followups_events.STREAM.name,
        gateway_staff.STREAM.name,
    }
    for stream, _, _, _ in gateway_events.CONSUMERS:
        assert stream in produced
    assert STAFF_STREAM in produced
