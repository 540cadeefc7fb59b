"""The admin pages in a real Chromium against the real stack: API keys shown once (a reload makes no second key),
staff users with display name and teams, invite and reset links shown once and used by the new colleague to
choose a password, teams, and the policy editor: the form with its JSON rest, inline errors, a preview of the
edited draft, switching on and off, and a new policy from a template."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.browser.conftest import Console, Staff, screenshot
from tests.browser.test_console_browser import sign_in

pytestmark = [pytest.mark.stack, pytest.mark.browser]


def unique() -> str:
    return uuid.uuid4().hex[:6]


def api_keys_named(console: Console, name: str) -> list[dict[str, Any]]:
    with console.api() as http:
        listed = http.get("/api/v1/api-keys")
        assert listed.status_code == 200, listed.text
    return [k for k in listed.json()["items"] if k["name"] == name]


def test_an_admin_makes_a_key_shown_once_and_reloading_makes_no_second_key(console: Console, chromium: Any) -> None:
    page = chromium().new_page()
    sign_in(page, console, console.admin)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
    page.wait_for_url(re.compile(r"/admin/keys$"))
    name = f"Webshop orders {unique()}"
    page.get_by_label("Name").fill(name)
    page.get_by_label("Role").select_option("ingest")
    page.get_by_role("button", name="Create key").click()
    page.wait_for_url(re.compile(r"/admin/keys$"))  # redirected after the POST: a reload is a GET
    key = page.get_by_label("New ingest key").input_value()
    assert key.startswith("tp_")
    with console.api() as http:  # the key shown works, with its role
        probe = http.post("/api/v1/contacts/resolve", json={"email": f"probe.{unique()}@shop.example"},
                          headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert probe.status_code in (200, 201), probe.text
    screenshot(page, "admin-keys")

    page.reload()
    assert page.get_by_label("New ingest key").count() == 0 and key not in page.content()  # shown once
    assert len(api_keys_named(console, name)) == 1  # and the reload made no second key

    page.get_by_role("button", name=f"Revoke key {name}").click()
    assert "Revoked" in page.locator("tr").filter(has_text=name).inner_text()
    with console.api() as http:
        assert http.get("/api/v1/contacts", headers={"Authorization": f"Bearer {key}"}).status_code == 401

    page.get_by_label("Name").fill("")  # a refused form keeps what was typed and says why
    page.get_by_label("Expires on").fill("2001-01-01")
    page.get_by_label("Name").fill(f"Expired {unique()}")
    page.get_by_role("button", name="Create key").click()
    assert "future" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("Name").input_value().startswith("Expired")


def test_an_admin_invites_a_colleague_with_name_and_teams_who_chooses_a_password(
    console: Console, chromium: Any
) -> None:
    tag = unique()
    team = f"returns-{tag}"
    page = chromium().new_page()
    sign_in(page, console, console.admin, "/admin/users")
    teams = page.get_by_role("region", name="Teams")
    teams.get_by_label("Team id (e.g. support)").fill(team)
    teams.get_by_label("Team name").fill(f"Returns {tag}")
    teams.get_by_role("button", name="Add team").click()
    page.get_by_role("region", name="Teams").get_by_text(f"Returns {tag}").wait_for()

    email = f"nadia.{tag}@touchpoint.example"
    new = page.get_by_role("region", name="New staff user")
    new.get_by_label("Email").fill(email)
    new.get_by_label("Display name").fill("Nadia Lund")
    new.get_by_label("Role").select_option("agent")
    new.get_by_label(f"Returns {tag}").check()
    new.get_by_label("Make an invite link").check()
    new.get_by_role("button", name="Create user").click()
    page.wait_for_url(re.compile(r"/admin/users$"))
    link = page.get_by_label("Invite link", exact=True).input_value()
    assert "/password/" in link
    row = page.locator("tr").filter(has_text=email)
    assert "Nadia Lund" in row.inner_text() and team in row.inner_text() and "Invited" in row.inner_text()
    screenshot(page, "admin-users")
    page.reload()
    assert page.get_by_label("Invite link", exact=True).count() == 0 and link not in page.content()
    with console.api() as http:
        users = [u for u in http.get("/api/v1/users").json()["items"] if u["email"] == email]
    assert len(users) == 1 and users[0]["teams"] == [team] and users[0]["name"] == "Nadia Lund"

    colleague = chromium().new_page()  # their own browser: no session
    colleague.goto(link)
    assert colleague.get_by_role("heading", name="Welcome to Touchpoint").is_visible()
    colleague.get_by_label("New password (12+ characters)").fill("correct horse battery")
    colleague.get_by_label("The same password again").fill("correct horse battery!")
    colleague.get_by_role("button", name="Set my password").click()
    assert colleague.locator("#err-password_again").inner_text() == "The two passwords differ."
    screenshot(colleague, "password-invite")
    colleague.get_by_label("New password (12+ characters)").fill("correct horse battery")
    colleague.get_by_label("The same password again").fill("correct horse battery")
    colleague.get_by_role("button", name="Set my password").click()
    colleague.wait_for_url(re.compile(r"/password/done$"))
    colleague.goto(link)  # once only
    assert colleague.get_by_role("heading", name="This link no longer works").is_visible()
    sign_in(colleague, console, Staff(email, "correct horse battery", "agent"))
    assert "Admin" not in colleague.get_by_role("navigation", name="Main").inner_text()

    page.goto(console.url + "/admin/users")
    page.get_by_role("link", name=f"Edit {email}").click()
    page.get_by_label("Display name").fill("Nadia Lund-Berg")
    page.get_by_label("Role").select_option("readonly")
    page.get_by_label("Time zone (their “today” in the queue)").fill("Mars/Olympus")
    page.get_by_role("button", name="Save changes").click()
    assert "time zone" in page.locator("#err-timezone").inner_text()  # refused beside its field, nothing saved
    page.get_by_label("Time zone (their “today” in the queue)").fill("Europe/Oslo")
    page.get_by_role("button", name="Save changes").click()
    page.wait_for_url(re.compile(r"/admin/users$"))
    row = page.locator("tr").filter(has_text=email)
    assert "Nadia Lund-Berg" in row.inner_text() and "Readonly" in row.inner_text() and "Active" in row.inner_text()

    row.get_by_role("button", name=f"Password reset link for {email}").click()
    reset = page.get_by_label("Reset link", exact=True).input_value()
    colleague.goto(reset)
    assert colleague.get_by_role("heading", name="Choose a new password").is_visible()
    colleague.get_by_label("New password (12+ characters)").fill("a brand new passphrase")
    colleague.get_by_label("The same password again").fill("a brand new passphrase")
    colleague.get_by_role("button", name="Set my password").click()
    colleague.wait_for_url(re.compile(r"/password/done$"))
    colleague.goto(console.url + "/search")
    assert "/login" in colleague.url  # the reset ended the session they had
    sign_in(colleague, console, Staff(email, "a brand new passphrase", "readonly"))


def test_the_policy_editor_shows_errors_inline_previews_the_edited_draft_and_saves(
    console: Console, chromium: Any
) -> None:
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

    assert page.get_by_label("Name", exact=True).input_value() == "Purchase 2+2+2"
    assert page.get_by_label("Step 1 due after").input_value() == "P2D"
    assert page.get_by_label("Purchase", exact=True).is_checked()
    rest = page.get_by_label(re.compile("^The rest of the policy")).input_value()
    assert "null" not in rest and '"closing"' in rest  # the rest, without "type": null noise

    page.get_by_role("button", name="Preview this draft").click()
    heading = page.get_by_role(
        "heading", name=re.compile(r"Preview of this draft: \d+ follow-ups? in the last 30 days")
    )
    saved_count = int(heading.inner_text().split(": ")[1].split()[0])
    assert saved_count > 0  # the demo shop bought things in the last 30 days
    first_row = page.get_by_role("table", name="The follow-ups").locator("tbody tr").first
    assert first_row.get_by_role("link").inner_text() != "Open customer"  # the customer's name
    heading.scroll_into_view_if_needed()
    screenshot(page, "admin-policy-preview", from_top=False)

    # The preview is of the form as edited: internal notes only, and no purchase is one.
    page.get_by_label("Internal note", exact=True).check()
    page.get_by_role("button", name="Preview this draft").click()
    page.get_by_role("heading", name="Preview of this draft: 0 follow-ups in the last 30 days").wait_for()
    page.get_by_label("Internal note", exact=True).uncheck()

    # Broken JSON says so beside the JSON, and previews nothing.
    page.get_by_label(re.compile("^The rest of the policy")).fill('{"closing": {"on_reply": "complete",}}')
    page.get_by_role("button", name="Preview this draft").click()
    assert "Not valid JSON" in page.locator("#err-rest").inner_text()
    assert page.get_by_role("heading", name=re.compile("Preview of this draft")).count() == 0
    page.get_by_label(re.compile("^The rest of the policy")).fill(rest)

    # A refusal of the follow-ups service lands next to the field it names.
    page.get_by_label("Step 2 due after").fill("two weeks")
    page.get_by_role("button", name="Save as a new version").click()
    assert "ISO 8601" in page.locator("#err-step-1-offset").inner_text()
    screenshot(page, "admin-policy-error")
    page.get_by_label("Step 2 due after").fill("P2W")
    reason = f"Check in two weeks after the purchase ({unique()})"
    page.get_by_label("Step 2 reason").fill(reason)
    page.get_by_role("button", name="Save as a new version").click()
    page.wait_for_url(re.compile(r"/admin/policies/purchase-2-2-2\?saved=saved$"))
    version = int(re.search(r"version (\d+)", page.get_by_role("status").inner_text()).group(1))  # type: ignore[union-attr]
    page.reload()  # a GET: nothing saved twice
    with console.api() as http:
        policy = http.get("/api/v1/policies/purchase-2-2-2").json()
    assert policy["version"] == version and policy["document"]["steps"][1]["reason"] == reason
    assert policy["document"]["steps"][1]["offset"] == "P2W"


def test_an_admin_makes_a_new_policy_from_a_template(console: Console, chromium: Any) -> None:
    policy_id = f"complaint-callback-{unique()}"
    page = chromium().new_page()
    sign_in(page, console, console.admin, "/admin/policies")
    page.get_by_role("link", name="Complaint call-back").click()
    page.wait_for_url(re.compile(r"/admin/policies/new\?template=complaint-callback$"))
    assert page.get_by_label("Name", exact=True).input_value() == "Complaint call-back"
    assert page.get_by_label("Complaint", exact=True).is_checked()
    assert page.get_by_label("Step 1 due after").input_value() == "PT24H"
    page.get_by_role("button", name="Create policy").click()
    assert page.locator("#err-id").is_visible()  # no id yet: said beside the field, nothing made
    page.get_by_label("Policy id (lower case, digits, - . _; cannot change later)").fill(policy_id)
    page.get_by_label("New step id").fill("second-call")
    page.get_by_label("New step reason").fill("Call again if the first call did not reach them.")
    page.get_by_label("New step due after").fill("P2D")
    page.get_by_role("button", name="Preview this draft").click()
    page.get_by_role(
        "heading", name=re.compile(r"Preview of this draft: \d+ follow-ups? in the last 30 days")
    ).wait_for()
    screenshot(page, "admin-policy-new")
    page.get_by_role("button", name="Create policy").click()
    page.wait_for_url(re.compile(rf"/admin/policies/{policy_id}\?saved=created$"))
    assert "Policy created: version 1, off" in page.get_by_role("status").inner_text()
    page.reload()
    with console.api() as http:
        made = http.get(f"/api/v1/policies/{policy_id}").json()
    assert made["enabled"] is False and made["version"] == 1
    assert [s["id"] for s in made["document"]["steps"]] == ["call-back", "second-call"]
    page.get_by_role("button", name="Switch on").click()
    page.wait_for_url(re.compile(rf"/admin/policies/{policy_id}$"))
    assert page.get_by_role("button", name="Switch off").is_visible()
    with console.api() as http:
        assert http.post(f"/api/v1/policies/{policy_id}/disable").status_code == 200  # off again for the others
