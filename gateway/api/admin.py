"""Admin: API keys, staff users and the audit log. Every change here is audited."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from gateway.api.common import AUTH_ERRORS, NOT_FOUND, problem
from gateway.auth import ApiKeysManage, AuditRead, UsersManage, new_api_key, sha256
from gateway.deps import RuntimeDep, SessionDep, record_audit
from gateway.live import announce_revoked
from gateway.models import ApiKey, AuditEntry, StaffSession, StaffUser
from gateway.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyRead,
    AuditPage,
    UserCreate,
    UserList,
    UserRead,
)
from gateway.schemas import AuditRead as AuditEntryRead
from gateway.timeline import InvalidCursor, sign, unsign
from servicekit.clock import InUtc, as_utc
from servicekit.problems import Conflict, NotFound, Unprocessable

router = APIRouter(tags=["admin"], responses=AUTH_ERRORS)


@router.post("/api-keys", status_code=201, response_model=ApiKeyCreated, summary="Make an API key (shown once)")
async def create_api_key(
    body: ApiKeyCreate, principal: ApiKeysManage, session: SessionDep, runtime: RuntimeDep
) -> ApiKeyCreated:
    now = runtime.clock.now()
    if body.expires_at is not None and as_utc(body.expires_at) <= now:
        raise Unprocessable("expires_at must be in the future.", field="expires_at")
    key, prefix = new_api_key()
    row = ApiKey(
        name=body.name,
        role=body.role.value,
        prefix=prefix,
        key_hash=sha256(key),
        created_at=now,
        created_by=principal.id,
        expires_at=body.expires_at,
    )
    session.add(row)
    await session.flush()
    await record_audit(
        session=session,
        runtime=runtime,
        principal=principal,
        action="api_key.create",
        target=str(row.id),
        outcome=201,
        detail={"role": row.role, "name": row.name},
    )
    return ApiKeyCreated(**ApiKeyRead.model_validate(row).model_dump(), key=key)


@router.get("/api-keys", response_model=ApiKeyList, summary="List API keys (never the keys themselves)")
async def list_api_keys(principal: ApiKeysManage, session: SessionDep) -> ApiKeyList:
    rows = (await session.scalars(select(ApiKey).order_by(col(ApiKey.id).desc()).limit(1000))).all()
    return ApiKeyList(items=[ApiKeyRead.model_validate(r) for r in rows])


@router.delete("/api-keys/{key_id}", status_code=204, summary="Revoke an API key", responses=NOT_FOUND)
async def revoke_api_key(
    key_id: uuid.UUID, principal: ApiKeysManage, session: SessionDep, runtime: RuntimeDep, request: Request
) -> Response:
    row = await session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"No API key {key_id}.")
    if row.revoked_at is None:
        row.revoked_at = runtime.clock.now()
        await record_audit(
            session=session,
            runtime=runtime,
            principal=principal,
            action="api_key.revoke",
            target=str(key_id),
            outcome=204,
        )
    # Committed first: another gateway process told of the revocation must not find the key valid again.
    await session.commit()
    request.app.state.authenticator.forget(key_id)
    request.app.state.live.end_streams(str(key_id))  # here at once, even when NATS cannot tell the others
    await announce_revoked(runtime.bus, str(key_id))
    return Response(status_code=204)


@router.post(
    "/users",
    status_code=201,
    response_model=UserRead,
    summary="Create a staff user (console login)",
    responses={409: problem("Email already used")},
)
async def create_user(
    body: UserCreate, principal: UsersManage, session: SessionDep, runtime: RuntimeDep, request: Request
) -> UserRead:
    email = body.email.strip().lower()
    if await session.scalar(select(StaffUser).where(col(StaffUser.email) == email)) is not None:
        raise Conflict("A staff user with this email exists.", field="email")
    user = StaffUser(
        email=email,
        name=body.name,
        role=body.role,
        password_hash=await request.app.state.password_hashing.hash(body.password),
        created_at=runtime.clock.now(),
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict("A staff user with this email exists.", field="email") from None
    await record_audit(
        session=session,
        runtime=runtime,
        principal=principal,
        action="user.create",
        target=str(user.id),
        outcome=201,
        detail={"role": user.role},
    )
    return UserRead.model_validate(user)


@router.get("/users", response_model=UserList, summary="List staff users")
async def list_users(principal: UsersManage, session: SessionDep) -> UserList:
    rows = (await session.scalars(select(StaffUser).order_by(col(StaffUser.email)).limit(1000))).all()
    return UserList(items=[UserRead.model_validate(r) for r in rows])


@router.delete(
    "/users/{user_id}", status_code=204, summary="Disable a staff user and end their sessions", responses=NOT_FOUND
)
async def disable_user(
    user_id: uuid.UUID, principal: UsersManage, session: SessionDep, runtime: RuntimeDep, request: Request
) -> Response:
    user = await session.get(StaffUser, user_id)
    if user is None:
        raise NotFound(f"No staff user {user_id}.")
    if user.disabled_at is None:
        user.disabled_at = runtime.clock.now()
        await record_audit(
            session=session,
            runtime=runtime,
            principal=principal,
            action="user.disable",
            target=str(user_id),
            outcome=204,
        )
    from sqlalchemy import delete

    await session.execute(delete(StaffSession).where(col(StaffSession.user_id) == user_id))
    # Committed first, as for a revoked key; then the user's open streams end in every process.
    await session.commit()
    request.app.state.live.end_streams(str(user_id))
    await announce_revoked(runtime.bus, str(user_id))
    return Response(status_code=204)


@router.get(
    "/audit",
    response_model=AuditPage,
    summary="The audit log, newest first",
    responses={400: problem("Invalid or tampered cursor")},
)
async def read_audit(
    principal: AuditRead,
    session: SessionDep,
    request: Request,
    action: Annotated[str | None, Query(max_length=60)] = None,
    actor_id: Annotated[str | None, Query(max_length=64)] = None,
    since: InUtc | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> AuditPage:
    key = request.app.state.settings.signing_key
    query = select(AuditEntry)
    if action:
        query = query.where(col(AuditEntry.action) == action)
    if actor_id:
        query = query.where(col(AuditEntry.actor_id) == actor_id)
    if since:
        query = query.where(col(AuditEntry.at) >= since)
    if cursor:
        try:
            before = uuid.UUID(unsign(cursor, key)["audit_before"])
        except (KeyError, ValueError, TypeError):
            raise InvalidCursor("The cursor is not one this API gave out.") from None
        query = query.where(col(AuditEntry.id) < before)
    rows = list((await session.scalars(query.order_by(col(AuditEntry.id).desc()).limit(limit + 1))).all())
    next_cursor = sign({"audit_before": str(rows[limit - 1].id)}, key) if len(rows) > limit else None
    return AuditPage(items=[AuditEntryRead.model_validate(r) for r in rows[:limit]], next_cursor=next_cursor)
