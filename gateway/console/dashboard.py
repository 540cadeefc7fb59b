"""The service dashboard: service quality over a period, for everyone or one team, agent or channel, as tiles that
open the list behind them and charts drawn on the server (inline SVG, no script)."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import TypeAdapter, ValidationError

from gateway.console import labels
from gateway.console.routes import open_desk, to_sign_in
from gateway.deps import RuntimeDep

router = APIRouter(include_in_schema=False)

DEFAULT_DAYS = 30
# One metrics call per period drawn: a year is cut in 12 periods, a fortnight in days.
MOST_PERIODS = 12
# Where the reply targets come from: the policy that makes a reply follow-up for every inbound message.
SLA_POLICY = "response-sla"
_DURATION = TypeAdapter(timedelta)


@router.get("/dashboard")
async def dashboard_page(
    request: Request,
    runtime: RuntimeDep,
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    team: Annotated[str, Query(max_length=200)] = "",
    agent: Annotated[str, Query(max_length=200)] = "",
    channel: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    desk = await open_desk(request)
    if desk is None:
        return to_sign_in(request)
    start_day, end_day = _window(since, until, today=runtime.clock.now().astimezone(UTC).date())
    start = datetime.combine(start_day, time(), tzinfo=UTC)
    end = datetime.combine(end_day + timedelta(days=1), time(), tzinfo=UTC)
    who = {"team": team.strip(), "agent": agent.strip(), "channel": channel if channel in labels.CHANNELS else ""}
    scope = {k: v for k, v in who.items() if v}
    periods = _periods(start_day, end_day)
    metrics, sla_policy, teams, staff, *per_period = await asyncio.gather(
        desk.api.get("/metrics/service", since=start.isoformat(), until=end.isoformat(), **scope),
        desk.api.get(f"/policies/{SLA_POLICY}"),
        desk.api.get("/teams"),
        desk.api.get("/staff"),
        *(desk.api.get("/metrics/service", since=a.isoformat(), until=b.isoformat(), **scope) for a, b in periods),
    )
    series = [_period_figures(a, b, m.body if m.ok else None) for (a, b), m in zip(periods, per_period, strict=True)]
    figures = metrics.body if metrics.ok else None
    return desk.render(
        "dashboard.html",
        metrics=figures,
        problem=None if metrics.ok else metrics.problem,
        since=start_day.isoformat(),
        until=end_day.isoformat(),
        filters=who,
        teams=[t["id"] for t in teams.body.get("items", [])] if teams.ok else [],
        staff=[(s["handle"], s.get("name") or s["handle"]) for s in staff.body.get("items", [])] if staff.ok else [],
        series=series,
        volume=_volume(series),
        response_rows=_response_rows(figures, _reply_targets(sla_policy.body if sla_policy.ok else None)),
        followup_figures=_followup_figures(figures.get("followups") if figures else None),
        links=_tile_links(scope),
    )


def _parse_day(value: str) -> date | None:
    """A day of the form, or None for an empty or impossible one (the last day of 9999 has no end to count to)."""
    try:
        day = date.fromisoformat(value) if value else None
    except ValueError:
        return None
    return day if day is not None and day < date.max else None


def _window(since: str, until: str, *, today: date) -> tuple[date, date]:
    """First and last day shown: the last ``DEFAULT_DAYS`` up to today unless the form says otherwise."""
    end_day = _parse_day(until) or today
    start_day = _parse_day(since)
    if start_day is None:
        try:
            start_day = end_day - timedelta(days=DEFAULT_DAYS - 1)
        except OverflowError:  # a window ending in the first days of year 1
            start_day = date.min
    return (start_day, end_day) if start_day <= end_day else (end_day, start_day)


def _periods(first: date, last: date) -> list[tuple[datetime, datetime]]:
    """Whole days, at most ``MOST_PERIODS`` periods of equal length (the last one may be shorter)."""
    days = (last - first).days + 1
    step = math.ceil(days / min(days, MOST_PERIODS))
    found = []
    for offset in range(0, days, step):
        a = first + timedelta(days=offset)
        b = a + timedelta(days=min(step, days - offset))
        found.append((datetime.combine(a, time(), tzinfo=UTC), datetime.combine(b, time(), tzinfo=UTC)))
    return found


def _period_figures(start: datetime, end: datetime, metrics: dict[str, Any] | None) -> dict[str, Any]:
    csat = (metrics or {}).get("csat") or {}
    counts = ((metrics or {}).get("sources") or {}).get("interactions", {}).get("by_channel") or {}
    return {
        "from": start,
        "to": end,
        "label": start.strftime("%d %b") if end - start <= timedelta(days=1) else _span_label(start, end),
        "average": csat.get("average"),
        "responses": csat.get("responses", 0),
        "by_channel": {c: int(counts.get(c, 0)) for c in labels.CHANNELS},
        "known": metrics is not None,
    }


def _span_label(start: datetime, end: datetime) -> str:
    last = (end - timedelta(days=1)).date()
    return start.strftime("%d %b") + ("" if last == start.date() else "\u2013" + last.strftime("%d %b"))


def _volume(series: list[dict[str, Any]]) -> dict[str, Any]:
    """Touchpoints per channel per period: the channels that had any, and the tallest period's total."""
    used = [c for c in labels.CHANNELS if any(p["by_channel"][c] for p in series)]
    top = max([sum(p["by_channel"].values()) for p in series] + [1])
    return {"channels": used, "top": top, "total": sum(sum(p["by_channel"].values()) for p in series)}


def _reply_targets(policy: dict[str, Any] | None) -> dict[str, float]:
    """Seconds a reply may take per channel, as the response-SLA policy says (its first step), so the dashboard's
    target moves when an admin edits the policy."""
    steps = ((policy or {}).get("document") or {}).get("steps") or []
    if not steps or not isinstance(steps[0], dict):
        return {}
    step = steps[0]
    found: dict[str, float] = {}
    per_channel = step.get("offset_by_channel")
    per_channel = per_channel if isinstance(per_channel, dict) else {}
    for channel in labels.CHANNELS:
        text = per_channel.get(channel, step.get("offset"))
        try:
            found[channel] = _DURATION.validate_python(text).total_seconds() if text else 0
        except ValidationError:
            continue
    return {c: s for c, s in found.items() if s > 0}


def _response_rows(metrics: dict[str, Any] | None, targets: dict[str, float]) -> dict[str, Any]:
    """First response per channel beside its target: bar lengths as a share of the longest figure drawn."""
    spread = (metrics or {}).get("first_response") or {}
    rows = []
    for channel, figures in spread.items():
        rows.append(
            {
                "channel": channel,
                "n": figures.get("n", 0),
                "p50": figures.get("p50_s"),
                "p90": figures.get("p90_s"),
                "target": targets.get(channel),
            }
        )
    top = max([v for r in rows for v in (r["p50"], r["p90"], r["target"]) if v] + [1])
    for row in rows:
        for key in ("p50", "p90", "target"):
            row[f"{key}_share"] = round(100 * (row[key] or 0) / top, 2)
        row["late"] = bool(row["target"] and row["p90"] and row["p90"] > row["target"])
    return {"rows": rows, "top": top}


FOLLOWUP_FIGURES = (
    ("On time", ("completed_on_time",)),
    ("Late", ("completed_late",)),
    ("Open and overdue", ("open_overdue",)),
    ("Escalated", ("escalated_followups",)),
    ("Reply SLA met", ("sla", "met")),
    ("Reply SLA missed", ("sla", "missed")),
)


def _followup_figures(followups: dict[str, Any] | None) -> list[tuple[str, float]]:
    """The follow-up counts the dashboard draws as bars, in the order a team lead reads them."""
    found: list[tuple[str, float]] = []
    for label, path in FOLLOWUP_FIGURES:
        value: Any = followups or {}
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            found.append((label, float(value)))
    return found


def _tile_links(scope: dict[str, str]) -> dict[str, str]:
    """The list behind each tile: the follow-up queue on the dashboard's team, agent (else anyone's: the figures are
    everyone's) and channel, and the policy whose follow-ups act on that figure (low scores recovered, complaints
    called back, replies owed, check-ins after a purchase, premium customers gone quiet)."""

    def queue(tab: str, policy: str = "") -> str:
        query = {"tab": tab, "policy": policy, "team": scope.get("team"), "assignee": scope.get("agent") or "any",
                 "channel": scope.get("channel")}  # fmt: skip
        return "/queue?" + urlencode({k: v for k, v in query.items() if v})

    return {
        "csat": queue("due_today", "low-score-recovery"),
        "nps": queue("due_today", "low-score-recovery"),
        "complaints": queue("due_today", "complaint-callback"),
        "sla": queue("overdue", SLA_POLICY),
        "overdue": queue("overdue"),
        "retention": queue("due_today", "purchase-2-2-2"),
        "pareto": queue("due_today", "premium-quiet"),
    }
