"""Follow-ups through the gateway: the work queue and the actions that close the loop."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from gateway.api.common import AUTH_ERRORS, NOT_FOUND, body_of, forward, ok, problem
from gateway.auth import FollowupsRead, FollowupsWork, Principal
from gateway.deps import ServicesDep, WriteThroughDep
from gateway.schemas_services import (
    BULK_LIMIT,
    FollowupAssign,
    FollowupBucket,
    FollowupBulk,
    FollowupBulkResult,
    FollowupCancel,
    FollowupComplete,
    FollowupCreate,
    FollowupPage,
    FollowupRead,
    FollowupSnooze,
    FollowupSort,
    FollowupStatus,
)
from gateway.staff import StaffNamesDep, resolve_me
from gateway.upstream import upstream_path
from servicekit.channels import Channel
from servicekit.clock import InUtc

BUCKET_HELP = (
    "Open follow-ups overdue, due by the end of today, or due later (today: the team's time zone when team is "
    "given and has one, else the caller's); or done (completed or cancelled)"
)
router = APIRouter(prefix="/followups", tags=["followups"], responses=AUTH_ERRORS)
STATE_ERRORS = {
    **NOT_FOUND,
    409: problem("Not possible in its status"),
    422: problem("Invalid (e.g. snooze into the past, an assignee who is not a staff handle, an unknown team)"),
}


async def _queue_timezone(*, names: StaffNamesDep, principal: Principal, team: str | None) -> str | None:
    """Whose "today" a bucket means: the team's when a team's queue is asked for and it has a time zone, else the
    caller's; none known leaves it to the follow-ups service's default time zone."""
    if team is not None:
        zone = await names.team_timezone(team)
        if zone:
            return zone
    return principal.timezone


@router.get("", summary="The work queue: by priority, then due time (or as sort says)", responses=ok(FollowupPage))
async def list_followups(
    principal: FollowupsRead,
    services: ServicesDep,
    names: StaffNamesDep,
    contact_id: uuid.UUID | None = None,
    status: FollowupStatus | None = None,
    policy: Annotated[str | None, Query(max_length=100)] = None,
    assignee: Annotated[str | None, Query(max_length=200, description="A staff handle; me: the caller")] = None,
    team: Annotated[str | None, Query(max_length=200)] = None,
    due_before: InUtc | None = None,
    overdue: bool | None = None,
    bucket: Annotated[FollowupBucket | None, Query(description=BUCKET_HELP)] = None,
    channel: Channel | None = None,
    priority: Annotated[str | None, Query(pattern="^(low|normal|high|urgent)$")] = None,
    sort: FollowupSort = "priority",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """The follow-ups to work on, filtered as the parameters say (`me`: the caller), by priority then due time unless
    `sort` says otherwise. Follow `next_cursor` for the next page."""
    assignee = resolve_me(assignee, principal, field="assignee")
    tz = await _queue_timezone(names=names, principal=principal, team=team)
    params = {
        "contact_id": contact_id,
        "status": status,
        "policy": policy,
        "assignee": assignee,
        "team": team,
        "due_before": due_before.isoformat() if due_before else None,
        "overdue": str(overdue).lower() if overdue is not None else None,
        "bucket": bucket,
        "channel": channel,
        "priority": priority,
        "sort": sort,
        "tz": tz,
        "limit": limit,
        "cursor": cursor,
    }
    return await forward(services.followups, "GET", "/v1/followups", principal, params=params)


@router.post(
    "/bulk",
    summary=f"One action (assign, complete, snooze, cancel) on up to {BULK_LIMIT} follow-ups, a result per id",
    responses={**ok(FollowupBulkResult), 422: problem(f"Invalid, unknown assignee or team, or over {BULK_LIMIT} ids")},
)
async def bulk_followups(
    body: FollowupBulk,
    principal: FollowupsWork,
    services: ServicesDep,
    names: StaffNamesDep,
    write_through: WriteThroughDep,
) -> Response:
    """Applies one action to up to 500 follow-ups; each id gets its own result, so one that cannot change does not stop
    the others."""
    if body.action == "assign":
        body.assignee = resolve_me(body.assignee, principal, field="assignee")
        await names.check_work_target(assignee=body.assignee, team=body.team)
    answer = await forward(services.followups, "POST", "/v1/followups/bulk", principal, body=body_of(body))
    return await write_through.followups_in_bulk(answer)


@router.post(
    "",
    status_code=201,
    summary="Create a follow-up by hand",
    responses=ok(FollowupRead, "Created", 201, headers=("Location",)),
)
async def create_followup(
    body: FollowupCreate,
    principal: FollowupsWork,
    services: ServicesDep,
    names: StaffNamesDep,
    write_through: WriteThroughDep,
) -> Response:
    """Schedules a follow-up for a contact by hand (policies make most of them). Refused with 422 when the contact
    opted out of the channel. The answer carries its `Location`."""
    body.assignee = resolve_me(body.assignee, principal, field="assignee")
    await names.check_work_target(assignee=body.assignee, team=body.team)
    answer = await forward(services.followups, "POST", "/v1/followups", principal, body=body_of(body))
    return await write_through.followup(answer)


@router.get("/{followup_id}", summary="Read a follow-up", responses={**ok(FollowupRead), **NOT_FOUND})
async def get_followup(followup_id: uuid.UUID, principal: FollowupsRead, services: ServicesDep) -> Response:
    """Returns one follow-up: its contact, channel, due time, priority, assignee and status."""
    return await forward(services.followups, "GET", upstream_path("/v1/followups/{}", followup_id), principal)


@router.post("/{followup_id}/complete", summary="Mark done", responses={**ok(FollowupRead), **STATE_ERRORS})
async def complete_followup(
    followup_id: uuid.UUID,
    body: FollowupComplete,
    principal: FollowupsWork,
    services: ServicesDep,
    write_through: WriteThroughDep,
) -> Response:
    """Marks the follow-up done, with an optional outcome and the touchpoint that did it. A follow-up already closed
    answers 409."""
    path = upstream_path("/v1/followups/{}/complete", followup_id)
    return await write_through.followup(await forward(services.followups, "POST", path, principal, body=body_of(body)))


@router.post("/{followup_id}/snooze", summary="Move the due time later", responses={**ok(FollowupRead), **STATE_ERRORS})
async def snooze_followup(
    followup_id: uuid.UUID,
    body: FollowupSnooze,
    principal: FollowupsWork,
    services: ServicesDep,
    write_through: WriteThroughDep,
) -> Response:
    """Moves the due time to `until`. A follow-up already closed answers 409."""
    path = upstream_path("/v1/followups/{}/snooze", followup_id)
    return await write_through.followup(await forward(services.followups, "POST", path, principal, body=body_of(body)))


@router.post("/{followup_id}/cancel", summary="Cancel", responses={**ok(FollowupRead), **STATE_ERRORS})
async def cancel_followup(
    followup_id: uuid.UUID,
    body: FollowupCancel,
    principal: FollowupsWork,
    services: ServicesDep,
    write_through: WriteThroughDep,
) -> Response:
    """Cancels the follow-up, with a reason. A follow-up already closed answers 409."""
    path = upstream_path("/v1/followups/{}/cancel", followup_id)
    return await write_through.followup(await forward(services.followups, "POST", path, principal, body=body_of(body)))


@router.post(
    "/{followup_id}/assign", summary="Give to a person or a team", responses={**ok(FollowupRead), **STATE_ERRORS}
)
async def assign_followup(
    followup_id: uuid.UUID,
    body: FollowupAssign,
    principal: FollowupsWork,
    services: ServicesDep,
    names: StaffNamesDep,
    write_through: WriteThroughDep,
) -> Response:
    """Gives the follow-up to a staff user (by handle; `me`: the caller), to a team's queue, or both."""
    body.assignee = resolve_me(body.assignee, principal, field="assignee")
    await names.check_work_target(assignee=body.assignee, team=body.team)
    path = upstream_path("/v1/followups/{}/assign", followup_id)
    return await write_through.followup(await forward(services.followups, "POST", path, principal, body=body_of(body)))
