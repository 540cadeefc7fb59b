"""The console's touchpoint page: the timeline item has no body (gateway/projection.py), so "Read message" opens
the touchpoint as ``GET /api/v1/interactions/{id}`` gives it, as the signed-in staff member."""

from __future__ import annotations

import html
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from gateway.tests.conftest import ADMIN, StubServices, interaction_fields
from servicekit.clock import MovableClock

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SQL = "Robert'); DROP TABLE touchpoints;--"
HOSTILE = f"<script>alert('x')</script>\n{SQL}\n\n  <img src=x onerror=alert(1)>"


def touchpoint_of(stub: StubServices, contact_id: str, **fields: Any) -> dict[str, Any]:
    """A touchpoint with every field the interactions service gives (the stub's has only the timeline's)."""
    return stub.add_interaction(contact_id, T0, **{**interaction_fields(T0), **fields})


async def staff(gateway: httpx.AsyncClient, role: str) -> dict[str, str]:
    """The session cookie of a new staff user with this role."""
    email = f"{role}.{uuid.uuid4().hex[:8]}@example.com"
    made = await gateway.post("/api/v1/users", json={"email": email, "password": "correct horse battery",
                                                     "role": role, "name": f"Sam {role}"}, headers=ADMIN)  # fmt: skip
    assert made.status_code == 201, made.text
    login = await gateway.post("/api/v1/auth/login", json={"email": email, "password": "correct horse battery"})
    assert login.status_code == 200, login.text
    gateway.cookies.clear()  # each request says whose it is
    return {"Cookie": f"tp_session={login.cookies['tp_session']}"}


async def test_read_message_opens_the_touchpoint_with_its_body_as_text(
    gateway: httpx.AsyncClient, stub: StubServices
) -> None:
    contact = stub.add_contact(name="Ada <b>Lovelace</b>")
    touchpoint = touchpoint_of(
        stub, contact["id"], type="complaint", subject="Broken <i>kettle</i>", body=HOSTILE, agent="Kim", team="Care",
        outcome="Refund offered", csat=2, nps=-1, sentiment=-0.62, thread_id="t-42", duration_s=310,
        attributes={"order": "A-17", "note": "<b>fragile</b>", "items": [1, 2]},
    )  # fmt: skip
    agent = await staff(gateway, "agent")

    customer = await gateway.get(f"/customers/{contact['id']}", headers=agent)
    assert customer.status_code == 200, customer.text
    link = f"/customers/{contact['id']}/touchpoints/{touchpoint['id']}"
    assert f'href="{link}"' in customer.text and "Read message" in customer.text
    assert "DROP TABLE" not in customer.text  # the timeline has no body: the link is the way to it

    page = await gateway.get(link, headers=agent)
    assert page.status_code == 200, page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    text = page.text
    assert '<span class="who" title="agent">Sam agent <small>' in text  # the display name, not the email
    assert "<script>alert" not in text and "<img src=x" not in text and "<b>" not in text and "<i>" not in text
    message = re.search(r'<pre class="message">(.*?)</pre>', text, re.S)
    assert message is not None and html.unescape(message.group(1)) == HOSTILE  # newlines and spaces kept
    for shown in ("Complaint", "Inbound", "Email", "01 Mar 2026 12:00 UTC", "Kim", "Care", "Refund offered",
                  "2/5", "Negative", "t-42", "5 min", "A-17", "&lt;b&gt;fragile&lt;/b&gt;", "[1, 2]",
                  "Broken &lt;i&gt;kettle&lt;/i&gt;"):  # fmt: skip
        assert shown in text, shown
    assert f'href="/customers/{contact["id"]}"' in text and "Back to Ada &lt;b&gt;Lovelace&lt;/b&gt;" in text

    # The script's way: the message alone, to open under the item.
    fragment = await gateway.get(link + "/message", headers=agent)
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert html.unescape(re.sub(r"</?pre[^>]*>", "", fragment.text).strip()) == HOSTILE


async def test_a_touchpoint_without_a_body_says_no_message_and_readonly_staff_may_read_it(
    gateway: httpx.AsyncClient, stub: StubServices
) -> None:
    contact = stub.add_contact()
    touchpoint = touchpoint_of(stub, contact["id"], body=None, subject=None, type="note", direction="internal")
    readonly = await staff(gateway, "readonly")
    page = await gateway.get(f"/customers/{contact['id']}/touchpoints/{touchpoint['id']}", headers=readonly)
    assert page.status_code == 200, page.text
    assert "No message" in page.text and '<pre class="message">' not in page.text
    assert "Note (internal, email)" in page.text  # the timeline item's title, since there is no subject
    fragment = await gateway.get(f"/customers/{contact['id']}/touchpoints/{touchpoint['id']}/message",
                                 headers=readonly)  # fmt: skip
    assert fragment.status_code == 200 and "No message" in fragment.text


async def test_an_erased_customers_touchpoint_says_it_was_redacted(
    gateway: httpx.AsyncClient, stub: StubServices
) -> None:
    contact = stub.add_contact()
    touchpoint = touchpoint_of(stub, contact["id"], body=None, subject=None, outcome=None, attributes={},
                                      redacted_at=T0.replace(hour=13).isoformat())  # fmt: skip
    agent = await staff(gateway, "agent")
    page = await gateway.get(f"/customers/{contact['id']}/touchpoints/{touchpoint['id']}", headers=agent)
    assert page.status_code == 200, page.text
    assert "Redacted 01 Mar 2026 13:00 UTC" in page.text and "No message" in page.text


@pytest.mark.parametrize("down", [False, True], ids=["unknown", "interactions-down"])
async def test_an_unknown_touchpoint_or_the_service_down_is_the_consoles_error_page(
    gateway: httpx.AsyncClient, stub: StubServices, down: bool
) -> None:
    contact = stub.add_contact()
    touchpoint = touchpoint_of(stub, contact["id"])
    stub.interactions_down = down
    agent = await staff(gateway, "agent")
    wanted = str(uuid.uuid4()) if not down else touchpoint["id"]
    page = await gateway.get(f"/customers/{contact['id']}/touchpoints/{wanted}", headers=agent)
    assert page.status_code == (503 if down else 404), page.text
    assert "This touchpoint could not be loaded" in page.text and "Back to search" in page.text
    fragment = await gateway.get(f"/customers/{contact['id']}/touchpoints/{wanted}/message", headers=agent)
    assert fragment.status_code == page.status_code and fragment.headers["content-type"].startswith("text/plain")
    assert (await gateway.get(f"/customers/{contact['id']}/touchpoints/not-an-id", headers=agent)).status_code == 422


async def test_a_touchpoint_under_another_customer_leads_to_its_own_address_and_sign_in_comes_first(
    gateway: httpx.AsyncClient, stub: StubServices
) -> None:
    contact, other = stub.add_contact(), stub.add_contact(name="Bea")
    touchpoint = touchpoint_of(stub, contact["id"])
    agent = await staff(gateway, "agent")
    moved = await gateway.get(f"/customers/{other['id']}/touchpoints/{touchpoint['id']}", headers=agent)
    assert moved.status_code == 303
    assert moved.headers["location"] == f"/customers/{contact['id']}/touchpoints/{touchpoint['id']}"
    # The script's fetch does not follow it into a whole page: it is told, and opens the link instead.
    moved = await gateway.get(f"/customers/{other['id']}/touchpoints/{touchpoint['id']}/message", headers=agent)
    assert moved.status_code == 409

    path = f"/customers/{contact['id']}/touchpoints/{touchpoint['id']}"
    signed_out = await gateway.get(path)
    assert signed_out.status_code == 303 and signed_out.headers["location"].startswith("/login?next=%2Fcustomers")
    assert (await gateway.get(path + "/message")).status_code == 401


async def test_a_touchpoint_logged_from_the_console_is_drawn_as_the_timeline_draws_it(
    gateway: httpx.AsyncClient, stub: StubServices, clock: MovableClock
) -> None:
    """The script's POST answers with the new item from ``interaction_item`` (no body): the same HTML as the
    timeline's own fragment gives for it once it is in the projection."""
    clock.set(T0 + timedelta(hours=2))  # the touchpoint is backdated two hours
    contact = stub.add_contact()
    agent = await staff(gateway, "agent")
    me = await gateway.get("/api/v1/auth/me", headers=agent)
    csrf = me.json()["csrf_token"]
    form = {"csrf_token": csrf, "idempotency_key": str(uuid.uuid4()), "channel": "phone", "direction": "outbound",
            "type": "support", "subject": "Called <back>", "body": "Secret\nnotes", "outcome": "Slot moved",
            "duration_min": "4.5", "occurred_at": T0.isoformat()}  # fmt: skip
    logged = await gateway.post(f"/customers/{contact['id']}/touchpoints", data=form,
                                headers={**agent, "X-Console": "fragment", "origin": "http://test"})  # fmt: skip
    assert logged.status_code == 201, logged.text
    drawn = logged.text
    assert "Called &lt;back&gt;" in drawn and "Slot moved" in drawn and "Secret" not in drawn
    assert "4 min" in drawn and stub.interactions[-1]["duration_s"] == 270  # 4.5 minutes, in seconds
    assert 'data-at="2026-03-01T12:00:00+00:00"' in drawn  # ISO 8601, as the timeline API gives it
    touchpoint_id = stub.interactions[-1]["id"]
    assert f'href="/customers/{contact["id"]}/touchpoints/{touchpoint_id}"' in drawn

    fragment = await gateway.get(f"/customers/{contact['id']}/timeline", headers=agent)
    assert fragment.status_code == 200, fragment.text
    item = re.search(r"<li class=\"item[^\"]*\" data-id=\"interaction:[^\"]+\".*?</li>", fragment.text, re.S)
    assert item is not None and item.group(0) in drawn
    page = await gateway.get(f"/customers/{contact['id']}/touchpoints/{touchpoint_id}", headers=agent)
    assert "Secret\nnotes" in page.text
