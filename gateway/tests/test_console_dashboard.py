"""The dashboard's arithmetic: its window of days, the periods it draws, the reply targets it reads from the
response-SLA policy and the bars it scales against them, and the lists its tiles open."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from gateway.console.dashboard import _periods, _reply_targets, _response_rows, _tile_links, _window

TODAY = date(2026, 12, 6)


def test_the_window_is_the_last_30_days_unless_the_form_says_otherwise() -> None:
    assert _window("", "", today=TODAY) == (date(2026, 11, 7), TODAY)
    assert _window("2026-01-01", "2026-01-31", today=TODAY) == (date(2026, 1, 1), date(2026, 1, 31))
    assert _window("2026-01-31", "2026-01-01", today=TODAY) == (date(2026, 1, 1), date(2026, 1, 31))  # swapped
    # Nonsense and the ends of the calendar are a window, never an error.
    assert _window("9999-99-99", "x", today=TODAY) == (date(2026, 11, 7), TODAY)
    assert _window("", "9999-12-31", today=TODAY) == (date(2026, 11, 7), TODAY)
    assert _window("", "0001-01-05", today=TODAY) == (date.min, date(1, 1, 5))


def test_periods_are_whole_days_and_at_most_twelve() -> None:
    days = _periods(date(2026, 12, 1), date(2026, 12, 6))
    assert len(days) == 6 and days[0] == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC))
    half_year = _periods(date(2026, 6, 10), TODAY)
    assert len(half_year) <= 12 and half_year[0][0] == datetime(2026, 6, 10, tzinfo=UTC)
    assert half_year[-1][1] == datetime(2026, 12, 7, tzinfo=UTC)  # the last day counts whole
    assert all(a[1] == b[0] for a, b in itertools.pairwise(half_year))  # no gap, no overlap
    assert len(_periods(date.min, date(9998, 12, 31))) <= 12


def test_reply_targets_come_from_the_policy_as_it_is_now() -> None:
    policy = {"document": {"steps": [{"id": "reply", "offset_by_channel": {"live_chat": "PT5M", "email": "PT24H"}}]}}
    assert _reply_targets(policy) == {"live_chat": 300, "email": 86400}
    one_for_all = {"document": {"steps": [{"id": "reply", "offset": "PT2H"}]}}
    assert set(_reply_targets(one_for_all).values()) == {7200}
    broken: list[dict[str, Any] | None] = [None, {}, {"document": {"steps": []}}, {"document": {"steps": [{"x": 1}]}}]
    for given in [*broken, {"document": {"steps": [{"offset": "soon"}]}}]:
        assert _reply_targets(given) == {}


def test_bars_and_targets_share_one_scale_and_say_when_p90_is_over() -> None:
    metrics = {
        "first_response": {
            "email": {"n": 4, "p50_s": 3600, "p90_s": 90000},
            "live_chat": {"n": 2, "p50_s": 60, "p90_s": 120},
        }
    }
    drawn = _response_rows(metrics, {"email": 86400, "live_chat": 300})
    email, chat = drawn["rows"]
    assert drawn["top"] == 90000 and email["p90_share"] == 100 and email["target_share"] == 96.0
    assert email["late"] and not chat["late"]
    assert _response_rows(None, {}) == {"rows": [], "top": 1}


def test_each_tile_opens_the_queue_on_the_same_people_and_channel() -> None:
    links = _tile_links({"team": "support", "agent": "ana", "channel": "email"})
    for name, href in links.items():
        query = parse_qs(urlsplit(href).query)
        assert query["team"] == ["support"] and query["assignee"] == ["ana"] and query["channel"] == ["email"], name
    assert parse_qs(urlsplit(links["complaints"]).query)["policy"] == ["complaint-callback"]
    assert _tile_links({})["overdue"] == "/queue?tab=overdue&assignee=any"  # everyone's, as the figures are
