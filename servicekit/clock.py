"""Time is injected: production reads the system clock, tests move a clock by hand."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Protocol

from pydantic import AfterValidator, AwareDatetime, BeforeValidator


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class MovableClock:
    """A clock that only moves when a test tells it to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        self._now += delta if delta is not None else timedelta(**kwargs)
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when


def as_utc(value: datetime) -> datetime:
    """Normalise a datetime to aware UTC; naive values (from SQLite) are taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def in_utc(value: datetime) -> datetime:
    """``as_utc`` for input: a time UTC cannot hold (year 1 at +14:00, year 9999 at -12:00) is a ValueError,
    so a pydantic field or query parameter of type ``InUtc`` answers it with a 422, not a 500."""
    try:
        return as_utc(value)
    except OverflowError:
        raise ValueError("outside the range of dates (years 1 to 9999 in UTC)") from None


_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


def not_a_number(value: Any) -> Any:
    """Pydantic reads a number as Unix time; the document says RFC 3339 date-time, so a number is refused."""
    if (isinstance(value, int | float) and not isinstance(value, bool)) or (
        isinstance(value, str) and _NUMBER.match(value)
    ):
        raise ValueError("a date-time in ISO 8601 (e.g. 2026-01-05T09:00:00Z), not a number")
    return value


# A time from a request, in UTC (naive is taken as UTC; add AwareDatetime where an offset is required).
InUtc = Annotated[datetime, BeforeValidator(not_a_number), AfterValidator(in_utc)]
# A time in a body that must carry its offset: pydantic's AwareDatetime alone also takes a number as Unix time.
AwareInput = Annotated[AwareDatetime, BeforeValidator(not_a_number)]
