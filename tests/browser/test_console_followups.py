"""The pages that stand on the follow-ups service, in a real Chromium against the real stack: the work queue
(complete a follow-up; the dashboard: test_console_dashboard.py; the policies: test_console_admin.py)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.browser.conftest import Console, screenshot
from tests.browser.test_console_browser import first_customer, sign_in

pytestmark = [pytest.mark.stack, pytest.mark.browser]


def test_an_agent_completes_a_follow_up_from_the_queue(console: Console, chromium: Any) -> None:
    customer = first_customer(console)
    reason = f"Call back about the dishwasher installation {uuid.uuid4().hex[:4]}"
    with console.api() as http:
        made = http.post(
            "/api/v1/followups",
            json={
                "contact_id": customer["id"],
                "reason": reason,
                "due_at": (datetime.now(UTC) + timedelta(minutes=30)).isoformat(),
                "channel": "phone",
                "priority": "high",
                "assignee": console.agent.handle,
            },
        )
        assert made.status_code == 201, made.text
        followup_id = made.json()["id"]
    page = chromium().new_page()
    sign_in(page, console, console.agent)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Follow-ups").click()
    card = page.locator(f"li[data-followup='{followup_id}']")
    card.wait_for()
    assert reason in card.inner_text() and customer["name"] in card.inner_text() and "Phone" in card.inner_text()
    screenshot(page, "queue")
    card.get_by_label("Outcome").fill("Booked the installer for Friday")
    card.get_by_role("button", name="Complete").click()
    page.get_by_role("status").filter(has_text="Done: Complete").wait_for()
    assert page.locator(f"li[data-followup='{followup_id}']").count() == 0
    with console.api() as http:
        done = http.get(f"/api/v1/followups/{followup_id}").json()
    assert done["status"] == "completed" and done["outcome"] == "Booked the installer for Friday"
    page.get_by_role("link", name="Overdue").click()
    page.wait_for_url(re.compile(r"view=overdue"))
    assert page.get_by_role("heading", name="Follow-ups").is_visible()


def test_an_agent_hands_a_follow_up_to_a_team_and_the_team_snoozes_it(console: Console, chromium: Any) -> None:
    customer = first_customer(console)
    due = datetime.now(UTC) + timedelta(minutes=20)
    with console.api() as http:
        made = http.post(
            "/api/v1/followups",
            json={"contact_id": customer["id"], "reason": "Check the refund reached the customer",
                  "due_at": due.isoformat(), "channel": "email", "assignee": console.agent.handle},
        )  # fmt: skip
        assert made.status_code == 201, made.text
        followup_id = made.json()["id"]
        http.post("/api/v1/teams", json={"id": "returns", "name": "Returns"})  # 409 when made by an earlier run
    page = chromium().new_page()
    sign_in(page, console, console.agent, "/queue")
    card = page.locator(f"li[data-followup='{followup_id}']")
    card.get_by_label("Assignee").fill("")
    card.get_by_label("Team").fill("returns")
    card.get_by_role("button", name="Reassign").click()
    page.get_by_role("status").filter(has_text="Done: Assign").wait_for()
    assert page.locator(f"li[data-followup='{followup_id}']").count() == 0  # not mine any more

    page.get_by_role("link", name="My team's").click()
    page.get_by_label("Team").fill("returns")
    page.get_by_role("button", name="Show").click()
    page.goto(console.url + "/queue?view=team")  # the team is remembered
    card = page.locator(f"li[data-followup='{followup_id}']")
    assert "(returns)" in card.inner_text()
    card.get_by_label("Snooze").select_option("week")
    card.get_by_role("button", name="Snooze").click()
    page.get_by_role("status").filter(has_text="Done: Snooze").wait_for()
    assert page.url.endswith("view=team&done=snooze%3A" + followup_id)
    with console.api() as http:
        moved = http.get(f"/api/v1/followups/{followup_id}").json()
    assert moved["team"] == "returns"
    assert datetime.fromisoformat(moved["due_at"]) > due + timedelta(days=6)
