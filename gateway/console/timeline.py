"""The customer's page: the header, the journey strip, the timeline (live through the SSE stream), logging a
touchpoint, and one touchpoint with its message.

Like every console page these read and write through the gateway's ``/api/v1`` as the signed-in staff member
(gateway/console/client.py)."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response

from gateway.console import labels
from gateway.console.client import Answer
from gateway.console.duplicates import duplicates
from gateway.console.routes import (
    RECENT_COOKIE,
    RECENT_MAX,
    Desk,
    _day,
    _recent_ids,
    open_desk,
    posted_form,
    to_sign_in,
    unavailable,
)
from gateway.projection import interaction_item, to_json
from gateway.upstream import path_segment
from servicekit.clock import Clock

router = APIRouter(include_in_schema=False)

OPEN_STATUSES = ("scheduled", "due")
UPCOMING_SHOWN = 10  # open follow-ups in the "Upcoming" block; the header counts them all
OPEN_PICKED = 50  # open follow-ups offered as "the follow-up it fulfils"
THREADS_LOOKED_AT = 10  # the most recent threads of the customer whose status is read for the thread picker
CURRENCIES = ("EUR", "USD", "GBP", "CHF", "SEK", "NOK", "DKK", "PLN", "JPY", "CAD", "AUD")


async def _now(request: Request) -> datetime:
    clock: Clock = request.app.state.runtime.clock
    return clock.now()


Now = Annotated[datetime, Depends(_now)]


def agent_zone(desk: Desk) -> ZoneInfo:
    """The staff member's own time zone (their profile's), UTC when they have none."""
    try:
        return ZoneInfo(desk.principal.timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_input(moment: datetime, zone: ZoneInfo) -> str:
    """A time as a ``datetime-local`` field holds it: the wall clock in ``zone``, to the minute."""
    return moment.astimezone(zone).strftime("%Y-%m-%dT%H:%M")


def _timeline_params(channel: str, kind: str, since: str, until: str) -> dict[str, Any]:
    return {
        "channel": channel if channel in labels.CHANNELS else None,
        "kinds": kind if kind in labels.KINDS else None,
        "since": _day(since),
        "until": _day(until, end=True),
    }


async def _timeline(desk: Desk, contact_id: uuid.UUID, params: dict[str, Any], cursor: str | None) -> Answer:
    return await desk.api.get(f"/contacts/{contact_id}/timeline", limit=30, cursor=cursor, **params)


def history(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What happened, by when it happened: an open follow-up has not happened yet (its time on the timeline is
    when it is due), so it stands in the "Upcoming" block instead. A closed one is here, at the time it closed."""
    return [i for i in items if not (i.get("kind") == "followup" and i.get("type") in OPEN_STATUSES)]


@dataclass
class OpenWork:
    """The customer's open follow-ups (soonest due first) and open threads, for the "Upcoming" block and the
    logging form's pickers."""

    followups: list[dict[str, Any]] = field(default_factory=list)
    overdue: set[str] = field(default_factory=set)
    threads: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None


async def open_followups(desk: Desk, contact_id: uuid.UUID, now: datetime) -> OpenWork:
    answers = await asyncio.gather(
        *(desk.api.get("/followups", contact_id=contact_id, status=s, sort="due_at", limit=OPEN_PICKED)
          for s in OPEN_STATUSES)
    )  # fmt: skip
    work = OpenWork()
    failed = next((a for a in answers if not a.ok), None)
    if failed is not None:
        work.problem = failed.problem
    found = [i for a in answers if a.ok for i in a.body["items"]]
    found.sort(key=lambda i: (labels.parse_time(i.get("due_at")) or now, str(i["id"])))
    work.followups = found
    work.overdue = {
        str(i["id"])
        for i in found
        if (overdue_at := labels.parse_time(i.get("overdue_at"))) is not None and overdue_at <= now
    }
    return work


async def open_threads(desk: Desk, contact_id: uuid.UUID) -> list[dict[str, Any]]:
    """The customer's open threads, most recently active first: the threads of their latest touchpoints whose
    status the interactions service says is open (a resolved one takes a new touchpoint as a new thread)."""
    recent = await desk.api.get("/interactions", contact_id=contact_id, limit=100)
    if not recent.ok:
        return []
    latest: dict[str, dict[str, Any]] = {}
    for touchpoint in recent.body["items"]:
        if touchpoint.get("thread_id") and touchpoint["thread_id"] not in latest:
            latest[touchpoint["thread_id"]] = touchpoint
    ids = list(latest)[:THREADS_LOOKED_AT]
    threads = await desk.api.get_many([f"/threads/{path_segment(i)}" for i in ids])
    found = []
    for thread_id, answer in zip(ids, threads, strict=True):
        if not answer.ok or answer.body.get("status") != "open":
            continue
        items = answer.body.get("items") or []
        subject = next((i.get("subject") for i in items if i.get("subject")), None)
        found.append(
            {
                "id": thread_id,
                "subject": subject or labels.words(answer.body.get("type")),
                "channel": answer.body.get("channel"),
                "last_at": latest[thread_id]["occurred_at"],
            }
        )
    return found


async def open_work(desk: Desk, contact_id: uuid.UUID, now: datetime) -> OpenWork:
    if not desk.may_log:
        return await open_followups(desk, contact_id, now)
    work, threads = await asyncio.gather(open_followups(desk, contact_id, now), open_threads(desk, contact_id))
    work.threads = threads
    return work


def journey_strip(journey: dict[str, Any] | None, header: dict[str, Any], now: datetime) -> dict[str, Any] | None:
    """The journey's stages as the strip draws them, from the first thing known of the customer: a touchpoint
    older than the profile (history imported, or logged before the customer was entered) stretches the first
    stage back to it, as the journey already counts such touchpoints in the first stage."""
    if not journey or not journey.get("stages"):
        return None
    stages = journey["stages"]
    recorded = labels.parse_time(stages[0]["entered_at"]) or now
    first_touch = labels.parse_time(header.get("first_touch_at"))
    start = min(recorded, first_touch) if first_touch else recorded
    segments = []
    for index, stage in enumerate(stages):
        begin = start if index == 0 else labels.parse_time(stage["entered_at"]) or now
        end = labels.parse_time(stage.get("left_at")) or now
        segments.append(
            {
                "stage": stage["stage"],
                "begin": begin,
                "entered_at": stage["entered_at"],
                "seconds": max(0.0, (end - begin).total_seconds()),
                "touchpoints": stage["touchpoints"],
            }
        )
    total = sum(s["seconds"] for s in segments) or 1.0
    x = 0.0
    for segment in segments:
        segment["x"] = x
        segment["width"] = max(1000 * segment["seconds"] / total, 4)
        x += segment["width"]
    return {"start": start, "end": now, "segments": segments, "stretched": start < recorded, "span": x or 1000}


@router.get("/customers/{contact_id}")
async def customer_page(
    request: Request,
    contact_id: uuid.UUID,
    now: Now,
    channel: Annotated[str, Query(max_length=20)] = "",
    kind: Annotated[str, Query(max_length=20)] = "",
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
    merged_from: uuid.UUID | None = None,
) -> Response:
    desk = await open_desk(request)
    if desk is None:
        return to_sign_in(request)
    params = _timeline_params(channel, kind, since, until)
    timeline = await _timeline(desk, contact_id, params, cursor)
    if timeline.status == 410:  # erased: the page says so, and shows nothing of who they were
        return desk.render("customer_erased.html", status=410, contact_id=contact_id)
    if not timeline.ok:
        return unavailable(desk, timeline, "This customer")
    surviving = timeline.body["contact"]["profile"]["id"]
    if surviving != str(contact_id):  # merged away: the survivor's page is the customer's page
        return RedirectResponse(f"/customers/{surviving}?merged_from={contact_id}", status_code=303)
    header = timeline.body["contact"]
    journey, similar, work = await asyncio.gather(
        desk.api.get(f"/contacts/{contact_id}/journey"),
        duplicates(desk.api, header["profile"]),
        open_work(desk, contact_id, now),
    )
    filters = {"channel": channel, "kind": kind, "since": since, "until": until}
    zone = agent_zone(desk)
    response = desk.render(
        "customer.html",
        header=header,
        items=history(timeline.body["items"]),
        work=work,
        upcoming=work.followups[:UPCOMING_SHOWN],
        strip=journey_strip(journey.body if journey.ok else None, header, now),
        duplicates=similar,
        merged_from=merged_from,
        filters=filters,
        filtered=any(filters.values()),
        more_query=_more_query(filters, timeline.body.get("next_cursor")),
        fragment_query=urlencode({k: v for k, v in filters.items() if v}),
        idempotency_key=str(uuid.uuid4()),
        zone=zone.key,
        when_now=local_input(now, zone),
        currencies=CURRENCIES,
        now=now,
    )
    recent = [str(contact_id), *[i for i in _recent_ids(request) if i != str(contact_id)]][:RECENT_MAX]
    response.set_cookie(RECENT_COOKIE, ".".join(recent), max_age=90 * 86400, httponly=True, samesite="lax")
    return response


def _more_query(filters: dict[str, str], cursor: str | None) -> str | None:
    if not cursor:
        return None
    return urlencode({**{k: v for k, v in filters.items() if v}, "cursor": cursor})


@router.get("/customers/{contact_id}/timeline")
async def timeline_fragment(
    request: Request,
    contact_id: uuid.UUID,
    now: Now,
    channel: Annotated[str, Query(max_length=20)] = "",
    kind: Annotated[str, Query(max_length=20)] = "",
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> Response:
    """Timeline items as HTML for the page's script: the next page on scroll, the newest on a live event."""
    desk = await open_desk(request)
    if desk is None:
        return Response(status_code=401)
    timeline = await _timeline(desk, contact_id, _timeline_params(channel, kind, since, until), cursor)
    if not timeline.ok:
        return Response(timeline.problem, status_code=timeline.status, media_type="text/plain")
    filters = {"channel": channel, "kind": kind, "since": since, "until": until}
    return desk.render(
        "_items.html",
        items=history(timeline.body["items"]),
        more_query=_more_query(filters, timeline.body.get("next_cursor")),
        contact_id=contact_id,
        now=now,
    )


@router.get("/customers/{contact_id}/summary")
async def summary_fragment(request: Request, contact_id: uuid.UUID, now: Now) -> Response:
    """The page's parts that change with every event about the customer (the header's figures, the last touch
    per channel, the "Upcoming" block), as HTML for the page's script to swap in when the stream says so."""
    desk = await open_desk(request)
    if desk is None:
        return Response(status_code=401)
    timeline, work = await asyncio.gather(
        desk.api.get(f"/contacts/{contact_id}/timeline", limit=1), open_followups(desk, contact_id, now)
    )
    if not timeline.ok:
        return Response(timeline.problem, status_code=timeline.status, media_type="text/plain")
    return desk.render(
        "_customer_live.html",
        header=timeline.body["contact"],
        work=work,
        upcoming=work.followups[:UPCOMING_SHOWN],
        now=now,
    )


class Refused(ValueError):
    """A logging form's field the console itself refuses, with the words to show the agent."""


def occurred_at(value: str, *, zone: ZoneInfo, now: datetime) -> datetime:
    """When the touchpoint happened: the form's wall-clock time in the agent's zone (an ISO time with an offset
    is taken as it is), now when left empty; never in the future."""
    if not value:
        return now
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Refused(f"When: {value!r} is not a date and time.") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    if moment > now:
        raise Refused(
            f"When: {moment.astimezone(zone):%d %b %Y %H:%M} ({zone.key}) is in the future. Log what has "
            "happened; what is still to come is a follow-up."
        )
    return moment.astimezone(UTC)


def _number(value: str, what: str) -> float | None:
    if not value:
        return None
    try:
        number = float(value.replace(",", "."))
    except ValueError:
        raise Refused(f"{what}: {value!r} is not a number.") from None
    if not math.isfinite(number) or number < 0:
        raise Refused(f"{what}: a number of 0 or more.")
    return number


def touchpoint_from_form(
    field: dict[str, str], *, contact_id: uuid.UUID, agent: str | None, zone: ZoneInfo, now: datetime
) -> dict[str, Any]:
    """The touchpoint the logging form describes, as the API takes it (no CSAT or NPS: scores come from the
    customer's survey answers, and the API refuses them from staff)."""
    minutes = _number(field.get("duration_min", ""), "Duration (minutes)")
    amount = _number(field.get("amount", ""), "Amount")
    currency = field.get("currency", "").upper() or None
    if amount is not None and currency is None:
        raise Refused("Amount: say its currency too (e.g. EUR).")
    thread = field.get("thread", "")
    thread_id = f"desk-{uuid.uuid4().hex[:16]}" if thread == "new" else thread or None
    touchpoint: dict[str, Any] = {
        "contact_id": str(contact_id),
        "channel": field.get("channel"),
        "direction": field.get("direction"),
        "type": field.get("type"),
        "occurred_at": occurred_at(field.get("occurred_at", ""), zone=zone, now=now).isoformat(),
        "agent": agent,
        "subject": field.get("subject") or None,
        "body": field.get("body") or None,
        "outcome": field.get("outcome") or None,
        "thread_id": thread_id,
        "followup_id": field.get("followup_id") or None,
        "duration_s": round(minutes * 60) if minutes is not None else None,
        "amount": amount,
        "currency": currency if amount is not None else None,
    }
    return {k: v for k, v in touchpoint.items() if v is not None}


@router.post("/customers/{contact_id}/touchpoints")
async def log_touchpoint(request: Request, contact_id: uuid.UUID, now: Now) -> Response:
    posted = await posted_form(request)
    if isinstance(posted, Response):
        return posted
    desk, field = posted
    from_script = request.headers.get("x-console") == "fragment"
    zone = agent_zone(desk)
    try:
        touchpoint = touchpoint_from_form(
            field, contact_id=contact_id, agent=desk.principal.handle or desk.principal.name, zone=zone, now=now
        )
    except Refused as refused:
        if from_script:
            return Response(str(refused), status_code=422, media_type="text/plain")
        return desk.render("error.html", status=422, title="The touchpoint was not logged", message=str(refused))
    key = field.get("idempotency_key") or str(uuid.uuid4())
    answer = await desk.api.post("/interactions", json=touchpoint, headers={"Idempotency-Key": key})
    if not answer.ok:
        if from_script:
            return Response(answer.problem, status_code=answer.status, media_type="text/plain")
        return unavailable(desk, answer, "The touchpoint")
    if from_script:
        # The item as the timeline API will give it out (the projection's JSON: no body, times as text).
        item = json.loads(to_json(interaction_item(answer.body)))
        response = desk.render("_items.html", items=[item], more_query=None, contact_id=contact_id, now=now, status=201)
        response.headers["X-Console-Next-Key"] = str(uuid.uuid4())
        # The form's "when" goes back to now for the next touchpoint (a backdated one is not the default after).
        response.headers["X-Console-Now"] = local_input(now, zone)
        if field.get("thread") == "new":
            response.headers["X-Console-New-Thread"] = touchpoint["thread_id"]
        return response
    return RedirectResponse(f"/customers/{contact_id}", status_code=303)


async def _touchpoint(desk: Desk, contact_id: uuid.UUID, interaction_id: uuid.UUID) -> Answer | Response:
    """The touchpoint with its body, or the answer to give instead: an error page, or the touchpoint's own
    address when it is filed under another customer now (merged since the link was drawn)."""
    touchpoint = await desk.api.get(f"/interactions/{interaction_id}")
    if not touchpoint.ok:
        return touchpoint
    filed_under = str(touchpoint.body["contact_id"])
    if filed_under != str(contact_id):
        return RedirectResponse(f"/customers/{filed_under}/touchpoints/{interaction_id}", status_code=303)
    return touchpoint


@router.get("/customers/{contact_id}/touchpoints/{interaction_id}")
async def touchpoint_page(request: Request, contact_id: uuid.UUID, interaction_id: uuid.UUID, now: Now) -> Response:
    """One touchpoint with its message: the timeline has every field of it but the body, which only the
    interactions service keeps (read here through ``GET /api/v1/interactions/{id}``, as this staff member)."""
    desk = await open_desk(request)
    if desk is None:
        return to_sign_in(request)
    touchpoint = await _touchpoint(desk, contact_id, interaction_id)
    if not isinstance(touchpoint, Answer):
        return touchpoint
    if not touchpoint.ok:
        return unavailable(desk, touchpoint, "This touchpoint")
    contact = await desk.api.get(f"/contacts/{contact_id}")
    return desk.render(
        "customer_touchpoint.html",
        touchpoint=touchpoint.body,
        title=interaction_item(touchpoint.body)["title"],  # the timeline item's title, so both read the same
        contact=contact.body if contact.ok else None,
        now=now,
    )


@router.get("/customers/{contact_id}/touchpoints/{interaction_id}/message")
async def message_fragment(request: Request, contact_id: uuid.UUID, interaction_id: uuid.UUID) -> Response:
    """The touchpoint's message as HTML for the page's script, to show it under the timeline item."""
    desk = await open_desk(request)
    if desk is None:
        return Response(status_code=401)
    touchpoint = await _touchpoint(desk, contact_id, interaction_id)
    if not isinstance(touchpoint, Answer):  # moved to another customer: the script opens the full page instead
        return Response("The touchpoint is filed under another customer now.", status_code=409,
                        media_type="text/plain")  # fmt: skip
    if not touchpoint.ok:
        return Response(touchpoint.problem, status_code=touchpoint.status, media_type="text/plain")
    return desk.render("_message.html", touchpoint=touchpoint.body)
