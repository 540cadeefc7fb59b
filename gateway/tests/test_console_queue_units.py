"""The queue page's own rules, without a stack: when a snooze ends in the agent's zone, what a bulk action sends,
and which API query a page of the queue asks."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.console.queue import ANY, bulk_body, queue_params, snooze_until

# Monday 5 January 2026, 20:00 UTC: already Tuesday 05:00 in Tokyo, still Monday 15:00 in New York.
MONDAY_20 = datetime(2026, 1, 5, 20, 0, tzinfo=UTC)


def test_tomorrow_and_next_monday_are_nine_in_the_morning_where_the_agent_is() -> None:
    assert snooze_until("tomorrow", now=MONDAY_20, zone="Asia/Tokyo") == datetime(2026, 1, 7, 0, 0, tzinfo=UTC)
    assert snooze_until("tomorrow", now=MONDAY_20, zone="America/New_York") == datetime(2026, 1, 6, 14, tzinfo=UTC)
    # A Monday snoozes to the next Monday, not to this morning.
    assert snooze_until("monday", now=MONDAY_20, zone="UTC") == datetime(2026, 1, 12, 9, tzinfo=UTC)
    assert snooze_until("monday", now=MONDAY_20, zone="Asia/Tokyo") == datetime(2026, 1, 12, 0, tzinfo=UTC)
    assert snooze_until("hour", now=MONDAY_20, zone="UTC") == datetime(2026, 1, 5, 21, tzinfo=UTC)
    assert snooze_until("week", now=MONDAY_20, zone="UTC") == datetime(2026, 1, 12, 20, tzinfo=UTC)


def test_a_picked_time_is_read_in_the_agents_zone_and_nonsense_is_none() -> None:
    picked = snooze_until("at", now=MONDAY_20, zone="Europe/Madrid", at="2026-01-08T10:30")
    assert picked == datetime(2026, 1, 8, 9, 30, tzinfo=UTC)
    assert snooze_until("at", now=MONDAY_20, zone="Europe/Madrid", at="") is None
    assert snooze_until("at", now=MONDAY_20, zone="Europe/Madrid", at="next week") is None
    # An unknown zone (a forged form field) falls back to UTC rather than failing.
    assert snooze_until("tomorrow", now=MONDAY_20, zone="Mars/Olympus") == datetime(2026, 1, 6, 9, tzinfo=UTC)


def test_bulk_bodies_carry_only_their_actions_fields_and_say_what_is_missing() -> None:
    assert bulk_body("complete", {"outcome": "Called", "reason": "manual"}, now=MONDAY_20, zone="UTC") == {
        "outcome": "Called"
    }
    assert bulk_body("complete", {"outcome": ""}, now=MONDAY_20, zone="UTC") == {}
    assert bulk_body("snooze", {"until": "at", "until_at": ""}, now=MONDAY_20, zone="UTC") == (
        "Pick the time to snooze until."
    )
    assert bulk_body("assign", {"assignee": "", "team": ""}, now=MONDAY_20, zone="UTC") == (
        "Choose a person or a team to give it to."
    )
    assert bulk_body("assign", {"assignee": "", "team": "returns"}, now=MONDAY_20, zone="UTC") == {"team": "returns"}
    assert bulk_body("cancel", {"reason": "erased"}, now=MONDAY_20, zone="UTC") == {"reason": "manual"}
    assert bulk_body("cancel", {"reason": "superseded"}, now=MONDAY_20, zone="UTC") == {"reason": "superseded"}


def test_the_queue_asks_for_the_agents_own_work_unless_told_otherwise() -> None:
    mine = queue_params(tab="due_today", assignee="", team="", policy="", channel="", priority="", sort="priority")
    assert mine == {"bucket": "due_today", "sort": "priority", "assignee": "me"}
    everyone = queue_params(
        tab="overdue", assignee=ANY, team="returns", policy="purchase-2-2-2", channel="phone", priority="high",
        sort="-due_at",
    )  # fmt: skip
    assert everyone == {"bucket": "overdue", "sort": "-due_at", "team": "returns", "policy": "purchase-2-2-2",
                        "channel": "phone", "priority": "high"}  # fmt: skip
