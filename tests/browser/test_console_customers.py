"""Customers in a real Chromium against the real stack: create one and edit every field, an edit that meets
someone else's change (412), duplicate suggestions and the side-by-side merge, the export download, erasure behind
a typed confirmation, and pages left open that follow a merge or an erasure live."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Console, screenshot
from tests.browser.test_console_browser import sign_in

pytestmark = [pytest.mark.stack, pytest.mark.browser]


def unique() -> str:
    return uuid.uuid4().hex[:8]


def make_customer(console: Console, **fields: Any) -> dict[str, Any]:
    with console.api() as http:
        made = http.post("/api/v1/contacts", json=fields)
        assert made.status_code == 201, made.text
        contact: dict[str, Any] = made.json()
    return contact


def read_customer(console: Console, contact_id: str) -> tuple[int, dict[str, Any]]:
    with console.api() as http:
        answer = http.get(f"/api/v1/contacts/{contact_id}", follow_redirects=False)
    return answer.status_code, answer.json() if answer.content else {}


def test_an_agent_creates_a_customer_and_edits_every_field(console: Console, chromium: Any) -> None:
    tag = unique()
    page = chromium().new_page()
    sign_in(page, console, console.agent)
    page.get_by_role("link", name="New customer").click()
    page.wait_for_url(re.compile(r"/customers/new$"))
    page.get_by_label("Name", exact=True).fill(f"Ines Navarro {tag}")
    page.get_by_label("Company").fill("Navarro Cocinas")
    page.get_by_label("Emails (one a line)").fill(f"ines.{tag}@navarro.example\nINES.{tag}@work.example")
    page.get_by_label("Phones (one a line)").fill("+34 612 9" + str(int(tag, 16) % 10**5).zfill(5))
    page.get_by_label("Social media handle").fill(f"@ines{tag}")
    page.get_by_label("Live chat handle").fill(f"chat-{tag}")
    page.get_by_label("Tier").select_option("premium")
    page.get_by_label("Stage").select_option("prospect")
    page.get_by_label("Owner").select_option(console.agent.handle)
    page.get_by_label("Tags (comma separated)").fill("Kitchen, vip")
    page.get_by_label("Preferred channel").select_option("email")
    page.get_by_label("Language (e.g. en, fr-CA)").fill("es")
    page.get_by_label("Time zone (e.g. Europe/Madrid)").fill("Europe/Madrid")
    page.get_by_label("Outreach by Email").select_option("yes")
    page.get_by_label("Outreach by SMS").select_option("no")
    screenshot(page, "customer-new")
    page.get_by_role("button", name="Create customer").click()
    page.wait_for_url(re.compile(r"/customers/[0-9a-f-]{36}$"))
    assert page.get_by_role("heading", name=f"Ines Navarro {tag}", level=1).is_visible()
    contact_id = page.url.rsplit("/", 1)[-1]
    _, made = read_customer(console, contact_id)
    assert made["company"] == "Navarro Cocinas"
    assert made["emails"] == [f"ines.{tag}@navarro.example", f"ines.{tag}@work.example"]
    assert made["phones"] and made["phones"][0].startswith("+346129")
    assert made["handles"] == {"social": f"@ines{tag}", "live_chat": f"chat-{tag}"}
    assert (made["tier"], made["stage"], made["owner"]) == ("premium", "prospect", console.agent.handle)
    assert made["tags"] == ["kitchen", "vip"]
    assert (made["preferred_channel"], made["language"], made["timezone"]) == ("email", "es", "Europe/Madrid")
    assert made["consent"] == {"email": True, "sms": False}

    page.get_by_role("link", name="Edit", exact=True).click()
    page.wait_for_url(re.compile(r"/edit$"))
    assert page.get_by_label("Company").input_value() == "Navarro Cocinas"
    page.get_by_label("Company").fill("Navarro Cocinas SL")
    page.get_by_label("Social media handle").fill("")  # removed
    page.get_by_label("Outreach by SMS").select_option("")  # back to "not asked"
    page.get_by_label("Outreach by Phone").select_option("yes")
    page.get_by_label("Stage").select_option("customer")
    page.get_by_label("Tier").select_option("standard")
    page.get_by_label("Owner").select_option("")
    page.get_by_label("Tags (comma separated)").fill("kitchen")
    page.get_by_label("Emails (one a line)").fill(f"ines.{tag}@navarro.example")
    page.get_by_label("Preferred channel").select_option("phone")
    page.get_by_label("Language (e.g. en, fr-CA)").fill("ca")
    page.get_by_label("Time zone (e.g. Europe/Madrid)").fill("Atlantic/Canary")
    screenshot(page, "customer-edit")
    page.get_by_role("button", name="Save changes").click()
    page.wait_for_url(re.compile(rf"/customers/{contact_id}$"))
    assert "Navarro Cocinas SL" in page.locator(".head").inner_text()
    _, edited = read_customer(console, contact_id)
    assert edited["company"] == "Navarro Cocinas SL"
    assert edited["handles"] == {"live_chat": f"chat-{tag}"}
    assert edited["consent"] == {"email": True, "phone": True}
    assert (edited["tier"], edited["stage"], edited["owner"]) == ("standard", "customer", None)
    assert edited["tags"] == ["kitchen"] and edited["emails"] == [f"ines.{tag}@navarro.example"]
    assert (edited["preferred_channel"], edited["language"], edited["timezone"]) == ("phone", "ca", "Atlantic/Canary")
    assert edited["version"] == made["version"] + 1


def test_refusals_are_shown_beside_their_field(console: Console, chromium: Any) -> None:
    tag = unique()
    other = make_customer(console, name=f"Holder {tag}", emails=[f"taken.{tag}@example.com"])
    page = chromium().new_page()
    sign_in(page, console, console.agent)
    page.goto(f"{console.url}/customers/new")
    page.get_by_label("Name", exact=True).fill(f"Newcomer {tag}")
    page.get_by_label("Time zone (e.g. Europe/Madrid)").fill("Mars/Olympus_Mons")
    page.get_by_role("button", name="Create customer").click()
    timezone = page.get_by_label("Time zone (e.g. Europe/Madrid)")
    assert timezone.get_attribute("aria-invalid") == "true"
    assert "IANA time zone" in page.locator("#err-timezone").inner_text()
    assert page.get_by_label("Name", exact=True).input_value() == f"Newcomer {tag}"  # nothing typed is lost

    timezone.fill("Europe/Lisbon")
    page.get_by_label("Emails (one a line)").fill(f"taken.{tag}@example.com")
    page.get_by_role("button", name="Create customer").click()
    assert "already belongs to another customer" in page.locator("#err-emails").inner_text()
    page.get_by_role("link", name="Open the customer who has it").click()
    page.wait_for_url(re.compile(rf"/customers/{other['id']}$"))


def test_an_edit_after_someone_elses_change_is_a_conflict_not_an_error(console: Console, chromium: Any) -> None:
    tag = unique()
    contact = make_customer(console, name=f"Olga Petrova {tag}", company="Petrova Bakery")
    page = chromium().new_page()
    sign_in(page, console, console.agent)
    page.goto(f"{console.url}/customers/{contact['id']}/edit")
    page.get_by_label("Company").fill("Petrova Bakery & Cafe")
    with console.api() as http:  # a colleague saves first
        changed = http.patch(f"/api/v1/contacts/{contact['id']}", json={"stage": "customer"})
        assert changed.status_code == 200, changed.text
    page.get_by_role("button", name="Save changes").click()
    alert = page.get_by_role("alert")
    assert "changed by someone else since you opened it" in alert.inner_text()
    screenshot(page, "customer-conflict")
    _, now = read_customer(console, contact["id"])
    assert now["company"] == "Petrova Bakery" and now["stage"] == "customer"  # the colleague's change stands
    alert.get_by_role("link", name="Reload the customer").click()
    page.wait_for_url(re.compile(r"/edit$"))
    assert page.get_by_label("Stage").input_value() == "customer"
    page.get_by_label("Company").fill("Petrova Bakery & Cafe")
    page.get_by_role("button", name="Save changes").click()
    page.wait_for_url(re.compile(rf"/customers/{contact['id']}$"))
    assert read_customer(console, contact["id"])[1]["company"] == "Petrova Bakery & Cafe"


def test_duplicates_are_suggested_and_merged_into_the_survivor_the_agent_picks(console: Console, chromium: Any) -> None:
    tag = unique()
    first = make_customer(console, name="Ursula Xavier", company=f"Xavier Ltd {tag}", emails=[f"ux.{tag}@a.example"])
    second = make_customer(
        console, name="Ursula  xavier", company=f"Xavier Ltd {tag}", phones=["+4470" + str(int(tag, 16) % 10**8)]
    )
    # Not a duplicate: the same company, another name, no shared identity.
    colleague = make_customer(console, name=f"Victor Xavier {tag}", company=f"Xavier Ltd {tag}")
    page = chromium().new_page()
    sign_in(page, console, console.agent)
    page.goto(f"{console.url}/customers/{first['id']}")
    suggestions = page.get_by_role("region", name="Possible duplicates")
    assert "same name and company" in suggestions.inner_text()
    assert colleague["id"] not in suggestions.inner_html()
    suggestions.get_by_role("link", name="Compare and merge").first.click()
    page.wait_for_url(re.compile(rf"/customers/{first['id']}/merge/{second['id']}$"))
    assert f"ux.{tag}@a.example" in page.locator(".side-by-side").inner_text()
    assert second["phones"][0] in page.locator(".side-by-side").inner_text()
    screenshot(page, "customer-merge")
    page.get_by_label(re.compile(r"^Keep Ursula  xavier")).check()
    page.get_by_role("button", name="Merge").click()
    page.wait_for_url(re.compile(rf"/customers/{second['id']}\?merged_from={first['id']}$"))
    assert "was merged into this one" in page.get_by_role("status").filter(has_text="merged").inner_text()
    status, merged = read_customer(console, first["id"])
    assert status == 308 and str(merged.get("merged_into")) == second["id"]
    _, survivor = read_customer(console, second["id"])
    assert f"ux.{tag}@a.example" in survivor["emails"]
    # The merged-away page leads to the survivor, and the survivor shows no duplicate any more.
    page.goto(f"{console.url}/customers/{first['id']}")
    page.wait_for_url(re.compile(rf"/customers/{second['id']}\?merged_from={first['id']}$"))
    assert page.get_by_role("region", name="Possible duplicates").count() == 0


def test_an_admin_downloads_the_export_and_other_roles_are_not_offered_it(console: Console, chromium: Any) -> None:
    tag = unique()
    contact = make_customer(console, name=f"Kofi Mensah {tag}", emails=[f"kofi.{tag}@example.com"])
    page = chromium().new_page()
    sign_in(page, console, console.admin)
    page.goto(f"{console.url}/customers/{contact['id']}")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export data").click()
    download = download_info.value
    assert download.suggested_filename == f"customer-{contact['id']}.json"
    exported = json.loads(Path(download.path()).read_text(encoding="utf-8"))
    assert exported["contact"]["id"] == contact["id"]
    assert {"kind": "email", "value": f"kofi.{tag}@example.com"} in exported["identities"]

    agent = chromium().new_page()
    sign_in(agent, console, console.agent)
    agent.goto(f"{console.url}/customers/{contact['id']}")
    assert agent.get_by_role("link", name="Export data").count() == 0
    assert agent.get_by_role("link", name="Erase").count() == 0
    refused = agent.goto(f"{console.url}/customers/{contact['id']}/export")
    assert refused is not None and refused.status == 403
    readonly = chromium().new_page()
    sign_in(readonly, console, console.make_staff("readonly"))
    readonly.goto(f"{console.url}/customers/{contact['id']}")
    assert readonly.get_by_role("link", name="Edit", exact=True).count() == 0
    for form in ("/customers/new", f"/customers/{contact['id']}/edit"):
        refused = readonly.goto(console.url + form)
        assert refused is not None and refused.status == 403  # refused before the form, not when sent


def test_erasing_needs_the_typed_confirmation(console: Console, chromium: Any) -> None:
    tag = unique()
    name = f"Bjorn Lund {tag}"
    contact = make_customer(console, name=name, emails=[f"bjorn.{tag}@example.com"])
    agent = chromium().new_page()
    sign_in(agent, console, console.agent)
    refused = agent.goto(f"{console.url}/customers/{contact['id']}/erase")
    assert refused is not None and refused.status == 403

    page = chromium().new_page()
    sign_in(page, console, console.admin)
    page.goto(f"{console.url}/customers/{contact['id']}")
    page.get_by_role("link", name="Erase").click()
    page.wait_for_url(re.compile(r"/erase$"))
    screenshot(page, "customer-erase")
    confirm = page.get_by_label(re.compile(r"^Type .* to confirm"))
    confirm.fill("Bjorn")
    page.get_by_role("button", name="Erase for good").click()
    assert f"Type {name}" in page.get_by_role("alert").inner_text()
    assert read_customer(console, contact["id"])[0] == 200  # not erased
    page.get_by_label(re.compile(r"^Type .* to confirm")).fill(name)
    page.get_by_role("button", name="Erase for good").click()
    page.wait_for_url(re.compile(rf"/customers/{contact['id']}$"))
    assert "was erased" in page.get_by_role("alert").inner_text()
    assert name not in page.content() and f"bjorn.{tag}" not in page.content()
    assert read_customer(console, contact["id"])[0] == 410


def test_an_open_page_shows_the_erasure_live(console: Console, chromium: Any) -> None:
    tag = unique()
    name = f"Mei Chen {tag}"
    contact = make_customer(console, name=name, emails=[f"mei.{tag}@example.com"], company="Chen Lighting")
    page = chromium().new_page()
    sign_in(page, console, console.agent)
    page.goto(f"{console.url}/customers/{contact['id']}")
    page.locator("[data-live-status].on").wait_for()
    with console.api() as http:
        erased = http.delete(f"/api/v1/contacts/{contact['id']}")
        assert erased.status_code == 204, erased.text
    page.locator(".banner-erased").wait_for(timeout=15_000)  # pushed by the stream: no reload happened
    assert "was erased" in page.locator(".banner-erased").inner_text()
    main = page.locator("main").inner_text()
    assert name not in main and f"mei.{tag}" not in main and "Chen Lighting" not in main
    assert page.get_by_role("heading", name="Erased customer").is_visible()
    screenshot(page, "customer-erased-live")


def test_an_open_page_follows_a_merge_to_the_survivor_live(console: Console, chromium: Any) -> None:
    tag = unique()
    source = make_customer(console, name=f"Tomas Ruiz {tag}", company="Ruiz Hogar")
    target = make_customer(console, name=f"Tomas Ruiz {tag}", company="Ruiz Hogar", emails=[f"t.{tag}@example.com"])
    page = chromium().new_page()
    sign_in(page, console, console.agent)
    page.goto(f"{console.url}/customers/{source['id']}")
    page.locator("[data-live-status].on").wait_for()
    with console.api() as http:
        merged = http.post(f"/api/v1/contacts/{target['id']}/merge", json={"source_id": source["id"]})
        assert merged.status_code == 200, merged.text
    page.wait_for_url(re.compile(rf"/customers/{target['id']}\?merged_from={source['id']}$"), timeout=15_000)
    assert "was merged into this one" in page.get_by_role("status").filter(has_text="merged").inner_text()
    assert f"t.{tag}@example.com" in page.locator(".head").inner_text()
