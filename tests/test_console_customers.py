"""The customer pages' own rules, without a browser: what the form sends (a merge patch that removes what was
emptied), where a refusal is shown, what counts as a duplicate, and the form escaping what it shows."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx

from gateway.console.client import Answer
from gateway.console.customers import field_errors, form_values, handle_channels, profile_from_form
from gateway.console.duplicates import same_person
from gateway.console.routes import templates


def answer(status: int, body: dict[str, Any]) -> Answer:
    return Answer(status, body, httpx.Headers())


def test_a_new_customer_sends_what_was_filled_in_and_nothing_empty() -> None:
    sent = profile_from_form(
        {"name": "Ines Navarro", "emails": "ines@a.example, ines@b.example\n", "phones": "", "handle_social": "@ines",
         "consent_email": "yes", "consent_sms": "no", "tags": "kitchen, , vip", "tier": "premium", "stage": ""},
        before=None,
    )  # fmt: skip
    assert sent == {
        "name": "Ines Navarro",
        "emails": ["ines@a.example", "ines@b.example"],
        "handles": {"social": "@ines"},
        "consent": {"email": True, "sms": False},
        "tags": ["kitchen", "vip"],
        "tier": "premium",
        "stage": "lead",
    }


def test_an_edit_removes_the_handles_and_consent_left_empty_and_clears_emptied_fields() -> None:
    before = {"handles": {"social": "@ines", "wechat": "ines88"}, "consent": {"email": True, "sms": False}}
    # A handle under a key of the API's own (not a console channel) has its field too, or saving would drop it.
    assert handle_channels(before)[-1] == ("wechat", "wechat")
    shown = form_values({**before, "name": "Ines"})
    assert shown["handle_wechat"] == "ines88" and shown["consent_sms"] == "no"
    # The form as it came back: the social handle and the SMS answer emptied.
    patch = profile_from_form({"name": "", "handle_wechat": "ines88", "consent_email": "yes"}, before=before)
    assert patch["handles"] == {"social": None, "wechat": "ines88"}
    assert patch["consent"] == {"email": True, "sms": None}
    assert patch["name"] is None and patch["owner"] is None and patch["emails"] == []


def test_an_identity_taken_is_shown_beside_its_field_with_the_customer_who_has_it() -> None:
    taken = answer(409, {"detail": "email 'a@b.example' belongs to contact 42.", "contact_id": "42",
                         "identity": {"kind": "email", "value": "a@b.example"}})  # fmt: skip
    assert field_errors(taken) == {"emails": "a@b.example already belongs to another customer.", "_holder": "42"}
    handle = answer(409, {"identity": {"kind": "handle:social", "value": "@x"}})
    assert list(field_errors(handle)) == ["handle_social"]


def test_a_refused_value_is_shown_beside_its_field() -> None:
    refused = answer(422, {"detail": "The request does not match the schema.", "errors": [
        {"loc": ["body", "timezone"], "msg": "not an IANA time zone (e.g. Europe/Paris)"},
        {"loc": ["body", "handles", "social"], "msg": "too long"},
        {"loc": ["body", "emails", 1], "msg": "not a valid email address"},
    ]})  # fmt: skip
    assert field_errors(refused) == {
        "timezone": "not an IANA time zone (e.g. Europe/Paris)",
        "handle_social": "too long",
        "emails": "not a valid email address",
    }
    owner = answer(422, {"detail": "owner 'ghost' is not a staff handle.", "field": "owner"})
    assert field_errors(owner) == {"owner": "owner 'ghost' is not a staff handle."}
    assert field_errors(answer(422, {"detail": "Something else."})) == {"": "Something else."}


def test_duplicates_share_an_email_a_phone_or_the_name_at_the_same_company() -> None:
    ursula = {"name": "Ursula Xavier", "company": "Xavier Ltd", "emails": ["ux@a.example"], "phones": []}
    assert same_person(ursula, {"name": "ursula  XAVIER", "company": " xavier ltd"}) == ["same name and company"]
    assert same_person(ursula, {"name": "Ursula Xavier", "company": "Other Ltd"}) == []
    assert same_person(ursula, {"name": "U. X.", "emails": ["ux@a.example"]}) == ["same email ux@a.example"]
    assert same_person({"name": "", "phones": ["+34612"]}, {"name": "", "phones": ["+34612"]}) == ["same phone +34612"]


def test_the_form_shows_customer_data_as_text() -> None:
    hostile = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    contact = {"id": "c1", "name": hostile, "company": hostile, "handles": {"social": hostile}, "consent": {}}
    desk = SimpleNamespace(principal=SimpleNamespace(csrf_token="t", name="A", role="agent"), is_admin=False)
    html = templates.get_template("customer_form.html").render(
        desk=desk, contact=contact, v=form_values(contact), errors={"name": hostile}, etag='"c1-v1"', conflict=False,
        staff=[{"handle": "ana", "name": hostile}],
        handle_channels=handle_channels(contact), tiers=("standard",), stages=("lead",), time_zones=["Europe/Madrid"],
        active="search",
    )  # fmt: skip
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
