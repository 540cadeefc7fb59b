"""`make demo` on the real stack: the whole default data set loads through the gateway, and loading it again
doubles nothing (contacts are resolved by email, touchpoints carry source and external_id; the agents' work on
the follow-ups that fell due names each follow-up in its external id)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.demo import DEMO_AGENT, build_demo, load_demo
from tests.browser.conftest import Console

pytestmark = pytest.mark.stack


def demo_emails(console: Console) -> dict[str, str]:
    found: dict[str, str] = {}
    with console.api() as http:
        cursor = None
        while True:
            page = http.get("/api/v1/contacts", params={"limit": 200, **({"cursor": cursor} if cursor else {})})
            assert page.status_code == 200, page.text
            body: dict[str, Any] = page.json()
            for contact in body["items"]:
                for email in contact["emails"]:
                    found[email] = contact["id"]
            cursor = body["next_cursor"]
            if not cursor:
                return found


def touchpoints_of(console: Console, contact_id: str) -> list[str]:
    with console.api() as http:
        page = http.get("/api/v1/interactions", params={"contact_id": contact_id, "limit": 200})
        assert page.status_code == 200, page.text
        return sorted(item["external_id"] or item["id"] for item in page.json()["items"])


def assert_work_closes_their_followups(console: Console, contact_id: str) -> None:
    with console.api() as http:
        page = http.get("/api/v1/interactions", params={"contact_id": contact_id, "limit": 200})
        assert page.status_code == 200, page.text
        work = [item for item in page.json()["items"] if (item["external_id"] or "").startswith("demo-2026-work-")]
        for item in work:
            assert item["external_id"] == f"demo-2026-work-{item['followup_id']}", item
            followup = http.get(f"/api/v1/followups/{item['followup_id']}")
            assert followup.status_code == 200, followup.text
            closed = followup.json()
            done = (closed["contact_id"], closed["status"], closed["interaction_id"])
            assert done == (contact_id, "completed", item["id"]), closed


def test_the_default_demo_loads_and_loading_it_again_doubles_nothing(console: Console) -> None:
    # The session loaded the first 60 customers of the same seed; the default run adds the rest.
    started = time.monotonic()
    load_demo(base_url=console.url, admin_key=console.admin_key, quiet=True)
    took = time.monotonic() - started
    demo = build_demo(now=datetime.now(UTC))
    emails = demo_emails(console)
    ids = [emails.get(c.fields["emails"][0]) for c in demo]
    assert all(ids), "every demo customer exists"
    assert len(set(ids)) == 300
    first = touchpoints_of(console, str(ids[0]))
    # The customer's story, then the agents' history: each follow-up of theirs that fell due and was done is
    # closed by one touchpoint whose external id names it.
    story = sorted(t["external_id"] for t in demo[0].touchpoints)
    assert [i for i in first if not i.startswith("demo-2026-work-")] == story
    assert_work_closes_their_followups(console, str(ids[0]))

    load_demo(base_url=console.url, admin_key=console.admin_key, quiet=True)
    assert touchpoints_of(console, str(ids[0])) == first
    assert len(demo_emails(console)) == len(emails)
    assert took < 240, f"the demo took {took:.0f} s to load"
    with console.api() as http:  # a new user signing in as the demo agent finds work in their own queue
        queue = http.get("/api/v1/followups", params={"assignee": DEMO_AGENT})
        assert queue.status_code == 200 and len(queue.json()["items"]) >= 1, queue.text
