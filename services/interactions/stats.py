"""Service-quality figures over a time window: what the gateway's metrics and dashboard show."""

from __future__ import annotations

import itertools
import math
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from servicekit.clock import as_utc
from servicekit.problems import Unprocessable
from services.interactions.models import Thread, Touchpoint
from services.interactions.service import utc_param

DEFAULT_WINDOW = timedelta(days=30)
REPEAT_PURCHASE_WITHIN = timedelta(days=90)
PARETO_SHARE = 0.2


def nearest_rank(values: list[float], q: float) -> float | None:
    """The q-quantile by nearest rank (a value that occurred, never an interpolation)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def spread(values: list[float]) -> dict[str, Any]:
    p50, p90 = nearest_rank(values, 0.5), nearest_rank(values, 0.9)
    return {
        "n": len(values),
        "p50_s": round(p50, 3) if p50 is not None else None,
        "p90_s": round(p90, 3) if p90 is not None else None,
    }


def first_responses(
    rows: list[Any], channel: str | None, team: str | None, agent: str | None = None
) -> dict[str, list[float]]:
    """Per channel of the inbound touchpoint: seconds to the next outbound one on the same thread.

    ``rows`` are (thread_id, direction, channel, team, agent, occurred_at) ordered by thread then time.
    The channel filter applies to the customer's inbound touchpoint, the team and agent filters to the reply."""
    found: dict[str, list[float]] = defaultdict(list)
    waiting: tuple[str, datetime] | None = None
    current_thread: str | None = None
    for thread_id, direction, row_channel, row_team, row_agent, at in rows:
        if thread_id != current_thread:
            current_thread, waiting = thread_id, None
        at = as_utc(at)
        if direction == "inbound" and waiting is None:
            waiting = (row_channel, at)
        elif direction == "outbound" and waiting is not None:
            inbound_channel, since = waiting
            waiting = None
            wanted_reply = (team is None or row_team == team) and (agent is None or row_agent == agent)
            if (channel is None or inbound_channel == channel) and wanted_reply:
                found[inbound_channel].append((at - since).total_seconds())
    return found


def retention(purchases: list[tuple[uuid.UUID, datetime]]) -> dict[str, Any]:
    """Share of contacts with a purchase who bought again within 90 days of an earlier purchase."""
    by_contact: dict[uuid.UUID, list[datetime]] = defaultdict(list)
    for contact_id, at in purchases:
        by_contact[contact_id].append(as_utc(at))
    repeat = 0
    for times in by_contact.values():
        times.sort()
        if any(b - a <= REPEAT_PURCHASE_WITHIN for a, b in itertools.pairwise(times)):
            repeat += 1
    purchasers = len(by_contact)
    return {
        "purchasers": purchasers,
        "repeat_within_90_days": repeat,
        "share": round(repeat / purchasers, 4) if purchasers else None,
    }


def pareto(amounts: list[Decimal]) -> dict[str, Any]:
    """Share of the purchase amount that comes from the top 20% of contacts by amount."""
    ordered = sorted((a for a in amounts if a is not None), reverse=True)
    total = sum(ordered, Decimal(0))
    top = math.ceil(len(ordered) * PARETO_SHARE)
    top_amount = sum(ordered[:top], Decimal(0))
    return {
        "contacts": len(ordered),
        "top_contacts": top,
        "total_amount": float(total),
        "top_amount": float(top_amount),
        "top_share": round(float(top_amount / total), 4) if total > 0 else None,
    }


async def compute_stats(
    *,
    session: AsyncSession,
    now: datetime,
    since: datetime | None = None,
    until: datetime | None = None,
    channel: str | None = None,
    team: str | None = None,
    agent: str | None = None,
) -> dict[str, Any]:
    until = utc_param("until", until) if until is not None else now
    try:
        since = utc_param("since", since) if since is not None else until - DEFAULT_WINDOW
    except OverflowError:
        raise Unprocessable("until is too early for the default 30-day window; give since.", field="since") from None
    in_window = [col(Touchpoint.occurred_at) >= since, col(Touchpoint.occurred_at) < until]
    filters = list(in_window)
    if channel:
        filters.append(col(Touchpoint.channel) == channel)
    if team:
        filters.append(col(Touchpoint.team) == team)
    if agent:
        filters.append(col(Touchpoint.agent) == agent)

    async def grouped(column: Any, *extra: Any) -> dict[Any, int]:
        query = select(column, func.count()).where(*filters, *extra).group_by(column)
        return {key: int(n) for key, n in (await session.execute(query)).all()}

    by_channel = await grouped(col(Touchpoint.channel))
    by_type = await grouped(col(Touchpoint.type))
    by_direction = await grouped(col(Touchpoint.direction))

    csat_counts = await grouped(col(Touchpoint.csat), col(Touchpoint.csat).is_not(None))
    csat_n = sum(csat_counts.values())
    csat = {
        "responses": csat_n,
        "average": round(sum(k * v for k, v in csat_counts.items()) / csat_n, 3) if csat_n else None,
        "distribution": {str(score): csat_counts.get(score, 0) for score in range(1, 6)},
    }
    nps_counts = await grouped(col(Touchpoint.nps), col(Touchpoint.nps).is_not(None))
    nps_n = sum(nps_counts.values())
    promoters = sum(v for k, v in nps_counts.items() if k >= 9)
    detractors = sum(v for k, v in nps_counts.items() if k <= 6)
    nps = {
        "responses": nps_n,
        "promoters": promoters,
        "passives": nps_n - promoters - detractors,
        "detractors": detractors,
        "score": round((promoters - detractors) * 100 / nps_n, 1) if nps_n else None,
    }

    threaded = (
        await session.execute(
            select(
                col(Touchpoint.thread_id),
                col(Touchpoint.direction),
                col(Touchpoint.channel),
                col(Touchpoint.team),
                col(Touchpoint.agent),
                col(Touchpoint.occurred_at),
            )
            .where(*in_window, col(Touchpoint.thread_id).is_not(None), col(Touchpoint.direction) != "internal")
            .order_by(col(Touchpoint.thread_id), col(Touchpoint.occurred_at), col(Touchpoint.id))
        )
    ).all()
    first_response = {
        ch: spread(values) for ch, values in sorted(first_responses(list(threaded), channel, team, agent).items())
    }

    # A complaint is opened by its thread's first complaint touchpoint (or by itself, outside any thread).
    complaint = col(Touchpoint.type) == "complaint"
    unthreaded = await session.scalar(
        select(func.count()).where(*filters, complaint, col(Touchpoint.thread_id).is_(None))
    )
    first_complaints = (
        select(col(Touchpoint.thread_id), func.min(col(Touchpoint.occurred_at)).label("first_at"))
        .where(complaint, col(Touchpoint.thread_id).is_not(None), *filters[2:])
        .group_by(col(Touchpoint.thread_id))
        .subquery()
    )
    threaded_opened = await session.scalar(
        select(func.count())
        .select_from(first_complaints)
        .where(first_complaints.c.first_at >= since, first_complaints.c.first_at < until)
    )
    resolved_in_window = [
        col(Thread.status) == "resolved",
        col(Thread.resolved_at) >= since,
        col(Thread.resolved_at) < until,
    ]
    resolved_complaints = await session.scalar(
        select(func.count()).where(
            *resolved_in_window,
            col(Thread.thread_id).in_(select(col(Touchpoint.thread_id)).where(complaint, *filters[2:])),
        )
    )
    resolution_rows = (
        await session.execute(
            select(col(Thread.resolved_at), func.min(col(Touchpoint.occurred_at)))
            .join(Touchpoint, col(Touchpoint.thread_id) == col(Thread.thread_id))
            .where(*resolved_in_window)
            .group_by(col(Thread.thread_id), col(Thread.resolved_at))
        )
    ).all()
    resolution = spread([(as_utc(done) - as_utc(opened)).total_seconds() for done, opened in resolution_rows if done])

    purchase = col(Touchpoint.type) == "purchase"
    purchases = (
        await session.execute(select(col(Touchpoint.contact_id), col(Touchpoint.occurred_at)).where(*filters, purchase))
    ).all()
    amounts = (
        await session.scalars(
            select(func.sum(col(Touchpoint.amount)))
            .where(*filters, purchase, col(Touchpoint.amount).is_not(None))
            .group_by(col(Touchpoint.contact_id))
        )
    ).all()
    sentiment_avg, sentiment_n = (
        await session.execute(
            select(func.avg(col(Touchpoint.sentiment)), func.count(col(Touchpoint.sentiment))).where(*filters)
        )
    ).one()

    return {
        "since": since,
        "until": until,
        "channel": channel,
        "team": team,
        "agent": agent,
        "total": sum(by_channel.values()),
        "by_channel": by_channel,
        "by_type": by_type,
        "by_direction": by_direction,
        "csat": csat,
        "nps": nps,
        "first_response": first_response,
        "complaints": {
            "opened": int(unthreaded or 0) + int(threaded_opened or 0),
            "resolved": int(resolved_complaints or 0),
        },
        "time_to_resolution": resolution,
        "retention": retention([(c, at) for c, at in purchases]),
        "pareto": pareto([Decimal(str(a)) for a in amounts if a is not None]),
        "sentiment": {
            "n": int(sentiment_n or 0),
            "average": round(float(sentiment_avg), 4) if sentiment_avg is not None else None,
        },
    }
