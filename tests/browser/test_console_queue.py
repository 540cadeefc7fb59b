"""The follow-up queue in a real Chromium against the real stack: tabs with counts, filters, sort and paging;
bulk actions with per-item results; a follow-up made by hand; cancelling with a reason; and a day's queue worked
with the keyboard alone. Each test works for a staff user of its own, so its counts are exact."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from tests.browser.conftest import Console, Staff, screenshot
from tests.browser.test_console_browser import first_customer, sign_in

pytestmark = [pytest.mark.stack, pytest.mark.browser]


def later_today() -> datetime:
    """Between now and midnight UTC (the stack's default zone; these staff users have none): due today."""
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), time(), tzinfo=UTC)
    return now + (midnight - now) / 2


def make_followups(console: Console, agent: Staff, *specs: dict[str, Any]) -> list[dict[str, Any]]:
    customer = first_customer(console)
    made = []
    with console.api() as http:
        for spec in specs:
            due = spec.pop("due", later_today())
            body = {"contact_id": customer["id"], "assignee": agent.handle, "due_at": due.isoformat(), **spec}
            answer = http.post("/api/v1/followups", json=body)
            assert answer.status_code == 201, answer.text
            made.append(answer.json())
    return made


def read(console: Console, followup: dict[str, Any]) -> dict[str, Any]:
    with console.api() as http:
        answer = http.get(f"/api/v1/followups/{followup['id']}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body


def card(page: Any, followup: dict[str, Any]) -> Any:
    return page.locator(f"li[data-followup='{followup['id']}']")


def tab_count(page: Any, name: str) -> int:
    text = page.get_by_role("navigation", name="Queue tabs").get_by_role("link", name=re.compile(name)).inner_text()
    return int(re.search(r"\(([\d,]+)\)", text).group(1).replace(",", ""))  # type: ignore[union-attr]


def test_tabs_count_each_bucket_and_due_today_holds_only_today(console: Console, chromium: Any) -> None:
    agent = console.make_staff("agent")
    months_ago = datetime.now(UTC) - timedelta(days=90)
    old, today, next_week = make_followups(
        console, agent,
        {"reason": "Chase the March invoice", "due": months_ago},
        {"reason": "Call about the delivery slot", "channel": "phone", "priority": "high"},
        {"reason": "Check the new plan suits them", "due": datetime.now(UTC) + timedelta(days=7)},
    )  # fmt: skip
    page = chromium().new_page()
    sign_in(page, console, agent, "/queue")
    assert page.get_by_role("link", name=re.compile("Due today")).get_attribute("aria-current") == "page"
    assert (tab_count(page, "Due today"), tab_count(page, "Overdue"), tab_count(page, "Upcoming")) == (1, 1, 1)
    assert card(page, today).count() == 1 and card(page, old).count() == 0  # months ago is overdue, not "today"
    assert "Showing 1 to 1 of 1" in page.locator("#queue-range").inner_text()
    assert "UTC" in page.locator(".zone").inner_text()
    # Each card is one stop for Tab, whatever it holds (the old queue had three forms a card).
    stops = page.locator("ul.queue").evaluate(
        "list => [...list.querySelectorAll('a, input, select, button, textarea, [tabindex]')]"
        ".filter(e => e.tabIndex >= 0).length"
    )
    assert stops == 1
    screenshot(page, "queue")
    page.get_by_role("link", name=re.compile("Overdue")).click()
    page.wait_for_url(re.compile(r"tab=overdue"))
    card(page, old).wait_for()
    assert "Overdue" in card(page, old).inner_text()
    page.get_by_role("link", name=re.compile("Upcoming")).click()
    card(page, next_week).wait_for()
    with console.api() as http:
        http.post(f"/api/v1/followups/{today['id']}/complete", json={"outcome": "Booked for Friday"})
    page.get_by_role("link", name=re.compile("Done")).click()
    page.wait_for_url(re.compile(r"tab=done"))
    assert tab_count(page, "Done") == 1 and tab_count(page, "Due today") == 0
    assert "Booked for Friday" in card(page, today).inner_text()


def test_filters_sort_and_pages_through_everything_with_the_total(console: Console, chromium: Any) -> None:
    agent = console.make_staff("agent")
    start = datetime.now(UTC) + timedelta(days=2)
    specs = [
        {"reason": f"Upcoming call {n:02d}", "due": start + timedelta(minutes=n),
         "channel": "email" if n % 5 else "phone", "priority": "urgent" if n == 54 else "normal"}
        for n in range(55)
    ]  # fmt: skip
    made = make_followups(console, agent, *specs)
    page = chromium().new_page()
    sign_in(page, console, agent, "/queue?tab=upcoming")
    assert tab_count(page, "Upcoming") == 55
    assert "Showing 1 to 50 of 55" in page.locator("#queue-range").inner_text()
    assert page.locator("ul.queue > li").first.get_attribute("data-followup") == made[54]["id"]  # urgent first
    page.get_by_role("navigation", name="Pages").get_by_role("link", name="Next page").click()
    page.wait_for_url(re.compile(r"cursor="))
    assert "Showing 51 to 55 of 55" in page.locator("#queue-range").inner_text()
    assert page.locator("ul.queue > li").count() == 5
    assert tab_count(page, "Upcoming") == 55  # a later page still counts everything
    page.get_by_label("Channel").select_option("phone")
    page.get_by_label("Sort").select_option("-due_at")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"channel=phone"))
    shown = page.locator("ul.queue > li").evaluate_all("cards => cards.map(c => c.dataset.followup)")
    assert shown == [f["id"] for f in reversed(made) if f["channel"] == "phone"]  # 11 of them, latest due first
    assert tab_count(page, "Upcoming") == 11
    page.get_by_label("Priority").select_option("urgent")
    page.get_by_label("Channel").select_option("")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"priority=urgent"))
    assert page.locator("ul.queue > li").count() == 1 and tab_count(page, "Upcoming") == 1


def test_bulk_actions_report_each_follow_up_that_could_not_be_changed(console: Console, chromium: Any) -> None:
    agent = console.make_staff("agent")
    colleague = console.make_staff("agent")
    in_three_days = datetime.now(UTC) + timedelta(days=3)
    first, second, third = make_followups(
        console, agent, *({"reason": f"Send the brochure {n}", "due": in_three_days} for n in (1, 2, 3))
    )
    page = chromium().new_page()
    sign_in(page, console, agent, "/queue?tab=upcoming")
    for followup in (first, second, third):
        card(page, followup).get_by_role("checkbox").check()
    assert "3 selected" in page.locator("[data-selection]").inner_text()
    with console.api() as http:  # a colleague cancels one meanwhile
        closed = http.post(f"/api/v1/followups/{third['id']}/cancel", json={})
        assert closed.status_code == 200, closed.text
    page.get_by_text("Complete", exact=True).first.click()  # the panel's summary
    page.get_by_label("Outcome").fill("Brochure sent")
    page.get_by_role("button", name="Complete").click()
    status = page.get_by_role("status")
    status.filter(has_text="Completed 2 follow-ups; 1 could not be").wait_for()
    assert "cancelled follow-up cannot be completed" in status.locator(".failures").inner_text()
    assert read(console, first)["outcome"] == read(console, second)["outcome"] == "Brochure sent"

    more = make_followups(console, agent, *({"reason": f"Renewal quote {n}"} for n in (1, 2)))
    page.goto(console.url + "/queue")
    for followup in more:
        card(page, followup).get_by_role("checkbox").check()
    page.locator("details[data-action=assign] summary").click()
    page.get_by_label("Person").select_option(colleague.handle)
    page.get_by_role("button", name="Assign").click()
    page.get_by_role("status").filter(has_text="Assigned 2 follow-ups").wait_for()
    assert {read(console, f)["assignee"] for f in more} == {colleague.handle}
    assert all(card(page, f).count() == 0 for f in more)  # no longer mine
    page.get_by_role("button", name="Apply").wait_for()
    page.get_by_label("Assignee").select_option(colleague.handle)
    page.get_by_role("button", name="Apply").click()
    card(page, more[0]).wait_for()

    for followup in more:
        card(page, followup).get_by_role("checkbox").check()
    page.locator("details[data-action=cancel] summary").click()
    page.get_by_label("Why").select_option("superseded")
    page.get_by_role("button", name="Cancel the follow-ups").click()
    page.get_by_role("status").filter(has_text="Cancelled 2 follow-ups").wait_for()
    assert {(read(console, f)["status"], read(console, f)["cancel_reason"]) for f in more} == {
        ("cancelled", "superseded")
    }
    assert page.locator("ul.queue > li").count() == 0 and page.get_by_role("alert").count() == 0


def test_an_agent_creates_a_follow_up_by_hand_for_a_customer_found_by_search(console: Console, chromium: Any) -> None:
    agent = console.make_staff("agent")
    customer = first_customer(console)
    reason = f"Ring back about the warranty {uuid.uuid4().hex[:4]}"
    page = chromium().new_page()
    sign_in(page, console, agent, "/queue")
    page.get_by_role("link", name="New follow-up").click()
    page.get_by_label("Find the customer").fill(customer["name"])
    page.get_by_role("button", name="Search").click()
    page.get_by_label(re.compile(re.escape(customer["name"]))).first.check()
    page.get_by_label("Reason").fill(reason)
    due = later_today().strftime("%Y-%m-%dT%H:%M")
    page.get_by_label(re.compile(r"^Due")).fill(due)
    page.get_by_label("Channel").select_option("phone")
    page.get_by_label("Priority").select_option("high")
    screenshot(page, "queue-new")
    page.get_by_role("button", name="Create the follow-up").click()
    page.get_by_role("status").filter(has_text="Follow-up created").wait_for()
    made = page.locator("ul.queue > li").filter(has_text=reason)
    assert made.count() == 1 and customer["name"] in made.inner_text() and "Phone" in made.inner_text()
    stored = read(console, {"id": made.get_attribute("data-followup")})
    assert stored["assignee"] == agent.handle and stored["priority"] == "high" and stored["channel"] == "phone"
    # Without a customer chosen, the form says so and keeps what was typed.
    page.goto(console.url + "/queue/new?q=" + uuid.uuid4().hex)
    assert "No customer matches" in page.locator("main").inner_text()
    assert page.get_by_role("button", name="Create the follow-up").is_disabled()


def test_a_days_queue_worked_with_the_keyboard_alone(console: Console, chromium: Any) -> None:
    agent = console.make_staff("agent")
    colleague = console.make_staff("agent")
    urgent, high, normal, low, lowest = make_followups(
        console, agent,
        {"reason": "Call back: the boiler is still cold", "priority": "urgent", "channel": "phone"},
        {"reason": "Answer the refund email", "priority": "high", "channel": "email"},
        {"reason": "Thank them for the order", "priority": "normal"},
        {"reason": "Ask how the install went", "priority": "low"},
        {"reason": "Two weeks check-in", "priority": "low", "due": later_today() + timedelta(seconds=1)},
    )  # fmt: skip
    page = chromium().new_page()
    sign_in(page, console, agent, "/queue")
    keys = page.keyboard

    def on(followup: dict[str, Any]) -> None:
        page.wait_for_function(
            "id => document.activeElement && document.activeElement.dataset.followup === id", arg=followup["id"]
        )

    keys.press("?")
    dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    dialog.wait_for()
    assert "Complete" in dialog.inner_text() and "Snooze" in dialog.inner_text()
    keys.press("Escape")
    dialog.wait_for(state="hidden")

    keys.press("j")  # the first card: the urgent call
    on(urgent)
    keys.press("c")
    keys.type("Engineer booked for 8am")
    keys.press("Enter")
    page.get_by_role("status").filter(has_text="Completed 1 follow-up").wait_for()
    on(high)  # back where the work was: the next one, no mouse needed

    keys.press("s")  # snooze the refund email until tomorrow morning
    keys.press("ArrowDown")  # 1 hour -> Tomorrow 09:00
    keys.press("Enter")
    page.get_by_role("status").filter(has_text="Snoozed 1 follow-up").wait_for()
    on(normal)

    keys.press("a")  # the thank-you goes to a colleague, down the picker with the arrow key
    options = page.get_by_label("Person").locator("option").evaluate_all("options => options.map(o => o.value)")
    for _ in range(options.index(colleague.handle)):  # type-ahead would do, but its 1 s window is flaky on CI
        keys.press("ArrowDown")
    keys.press("Enter")
    page.get_by_role("status").filter(has_text="Assigned 1 follow-up").wait_for()
    on(low)

    keys.press("x")  # select the last two, cancel both as duplicates
    keys.press("j")
    on(lowest)
    keys.press("x")
    assert "2 selected" in page.locator("[data-selection]").inner_text()
    keys.press("d")
    keys.press("ArrowDown")  # No longer needed -> Duplicate, or replaced by another
    keys.press("Enter")
    page.get_by_role("status").filter(has_text="Cancelled 2 follow-ups").wait_for()
    assert page.locator("ul.queue > li").count() == 0 and tab_count(page, "Due today") == 0

    assert read(console, urgent)["outcome"] == "Engineer booked for 8am"
    snoozed = datetime.fromisoformat(read(console, high)["due_at"])
    tomorrow_nine = datetime.combine(datetime.now(UTC).date() + timedelta(days=1), time(9), tzinfo=UTC)
    assert snoozed == tomorrow_nine
    assert read(console, normal)["assignee"] == colleague.handle
    assert {(read(console, f)["status"], read(console, f)["cancel_reason"]) for f in (low, lowest)} == {
        ("cancelled", "superseded")
    }
