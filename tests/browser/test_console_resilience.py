"""The console when a service is down. The timeline is the gateway's own projection, so with the follow-ups
service stopped the customer page still tells the whole story (follow-ups included) and the queue says what is
wrong instead of failing; with the interactions service stopped the timeline is still there and "Read message"
is the console's error page."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Console
from tests.browser.test_console_browser import sign_in

pytestmark = [pytest.mark.stack, pytest.mark.browser]


def customer_with(console: Console, what: str) -> dict[str, Any]:
    """A customer with at least one of ``what`` (``followups`` or ``interactions``)."""
    with console.api() as http:
        found = http.get(f"/api/v1/{what}", params={"limit": 1})
        assert found.status_code == 200 and found.json()["items"], found.text
        contact: dict[str, Any] = http.get(f"/api/v1/contacts/{found.json()['items'][0]['contact_id']}").json()
    return contact


def test_with_the_follow_ups_service_down_the_customer_page_still_tells_the_whole_story(
    console: Console, chromium: Any
) -> None:
    customer = customer_with(console, "followups")
    page = chromium().new_page()
    sign_in(page, console, console.agent)
    followups = console.stack.services["followups"]
    followups.stop()
    try:
        response = page.goto(f"{console.url}/customers/{customer['id']}")
        assert response is not None and response.status == 200
        assert page.get_by_role("heading", name=customer["name"], level=1).is_visible()
        assert page.locator("#timeline li.item.kind-interaction").count() >= 1
        assert page.locator("#timeline li.item.kind-followup").count() >= 1
        assert page.locator(".timeline .alert").count() == 0

        response = page.goto(f"{console.url}/queue?view=overdue")
        assert response is not None and response.status == 200
        assert "followups" in page.get_by_role("alert").inner_text().lower()
    finally:
        followups.start()


def test_with_the_interactions_service_down_read_message_is_an_error_page_not_a_crash(
    console: Console, chromium: Any
) -> None:
    customer = customer_with(console, "interactions")
    page = chromium().new_page()
    sign_in(page, console, console.agent)
    page.goto(f"{console.url}/customers/{customer['id']}")
    link = page.locator("#timeline li.item.kind-interaction").first.get_by_role("link", name="Read message")
    href = str(link.get_attribute("href"))
    interactions = console.stack.services["interactions"]
    interactions.stop()
    try:
        link.click()  # the script's fetch fails, so it opens the page, which says what is wrong
        page.wait_for_url(f"**{href}")
        assert page.get_by_role("heading", name="This touchpoint could not be loaded").is_visible()
        assert page.get_by_role("alert").inner_text()
        response = page.goto(f"{console.url}/customers/{customer['id']}")
        assert response is not None and response.status == 200  # the timeline is the gateway's own
        assert page.locator("#timeline li.item.kind-interaction").count() >= 1
    finally:
        interactions.start()
    response = page.goto(console.url + href)
    assert response is not None and response.status == 200
