"""The pages that stand on the follow-ups service, in a real Chromium against the real stack: the service
dashboard, and the policies an admin switches and previews (the work queue: test_console_queue.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.browser.conftest import Console, screenshot
from tests.browser.test_console_browser import sign_in

pytestmark = [pytest.mark.stack, pytest.mark.browser]


def test_the_dashboard_draws_the_service_quality_of_the_demo_shop(console: Console, chromium: Any) -> None:
    page = chromium().new_page()
    sign_in(page, console, console.agent)
    since = (datetime.now(UTC) - timedelta(days=180)).date().isoformat()
    page.goto(f"{console.url}/dashboard")
    page.get_by_label("From").fill(since)
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r"since=" + since))
    assert page.get_by_role("alert").count() == 0
    csat = page.locator(".tile").filter(has_text="CSAT average").locator(".figure").inner_text()
    assert 1.0 <= float(csat) <= 5.0  # the demo's survey responses, averaged by the interactions service
    assert page.get_by_role("img", name="Average CSAT per period, 1 to 5").locator("circle").count() >= 1
    assert page.get_by_role("img", name="First response p50 and p90 per channel").locator("rect").count() >= 2
    assert page.get_by_role("img", name="Follow-up counts").locator("rect").count() >= 4
    screenshot(page, "dashboard")


def test_an_admin_previews_and_switches_a_policy(console: Console, chromium: Any) -> None:
    page = chromium().new_page()
    sign_in(page, console, console.admin)
    page.goto(console.url + "/admin/policies")
    row = page.locator("tr").filter(has_text="purchase-2-2-2")
    state = "Off" if "Switch on" in row.inner_text() else "On"
    screenshot(page, "admin-policies")
    for expected in ("On" if state == "Off" else "Off", state):  # switched, then back as it was for the rest
        row.get_by_role("button").click()
        row = page.locator("tr").filter(has_text="purchase-2-2-2")
        assert expected in row.locator("td").nth(3).inner_text()
    row.get_by_role("link", name="purchase-2-2-2").click()
    assert '"steps"' in page.get_by_label("Policy document (JSON)").input_value()
    page.get_by_role("button", name="Preview the last 30 days").click()
    heading = page.get_by_role("heading", name=re.compile(r"Preview: \d+ follow-ups? in the last 30 days"))
    heading.wait_for()
    assert int(heading.inner_text().split()[1]) > 0  # the demo shop bought things in the last 30 days
    first_row = page.locator("section").filter(has=heading).locator("tbody tr").first
    assert first_row.get_by_role("link").inner_text() != "Open customer"  # the customer's name
    heading.scroll_into_view_if_needed()
    screenshot(page, "admin-policy-preview", from_top=False)
