"""The console when a service is down: the follow-ups service stopped, the customer page still shows the
touchpoints and customer changes with a notice, and the queue says what is wrong instead of failing."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.browser.conftest import Console
from tests.browser.test_console_browser import first_customer, sign_in

pytestmark = [pytest.mark.stack, pytest.mark.browser]


def test_with_the_follow_ups_service_down_the_customer_page_still_tells_the_story(
    console: Console, chromium: Any
) -> None:
    customer = first_customer(console)
    page = chromium().new_page()
    sign_in(page, console, console.agent)
    followups = console.stack.services["followups"]
    followups.stop()
    try:
        # The gateway may answer from its timeline page cache (GATEWAY_TIMELINE_CACHE_S, 2 s) just after the
        # stop: the notice must appear once that has run out.
        notice = page.get_by_role("status").filter(has_text="Follow-ups are unavailable right now")
        deadline = time.monotonic() + 10
        while True:
            page.goto(f"{console.url}/customers/{customer['id']}")
            if notice.is_visible() or time.monotonic() > deadline:
                break
            page.wait_for_timeout(500)
        assert page.get_by_role("heading", name=customer["name"], level=1).is_visible()
        assert notice.is_visible()
        assert page.locator("#timeline li.item.kind-interaction").count() >= 1
        assert page.locator("#timeline li.item.kind-followup").count() == 0

        response = page.goto(f"{console.url}/queue?view=overdue")
        assert response is not None and response.status == 200
        assert "followups" in page.get_by_role("alert").inner_text().lower()
    finally:
        followups.start()
    page.goto(f"{console.url}/customers/{customer['id']}")
    assert page.get_by_role("status").filter(has_text="Follow-ups are unavailable").count() == 0
