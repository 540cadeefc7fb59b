"""Touchpoints and threads through the gateway. ``Idempotency-Key`` is passed on; the interactions
service scopes it per caller (``X-Touchpoint-Caller`` = the API key id or user id)."""

from __future__ import annotations

import json
import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response

from gateway.api.common import (
    AUTH_ERRORS,
    INGEST_VIEW,
    NOT_FOUND,
    body_of,
    forward,
    ids_only_for_ingest,
    ok,
    pass_on,
    passed_on_body,
    problem,
)
from gateway.auth import InteractionsLog, InteractionsRead, InteractionsUpdate, Principal
from gateway.deps import ServicesDep, WriteThroughDep
from gateway.schemas_services import (
    BatchResults,
    Direction,
    InteractionBatch,
    InteractionCreate,
    InteractionPage,
    InteractionRead,
    InteractionType,
    InteractionUpdate,
    ThreadRead,
)
from gateway.upstream import upstream_path
from servicekit.channels import Channel
from servicekit.clock import InUtc
from servicekit.problems import Unprocessable

router = APIRouter(tags=["interactions"], responses=AUTH_ERRORS)
# The bodies these routes pass on unparsed (the service validates them), documented as if parsed.
PASSED_ON_BODIES = (InteractionCreate, InteractionBatch)

# Passed on as sent, an empty one too (the service refuses it with a 400, as its document says).
IdempotencyKey = Annotated[
    str | None, Header(max_length=255, description="Same key and body replay the first answer (24 h)")
]
SCORES = ("csat", "nps")


class ScoreFromStaff(Unprocessable):
    slug, title = "score-from-staff", "Scores come from customers"


async def refuse_staff_scores(principal: Principal, request: Request, *, batch: bool) -> None:
    """A CSAT or NPS is the customer's answer to a survey, never a staff member's guess: a signed-in staff user
    may not send one (it would move the customer's average and every satisfaction figure). Surveys, ingest and
    integrations send them with an API key.

    Only a staff user's body is parsed here (people send few touchpoints); a key's goes on unread (``pass_on``),
    and a body that is not a JSON object is left for the service to refuse."""
    if principal.kind != "user":
        return
    try:
        body = json.loads(await request.body())
    except ValueError:
        return
    if not isinstance(body, dict):
        return
    sent_items = body.get("items") if batch else [body]
    touchpoints = [item for item in sent_items if isinstance(item, dict)] if isinstance(sent_items, list) else []
    sent = [(index, score) for index, item in enumerate(touchpoints) for score in SCORES if item.get(score) is not None]
    if not sent:
        return
    where = ", ".join(f"item {index}: {score}" for index, score in sent) if len(touchpoints) > 1 else None
    raise ScoreFromStaff(
        "Scores come from customers: CSAT and NPS are recorded from the customer's survey answer, not entered by "
        f"staff. Leave them out{f' ({where})' if where else ''}.",
        fields=sorted({score for _, score in sent}),
    )


@router.post(
    "/interactions",
    status_code=201,
    summary="Log a touchpoint",
    description=INGEST_VIEW.format("id` and `contact_id"),
    responses={
        **ok(InteractionRead, "Stored", 201, headers=("Location", "Idempotency-Replayed")),
        **ok(InteractionRead, "Already stored (same source and external_id)", headers=("Idempotency-Replayed",)),
        409: problem("The same Idempotency-Key is still in flight"),
        410: problem("This Idempotency-Key's touchpoint belonged to a contact erased since (its response is gone)"),
        422: problem(
            "Invalid, the Idempotency-Key was used with another body, or a CSAT/NPS sent by a signed-in staff user "
            "(scores come from customers)"
        ),
    },
    openapi_extra=passed_on_body(InteractionCreate),
)
async def log_interaction(
    request: Request,
    principal: InteractionsLog,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    await refuse_staff_scores(principal, request, batch=False)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
    answer = await pass_on(services.interactions, "POST", "/v1/interactions", principal, request, headers=headers)
    # The timeline gets the touchpoint from its event, through the gateway's consumer (in batches), not from this
    # answer: writing it here too cost a transaction per touchpoint on the busiest path and wrote every row twice
    # (issue 21). An ingest key sees ids only, a touchpoint of another system included (the same source and
    # external_id answer 200 with the touchpoint already stored).
    return ids_only_for_ingest(principal, answer, "id", "contact_id")


@router.post(
    "/interactions/batch",
    summary="Log up to 1000 touchpoints; each gets its own status",
    responses={
        **ok(BatchResults, headers=("Idempotency-Replayed",)),
        422: problem("A CSAT/NPS in an item sent by a signed-in staff user (scores come from customers)"),
    },
    openapi_extra=passed_on_body(InteractionBatch),
)
async def log_interactions(
    request: Request,
    principal: InteractionsLog,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Each item is stored or refused on its own: the answer lists a status (201 stored, 200 already stored, or the 4xx
    problem) per item, in order. With an `Idempotency-Key`, a retry returns the first answer with `Idempotency-
    Replayed: true`."""
    await refuse_staff_scores(principal, request, batch=True)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
    return await pass_on(services.interactions, "POST", "/v1/interactions/batch", principal, request, headers=headers)


@router.get("/interactions", summary="List touchpoints, newest first", responses=ok(InteractionPage))
async def list_interactions(
    principal: InteractionsRead,
    services: ServicesDep,
    contact_id: uuid.UUID | None = None,
    channel: Channel | None = None,
    type: InteractionType | None = None,
    direction: Direction | None = None,
    thread_id: Annotated[str | None, Query(max_length=200)] = None,
    since: InUtc | None = None,
    until: InUtc | None = None,
    before: Annotated[str | None, Query(max_length=120, description="Keyset: `<ISO at>|<uuid>`")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """Pages through touchpoints, newest first, filtered by contact, channel, type, direction, thread and time range
    (`since` inclusive, `until` exclusive). Follow `next_cursor` for the next page."""
    params = {
        "contact_id": contact_id,
        "channel": channel,
        "type": type,
        "direction": direction,
        "thread_id": thread_id,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "before": before,
        "limit": limit,
        "cursor": cursor,
    }
    return await forward(services.interactions, "GET", "/v1/interactions", principal, params=params)


@router.get(
    "/interactions/{interaction_id}", summary="Read a touchpoint", responses={**ok(InteractionRead), **NOT_FOUND}
)
async def get_interaction(interaction_id: uuid.UUID, principal: InteractionsRead, services: ServicesDep) -> Response:
    """Returns one touchpoint with its content, channel, direction, outcome and thread."""
    return await forward(services.interactions, "GET", upstream_path("/v1/interactions/{}", interaction_id), principal)


@router.patch(
    "/interactions/{interaction_id}",
    summary="Change a touchpoint's outcome, thread status or attributes",
    responses={**ok(InteractionRead), **NOT_FOUND},
)
async def patch_interaction(
    interaction_id: uuid.UUID,
    body: InteractionUpdate,
    principal: InteractionsUpdate,
    services: ServicesDep,
    write_through: WriteThroughDep,
) -> Response:
    """Changes what may change after the fact: the outcome, the thread's status and attributes."""
    answer = await forward(
        services.interactions,
        "PATCH",
        upstream_path("/v1/interactions/{}", interaction_id),
        principal,
        body=body_of(body),
    )
    return await write_through.interaction(answer)


@router.get(
    "/threads/{thread_id:path}",
    summary="The touchpoints of one thread, its status and first response time",
    responses={**ok(ThreadRead), **NOT_FOUND},
)
async def get_thread(
    thread_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,199}$")],
    principal: InteractionsRead,
    services: ServicesDep,
) -> Response:
    """A conversation's touchpoints in order, whether it is open or resolved, and how long the first response took."""
    return await forward(services.interactions, "GET", upstream_path("/v1/threads/{}", thread_id), principal)
