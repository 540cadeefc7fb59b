"""What closes a follow-up: only work on the thing it answers. Pure rules, no database.

A follow-up answers one thing: the touchpoint that made it (its thread and channel), or a resolved thread. A
touchpoint closes it when

- the touchpoint names it (``followup_id``): an agent saying "this call was that call-back", whatever its thread;
- or it is outbound, logged from the time the follow-up's closing counts from (the trigger, its due time, or a
  check-in's window before it), and
  - on the follow-up's own thread, when it has one;
  - when its trigger had no thread: without a thread, on the follow-up's channel (the first such reply after
    the inbound closes a reply SLA; answering on another thread is not this answer).

Nothing else closes it: not a touchpoint on another thread, not one before its window, not one of another
contact. An agent can always complete it by hand.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from servicekit.clock import as_utc

NAMED = "touchpoint_named_it"
ON_THREAD = "outbound_on_its_thread"
ON_CHANNEL = "outbound_on_its_channel"
BY_AGENT = "completed_by_agent"

# Why a follow-up was closed (``close_reason``), as the timeline says it.
CLOSE_REASONS = {
    NAMED: "a touchpoint named it as the follow-up it fulfils",
    ON_THREAD: "an outbound touchpoint on its thread",
    ON_CHANNEL: "the first outbound touchpoint on its channel after it (its trigger had no thread)",
    BY_AGENT: "an agent completed it",
}


def counts_from(*, plan: dict[str, Any], anchor_at: datetime, due_at: datetime) -> datetime:
    """From when an outbound touchpoint counts as doing the follow-up."""
    window = plan.get("closes_from_s")
    if window is not None:
        return as_utc(due_at) - timedelta(seconds=float(window))
    if plan.get("reply_from") == "due":
        return as_utc(due_at)
    return as_utc(anchor_at)


def close_reason(followup: Any, touch: dict[str, Any], occurred_at: datetime) -> str | None:
    """Why ``touch`` (a logged touchpoint, as ``events.touch_of`` reads it) closes ``followup`` (a ``Followup``
    or its row), or None when it does not."""
    named = touch.get("followup_id")
    if named is not None and str(named) == str(_get(followup, "id")):
        return NAMED
    if touch.get("direction") != "outbound":
        return None
    anchor_at = _get(followup, "anchor_at") or _get(followup, "created_at")
    start = counts_from(plan=_get(followup, "plan") or {}, anchor_at=anchor_at, due_at=_get(followup, "due_at"))
    if occurred_at < start:
        return None
    thread = _get(followup, "thread_id")
    if thread is not None:
        return ON_THREAD if touch.get("thread_id") == thread else None
    channel = _get(followup, "channel")
    if touch.get("thread_id") is None and channel is not None and touch.get("channel") == channel:
        return ON_CHANNEL
    return None


def _get(followup: Any, name: str) -> Any:
    return followup[name] if isinstance(followup, dict) else getattr(followup, name)
