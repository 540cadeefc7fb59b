"""Service quality: CSAT, NPS, first response, SLAs, complaints, follow-ups, retention and the 80/20 view."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query

from gateway.api.common import AUTH_ERRORS
from gateway.auth import MetricsRead
from gateway.deps import ServicesDep
from gateway.schemas import ServiceMetrics
from servicekit.channels import Channel
from servicekit.clock import InUtc

router = APIRouter(prefix="/metrics", tags=["metrics"], responses=AUTH_ERRORS)


def _pick(source: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in source:
            return source[name]
    return None


@router.get("/service", response_model=ServiceMetrics, summary="Service quality over a period")
async def service_metrics(
    principal: MetricsRead,
    services: ServicesDep,
    since: InUtc | None = None,
    until: InUtc | None = None,
    channel: Channel | None = None,
    team: Annotated[str | None, Query(max_length=200)] = None,
    agent: Annotated[
        str | None,
        Query(
            max_length=200,
            description="One staff member (handle): the touchpoints they logged and replied with, "
            "the follow-ups given to them",
        ),
    ] = None,
) -> ServiceMetrics:
    """Service quality over a period (response times, SLAs met and missed, follow-ups done and overdue), overall and
    per channel, team and agent."""
    params = {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "channel": channel,
        "team": team,
    }
    touch, follow = await asyncio.gather(
        services.interactions.json("GET", "/v1/stats", caller=principal.id, params={**params, "agent": agent}),
        services.followups.json(
            "GET", "/v1/followups/stats", caller=principal.id, params={**params, "assignee": agent}
        ),
    )
    return ServiceMetrics(
        since=since,
        until=until,
        channel=channel,
        team=team,
        agent=agent,
        csat=_pick(touch, "csat"),
        nps=_pick(touch, "nps"),
        first_response=_pick(touch, "first_response", "first_response_time", "first_response_s"),
        complaints=_pick(touch, "complaints"),
        sla=_pick(follow, "sla", "response_sla"),
        followups=follow,
        retention=_pick(touch, "retention"),
        pareto=_pick(touch, "pareto"),
        sources={"interactions": touch, "followups": follow},
    )
