"""The service dashboard: service quality over a period, as tiles and charts over the gateway's metrics API."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from gateway.console.routes import open_desk, to_sign_in

router = APIRouter(include_in_schema=False)


@router.get("/dashboard")
async def dashboard_page(
    request: Request,
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
) -> Response:
    desk = await open_desk(request)
    if desk is None:
        return to_sign_in(request)
    today = datetime.now(UTC).date()
    end_day = _parse_day(until) or today
    start_day = _parse_day(since) or end_day - timedelta(days=29)
    if start_day > end_day:
        start_day, end_day = end_day, start_day
    start = datetime.combine(start_day, time(), tzinfo=UTC)
    end = datetime.combine(end_day + timedelta(days=1), time(), tzinfo=UTC)
    metrics = await desk.api.get("/metrics/service", since=start.isoformat(), until=end.isoformat())
    buckets = _buckets(start, end, 6)
    per_bucket = [await desk.api.get("/metrics/service", since=a.isoformat(), until=b.isoformat()) for a, b in buckets]
    csat_series = [
        {"from": a, "to": b, "average": (m.body.get("csat") or {}).get("average") if m.ok else None,
         "responses": (m.body.get("csat") or {}).get("responses", 0) if m.ok else 0}
        for (a, b), m in zip(buckets, per_bucket, strict=True)
    ]  # fmt: skip
    return desk.render(
        "dashboard.html",
        metrics=metrics.body if metrics.ok else None,
        problem=None if metrics.ok else metrics.problem,
        since=start_day.isoformat(),
        until=end_day.isoformat(),
        csat_series=csat_series,
        followup_figures=_followup_figures(metrics.body.get("followups") if metrics.ok else None),
    )


def _parse_day(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _buckets(start: datetime, end: datetime, count: int) -> list[tuple[datetime, datetime]]:
    step = (end - start) / count
    return [(start + step * i, start + step * (i + 1)) for i in range(count)]


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
