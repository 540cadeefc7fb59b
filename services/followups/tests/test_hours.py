"""Business hours and quiet hours in the contact's own time zone (pure functions, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.followups.hours import add_business_time, out_of_quiet_hours, zone
from services.followups.rules import add_duration

PARIS = ZoneInfo("Europe/Paris")
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]


def paris(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=PARIS).astimezone(UTC)


def working(start: datetime, amount: timedelta) -> datetime:
    return add_business_time(start, amount, tz=PARIS, days=WEEKDAYS, opens=time(9), closes=time(17))


def out_of_night(at: datetime) -> datetime:
    return out_of_quiet_hours(at, tz=PARIS, starts=time(21), ends=time(8))


def test_business_time_skips_nights_and_weekends() -> None:
    assert working(paris(2026, 1, 5, 10, 0), timedelta(hours=4)) == paris(2026, 1, 5, 14, 0)
    # Friday 16:00 + 4 h: 1 h on Friday, 3 h on Monday.
    assert working(paris(2026, 1, 9, 16, 0), timedelta(hours=4)) == paris(2026, 1, 12, 12, 0)
    # Saturday night counts from Monday's opening.
    assert working(paris(2026, 1, 10, 23, 0), timedelta(hours=1)) == paris(2026, 1, 12, 10, 0)
    # Before opening on a weekday: from the opening.
    assert working(paris(2026, 1, 6, 6, 0), timedelta(minutes=30)) == paris(2026, 1, 6, 9, 30)


def test_quiet_hours_across_midnight_move_to_their_end_in_local_time() -> None:
    assert out_of_night(paris(2026, 1, 5, 22, 30)) == paris(2026, 1, 6, 8, 0)
    assert out_of_night(paris(2026, 1, 6, 3, 0)) == paris(2026, 1, 6, 8, 0)
    assert out_of_night(paris(2026, 1, 6, 12, 0)) == paris(2026, 1, 6, 12, 0)
    # On the night clocks go forward (29 March 2026), 08:00 local is 06:00 UTC, no longer 07:00.
    assert out_of_night(paris(2026, 3, 28, 23, 0)) == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)


def test_calendar_months_and_unknown_zones() -> None:
    assert add_duration(datetime(2026, 1, 31, 10, tzinfo=UTC), "P1M") == datetime(2026, 2, 28, 10, tzinfo=UTC)
    assert add_duration(datetime(2026, 1, 5, 10, tzinfo=UTC), "P2W") == datetime(2026, 1, 19, 10, tzinfo=UTC)
    assert zone("Mars/Olympus", "Europe/Paris") == PARIS
    assert zone(None, "not a zone") == ZoneInfo("UTC")
