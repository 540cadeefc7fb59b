"""The console's own rules, without a browser: sign-in lockout, where a sign-in may send you, how data is
escaped by the real templates, and the demo data set's determinism and coverage."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import phonenumbers
import pytest

from gateway.console import labels
from gateway.console.routes import _day, safe_next, same_origin, templates
from gateway.demo import CHANNEL_WEIGHTS, build_demo
from gateway.lockout import SignInGuard
from gateway.projection import interaction_item, to_json


class Ticking:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_five_wrong_passwords_lock_the_account_for_a_while_then_it_opens_again() -> None:
    clock = Ticking()
    guard = SignInGuard(max_failures=5, window_s=900, lockout_s=600, now=clock)
    for _ in range(4):
        guard.failed("Agent@Shop.example")
        assert guard.locked_for("agent@shop.example") == 0
    guard.failed("agent@shop.example ")
    assert guard.locked_for("AGENT@shop.example") == pytest.approx(600)
    assert guard.locked_for("someone.else@shop.example") == 0
    clock.now += 599
    assert guard.locked_for("agent@shop.example") == pytest.approx(1)
    clock.now += 2
    assert guard.locked_for("agent@shop.example") == 0


def test_failures_spread_beyond_the_window_do_not_lock_and_a_success_forgets_them() -> None:
    clock = Ticking()
    guard = SignInGuard(max_failures=3, window_s=60, lockout_s=600, now=clock)
    for _ in range(5):
        guard.failed("slow@shop.example")
        clock.now += 31  # never three inside one minute
    assert guard.locked_for("slow@shop.example") == 0
    guard.failed("quick@shop.example")
    guard.failed("quick@shop.example")
    guard.succeeded("quick@shop.example")
    guard.failed("quick@shop.example")
    assert guard.locked_for("quick@shop.example") == 0


@pytest.mark.parametrize(
    ("asked", "sent_to"),
    [
        ("/customers/42?kind=followup", "/customers/42?kind=followup"),
        ("//evil.example/login", "/search"),
        ("https://evil.example/", "/search"),
        ("/\\evil.example", "/search"),
        (None, "/search"),
    ],
)
def test_a_sign_in_link_only_leads_to_a_page_of_this_site(asked: str | None, sent_to: str) -> None:
    assert safe_next(asked) == sent_to


def test_form_posts_from_another_site_are_told_apart() -> None:
    def request(headers: dict[str, str]) -> object:
        return SimpleNamespace(headers=headers)

    assert same_origin(request({"host": "crm.shop.example", "origin": "https://crm.shop.example"}))  # type: ignore[arg-type]
    assert same_origin(request({"host": "crm.shop.example"}))  # type: ignore[arg-type]
    assert not same_origin(request({"host": "crm.shop.example", "origin": "https://evil.example"}))  # type: ignore[arg-type]
    assert not same_origin(request({"host": "crm.shop.example", "origin": "null"}))  # type: ignore[arg-type]


def test_the_timeline_template_shows_html_and_sql_in_customer_data_as_text() -> None:
    item = {
        "id": "0192f0c8-0000-7000-8000-000000000001",
        "kind": "interaction",
        "at": datetime(2026, 11, 23, 9, 30, tzinfo=UTC),
        "channel": "email",
        "direction": "inbound",
        "type": "complaint",
        "agent": "<b>agent</b>",
        "title": "<script>alert('title')</script>",
        "outcome": "'; DROP TABLE touchpoints; -- </li><img src=x onerror=alert(1)>",
        "csat": 1,
        "nps": None,
        "sentiment": -0.8,
        "amount": None,
        "thread_id": "t-1",
    }
    html = templates.get_template("_items.html").render(
        items=[item], more_query=None, contact_id="c", now=datetime(2026, 11, 24, tzinfo=UTC)
    )
    assert "<script>" not in html and "<img" not in html and "<b>agent" not in html
    assert "&lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt;" in html
    assert "&#39;; DROP TABLE touchpoints; -- &lt;/li&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert "CSAT 1/5" in html and "Negative" in html
    assert '<a href="/customers/c/touchpoints/0192f0c8-0000-7000-8000-000000000001"' in html


def test_each_touchpoint_on_the_timeline_links_to_its_message_and_says_only_what_is_news() -> None:
    """Timeline items have no body (gateway/projection.py): "Read message" is the way to it. The item's summary
    (outcome, else "Inbound email, CSAT 2") is not repeated under the channel, direction and score badges."""
    touchpoint = interaction_item({
        "id": "0192f0c8-0000-7000-8000-000000000002", "contact_id": "c", "occurred_at": "2026-11-23T09:30:00Z",
        "channel": "email", "direction": "inbound", "type": "complaint", "subject": None, "body": "Secret words",
        "csat": 2, "nps": None, "sentiment": None, "amount": None, "duration_s": 95, "thread_id": None,
        "outcome": None,
    })  # fmt: skip
    followup = {"id": "f1", "kind": "followup", "at": "2026-11-24T09:00:00Z", "type": "scheduled",
                "title": "Call back", "due_at": "2026-11-24T09:00:00Z", "channel": "phone"}  # fmt: skip
    html = templates.get_template("_items.html").render(
        items=[json.loads(to_json(touchpoint)), followup], more_query=None, contact_id="c",
        now=datetime(2026, 11, 24, tzinfo=UTC),
    )  # fmt: skip
    assert "Secret words" not in html and "Inbound email, CSAT 2" not in html
    assert "Complaint (inbound, email)" in html and "CSAT 2/5" in html and "95 s" in html
    assert html.count("Read message") == 1  # the follow-up has no message
    link = "/customers/c/touchpoints/0192f0c8-0000-7000-8000-000000000002"
    assert f'<a href="{link}" data-message="{link}/message">' in html
    assert 'data-at="2026-11-23T09:30:00+00:00"' in html


def test_the_message_is_text_with_its_lines_and_a_missing_one_says_so() -> None:
    body = "Hello,\n\n  <script>alert(1)</script>\n'; DROP TABLE touchpoints; --"
    html = templates.get_template("_message.html").render(touchpoint={"body": body})
    assert html.strip() == (
        '<pre class="message">Hello,\n\n  &lt;script&gt;alert(1)&lt;/script&gt;\n&#39;; DROP TABLE touchpoints; --'
        "</pre>"
    )
    assert "No message" in templates.get_template("_message.html").render(touchpoint={"body": None})


def test_times_and_scores_read_as_staff_say_them() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert labels.when("2026-11-23T09:05:00+00:00") == "23 Nov 2026 09:05 UTC"
    assert labels.ago(now - timedelta(hours=3), now) == "3 hours ago"
    assert labels.ago(now + timedelta(days=2), now) == "in 2 days"
    assert labels.sentiment(0.6) == "positive" and labels.sentiment(-0.5) == "negative"
    assert labels.sentiment(0.1) == "neutral" and labels.sentiment(None) == ""
    assert labels.channel("live_chat") == "Live chat" and labels.duration(5400) == "90 min"
    assert [labels.duration(s) for s in (270, 300, 1170)] == ["4 min 30 s", "5 min", "20 min"]


def test_the_demo_data_set_is_the_same_for_the_same_seed_and_different_for_another() -> None:
    now = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    first = build_demo(seed=11, customers=50, now=now)
    again = build_demo(seed=11, customers=50, now=now)
    other = build_demo(seed=12, customers=50, now=now)
    assert [(c.fields, c.touchpoints) for c in first] == [(c.fields, c.touchpoints) for c in again]
    assert [c.fields["name"] for c in first] != [c.fields["name"] for c in other]


def test_the_demo_data_set_is_a_living_shop() -> None:
    now = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    contacts = build_demo(now=now)
    touchpoints = [t for c in contacts for t in c.touchpoints]
    assert len(contacts) == 300
    assert set(Counter(t["channel"] for t in touchpoints)) == set(CHANNEL_WEIGHTS)
    kinds = Counter(t["type"] for t in touchpoints)
    assert kinds["purchase"] > 100 and kinds["complaint"] > 20 and kinds["survey_response"] > 50
    assert sum(1 for t in touchpoints if t.get("csat")) > 50 and sum(1 for t in touchpoints if t.get("nps")) > 50
    assert any(c.resolve_threads for c in contacts)
    assert len({c.fields["emails"][0] for c in contacts}) == len(contacts)
    assert len({t["external_id"] for t in touchpoints}) == len(touchpoints)
    assert all(datetime.fromisoformat(t["occurred_at"]) < now for t in touchpoints)
    phones = [p for c in contacts for p in c.fields["phones"]]
    assert phones and all(phonenumbers.is_valid_number(phonenumbers.parse(p)) for p in phones)
    assert {c.fields["tier"] for c in contacts} == {"standard", "premium"}
    assert len({c.fields["stage"] for c in contacts}) >= 4


def test_a_day_filter_at_the_end_of_the_calendar_is_no_bound_not_a_500() -> None:
    """``until=9999-12-31`` once made the customer page answer 500 (the day after it is no date)."""
    assert _day("9999-12-31", end=True) is None
    assert _day("9999-12-31") == "9999-12-31T00:00:00+00:00"
    assert _day("0001-01-01") == "0001-01-01T00:00:00+00:00"
    assert _day("2026-01-05", end=True) == "2026-01-06T00:00:00+00:00"
    assert _day("2026-02-30") is None and _day("x") is None and _day("") is None
