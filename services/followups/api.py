"""HTTP routes of the follow-ups service: parse, call the service, return."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response

from servicekit.channels import Channel
from servicekit.clock import InUtc
from servicekit.openapi import headers
from servicekit.problems import PROBLEM_MEDIA_TYPE
from services.followups import queue, service
from services.followups.deps import FollowupsDep, PoliciesDep, ReadSessionDep, RuntimeDep, SessionDep
from services.followups.models import Policy
from services.followups.preview import preview
from services.followups.rules import PolicyChange, PolicyDocument
from services.followups.schemas import (
    BULK_LIMIT,
    Bucket,
    FollowupAssign,
    FollowupBulk,
    FollowupBulkResult,
    FollowupCancel,
    FollowupComplete,
    FollowupCreate,
    FollowupPage,
    FollowupRead,
    FollowupSnooze,
    FollowupStats,
    PolicyList,
    PolicyPreview,
    PolicyRead,
    Priority,
    QueueSort,
    Status,
)

router = APIRouter(prefix="/v1", tags=["followups"])
PolicyId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")]


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {}}}


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _problem("No such follow-up")}
STATE: dict[int | str, dict[str, Any]] = {**NOT_FOUND, 409: _problem("Not possible in its status")}


@router.get("/followups", response_model=FollowupPage, summary="The work queue, or a contact's timeline",
            responses={400: _problem("Invalid cursor"), 422: _problem("Invalid before or tz")})  # fmt: skip
async def list_followups(
    session: ReadSessionDep,
    followups: FollowupsDep,
    contact_id: uuid.UUID | None = None,
    status: Status | None = None,
    policy: Annotated[str | None, Query(max_length=100)] = None,
    assignee: Annotated[str | None, Query(max_length=200)] = None,
    team: Annotated[str | None, Query(max_length=200)] = None,
    channel: Channel | None = None,
    priority: Priority | None = None,
    due_before: InUtc | None = None,
    overdue: bool | None = None,
    bucket: Annotated[
        Bucket | None,
        Query(description="Open follow-ups overdue, due by the end of today (in tz), or later; or done (closed)"),
    ] = None,
    tz: Annotated[
        str | None, Query(max_length=64, description="Whose today (IANA time zone; default: the service's)")
    ] = None,
    sort: Annotated[
        QueueSort,
        Query(description="queue order: priority (then due time), due_at, -due_at, -created_at or -closed_at"),
    ] = "priority",
    order: Annotated[
        Literal["queue", "timeline"],
        Query(description="queue: sort, then id (cursor); timeline: timeline_at, id newest first (before)"),
    ] = "queue",
    before: Annotated[str | None, Query(max_length=120, description="timeline order: <ISO time>|<uuid>")] = None,
    limit: Annotated[int, Query(ge=1, le=queue.MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    rows, next_cursor, counts = await queue.list_followups(
        session=session, now=followups.clock.now(), timezone=tz or followups.default_timezone,
        contact_id=contact_id, status=status, policy=policy, assignee=assignee, team=team, channel=channel,
        priority=priority, due_before=due_before, overdue=overdue, bucket=bucket, sort=sort, order=order,
        before=before, limit=limit, cursor=cursor,
    )  # fmt: skip
    page = FollowupPage(items=[service.to_read(row) for row in rows], next_cursor=next_cursor, counts=counts)
    # Serialised once here, not validated again against response_model (which documents it): the gateway's
    # timeline reads this page on every view.
    return Response(content=page.model_dump_json(), media_type="application/json")


@router.post("/followups/bulk", response_model=FollowupBulkResult,
             summary=f"One action on up to {BULK_LIMIT} follow-ups, a result per id",
             responses={422: _problem(f"Invalid, or more than {BULK_LIMIT} ids")})  # fmt: skip
async def bulk_followups(body: FollowupBulk, session: SessionDep, followups: FollowupsDep) -> FollowupBulkResult:
    return await queue.apply_bulk(session=session, followups=followups, request=body)


@router.get("/followups/stats", response_model=FollowupStats, summary="Service-quality counts of follow-ups")
async def followup_stats(
    session: SessionDep,
    followups: FollowupsDep,
    since: InUtc | None = None,
    until: InUtc | None = None,
    team: Annotated[str | None, Query(max_length=200)] = None,
    channel: Channel | None = None,
    assignee: Annotated[str | None, Query(max_length=200, description="follow-ups given to this staff handle")] = None,
) -> FollowupStats:
    return await service.stats(
        session=session,
        now=followups.clock.now(),
        since=since,
        until=until,
        team=team,
        channel=channel,
        assignee=assignee,
    )


@router.post(
    "/followups",
    status_code=201,
    response_model=FollowupRead,
    summary="Make a follow-up by hand",
    responses={
        201: {"description": "Created", "headers": headers("Location")},
        422: _problem("Invalid, or the contact opted out of the channel"),
    },
)
async def create_followup(
    body: FollowupCreate, session: SessionDep, followups: FollowupsDep, response: Response
) -> FollowupRead:
    followup = await followups.create(session=session, data=body)
    response.headers["Location"] = f"/v1/followups/{followup.id}"
    return service.to_read(followup)


@router.get("/followups/{followup_id}", response_model=FollowupRead, summary="Read a follow-up", responses=NOT_FOUND)
async def get_followup(followup_id: uuid.UUID, session: SessionDep) -> FollowupRead:
    return service.to_read(await service.get_followup(session=session, followup_id=followup_id))


@router.post("/followups/{followup_id}/complete", response_model=FollowupRead, summary="Mark done", responses=STATE)
async def complete_followup(
    followup_id: uuid.UUID, body: FollowupComplete, session: SessionDep, followups: FollowupsDep
) -> FollowupRead:
    followup = await followups.complete(
        session=session, followup_id=followup_id, outcome=body.outcome, interaction_id=body.interaction_id
    )
    return service.to_read(followup)


@router.post("/followups/{followup_id}/snooze", response_model=FollowupRead, summary="Move the due time later",
             responses={**STATE, 422: _problem("until is not in the future")})  # fmt: skip
async def snooze_followup(
    followup_id: uuid.UUID, body: FollowupSnooze, session: SessionDep, followups: FollowupsDep
) -> FollowupRead:
    return service.to_read(await followups.snooze(session=session, followup_id=followup_id, until=body.until))


@router.post("/followups/{followup_id}/cancel", response_model=FollowupRead, summary="Cancel", responses=STATE)
async def cancel_followup(
    followup_id: uuid.UUID, body: FollowupCancel, session: SessionDep, followups: FollowupsDep
) -> FollowupRead:
    return service.to_read(await followups.cancel(session=session, followup_id=followup_id, reason=body.reason))


@router.post("/followups/{followup_id}/assign", response_model=FollowupRead, summary="Give to a person or a team",
             responses=STATE)  # fmt: skip
async def assign_followup(
    followup_id: uuid.UUID, body: FollowupAssign, session: SessionDep, followups: FollowupsDep
) -> FollowupRead:
    followup = await followups.assign(session=session, followup_id=followup_id, assignee=body.assignee, team=body.team)
    return service.to_read(followup)


# --- policies ------------------------------------------------------------------------------------------------


def _policy_read(policy: Policy, document: PolicyDocument | dict[str, Any]) -> PolicyRead:
    body = document.model_dump(mode="json") if isinstance(document, PolicyDocument) else dict(document)
    body["enabled"] = policy.enabled
    return PolicyRead(id=policy.id, version=policy.version, enabled=policy.enabled, updated_at=policy.updated_at,
                      document=body)  # fmt: skip


POLICY_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _problem("No such policy")}


@router.get("/policies", response_model=PolicyList, summary="Every policy (current versions)", tags=["policies"])
async def list_policies(session: SessionDep, policies: PoliciesDep) -> PolicyList:
    return PolicyList(items=[_policy_read(p, d) for p, d in await policies.all(session)])


@router.post("/policies", status_code=201, response_model=PolicyRead, summary="Add a policy", tags=["policies"],
             responses={409: _problem("A policy with this id exists")})  # fmt: skip
async def create_policy(body: PolicyDocument, session: SessionDep, policies: PoliciesDep) -> PolicyRead:
    return _policy_read(*await policies.create(session, body))


@router.post("/policies/preview", response_model=PolicyPreview, tags=["policies"],
             summary="What a draft policy (not saved) would have made from the last N days (writes nothing)",
             responses={422: _problem("The draft is not a valid policy (errors lists why)")})  # fmt: skip
async def preview_draft(
    body: PolicyDocument,
    session: SessionDep,
    runtime: RuntimeDep,
    followups: FollowupsDep,
    days: Annotated[int, Query(ge=1, le=365)] = 30,
) -> PolicyPreview:
    saved = await session.get(Policy, body.id)
    return await preview(
        session=session, policy=body, version=saved.version if saved is not None else 0,
        enabled=body.enabled, days=days, now=runtime.clock.now(),
        default_timezone=followups.default_timezone, draft=True,
    )  # fmt: skip


@router.get("/policies/{policy_id}", response_model=PolicyRead, summary="Read a policy", tags=["policies"],
            responses=POLICY_NOT_FOUND)  # fmt: skip
async def get_policy(policy_id: PolicyId, session: SessionDep, policies: PoliciesDep) -> PolicyRead:
    return _policy_read(*await policies.get(session, policy_id))


@router.put("/policies/{policy_id}", response_model=PolicyRead, summary="Replace a policy (a new version)",
            tags=["policies"], responses={**POLICY_NOT_FOUND, 409: _problem("The body names another id")})  # fmt: skip
async def replace_policy(
    policy_id: PolicyId, body: PolicyChange, session: SessionDep, policies: PoliciesDep
) -> PolicyRead:
    return _policy_read(*await policies.replace(session, policy_id, body))


@router.delete("/policies/{policy_id}", status_code=204, summary="Delete a policy (its versions are kept)",
               tags=["policies"], responses=POLICY_NOT_FOUND)  # fmt: skip
async def delete_policy(policy_id: PolicyId, session: SessionDep, policies: PoliciesDep) -> Response:
    await policies.delete(session, policy_id)
    return Response(status_code=204)


@router.post("/policies/{policy_id}/enable", response_model=PolicyRead, summary="Switch a policy on",
             tags=["policies"], responses=POLICY_NOT_FOUND)  # fmt: skip
async def enable_policy(policy_id: PolicyId, session: SessionDep, policies: PoliciesDep) -> PolicyRead:
    return _policy_read(*await policies.switch(session, policy_id, enabled=True))


@router.post("/policies/{policy_id}/disable", response_model=PolicyRead, summary="Switch a policy off",
             tags=["policies"], responses=POLICY_NOT_FOUND)  # fmt: skip
async def disable_policy(policy_id: PolicyId, session: SessionDep, policies: PoliciesDep) -> PolicyRead:
    return _policy_read(*await policies.switch(session, policy_id, enabled=False))


@router.post("/policies/{policy_id}/preview", response_model=PolicyPreview, tags=["policies"],
             summary="The follow-ups this policy would have made from the last N days (writes nothing)",
             responses=POLICY_NOT_FOUND)  # fmt: skip
async def preview_policy(
    policy_id: PolicyId,
    session: SessionDep,
    policies: PoliciesDep,
    runtime: RuntimeDep,
    followups: FollowupsDep,
    days: Annotated[int, Query(ge=1, le=365)] = 30,
) -> PolicyPreview:
    policy, document = await policies.get(session, policy_id)
    return await preview(
        session=session, policy=document, version=policy.version, enabled=policy.enabled, days=days,
        now=runtime.clock.now(), default_timezone=followups.default_timezone,
    )  # fmt: skip
