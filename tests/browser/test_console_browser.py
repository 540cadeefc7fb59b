"""The staff console in a real headless Chromium against the real stack (nats-server, the services and the
gateway as processes, started by the test session): sign-in, search, the customer page and its live
timeline, the follow-up queue, the dashboard and the admin pages. Each page is also photographed at
1280x800 and 390x844 into docs/screenshots/."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.browser.conftest import Console, Staff, screenshot

pytestmark = [pytest.mark.stack, pytest.mark.browser]


def sign_in(page: Any, console: Console, staff: Staff, next_path: str = "") -> None:
    page.goto(console.url + (next_path or "/"))
    page.get_by_label("Email").fill(staff.email)
    page.get_by_label("Password").fill(staff.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/(search|customers|queue|dashboard|admin)"))


def first_customer(console: Console, **params: Any) -> dict[str, Any]:
    with console.api() as http:
        found = http.get("/api/v1/contacts", params={"limit": 50, **params})
        assert found.status_code == 200, found.text
        items: list[dict[str, Any]] = found.json()["items"]
    assert items
    return items[0]


def test_sign_in_search_open_customer_and_log_a_touchpoint(console: Console, chromium: Any) -> None:
    page = chromium().new_page()
    page.goto(console.url + "/")
    assert page.url.endswith("/login")
    screenshot(page, "sign-in")
    sign_in(page, console, console.agent)
    assert page.get_by_role("heading", name="Find a customer").is_visible()

    customer = first_customer(console)
    surname = customer["name"].split()[-1]
    page.get_by_label("Name, company, email or phone").fill(surname[:4])
    # Results as you type: no button pressed, the list fills in.
    result = page.get_by_role("list", name="Search results").get_by_role("link").filter(has_text=customer["name"])
    result.first.wait_for()
    screenshot(page, "search")
    result.first.click()
    page.wait_for_url(re.compile(r"/customers/"))
    assert page.get_by_role("heading", name=customer["name"], level=1).is_visible()
    before = page.locator("#timeline li.item").count()
    assert before > 0

    subject = f"Called back about the delivery slot {uuid.uuid4().hex[:6]}"
    log = page.get_by_role("region", name="Log a touchpoint")
    log.get_by_label("Channel").select_option("phone")
    log.get_by_label("Direction").select_option("outbound")
    log.get_by_label("Type").select_option("support")
    log.get_by_label("Subject").fill(subject)
    log.get_by_label("Notes").fill("Customer is happy with Thursday morning.")
    log.get_by_label("Outcome").fill("Delivery moved to Thursday")
    log.get_by_role("button", name="Log touchpoint").click()
    entry = page.locator("#timeline li.item").filter(has_text=subject)
    entry.wait_for()
    assert "Delivery moved to Thursday" in entry.inner_text()
    assert page.locator("#timeline li.item").filter(has_text=subject).count() == 1  # the stream does not double it
    screenshot(page, "customer")
    # The message of the item just drawn from the form's answer opens under it, and on its own page.
    entry.get_by_role("link", name="Read message").click()
    assert entry.locator(".message").inner_text() == "Customer is happy with Thursday morning."
    page.goto(console.url + str(entry.get_by_role("link", name="Hide message").get_attribute("href")))
    assert page.get_by_role("heading", name=subject, level=1).is_visible()
    assert page.get_by_role("region", name="Message").inner_text() == "Customer is happy with Thursday morning."
    facts = page.locator(".facts").inner_text()
    assert "Delivery moved to Thursday" in facts  # the outcome
    # Who logged it, named by their handle as staff are everywhere (not by the email they sign in with).
    agent_fact = page.locator(".facts > div").filter(has=page.locator("dt", has_text=re.compile("^Agent$")))
    assert agent_fact.locator("dd").inner_text() == console.agent.handle
    screenshot(page, "touchpoint")
    page.get_by_role("link", name=re.compile("^← Back to")).click()
    page.wait_for_url(re.compile(rf"/customers/{customer['id']}$"))

    page.reload()
    assert page.locator("#timeline li.item").filter(has_text=subject).count() == 1  # stored, not only drawn
    page.goto(console.url + "/search")
    assert page.get_by_role("list", name="Recent customers").get_by_text(customer["name"]).first.is_visible()


def test_an_agent_does_not_see_the_admin_pages(console: Console, chromium: Any) -> None:
    page = chromium().new_page()
    sign_in(page, console, console.agent)
    assert page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").count() == 0
    for path in ("/admin/keys", "/admin/users", "/admin/policies"):
        response = page.goto(console.url + path)
        assert response is not None and response.status == 403
        assert page.get_by_role("heading", name="Admins only").is_visible()
        assert page.locator("table").count() == 0
    screenshot(page, "agent-refused-admin")


def test_wrong_password_is_said_and_repeated_failures_lock_the_account(console: Console, chromium: Any) -> None:
    staff = console.make_staff("agent")
    page = chromium().new_page()
    page.goto(console.url + "/login")
    for _ in range(5):
        page.get_by_label("Email").fill(staff.email)
        page.get_by_label("Password").fill("not the password at all")
        page.get_by_role("button", name="Sign in").click()
        assert page.get_by_role("alert").inner_text() == "Wrong email or password."
    page.get_by_label("Password").fill(staff.password)  # the right one, but the account is locked now
    page.get_by_role("button", name="Sign in").click()
    assert "Too many failed sign-ins" in page.get_by_role("alert").inner_text()
    assert page.url.endswith("/login")
    screenshot(page, "sign-in-locked")


def test_customer_data_that_looks_like_html_or_sql_shows_as_text(console: Console, chromium: Any) -> None:
    hostile = "<img src=x onerror=alert(1)><script>alert(2)</script> Robert'); DROP TABLE contacts;--"
    with console.api() as http:
        made = http.post("/api/v1/contacts", json={"name": hostile[:200], "company": "<b>Bold & Co</b>"})
        assert made.status_code == 201, made.text
        contact_id = made.json()["id"]
        logged = http.post(
            "/api/v1/interactions",
            json={"contact_id": contact_id, "channel": "email", "direction": "inbound", "type": "complaint",
                  "occurred_at": datetime.now(UTC).isoformat(), "subject": "<script>alert(3)</script>",
                  "body": "</li></ol><h1>injected</h1>"},
        )  # fmt: skip
        assert logged.status_code == 201, logged.text
    page = chromium().new_page()
    dialogs: list[str] = []

    def caught(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", caught)
    sign_in(page, console, console.agent)
    page.goto(f"{console.url}/customers/{contact_id}")
    assert page.get_by_role("heading", level=1).inner_text() == hostile[:200]
    assert page.get_by_text("<b>Bold & Co</b>").first.is_visible()
    entry = page.locator("#timeline li.item").filter(has_text="<script>alert(3)</script>")
    assert "injected" not in entry.inner_text()  # the timeline has no bodies: "Read message" opens it
    entry.get_by_role("link", name="Read message").click()
    assert entry.locator(".message").inner_text() == "</li></ol><h1>injected</h1>"
    assert page.locator("h1").count() == 1 and page.locator("img[src=x]").count() == 0
    href = entry.get_by_role("link", name="Hide message").get_attribute("href")
    entry.get_by_role("link", name="Hide message").click()
    assert not entry.locator(".message").is_visible()
    page.goto(console.url + str(href))  # the link alone, as without the script: the touchpoint's own page
    assert page.get_by_role("heading", level=1).inner_text() == "<script>alert(3)</script>"
    assert page.get_by_role("region", name="Message").inner_text() == "</li></ol><h1>injected</h1>"
    assert page.locator("h1").count() == 1
    page.get_by_role("link", name="Search").click()
    page.get_by_label("Name, company, email or phone").fill("<img")
    page.get_by_role("list", name="Search results").get_by_text(hostile[:200]).wait_for()
    assert dialogs == []


def test_sign_out_ends_the_session(console: Console, chromium: Any) -> None:
    page = chromium().new_page()
    sign_in(page, console, console.agent)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/login$"))
    page.goto(console.url + "/search")
    assert page.url.startswith(console.url + "/login")  # the old cookie no longer opens a page


def test_keyboard_only_sign_in_and_timeline_filters_and_paging(console: Console, chromium: Any) -> None:
    with console.api() as http:
        made = http.post("/api/v1/contacts", json={"name": "Ingrid Paging", "company": "Long History AB"})
        assert made.status_code == 201, made.text
        contact_id = made.json()["id"]
        start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        batch = [
            {"contact_id": contact_id, "channel": "email" if n % 3 else "sms", "direction": "inbound",
             "type": "inquiry", "occurred_at": start.replace(day=5 + n % 20, hour=9 + n % 8).isoformat(),
             "subject": f"Question number {n}"}
            for n in range(45)
        ]  # fmt: skip
        stored = http.post("/api/v1/interactions/batch", json={"items": batch})
        assert stored.status_code == 200 and all(r["status"] == 201 for r in stored.json()["results"])
    page = chromium().new_page()
    page.goto(f"{console.url}/customers/{contact_id}")
    # The email field takes the focus on arrival. Chromium applies autofocus at a rendering update, which can
    # come after the load event on a busy machine, so wait for the focus as a person would see it before typing.
    page.wait_for_function("document.activeElement && document.activeElement.id === 'email'")
    page.keyboard.type(console.agent.email)
    page.keyboard.press("Tab")
    page.keyboard.type(console.agent.password)
    assert (page.input_value("#email"), page.input_value("#password")) == (console.agent.email, console.agent.password)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"/customers/{contact_id}$"))
    items = page.locator("#timeline li.item")
    shown = items.count()
    assert shown < 46  # one page, not everything
    more = page.locator("#timeline a[data-more]")
    for _ in range(20):  # scrolling alone pages on, one page per scroll to the bottom
        # Scrolled in the page itself: the link is replaced by the next page's as it loads, and a locator's
        # scroll that resolved the old one failed with "not attached to the DOM".
        scrolled = page.evaluate(
            "() => { const link = document.querySelector('#timeline a[data-more]');"
            " link?.scrollIntoView(); return !!link; }"
        )
        if not scrolled:
            break
        page.wait_for_timeout(400)
    assert more.count() == 0 and items.count() > shown
    subjects = [s for s in items.all_inner_texts() if "Question number" in s]
    assert len(subjects) == 45 and len({s for s in subjects}) == 45  # every one once, none twice

    page.get_by_label("Show channel").select_option("sms")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"channel=sms"))
    metas = page.locator("#timeline li.item .meta").all_inner_texts()
    assert all("SMS" in m for m in metas)  # the SMS touchpoints and the follow-ups they started
    assert page.locator("#timeline li.item.kind-interaction").count() == 15
    page.get_by_label("Show channel").select_option("")
    page.get_by_label("Show kind").select_option("contact_event")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"kind=contact_event"))
    assert page.locator("#timeline li.item").all_inner_texts()[0].count("Customer") >= 1
    assert page.locator("#timeline li.item.kind-interaction").count() == 0
