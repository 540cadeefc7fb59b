"""The customer's timeline, its live stream, and the journey map."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, Field

from gateway.api.common import AUTH_ERRORS, CONTACT_ERRORS, ok, problem
from gateway.auth import Authenticator, TimelineRead
from gateway.deps import TimelineDep
from gateway.live import LiveFeed, Stream
from gateway.schemas import Journey, TimelinePage
from gateway.timeline import KINDS, Filters, Position, Timeline, position_of, to_json
from gateway.upstream import UpstreamAnswer
from servicekit.clock import InUtc
from servicekit.cursors import InvalidCursor
from servicekit.problems import ProblemError, Unprocessable

router = APIRouter(prefix="/contacts", tags=["timeline"], responses=AUTH_ERRORS)

STREAM_PAGE = 50
STREAM_SAFETY_POLL_S = 15.0  # re-read even without a NATS message, in case one was missed
# A revocation, a disabled user or a sign-out ends a stream at once through its announcement; re-checking the
# credential this often ends it within 5 s even when NATS did not deliver the announcement.
STREAM_RECHECK_S = 4.0


_KIND = f"\\s*(?:{'|'.join(KINDS)})?\\s*"
# What the code below takes (names of KINDS, blanks and empty items ignored), so the document says it too.
KINDS_PATTERN = f"^{_KIND}(?:,{_KIND})*$"
TIMELINE_PATH = "/api/v1/contacts/{contact_id}/timeline"


def document_timeline_limit(document: dict[str, Any], *, max_limit: int) -> None:
    """The largest page is a setting (GATEWAY_TIMELINE_MAX_LIMIT): the document states the one in force."""
    for parameter in document["paths"][TIMELINE_PATH]["get"]["parameters"]:
        if parameter["name"] == "limit":
            parameter["schema"]["maximum"] = max_limit


class TimelineQuery(BaseModel):
    """The timeline's query parameters, validated as one model (one validation per request, not one per
    parameter: the timeline is the gateway's most read page)."""

    kinds: str | None = Field(
        None, max_length=100, pattern=KINDS_PATTERN, description="Comma list of interaction,followup,contact_event"
    )
    channel: str | None = Field(None, max_length=20)
    type: str | None = Field(None, max_length=30, description="Touchpoint type, follow-up status or event")
    since: InUtc | None = None
    until: InUtc | None = None
    limit: int = Field(50, ge=1)
    cursor: str | None = Field(None, max_length=1024)

    def filters(self) -> Filters:
        chosen = tuple(KINDS)
        if self.kinds:
            wanted = [k.strip() for k in self.kinds.split(",") if k.strip()]
            unknown = [k for k in wanted if k not in KINDS]
            if unknown:
                raise Unprocessable(f"Unknown kinds {unknown}; use {', '.join(KINDS)}.", field="kinds")
            chosen = tuple(k for k in KINDS if k in wanted)
        return Filters(kinds=chosen, channel=self.channel, type=self.type, since=self.since, until=self.until)


@router.get(
    "/{contact_id}/timeline",
    summary="Everything that happened to the customer and is due, newest first",
    responses={**ok(TimelinePage), **CONTACT_ERRORS, 400: problem("Invalid or tampered cursor")},
)
async def get_timeline(
    contact_id: uuid.UUID,
    principal: TimelineRead,
    query: Annotated[TimelineQuery, Query()],
    request: Request,
) -> Response:
    """Touchpoints, follow-ups and stage changes of one customer in one list, newest first, paged with a signed cursor,
    read from the gateway's projection of the services' events."""
    max_limit = request.app.state.settings.timeline_max_limit
    if query.limit > max_limit:
        raise Unprocessable(f"limit must be at most {max_limit}.", field="limit", max_limit=max_limit)
    timeline: Timeline = request.app.state.timeline
    body = await timeline.render(
        contact_id=contact_id, filters=query.filters(), limit=query.limit, cursor=query.cursor, caller=principal.id
    )
    return Response(body, media_type="application/json")


@router.get(
    "/{contact_id}/journey",
    response_model=Journey,
    summary="The journey map: stages over time, touchpoints per stage and channel, time in each stage",
    responses=CONTACT_ERRORS,
)
async def get_journey(contact_id: uuid.UUID, principal: TimelineRead, timeline: TimelineDep) -> dict[str, Any]:
    """The customer's journey: each stage the contact went through, when and for how long, with the touchpoints per
    stage and channel."""
    contact = await timeline.resolve_contact(contact_id=contact_id, caller=principal.id)
    return await timeline.journey(contact=contact, caller=principal.id)


async def _stream_contact(contact_id: uuid.UUID, principal: TimelineRead, timeline: TimelineDep) -> dict[str, Any]:
    # Resolved before the stream starts, so an unknown or erased contact is a problem answer, not a stream.
    return await timeline.resolve_contact(contact_id=contact_id, caller=principal.id)


async def _stream_slot(
    request: Request,
    principal: TimelineRead,
    timeline: TimelineDep,
    contact: Annotated[dict[str, Any], Depends(_stream_contact)],
) -> AsyncIterator[Stream]:
    """One of the caller's streams in this process (429 above GATEWAY_STREAMS_PER_CALLER), given back when the
    response ends (a dependency's exit runs after the streamed response, however it ends)."""
    surviving = uuid.UUID(contact["id"])
    feed: LiveFeed = request.app.state.live
    credentials = {principal.id} | ({str(principal.session_id)} if principal.session_id else set())
    aliases = [str(a) for a in await timeline.aliases_of(surviving)]
    stream = feed.open_stream(
        caller=principal.id,
        credentials=credentials,
        contact_ids=[str(surviving), *aliases],
        limit=request.app.state.settings.streams_per_caller,
    )
    try:
        yield stream
    finally:
        feed.close_stream(stream)


@router.get(
    "/{contact_id}/timeline/stream",
    response_class=EventSourceResponse,
    summary="New timeline items as Server-Sent Events (reconnect with Last-Event-ID to miss nothing)",
    responses={
        **CONTACT_ERRORS,
        429: problem("Too many streams open for this caller, or the rate limit (Retry-After)"),
    },
)
async def stream_timeline(
    request: Request,
    principal: TimelineRead,
    timeline: TimelineDep,
    contact: Annotated[dict[str, Any], Depends(_stream_contact)],
    stream: Annotated[Stream, Depends(_stream_slot)],
    last_event_id: Annotated[str | None, Header(max_length=1024)] = None,
) -> AsyncIterable[ServerSentEvent]:
    """Ends with an ``event: end`` (``reason``: ``credentials-ended``) when the caller's key is revoked, the user
    is disabled or the session signs out; a reconnect then gets a 401, which stops an EventSource."""
    surviving = uuid.UUID(contact["id"])
    filters = Filters()
    authenticator: Authenticator = request.app.state.authenticator
    wake = stream.wake
    sent: deque[tuple[str, str, str, str]] = deque(maxlen=2000)

    def fingerprint(item: dict[str, Any]) -> tuple[str, str, str, str]:
        return (item["kind"], str(item["id"]), item["at"].isoformat(), str(item["type"]))

    def event_of(item: dict[str, Any]) -> ServerSentEvent:
        sent.append(fingerprint(item))
        token = timeline.cursor(position_of(item), contact_id=surviving, filters=filters)
        return ServerSentEvent(event="item", id=token, data=json.loads(to_json(item)), retry=2000)

    if last_event_id:
        try:
            position: Position = timeline.read_cursor(last_event_id, contact_id=surviving, filters=filters)
        except InvalidCursor:
            position = None  # type: ignore[assignment]
        if position is not None:
            for item in await timeline.items_above(contact_id=surviving, position=position, caller=principal.id):
                yield event_of(item)
    head, _ = await timeline.page(
        contact_id=surviving, filters=filters, limit=STREAM_PAGE, after=None, caller=principal.id
    )
    sent.extend(fingerprint(i) for i in head)
    yield ServerSentEvent(event="ready", data={"contact_id": str(surviving)})
    read_at = checked_at = time.monotonic()
    while not await request.is_disconnected():
        # Waits at most until the next re-check is due, however often announcements wake the stream.
        until_check = max(0.05, STREAM_RECHECK_S - (time.monotonic() - checked_at))
        try:
            await asyncio.wait_for(wake.wait(), timeout=until_check)
            woken = True
        except TimeoutError:
            woken = False
        wake.clear()
        now = time.monotonic()
        if not stream.ended and now - checked_at >= STREAM_RECHECK_S:
            checked_at = now
            stream.ended = not await authenticator.still_valid(principal)
        if stream.ended:
            yield ServerSentEvent(event="end", data={"reason": "credentials-ended"})
            return
        if not woken and now - read_at < STREAM_SAFETY_POLL_S:
            continue
        read_at = now
        moved = await _moved_or_erased(timeline, surviving, caller=principal.id)
        if moved is not None:
            yield moved
            return
        head, _ = await timeline.page(
            contact_id=surviving, filters=filters, limit=STREAM_PAGE, after=None, caller=principal.id
        )
        known = set(sent)
        for item in reversed(head):
            if fingerprint(item) not in known:
                yield event_of(item)


async def _moved_or_erased(timeline: Timeline, contact_id: uuid.UUID, *, caller: str) -> ServerSentEvent | None:
    """The event that ends a stream whose contact was merged into another (``merged``, with the survivor) or
    erased (``erased``): a page left open follows the merge, or drops what it shows of the person."""
    try:
        contact = await timeline.resolve_contact(contact_id=contact_id, caller=caller)
    except UpstreamAnswer as answer:
        if answer.response.status_code == 410:
            return ServerSentEvent(event="erased", data={"contact_id": str(contact_id)})
        return None  # another refusal, or the service down: the stream goes on; the next wake asks again
    except ProblemError:
        return None  # the contacts service unreachable: the timeline is the gateway's own, it keeps streaming
    if contact["id"] != str(contact_id):
        return ServerSentEvent(event="merged", data={"contact_id": str(contact_id), "into": contact["id"]})
    return None
