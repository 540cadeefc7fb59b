"""The customer page's rules, without a browser: scores come from customers (the API refuses them from staff),
the logging form's fields as the API takes them, the history without open follow-ups, the journey strip from the
first touchpoint."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from gateway.console.timeline import Refused, history, journey_strip, occurred_at, touchpoint_from_form
from gateway.tests.conftest import ADMIN, StubServices, make_key
from gateway.tests.test_console_touchpoint import staff
from servicekit.clock import MovableClock

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MADRID = ZoneInfo("Europe/Madrid")


def touchpoint(contact_id: str, **fields: Any) -> dict[str, Any]:
    return {"contact_id": contact_id, "channel": "phone", "direction": "inbound", "type": "feedback",
            "occurred_at": NOW.isoformat(), **fields}  # fmt: skip


async def test_a_signed_in_staff_member_may_not_enter_a_score_for_the_customer(
    gateway: httpx.AsyncClient, stub: StubServices, clock: MovableClock
) -> None:
    clock.set(NOW)
    contact = stub.add_contact()
    agent = await staff(gateway, "agent")
    csrf = (await gateway.get("/api/v1/auth/me", headers=agent)).json()["csrf_token"]
    as_agent = {**agent, "X-CSRF-Token": csrf}
    for score in ({"csat": 5}, {"nps": 10}, {"csat": 1, "nps": 0}):
        refused = await gateway.post("/api/v1/interactions", json=touchpoint(contact["id"], **score), headers=as_agent)
        assert refused.status_code == 422, refused.text
        problem = refused.json()
        assert problem["title"] == "Scores come from customers" and problem["fields"] == sorted(score)
        assert "survey" in problem["detail"]
    batch = {"items": [touchpoint(contact["id"]), touchpoint(contact["id"], nps=3)]}
    refused = await gateway.post("/api/v1/interactions/batch", json=batch, headers=as_agent)
    assert refused.status_code == 422 and "item 1: nps" in refused.json()["detail"]
    assert stub.interactions == []  # nothing was stored

    # Without a score the same staff member logs it; a survey's API key sends the customer's answer.
    logged = await gateway.post("/api/v1/interactions", json=touchpoint(contact["id"]), headers=as_agent)
    assert logged.status_code == 201, logged.text
    survey = await make_key(gateway, "ingest", "survey tool")
    for headers in (survey, ADMIN):
        answered = await gateway.post("/api/v1/interactions", json=touchpoint(contact["id"], csat=4), headers=headers)
        assert answered.status_code == 201, answered.text
    assert [i.get("csat") for i in stub.interactions] == [None, 4, 4]


async def test_the_console_refuses_a_touchpoint_in_the_future_and_logs_a_backdated_one_with_its_details(
    gateway: httpx.AsyncClient, stub: StubServices, clock: MovableClock
) -> None:
    clock.set(NOW)
    contact = stub.add_contact()
    agent = await staff(gateway, "agent")
    csrf = (await gateway.get("/api/v1/auth/me", headers=agent)).json()["csrf_token"]
    headers = {**agent, "origin": "http://test"}
    form = {"csrf_token": csrf, "channel": "in_person", "direction": "inbound", "type": "purchase",
            "occurred_at": "2026-03-01T12:05", "subject": "Bought the grinder"}  # fmt: skip
    script = await gateway.post(f"/customers/{contact['id']}/touchpoints", data=form,
                                headers={**headers, "X-Console": "fragment"})  # fmt: skip
    assert script.status_code == 422 and "is in the future" in script.text and "follow-up" in script.text
    page = await gateway.post(f"/customers/{contact['id']}/touchpoints", data=form, headers=headers)
    assert page.status_code == 422 and "The touchpoint was not logged" in page.text
    assert stub.interactions == []

    followup = str(uuid.uuid4())
    form.update(occurred_at="2026-02-27T09:30", duration_min="12", amount="249,90", currency="eur",
                outcome="Paid by card", thread="new", followup_id=followup, csat="5")  # fmt: skip
    logged = await gateway.post(f"/customers/{contact['id']}/touchpoints", data=form,
                                headers={**headers, "X-Console": "fragment"})  # fmt: skip
    assert logged.status_code == 201, logged.text
    sent = stub.interactions[-1]
    # The agent has no time zone of their own: the form's wall clock is UTC.
    assert datetime.fromisoformat(sent["occurred_at"]) == datetime(2026, 2, 27, 9, 30, tzinfo=UTC)
    assert sent["duration_s"] == 720 and sent["amount"] == 249.9 and sent["currency"] == "EUR"
    assert sent["outcome"] == "Paid by card" and sent["followup_id"] == followup
    assert sent["thread_id"].startswith("desk-") and logged.headers["X-Console-New-Thread"] == sent["thread_id"]
    assert sent.get("csat") is None  # a score slipped into the form is not sent: the console has no such field
    assert logged.headers["X-Console-Now"] == "2026-03-01T12:00"  # the form's "when" goes back to now


def test_the_forms_time_is_the_agents_wall_clock_and_never_later_than_now() -> None:
    assert occurred_at("", zone=MADRID, now=NOW) == NOW
    assert occurred_at("2026-03-01T12:30", zone=MADRID, now=NOW) == datetime(2026, 3, 1, 11, 30, tzinfo=UTC)
    assert occurred_at("2026-03-01T11:00:00+00:00", zone=MADRID, now=NOW) == datetime(2026, 3, 1, 11, tzinfo=UTC)
    with pytest.raises(Refused, match=r"01 Mar 2026 13:01 \(Europe/Madrid\) is in the future"):
        occurred_at("2026-03-01T13:01", zone=MADRID, now=NOW)
    with pytest.raises(Refused, match="not a date and time"):
        occurred_at("yesterday", zone=MADRID, now=NOW)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"duration_min": "-1"}, "Duration"),
        ({"duration_min": "nan"}, "Duration"),
        ({"amount": "ten"}, "not a number"),
        ({"amount": "10"}, "currency"),
    ],
)
def test_the_forms_numbers_are_refused_with_what_is_wrong(fields: dict[str, str], message: str) -> None:
    with pytest.raises(Refused, match=message):
        touchpoint_from_form(fields, contact_id=uuid.uuid4(), agent="kim", zone=MADRID, now=NOW)


def test_the_history_leaves_open_follow_ups_to_the_upcoming_block() -> None:
    items = [
        {"kind": "followup", "type": "scheduled", "id": "a"},
        {"kind": "followup", "type": "due", "id": "b"},
        {"kind": "followup", "type": "completed", "id": "c"},
        {"kind": "interaction", "type": "complaint", "id": "d"},
        {"kind": "contact_event", "type": "created", "id": "e"},
    ]
    assert [i["id"] for i in history(items)] == ["c", "d", "e"]


def test_the_journey_strip_starts_at_a_touchpoint_older_than_the_profile() -> None:
    created, first_touch = NOW - timedelta(days=10), NOW - timedelta(days=100)
    journey = {"stages": [
        {"stage": "customer", "entered_at": created.isoformat(), "left_at": (NOW - timedelta(days=5)).isoformat(),
         "touchpoints": 7},
        {"stage": "repeat", "entered_at": (NOW - timedelta(days=5)).isoformat(), "left_at": None, "touchpoints": 2},
    ]}  # fmt: skip
    strip = journey_strip(journey, {"first_touch_at": first_touch.isoformat()}, NOW)
    assert strip is not None and strip["start"] == first_touch and strip["stretched"]
    first, second = strip["segments"]
    assert first["begin"] == first_touch and first["seconds"] == 95 * 86400 and second["seconds"] == 5 * 86400
    assert first["width"] == pytest.approx(950) and second["x"] == pytest.approx(950)
    # A profile older than its first touchpoint: the strip starts at the profile, as before.
    strip = journey_strip(journey, {"first_touch_at": (NOW - timedelta(days=1)).isoformat()}, NOW)
    assert strip is not None and strip["start"] == created and not strip["stretched"]
    assert journey_strip({"stages": []}, {}, NOW) is None
