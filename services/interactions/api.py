"""HTTP routes of the interactions service: parse, call the flow or the service, return."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from servicekit.channels import Channel
from servicekit.clock import InUtc
from servicekit.cursors import InvalidCursor
from servicekit.openapi import headers
from servicekit.problems import PROBLEM_MEDIA_TYPE
from services.interactions import service
from services.interactions.deps import (
    IdempotencyDep,
    IngestionDep,
    ReadConnectionDep,
    RuntimeDep,
    SessionDep,
    TouchpointsDep,
)
from services.interactions.flows import BatchTooLarge, Ingestion
from services.interactions.idempotency import Claim, Replay, fingerprint
from services.interactions.schemas import (
    DEFAULT_PAGE,
    DIRECTIONS,
    MAX_BATCH,
    MAX_PAGE,
    TYPES,
    BatchCreate,
    BatchResult,
    ThreadRead,
    TouchpointCreate,
    TouchpointPage,
    TouchpointPatch,
    TouchpointRead,
    page_json,
)
from services.interactions.stats import compute_stats

router = APIRouter(prefix="/v1", tags=["interactions"])


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {}}}


WRITE_PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: _problem("Invalid Idempotency-Key or X-Touchpoint-Caller"),
    409: _problem("A request with this Idempotency-Key is still in flight (Retry-After)"),
    422: _problem("Invalid touchpoint, unknown or erased contact, or Idempotency-Key reused for another request"),
    503: _problem("The contacts service is unreachable (Retry-After)"),
}


def _json(status: int, body: str, *, replayed: bool = False, location: str | None = None) -> Response:
    headers = {"Idempotency-Replayed": "true"} if replayed else {}
    if location is not None and status == 201:
        headers["Location"] = location
    return Response(content=body, status_code=status, media_type="application/json", headers=headers)


async def _claim(ingestion: Ingestion, request: Request, key: str | None, caller: str) -> Claim | Replay | None:
    if key is None:
        return None
    return await ingestion.claim(
        caller=caller, key=key, fingerprint=fingerprint("POST", request.url.path, await request.body())
    )


async def log_touchpoint(
    body: TouchpointCreate, request: Request, ingestion: IngestionDep, idempotency: IdempotencyDep
) -> Response:
    key, caller = idempotency
    claim = await _claim(ingestion, request, key, caller)
    if isinstance(claim, Replay):
        # The replayed 201 says where the touchpoint is, as the first answer did.
        stored = json.loads(claim.body) if claim.status == 201 else {}
        location = f"/v1/interactions/{stored['id']}" if isinstance(stored, dict) and "id" in stored else None
        return _json(claim.status, claim.body, replayed=True, location=location)
    status, text, touchpoint_id = await ingestion.log_one(item=body, claim=claim)
    return _json(status, text, location=f"/v1/interactions/{touchpoint_id}")


router.add_api_route(
    "/interactions",
    log_touchpoint,
    methods=["POST"],
    status_code=201,
    response_model=TouchpointRead,
    summary="Log a touchpoint",
    responses={
        200: {
            "model": TouchpointRead,
            "description": "Already stored (same source and external_id)",
            "headers": headers("Idempotency-Replayed"),
        },
        201: {"description": "Stored", "headers": headers("Location", "Idempotency-Replayed")},
        410: _problem("This Idempotency-Key's touchpoint belonged to a contact erased since (its response is gone)"),
        **WRITE_PROBLEMS,
    },
)


@router.post(
    "/interactions/batch",
    response_model=BatchResult,
    summary=f"Log up to {MAX_BATCH} touchpoints; each is stored or refused on its own",
    responses={
        200: {"description": "OK", "headers": headers("Idempotency-Replayed")},
        413: _problem(f"More than {MAX_BATCH} items, or a body over the size limit"),
        **WRITE_PROBLEMS,
    },
)
async def log_batch(
    body: BatchCreate, request: Request, ingestion: IngestionDep, idempotency: IdempotencyDep
) -> Response:
    if len(body.items) > MAX_BATCH:
        raise BatchTooLarge(
            f"A batch holds at most {MAX_BATCH} touchpoints; this one has {len(body.items)}.", max_items=MAX_BATCH
        )
    key, caller = idempotency
    claim = await _claim(ingestion, request, key, caller)
    if isinstance(claim, Replay):
        return _json(claim.status, claim.body, replayed=True)
    status, text = await ingestion.log_batch(raw_items=body.items, claim=claim)
    return _json(status, text)


async def list_touchpoints(
    connection: ReadConnectionDep,
    contact_id: uuid.UUID | None = None,
    channel: Channel | None = None,
    type: Annotated[str | None, Query(pattern="^(" + "|".join(TYPES) + ")$")] = None,
    direction: Annotated[str | None, Query(pattern="^(" + "|".join(DIRECTIONS) + ")$")] = None,
    thread_id: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[InUtc | None, Query(description="occurred_at ≥ since (ISO 8601)")] = None,
    until: Annotated[InUtc | None, Query(description="occurred_at < until (ISO 8601)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
    before: Annotated[
        str | None,
        Query(max_length=120, description="`<occurred_at ISO>|<id>`: only touchpoints strictly older than this"),
    ] = None,
) -> Response:
    if cursor is not None and before is not None:
        raise InvalidCursor("Give cursor or before, not both.")
    after = (
        service.Position.from_cursor(cursor)
        if cursor is not None
        else service.Position.from_before(before)
        if before is not None
        else None
    )
    rows, next_position = await service.list_touchpoints(
        session=connection,
        contact_id=contact_id,
        channel=channel.value if channel is not None else None,
        type=type,
        direction=direction,
        thread_id=thread_id,
        since=since,
        until=until,
        after=after,
        limit=limit,
    )
    # Written straight from the rows (schemas.page_json: the document TouchpointPage gives; response_model
    # documents it), without building a model per row.
    body = page_json(
        rows,
        next_cursor=next_position.cursor() if next_position else None,
        next_before=next_position.before() if next_position else None,
    )
    return Response(content=body, media_type="application/json")


router.add_api_route(
    "/interactions",
    list_touchpoints,
    methods=["GET"],
    response_model=TouchpointPage,
    summary="List touchpoints, newest first (keyset pagination)",
    responses={400: _problem("Invalid cursor or before")},
)


@router.get(
    "/interactions/{touchpoint_id}",
    response_model=TouchpointRead,
    summary="Read a touchpoint",
    responses={404: _problem("No such touchpoint")},
)
async def get_touchpoint(touchpoint_id: uuid.UUID, session: SessionDep) -> TouchpointRead:
    return service.to_read(await service.get_touchpoint(session=session, touchpoint_id=touchpoint_id))


@router.patch(
    "/interactions/{touchpoint_id}",
    response_model=TouchpointRead,
    summary="Change the outcome, the thread's status or the attributes of a touchpoint",
    responses={
        404: _problem("No such touchpoint"),
        409: _problem("The touchpoint was redacted"),
        422: _problem("Invalid change (e.g. thread_status on a touchpoint without a thread)"),
    },
)
async def patch_touchpoint(
    touchpoint_id: uuid.UUID, body: TouchpointPatch, session: SessionDep, touchpoints: TouchpointsDep
) -> TouchpointRead:
    touchpoint = await touchpoints.update(session=session, touchpoint_id=touchpoint_id, patch=body)
    return service.to_read(touchpoint)


@router.get(
    "/threads/{thread_id:path}",
    response_model=ThreadRead,
    summary="The touchpoints of one thread in order, its status and first response time",
    responses={404: _problem("No such thread")},
)
async def get_thread(thread_id: str, session: SessionDep) -> ThreadRead:
    return await service.get_thread(session=session, thread_id=thread_id)


@router.get("/stats", summary="Service-quality figures over a window (default: the last 30 days)")
async def get_stats(
    session: SessionDep,
    runtime: RuntimeDep,
    since: Annotated[InUtc | None, Query(description="occurred_at ≥ since; default until - 30 days")] = None,
    until: Annotated[InUtc | None, Query(description="occurred_at < until; default now")] = None,
    channel: Channel | None = None,
    team: Annotated[str | None, Query(max_length=100)] = None,
    agent: Annotated[str | None, Query(max_length=200, description="touchpoints this staff handle logged")] = None,
) -> dict[str, Any]:
    return await compute_stats(
        session=session,
        now=runtime.clock.now(),
        since=since,
        until=until,
        channel=channel.value if channel is not None else None,
        team=team,
        agent=agent,
    )
