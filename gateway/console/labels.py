"""How the console names and shows things: channels, stages, times, scores."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

CHANNELS = {
    "phone": "Phone",
    "in_person": "In person",
    "email": "Email",
    "sms": "SMS",
    "live_chat": "Live chat",
    "social": "Social media",
    "self_service": "Self-service",
}
DIRECTIONS = {"inbound": "Inbound", "outbound": "Outbound", "internal": "Internal note"}
TOUCHPOINT_TYPES = {
    "inquiry": "Inquiry",
    "complaint": "Complaint",
    "purchase": "Purchase",
    "return": "Return",
    "feedback": "Feedback",
    "survey_response": "Survey response",
    "support": "Support",
    "sales": "Sales",
    "note": "Note",
}
KINDS = {"interaction": "Touchpoints", "followup": "Follow-ups", "contact_event": "Customer changes"}
STAGES = ("lead", "prospect", "customer", "repeat", "at_risk", "churned")


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def when(value: Any) -> str:
    """A time as staff read it, in UTC (the console shows one zone so colleagues agree on times)."""
    moment = parse_time(value)
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%d %b %Y %H:%M UTC")


def ago(value: Any, now: datetime | None = None) -> str:
    moment = parse_time(value)
    if moment is None:
        return ""
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    future = seconds < 0
    seconds = abs(seconds)
    for size, unit in ((86400 * 365, "year"), (86400 * 30, "month"), (86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            n = seconds // size
            text = f"{n} {unit}{'s' if n != 1 else ''}"
            return f"in {text}" if future else f"{text} ago"
    return "now"


def channel(value: Any) -> str:
    return CHANNELS.get(str(value), str(value).replace("_", " ").capitalize()) if value else "—"


def words(value: Any) -> str:
    return str(value).replace("_", " ").capitalize() if value is not None else "—"


def sentiment(value: Any) -> str:
    """VADER's compound score in words (the number is on the element's title)."""
    if value is None:
        return ""
    score = float(value)
    if score >= 0.35:
        return "positive"
    if score <= -0.35:
        return "negative"
    return "neutral"


def duration(seconds: Any) -> str:
    if seconds is None:
        return "—"
    s = float(seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 600:  # a call's length: the seconds matter (270 s was "4 min", rounded half to even)
        minutes, rest = divmod(round(s), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    if s < 7200:
        return f"{int(s / 60 + 0.5)} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"
