"""Follow-up policies through the gateway; every change is an admin action and is audited."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from gateway.api.common import AUTH_ERRORS, NOT_FOUND, body_of, forward, ok, problem
from gateway.auth import PoliciesManage, PoliciesRead, Principal
from gateway.deps import RuntimeDep, ServicesDep, SessionDep, record_audit
from gateway.schemas_services import PolicyChange, PolicyDocument, PolicyList, PolicyPreview, PolicyRead
from gateway.staff import StaffNamesDep
from gateway.upstream import upstream_path

router = APIRouter(prefix="/policies", tags=["policies"], responses=AUTH_ERRORS)
# The follow-ups service's own rule for a policy id (it also keeps the value safe in the service's URL).
PolicyId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")]


async def _audited(
    response: Response,
    *,
    action: str,
    target: str | None,
    principal: Principal,
    session: SessionDep,
    runtime: RuntimeDep,
) -> Response:
    await record_audit(
        session=session,
        runtime=runtime,
        principal=principal,
        action=action,
        target=target,
        outcome=response.status_code,
    )
    return response


@router.get("", summary="List policies", responses=ok(PolicyList))
async def list_policies(principal: PoliciesRead, services: ServicesDep) -> Response:
    """Every follow-up policy with its version and whether it is on."""
    return await forward(services.followups, "GET", "/v1/policies", principal)


@router.get("/{policy_id}", summary="Read a policy", responses={**ok(PolicyRead), **NOT_FOUND})
async def get_policy(policy_id: PolicyId, principal: PoliciesRead, services: ServicesDep) -> Response:
    """Returns one policy document with its version and state."""
    return await forward(services.followups, "GET", upstream_path("/v1/policies/{}", policy_id), principal)


@router.post("", status_code=201, summary="Create a policy", responses={**ok(PolicyRead, "Created", 201)})
async def create_policy(
    body: PolicyDocument,
    principal: PoliciesManage,
    services: ServicesDep,
    session: SessionDep,
    runtime: RuntimeDep,
    names: StaffNamesDep,
) -> Response:
    """Creates a policy: its trigger says which touchpoints start it and its steps schedule the follow-ups."""
    await names.check_policy_names(body_of(body))
    response = await forward(services.followups, "POST", "/v1/policies", principal, body=body_of(body))
    return await _audited(
        response, action="policy.create", target=body.id, principal=principal, session=session, runtime=runtime
    )


@router.put("/{policy_id}", summary="Replace a policy (new version)", responses={**ok(PolicyRead), **NOT_FOUND})
async def replace_policy(
    policy_id: PolicyId,
    body: PolicyChange,
    principal: PoliciesManage,
    services: ServicesDep,
    session: SessionDep,
    runtime: RuntimeDep,
    names: StaffNamesDep,
) -> Response:
    """Replaces the policy's document; the version goes up by one. Follow-ups already made keep the version that made
    them."""
    await names.check_policy_names(body_of(body))
    response = await forward(
        services.followups, "PUT", upstream_path("/v1/policies/{}", policy_id), principal, body=body_of(body)
    )
    return await _audited(
        response, action="policy.replace", target=policy_id, principal=principal, session=session, runtime=runtime
    )


@router.delete("/{policy_id}", status_code=204, summary="Delete a policy", responses=NOT_FOUND)
async def delete_policy(
    policy_id: PolicyId, principal: PoliciesManage, services: ServicesDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Deletes the policy. Follow-ups it already made stay."""
    response = await forward(services.followups, "DELETE", upstream_path("/v1/policies/{}", policy_id), principal)
    return await _audited(
        response, action="policy.delete", target=policy_id, principal=principal, session=session, runtime=runtime
    )


@router.post("/{policy_id}/enable", summary="Switch a policy on", responses={**ok(PolicyRead), **NOT_FOUND})
async def enable_policy(
    policy_id: PolicyId, principal: PoliciesManage, services: ServicesDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Switches the policy on: touchpoints logged from now on are matched against it."""
    response = await forward(services.followups, "POST", upstream_path("/v1/policies/{}/enable", policy_id), principal)
    return await _audited(
        response, action="policy.enable", target=policy_id, principal=principal, session=session, runtime=runtime
    )


@router.post("/{policy_id}/disable", summary="Switch a policy off", responses={**ok(PolicyRead), **NOT_FOUND})
async def disable_policy(
    policy_id: PolicyId, principal: PoliciesManage, services: ServicesDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Switches the policy off: no new follow-ups; those already made stay."""
    response = await forward(services.followups, "POST", upstream_path("/v1/policies/{}/disable", policy_id), principal)
    return await _audited(
        response, action="policy.disable", target=policy_id, principal=principal, session=session, runtime=runtime
    )


@router.post(
    "/preview",
    summary="What a draft policy (not saved) would have made from the last N days: per step created, skipped, closed",
    responses={**ok(PolicyPreview), 422: problem("The draft is invalid (errors), or names unknown staff or teams")},
)
async def preview_draft(
    body: PolicyDocument,
    principal: PoliciesManage,
    services: ServicesDep,
    names: StaffNamesDep,
    days: Annotated[int, Query(ge=1, le=365)] = 30,
) -> Response:
    """Replays the touchpoints of the last `days` days through a policy document that is not saved and counts, per
    step, the follow-ups it would have created, skipped and closed. Writes nothing."""
    await names.check_policy_names(body_of(body))
    return await forward(services.followups, "POST", "/v1/policies/preview", principal, body=body_of(body),
                         params={"days": days})  # fmt: skip


@router.post(
    "/{policy_id}/preview",
    summary="The follow-ups this policy would have made from the last N days (writes nothing)",
    responses={**ok(PolicyPreview), **NOT_FOUND, 422: problem("Invalid days")},
)
async def preview_policy(
    policy_id: PolicyId,
    principal: PoliciesManage,
    services: ServicesDep,
    days: Annotated[int, Query(ge=1, le=365)] = 30,
) -> Response:
    """Replays the touchpoints of the last `days` days through a saved policy and counts, per step, the follow-ups it
    would have made. Writes nothing."""
    path = upstream_path("/v1/policies/{}/preview", policy_id)
    return await forward(services.followups, "POST", path, principal, params={"days": days})
