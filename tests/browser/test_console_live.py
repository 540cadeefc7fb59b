"""The live timeline in a real Chromium: a touchpoint sent by another client appears without a reload."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.browser.conftest import Console
from tests.browser.test_console_browser import first_customer, sign_in

pytestmark = [pytest.mark.stack, pytest.mark.browser]


def test_a_touchpoint_sent_by_another_client_appears_live(console: Console, chromium: Any) -> None:
    page = chromium().new_page()
    sign_in(page, console, console.agent)
    customer = first_customer(console, q=None)
    page.goto(f"{console.url}/customers/{customer['id']}")
    page.locator("[data-live-status].on").wait_for()
    subject = f"Chat from the webshop widget {uuid.uuid4().hex[:6]}"
    with console.api() as http:
        sent = http.post(
            "/api/v1/interactions",
            json={
                "contact_id": customer["id"],
                "channel": "live_chat",
                "direction": "inbound",
                "type": "inquiry",
                "occurred_at": datetime.now(UTC).isoformat(),
                "subject": subject,
                "body": "Is the espresso machine back in stock?",
            },
        )
        assert sent.status_code == 201, sent.text
    entry = page.locator("#timeline li.item.fresh").filter(has_text=subject)
    entry.wait_for(timeout=10_000)  # pushed by the stream: no reload happened
    assert page.locator("#timeline li.item").filter(has_text=subject).count() == 1
    # Placed by time among the rest (a follow-up due later stays above it): the timeline keeps its order.
    stamps = page.locator("#timeline li.item").evaluate_all("items => items.map(li => Date.parse(li.dataset.at))")
    assert stamps == sorted(stamps, reverse=True)
