"""Search in a real Chromium against the real stack (issue 20): a phone number typed as the customer says it, a
name with a typo, and every match reached page by page, exact matches first."""

from __future__ import annotations

import random
import re
import uuid
from typing import Any

import pytest

from tests.browser.conftest import Console, screenshot
from tests.browser.test_console_browser import sign_in

pytestmark = [pytest.mark.stack, pytest.mark.browser]


def make_customer(console: Console, **fields: Any) -> dict[str, Any]:
    with console.api() as http:
        made = http.post("/api/v1/contacts", json=fields)
        assert made.status_code == 201, made.text
        contact: dict[str, Any] = made.json()
    return contact


def results(page: Any) -> Any:
    return page.get_by_role("list", name="Search results").get_by_role("link")


def test_an_agent_finds_a_customer_by_a_phone_number_in_any_format_and_by_a_misspelt_name(
    console: Console, chromium: Any
) -> None:
    digits = f"{random.randrange(10**5):05d}"
    national = f"6129{digits}"  # a Spanish mobile number, as the customer reads it out
    lucia = make_customer(console, name="Lucia Okonkwo-Berg", company="Okonkwo Tiles", phones=[f"+34{national}"])
    page = chromium().new_page()
    sign_in(page, console, console.agent)
    box = page.get_by_label("Name, company, email or phone")
    for typed in (
        f"{national[:3]} {national[3:6]} {national[6:]}",
        f"0034{national}",
        f"+34 {national[:3]} {national[3:6]} {national[6:]}",
        f"({national[:3]}) {national[3:6]}-{national[6:]}",
    ):
        box.fill(typed)  # results as the agent types: no button pressed
        results(page).first.wait_for()
        page.wait_for_function(
            "q => new URLSearchParams(location.search).get('q') === q", arg=typed
        )  # this answer, not the last one
        assert results(page).first.inner_text().startswith("Lucia Okonkwo-Berg"), typed
    screenshot(page, "search-by-phone-number")

    box.fill("lucai okonkwo")  # two letters swapped, and the rest of the surname left out
    page.get_by_text("“lucai okonkwo”").wait_for()
    assert results(page).filter(has_text="Lucia Okonkwo-Berg").count() == 1
    box.fill("okonkow tiles")  # the company, misspelt
    page.get_by_text("“okonkow tiles”").wait_for()
    results(page).filter(has_text="Lucia Okonkwo-Berg").click()
    page.wait_for_url(re.compile(rf"/customers/{lucia['id']}$"))

    # Without JavaScript's help (a search typed in the address bar, or the Search button) the page is the same.
    page.goto(console.url + "/search?" + f"q=0034{national}")
    assert results(page).first.inner_text().startswith("Lucia Okonkwo-Berg")
    page.goto(console.url + "/search?q=zzqxv")
    assert page.get_by_text("No customer matches “zzqxv”.").is_visible()


def test_an_agent_pages_through_every_match_exact_ones_first(console: Console, chromium: Any) -> None:
    word = f"Vasquez{uuid.uuid4().hex[:6]}"
    close = make_customer(console, name=f"Ana {word}a")  # starts with the word: after every exact match
    exact = [make_customer(console, name=f"Ana {word}", company=f"Shop {n}") for n in range(28)]
    page = chromium().new_page()
    sign_in(page, console, console.agent)
    page.get_by_label("Name, company, email or phone").fill(word)
    status = page.locator("#results-status")
    page.get_by_text(f"25+ customers match “{word}”", exact=False).wait_for()
    first_page = [link.get_attribute("href") for link in results(page).all()]
    assert len(first_page) == 25
    assert first_page == [f"/customers/{c['id']}" for c in reversed(exact)][:25]  # newest first
    more = page.get_by_role("navigation", name="Search result pages").get_by_role("link", name=re.compile("More"))
    more.focus()  # keyboard reachable: a link like any other
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"cursor="))
    assert "Customers 26\u201329 of 29 matching" in status.inner_text()
    second_page = [link.get_attribute("href") for link in results(page).all()]
    newest_first = [f"/customers/{c['id']}" for c in reversed(exact)]
    assert second_page == [*newest_first[25:], f"/customers/{close['id']}"]
    screenshot(page, "search-more")
    assert page.get_by_role("link", name=re.compile("More")).count() == 0  # the last page
    page.get_by_role("link", name="First results").click()
    page.get_by_text(f"25+ customers match “{word}”", exact=False).wait_for()
    assert [link.get_attribute("href") for link in results(page).all()] == first_page
