"""The customer's page: the header, the journey strip, the timeline (live through the SSE stream), logging a
touchpoint, and one touchpoint with its message.

Like every console page these read and write through the gateway's ``/api/v1`` as the signed-in staff member
(gateway/console/client.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
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

router = APIRouter(include_in_schema=False)


def _timeline_params(channel: str, kind: str, since: str, until: str) -> dict[str, Any]:
    return {
        "channel": channel if channel in labels.CHANNELS else None,
        "kinds": kind if kind in labels.KINDS else None,
        "since": _day(since),
        "until": _day(until, end=True),
    }


async def _timeline(desk: Desk, contact_id: uuid.UUID, params: dict[str, Any], cursor: str | None) -> Answer:
    return await desk.api.get(f"/contacts/{contact_id}/timeline", limit=30, cursor=cursor, **params)


@router.get("/customers/{contact_id}")
async def customer_page(
    request: Request,
    contact_id: uuid.UUID,
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
    journey, similar = await asyncio.gather(
        desk.api.get(f"/contacts/{contact_id}/journey"), duplicates(desk.api, timeline.body["contact"]["profile"])
    )
    filters = {"channel": channel, "kind": kind, "since": since, "until": until}
    response = desk.render(
        "customer.html",
        header=timeline.body["contact"],
        page=timeline.body,
        journey=journey.body if journey.ok else None,
        duplicates=similar,
        merged_from=merged_from,
        filters=filters,
        filtered=any(filters.values()),
        more_query=_more_query(filters, timeline.body.get("next_cursor")),
        fragment_query=urlencode({k: v for k, v in filters.items() if v}),
        idempotency_key=str(uuid.uuid4()),
        now=datetime.now(UTC),
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
        items=timeline.body["items"],
        more_query=_more_query(filters, timeline.body.get("next_cursor")),
        contact_id=contact_id,
        now=datetime.now(UTC),
    )


@router.post("/customers/{contact_id}/touchpoints")
async def log_touchpoint(request: Request, contact_id: uuid.UUID) -> Response:
    posted = await posted_form(request)
    if isinstance(posted, Response):
        return posted
    desk, field = posted
    occurred = labels.parse_time(field.get("occurred_at")) or datetime.now(UTC)
    touchpoint: dict[str, Any] = {
        "contact_id": str(contact_id),
        "channel": field.get("channel"),
        "direction": field.get("direction"),
        "type": field.get("type"),
        "occurred_at": occurred.isoformat(),
        "agent": desk.principal.handle or desk.principal.name,
        "subject": field.get("subject") or None,
        "body": field.get("body") or None,
        "thread_id": field.get("thread_id") or None,
    }
    if field.get("csat"):
        touchpoint["csat"] = int(field["csat"]) if field["csat"].isdigit() else field["csat"]
    key = field.get("idempotency_key") or str(uuid.uuid4())
    answer = await desk.api.post("/interactions", json=touchpoint, headers={"Idempotency-Key": key})
    from_script = request.headers.get("x-console") == "fragment"
    if not answer.ok:
        if from_script:
            return Response(answer.problem, status_code=answer.status, media_type="text/plain")
        return unavailable(desk, answer, "The touchpoint")
    if from_script:
        # The item as the timeline API will give it out (the projection's JSON: no body, times as text).
        item = json.loads(to_json(interaction_item(answer.body)))
        response = desk.render(
            "_items.html", items=[item], more_query=None, contact_id=contact_id, now=datetime.now(UTC), status=201
        )
        response.headers["X-Console-Next-Key"] = str(uuid.uuid4())
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
async def touchpoint_page(request: Request, contact_id: uuid.UUID, interaction_id: uuid.UUID) -> Response:
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
        now=datetime.now(UTC),
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
