"""The customer page in a real Chromium against the real stack: "Upcoming" above a history in the order things
happened, the header and "Upcoming" kept live by the stream, the journey strip from the first touchpoint, and
logging a touchpoint with its time, duration, outcome, amount, thread and the follow-up it fulfils (no score:
scores come from customers)."""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.browser.conftest import Console, Staff, screenshot
from tests.browser.test_console_browser import sign_in

pytestmark = [pytest.mark.stack, pytest.mark.browser]


def new_customer(http: httpx.Client, name: str) -> str:
    made = http.post("/api/v1/contacts", json={"name": name, "emails": [f"{secrets.token_hex(4)}@example.com"]})
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def log(http: httpx.Client, contact_id: str, at: datetime, **fields: Any) -> dict[str, Any]:
    body = {"contact_id": contact_id, "channel": "email", "direction": "inbound", "type": "inquiry",
            "occurred_at": at.isoformat(), **fields}  # fmt: skip
    sent = http.post("/api/v1/interactions", json=body)
    assert sent.status_code == 201, sent.text
    return dict(sent.json())


def follow_up(http: httpx.Client, contact_id: str, due: datetime, reason: str) -> dict[str, Any]:
    made = http.post("/api/v1/followups", json={"contact_id": contact_id, "reason": reason, "due_at": due.isoformat(),
                                                "channel": "phone"})  # fmt: skip
    assert made.status_code == 201, made.text
    return dict(made.json())


def stamps(page: Any) -> list[float]:
    found: list[float] = page.locator("#timeline li.item").evaluate_all(
        "items => items.map(li => Date.parse(li.dataset.at))"
    )
    return found


def test_upcoming_stands_above_a_history_in_the_order_things_happened(console: Console, chromium: Any) -> None:
    now = datetime.now(UTC)
    with console.api() as http:
        contact_id = new_customer(http, "Olga Upcoming")
        # History older than the profile (imported from the old system): the journey starts there.
        first = log(http, contact_id, now - timedelta(days=200), subject="Asked about opening hours")
        # Just now (after the profile was made, which is itself on the history).
        complaint = log(http, contact_id, datetime.now(UTC), type="complaint", subject="Kettle arrived broken")
        later = follow_up(http, contact_id, now + timedelta(days=9), "Check the replacement kettle works")
        sooner = follow_up(http, contact_id, now + timedelta(days=2), "Call back about the refund")
    page = chromium().new_page()
    sign_in(page, console, console.agent, f"/customers/{contact_id}")
    upcoming = page.get_by_role("region", name="Upcoming")
    titles = upcoming.locator("li.item .title").all_inner_texts()
    # Soonest due first (with what the policies scheduled for the complaint, a reply and a call-back).
    assert [t for t in titles if t in (sooner["reason"], later["reason"])] == [sooner["reason"], later["reason"]]
    due = upcoming.locator("li.item time").evaluate_all("times => times.map(t => Date.parse(t.dateTime))")
    assert len(due) == len(titles) >= 2 and due == sorted(due)
    history = page.get_by_role("region", name="History")
    # The brand-new complaint is the first thing in the history, not below follow-ups due next week.
    assert complaint["subject"] in history.locator("li.item").first.inner_text()
    assert all(later["reason"] not in t for t in history.locator("li.item").all_inner_texts())
    assert stamps(page) == sorted(stamps(page), reverse=True)
    assert max(stamps(page)) <= datetime.now(UTC).timestamp() * 1000  # nothing still to come in the history
    assert f"{len(titles)} open" in page.locator("[data-fact=followups]").inner_text()

    journey = page.get_by_role("region", name="Journey")
    opened = datetime.fromisoformat(first["occurred_at"]).strftime("%d %b %Y")
    assert opened in journey.locator(".strip-ends").inner_text() and "first touchpoint" in journey.inner_text()
    assert f"since {opened}" in journey.locator(".stages li").first.inner_text()
    screenshot(page, "customer-upcoming")


def test_the_header_and_upcoming_follow_the_stream(console: Console, chromium: Any) -> None:
    now = datetime.now(UTC)
    with console.api() as http:
        contact_id = new_customer(http, "Piet Live-Header")
        log(http, contact_id, now - timedelta(days=3), channel="phone", subject="First call")
    page = chromium().new_page()
    sign_in(page, console, console.agent, f"/customers/{contact_id}")
    page.locator("[data-live-status].on").wait_for()
    assert page.locator("[data-fact=csat] dd").inner_text() == "—"
    assert page.locator(".touches li[data-channel=email]").count() == 0
    with console.api() as http:  # the survey tool's answer, through an API key: the customer's own score
        log(http, contact_id, datetime.now(UTC), channel="email", type="survey_response", csat=2, subject="Survey")
        reason = f"Recovery call after a low score {uuid.uuid4().hex[:6]}"
        follow_up(http, contact_id, now + timedelta(days=1), reason)
    page.locator("[data-fact=csat] dd", has_text="2.0 / 5").or_(
        page.locator("[data-fact=csat] dd", has_text="2 / 5")
    ).wait_for()
    page.locator(".touches li[data-channel=email]").wait_for()
    page.get_by_role("region", name="Upcoming").locator("li.item", has_text=reason).wait_for()
    # The header's count follows the same stream: the low score and the survey may schedule more follow-ups
    # after ours, each arriving as its own event, so wait until header and Upcoming agree on the count.
    upcoming = page.get_by_role("region", name="Upcoming").locator("li.item")
    header = page.locator("[data-fact=followups] dd")
    agreed = ""
    for _ in range(100):
        shown, said = upcoming.count(), header.inner_text()
        if said.startswith(f"{shown} open"):
            agreed = said
            break
        page.wait_for_timeout(100)  # the next swap; polled, as Playwright has no wait for two locators agreeing
    assert agreed, f"header {header.inner_text()!r} never agreed with {upcoming.count()} upcoming items"
    assert "(2)" not in page.locator(".touches li[data-channel=phone]").inner_text()  # one phone touch, as before
    assert page.locator("[data-fact=touches] dd").inner_text().startswith("2")


def seconds_from_now(field: Any, zone: ZoneInfo) -> float:
    """How far the form's "when" is from now (it holds the agent's wall clock, to the minute)."""
    return abs((datetime.fromisoformat(field.input_value()).replace(tzinfo=zone) - datetime.now(UTC)).total_seconds())


def agent_in(console: Console, zone: str) -> Staff:
    staff = Staff(f"agent.{secrets.token_hex(4)}@touchpoint.example", secrets.token_urlsafe(16), "agent")
    with console.api() as http:
        made = http.post("/api/v1/users", json={"email": staff.email, "password": staff.password, "role": "agent",
                                                "timezone": zone})  # fmt: skip
        assert made.status_code == 201, made.text
    return staff


def test_logging_a_backdated_touchpoint_on_a_thread_that_fulfils_a_follow_up(console: Console, chromium: Any) -> None:
    zone = ZoneInfo("America/New_York")
    now = datetime.now(UTC)
    with console.api() as http:
        contact_id = new_customer(http, "Quentin Logger")
        log(http, contact_id, now - timedelta(hours=1), channel="phone", subject="Wants a call about the order")
        callback = follow_up(http, contact_id, now + timedelta(hours=4), "Call back about order 1844")
    page = chromium().new_page()
    sign_in(page, console, agent_in(console, "America/New_York"), f"/customers/{contact_id}")
    page.locator("[data-live-status].on").wait_for()
    form = page.get_by_role("region", name="Log a touchpoint")
    assert form.get_by_label("CSAT").count() == 0 and form.get_by_label("NPS").count() == 0  # scores: customers'
    when = form.get_by_label(re.compile("^When"))
    assert "America/New_York" in form.locator("label[for=log-when]").inner_text()
    assert seconds_from_now(when, zone) < 180  # now, on the agent's own clock

    # A time still to come is refused, and said so.
    tomorrow = (datetime.now(zone) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    when.fill(tomorrow)
    form.get_by_label("Subject").fill("Not yet")
    form.get_by_role("button", name="Log touchpoint").click()
    form.locator(".form-status", has_text="is in the future").wait_for()

    # Backdated 40 minutes: the call happened before the agent got to log it.
    subject = f"Called back about order 1844 {uuid.uuid4().hex[:6]}"
    earlier = datetime.now(zone) - timedelta(minutes=40)
    when.fill(earlier.strftime("%Y-%m-%dT%H:%M"))
    form.get_by_label("Channel").select_option("email")
    # The follow-up it fulfils is a phone call-back: picking it sets the channel the work is owed on.
    form.get_by_label("Fulfils follow-up").select_option(callback["id"])
    assert form.get_by_label("Channel").input_value() == "phone"
    form.get_by_label("Type").select_option("purchase")
    form.get_by_label("Subject").fill(subject)
    form.get_by_label("Duration (minutes)").fill("12")
    form.get_by_label("Outcome").fill("Ordered the spare carafe")
    form.get_by_label(re.compile("^Amount")).fill("24.90")
    form.get_by_label("Currency").fill("EUR")
    form.get_by_label("Thread").select_option("new")
    form.get_by_role("button", name="Log touchpoint").click()
    form.locator(".form-status", has_text="Logged.").wait_for()
    entry = page.locator("#timeline li.item").filter(has_text=subject)
    entry.wait_for()
    text = entry.inner_text()
    assert "24.90 EUR" in text and "12 min" in text and "Ordered the spare carafe" in text and "Thread desk-" in text
    # Placed at the time it happened (40 minutes ago: above the touchpoint of an hour ago, below newer ones).
    assert stamps(page) == sorted(stamps(page), reverse=True)
    assert entry.get_attribute("data-at") is not None
    logged_at = datetime.fromisoformat(str(entry.get_attribute("data-at")))
    assert abs((logged_at - earlier.replace(second=0, microsecond=0)).total_seconds()) < 1

    # The call-back it fulfils closes: it leaves "Upcoming" and the picker, and shows in the history as done.
    page.get_by_role("region", name="Upcoming").locator("li.item", has_text=callback["reason"]).wait_for(
        state="detached"
    )
    page.locator("#timeline li.item.kind-followup", has_text=callback["reason"]).wait_for()
    assert form.locator(f"#log-fulfils option[value='{callback['id']}']").count() == 0
    # The form is ready for the next one: now again, and the thread just started offered to go on with.
    assert (
        abs((datetime.fromisoformat(when.input_value()).replace(tzinfo=zone) - datetime.now(UTC)).total_seconds()) < 180
    )
    thread_id = re.search(r"Thread (desk-[0-9a-f]+)", text)
    assert thread_id is not None
    form.get_by_label("Thread").select_option(thread_id.group(1))
    form.get_by_label("Subject").fill(f"Sent the invoice {uuid.uuid4().hex[:6]}")
    form.get_by_label("Channel").select_option("email")
    form.get_by_role("button", name="Log touchpoint").click()
    page.locator("#timeline li.item", has_text="Sent the invoice").wait_for()
    assert f"Thread {thread_id.group(1)}" in page.locator("#timeline li.item", has_text="Sent the invoice").inner_text()
    # The header counts what the form logged too: three touchpoints, the last by email just now.
    page.locator("[data-fact=touches] dd", has_text=re.compile(r"^3 ")).wait_for()
    page.locator(".touches li[data-channel=email]", has_text="now").wait_for()
    screenshot(page, "customer-log")
