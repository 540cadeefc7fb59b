"""Time arithmetic of policies in the contact's own time zone: business hours and quiet hours.

Wall-clock arithmetic is done on naive local times and converted back through the zone, so a
due time stays at 10:00 local across a daylight-saving change.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def zone(name: str | None, default: str) -> ZoneInfo:
    for candidate in (name, default, "UTC"):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def _local(at: datetime, tz: ZoneInfo) -> datetime:
    return at.astimezone(tz).replace(tzinfo=None)


def _utc(local: datetime, tz: ZoneInfo) -> datetime:
    return local.replace(tzinfo=tz).astimezone(UTC)


def add_business_time(
    start: datetime, amount: timedelta, *, tz: ZoneInfo, days: list[str], opens: time, closes: time
) -> datetime:
    """``start`` plus ``amount`` of working time, counting only [opens, closes) on the given weekdays."""
    if not days or closes <= opens:
        return start + amount
    workdays = {DAY_NAMES.index(d) for d in days}
    now = _local(start, tz)
    left = amount
    for _ in range(3660):  # ten years of days: a bound, never reached with sane hours
        day_open = datetime.combine(now.date(), opens)
        day_close = datetime.combine(now.date(), closes)
        if now.weekday() in workdays and now < day_close:
            now = max(now, day_open)
            available = day_close - now
            if left <= available:
                return _utc(now + left, tz)
            left -= available
        now = datetime.combine(now.date() + timedelta(days=1), opens)
    return start + amount


def out_of_quiet_hours(at: datetime, *, tz: ZoneInfo, starts: time, ends: time) -> datetime:
    """``at`` moved to the end of the quiet hours when it falls in them (they may span midnight)."""
    local = _local(at, tz)
    clock = local.time()
    if starts == ends:
        return at
    if starts < ends:
        quiet = starts <= clock < ends
        end_day = local.date()
    else:
        quiet = clock >= starts or clock < ends
        end_day = local.date() + timedelta(days=1) if clock >= starts else local.date()
    if not quiet:
        return at
    return _utc(datetime.combine(end_day, ends), tz)
