"""Admin: API keys, staff users and the audit log. Every change here is audited."""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from gateway.api.common import AUTH_ERRORS, NOT_FOUND, problem
from gateway.auth import (
    ApiKeysManage,
    AuditRead,
    FollowupsRead,
    RateLimit,
    UsersManage,
    key_rate_limit,
    new_api_key,
    sha256,
)
from gateway.deps import RuntimeDep, SessionDep, SettingsDep, record_audit
from gateway.live import announce_revoked
from gateway.models import ApiKey, AuditEntry, StaffPasswordLink, StaffSession, StaffUser, Team
from gateway.schemas import (
    HANDLE_PATTERN,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyRead,
    AuditPage,
    PasswordLinkCreated,
    StaffList,
    StaffMember,
    TeamCreate,
    TeamList,
    TeamRead,
    TeamUpdate,
    UserCreate,
    UserList,
    UserRead,
    UserUpdate,
)
from gateway.schemas import AuditRead as AuditEntryRead
from gateway.settings import GatewaySettings
from gateway.staff import check_teams, publish_staff_change
from servicekit.clock import InUtc, as_utc
from servicekit.cursors import read_signed, sign
from servicekit.problems import Conflict, NotFound, Unprocessable

router = APIRouter(tags=["admin"], responses=AUTH_ERRORS)

# How long a one-time password link works: an invite waits for someone to start; a reset is for now.
INVITE_LINK_TTL = timedelta(days=7)
RESET_LINK_TTL = timedelta(hours=24)
# The console page that takes a password link's token (gateway/console/admin.py).
PASSWORD_PAGE = "/password/"


def user_read(user: StaffUser) -> UserRead:
    return UserRead.model_validate(user).model_copy(update={"invite_pending": not user.password_hash})


@router.post("/api-keys", status_code=201, response_model=ApiKeyCreated, summary="Make an API key (shown once)")
async def create_api_key(
    body: ApiKeyCreate, principal: ApiKeysManage, session: SessionDep, runtime: RuntimeDep, settings: SettingsDep
) -> ApiKeyCreated:
    """Makes an API key for an automated system or a person with the given role, with its own rate limit (requests
    per minute and burst; by default an ingest key's fits a machine sender: 60,000 a minute, 1,000 at once; other
    roles get the gateway's setting at the time). The key is in this answer only: store it now."""
    now = runtime.clock.now()
    if body.expires_at is not None and as_utc(body.expires_at) <= now:
        raise Unprocessable("expires_at must be in the future.", field="expires_at")
    limit = key_rate_limit(body.role, body.rate_limit_per_minute, body.rate_limit_burst, default=_setting(settings))
    key, prefix = new_api_key()
    row = ApiKey(
        name=body.name,
        role=body.role.value,
        prefix=prefix,
        key_hash=sha256(key),
        created_at=now,
        created_by=principal.id,
        expires_at=body.expires_at,
        rate_limit_per_minute=limit.per_minute,
        rate_limit_burst=limit.burst,
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
        detail={"role": row.role, "name": row.name, "rate_limit_per_minute": limit.per_minute,
                "rate_limit_burst": limit.burst},
    )  # fmt: skip
    return ApiKeyCreated(**_key_read(row, settings).model_dump(), key=key)


def _setting(settings: GatewaySettings) -> RateLimit:
    return RateLimit(per_minute=settings.rate_limit_per_minute, burst=settings.rate_limit_burst)


def _key_read(row: ApiKey, settings: GatewaySettings) -> ApiKeyRead:
    """A key as the API shows it, with the limit it is held to (a key made before keys had their own: the
    gateway's setting, as the rate limiter applies it)."""
    fields = {name: getattr(row, name) for name in ApiKeyRead.model_fields if hasattr(row, name)}
    if row.rate_limit_per_minute is None or row.rate_limit_burst is None:
        fields.update(rate_limit_per_minute=settings.rate_limit_per_minute, rate_limit_burst=settings.rate_limit_burst)
    return ApiKeyRead.model_validate(fields)


@router.get("/api-keys", response_model=ApiKeyList, summary="List API keys (never the keys themselves)")
async def list_api_keys(principal: ApiKeysManage, session: SessionDep, settings: SettingsDep) -> ApiKeyList:
    """Every API key with its name, role and rate limit; the key itself is never shown again."""
    rows = (await session.scalars(select(ApiKey).order_by(col(ApiKey.id).desc()).limit(1000))).all()
    return ApiKeyList(items=[_key_read(r, settings) for r in rows])


@router.delete("/api-keys/{key_id}", status_code=204, summary="Revoke an API key", responses=NOT_FOUND)
async def revoke_api_key(
    key_id: uuid.UUID, principal: ApiKeysManage, session: SessionDep, runtime: RuntimeDep, request: Request
) -> Response:
    """Revokes the key at once on every gateway instance; requests with it get 401."""
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


def _handle_from(email: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", email.split("@", 1)[0].lower()).strip("._-")[:64] or "staff"


@router.post(
    "/users",
    status_code=201,
    response_model=UserRead,
    summary="Create a staff user (console login)",
    responses={409: problem("Email or handle already used"), 422: problem("Unknown team, invalid handle")},
)
async def create_user(
    body: UserCreate, principal: UsersManage, session: SessionDep, runtime: RuntimeDep, request: Request
) -> UserRead:
    """Creates a staff user who signs in to the console with email and password."""
    email = body.email.strip().lower()
    handle = body.handle or _handle_from(email)
    if not re.match(HANDLE_PATTERN, handle):
        raise Unprocessable(f"Cannot make a handle from {email!r}; send one.", field="handle")
    if await session.scalar(select(StaffUser).where(col(StaffUser.email) == email)) is not None:
        raise Conflict("A staff user with this email exists.", field="email")
    if await session.scalar(select(StaffUser).where(col(StaffUser.handle) == handle)) is not None:
        raise Conflict(f"The handle {handle!r} is taken; send another.", field="handle")
    await check_teams(session, body.teams, field="teams")
    now = runtime.clock.now()
    user = StaffUser(
        email=email,
        handle=handle,
        name=body.name,
        role=body.role,
        teams=list(dict.fromkeys(body.teams)),
        timezone=body.timezone,
        # Empty: no password yet (an invite); no password verifies against it (gateway/api/session.py).
        password_hash=await request.app.state.password_hashing.hash(body.password) if body.password else "",
        created_at=now,
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict("A staff user with this email or handle exists.", field="email") from None
    await publish_staff_change(session=session, outbox=runtime.outbox, user=user, at=now)
    await record_audit(
        session=session,
        runtime=runtime,
        principal=principal,
        action="user.create",
        target=str(user.id),
        outcome=201,
        detail={"role": user.role, "handle": user.handle},
    )
    return user_read(user)


@router.get("/users", response_model=UserList, summary="List staff users")
async def list_users(principal: UsersManage, session: SessionDep) -> UserList:
    """Every staff user with their role and teams and whether they are active."""
    rows = (await session.scalars(select(StaffUser).order_by(col(StaffUser.email)).limit(1000))).all()
    return UserList(items=[user_read(r) for r in rows])


@router.patch(
    "/users/{user_id}",
    response_model=UserRead,
    summary="Change a staff user's display name, role, teams or time zone",
    responses={**NOT_FOUND, 422: problem("Unknown team")},
)
async def update_user(
    user_id: uuid.UUID, body: UserUpdate, principal: UsersManage, session: SessionDep, runtime: RuntimeDep
) -> UserRead:
    """Changes a staff user's display name, role, teams or time zone (JSON merge patch)."""
    user = await session.get(StaffUser, user_id)
    if user is None:
        raise NotFound(f"No staff user {user_id}.")
    changes = body.model_dump(exclude_unset=True)
    if changes.get("teams") is not None:
        await check_teams(session, changes["teams"], field="teams")
        changes["teams"] = list(dict.fromkeys(changes["teams"]))
    for name in ("role", "teams"):  # null means "unchanged" for these; name and timezone may be cleared
        if name in changes and changes[name] is None:
            del changes[name]
    for name, value in changes.items():
        setattr(user, name, value)
    now = runtime.clock.now()
    await publish_staff_change(session=session, outbox=runtime.outbox, user=user, at=now)
    await record_audit(
        session=session,
        runtime=runtime,
        principal=principal,
        action="user.update",
        target=str(user_id),
        outcome=200,
        detail={"fields": sorted(changes)},
    )
    await session.flush()
    return user_read(user)


@router.delete(
    "/users/{user_id}",
    status_code=204,
    summary="Disable a staff user and end their sessions; their open follow-ups go back to their team's queue",
    responses=NOT_FOUND,
)
async def disable_user(
    user_id: uuid.UUID, principal: UsersManage, session: SessionDep, runtime: RuntimeDep, request: Request
) -> Response:
    """Disables the user and ends their sessions. Their open follow-ups go back to their team's queue. The user stays
    in the audit log."""
    user = await session.get(StaffUser, user_id)
    if user is None:
        raise NotFound(f"No staff user {user_id}.")
    if user.disabled_at is None:
        user.disabled_at = runtime.clock.now()
        await publish_staff_change(session=session, outbox=runtime.outbox, user=user, at=user.disabled_at)
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


@router.post(
    "/users/{user_id}/password-link",
    status_code=201,
    response_model=PasswordLinkCreated,
    summary="Make a one-time link that lets the user set their password (invite or reset; shown once)",
    responses={**NOT_FOUND, 409: problem("The user is disabled")},
)
async def create_password_link(
    user_id: uuid.UUID, principal: UsersManage, session: SessionDep, runtime: RuntimeDep
) -> PasswordLinkCreated:
    """Makes a link for a user to choose their password: an invite (7 days) when they have none, else a reset
    (24 hours). The token is in this answer only; an earlier unused link for the user stops working."""
    user = await session.get(StaffUser, user_id)
    if user is None:
        raise NotFound(f"No staff user {user_id}.")
    if user.disabled_at is not None:
        raise Conflict("The user is disabled: a link would not let them in.", field="user_id")
    now = runtime.clock.now()
    purpose = "reset" if user.password_hash else "invite"
    expires_at = now + (RESET_LINK_TTL if purpose == "reset" else INVITE_LINK_TTL)
    await session.execute(
        delete(StaffPasswordLink).where(
            col(StaffPasswordLink.user_id) == user_id, col(StaffPasswordLink.used_at).is_(None)
        )
    )
    token = secrets.token_urlsafe(32)
    session.add(StaffPasswordLink(user_id=user_id, purpose=purpose, token_hash=sha256(token), created_at=now,
                                  created_by=principal.id, expires_at=expires_at))  # fmt: skip
    await record_audit(session=session, runtime=runtime, principal=principal, action="user.password_link",
                       target=str(user_id), outcome=201, detail={"purpose": purpose})  # fmt: skip
    return PasswordLinkCreated(
        user_id=user_id, purpose=purpose, token=token, path=PASSWORD_PAGE + token, expires_at=expires_at
    )


@router.get("/staff", response_model=StaffList, summary="Colleagues work can be given to (handle, name, teams)")
async def list_staff(
    principal: FollowupsRead,
    session: SessionDep,
    team: Annotated[str | None, Query(max_length=64)] = None,
    include_disabled: bool = False,
) -> StaffList:
    """The active staff and teams a follow-up or a contact can be given to, by handle."""
    query = select(StaffUser).order_by(col(StaffUser.handle))
    if not include_disabled:
        query = query.where(col(StaffUser.disabled_at).is_(None))
    rows = [r for r in (await session.scalars(query.limit(5000))).all() if team is None or team in r.teams]
    members = [
        StaffMember(handle=r.handle, name=r.name, teams=list(r.teams), active=r.disabled_at is None) for r in rows
    ]
    return StaffList(items=members)


# --- teams: a known set, managed by admins --------------------------------------------------------------------------


async def _team_read(session: SessionDep, team: Team) -> TeamRead:
    members = await session.scalars(select(StaffUser).where(col(StaffUser.disabled_at).is_(None)))
    handles = sorted(m.handle for m in members if team.id in m.teams)
    return TeamRead(id=team.id, name=team.name, timezone=team.timezone, created_at=team.created_at, members=handles)


@router.post("/teams", status_code=201, response_model=TeamRead, summary="Add a team",
             responses={409: problem("A team with this id exists")})  # fmt: skip
async def create_team(body: TeamCreate, principal: UsersManage, session: SessionDep, runtime: RuntimeDep) -> TeamRead:
    """Adds a team."""
    if await session.get(Team, body.id) is not None:
        raise Conflict(f"A team {body.id!r} exists.", field="id")
    team = Team(id=body.id, name=body.name, timezone=body.timezone, created_at=runtime.clock.now())
    session.add(team)
    await session.flush()
    await record_audit(session=session, runtime=runtime, principal=principal, action="team.create", target=team.id,
                       outcome=201)  # fmt: skip
    return await _team_read(session, team)


@router.get("/teams", response_model=TeamList, summary="The known teams and their members")
async def list_teams(principal: FollowupsRead, session: SessionDep) -> TeamList:
    """Every team with its time zone and members."""
    teams = (await session.scalars(select(Team).order_by(col(Team.id)))).all()
    return TeamList(items=[await _team_read(session, t) for t in teams])


@router.get("/teams/{team_id}", response_model=TeamRead, summary="A team and its members", responses=NOT_FOUND)
async def get_team(team_id: str, principal: FollowupsRead, session: SessionDep) -> TeamRead:
    """Returns one team with its time zone and members."""
    team = await session.get(Team, team_id)
    if team is None:
        raise NotFound(f"No team {team_id!r}.")
    return await _team_read(session, team)


@router.patch("/teams/{team_id}", response_model=TeamRead, summary="Rename a team or change its time zone",
              responses=NOT_FOUND)  # fmt: skip
async def update_team(
    team_id: str, body: TeamUpdate, principal: UsersManage, session: SessionDep, runtime: RuntimeDep
) -> TeamRead:
    """Renames a team or changes its time zone."""
    team = await session.get(Team, team_id)
    if team is None:
        raise NotFound(f"No team {team_id!r}.")
    changes = body.model_dump(exclude_unset=True)
    if changes.get("name") is None:
        changes.pop("name", None)
    for name, value in changes.items():
        setattr(team, name, value)
    await record_audit(session=session, runtime=runtime, principal=principal, action="team.update", target=team_id,
                       outcome=200, detail={"fields": sorted(changes)})  # fmt: skip
    await session.flush()
    return await _team_read(session, team)


@router.delete("/teams/{team_id}", status_code=204, summary="Remove a team nobody is in",
               responses={**NOT_FOUND, 409: problem("Staff are still in the team")})  # fmt: skip
async def delete_team(team_id: str, principal: UsersManage, session: SessionDep, runtime: RuntimeDep) -> Response:
    """Removes a team that has no members (409 otherwise)."""
    team = await session.get(Team, team_id)
    if team is None:
        raise NotFound(f"No team {team_id!r}.")
    members = (await _team_read(session, team)).members
    if members:
        raise Conflict(f"Staff are still in {team_id!r}: {', '.join(members)}; move them first.", field="team")
    await session.delete(team)
    await record_audit(session=session, runtime=runtime, principal=principal, action="team.delete", target=team_id,
                       outcome=204)  # fmt: skip
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
    """Who did what and when, newest first."""
    key = request.app.state.settings.signing_key
    query = select(AuditEntry)
    if action:
        query = query.where(col(AuditEntry.action) == action)
    if actor_id:
        query = query.where(col(AuditEntry.actor_id) == actor_id)
    if since:
        query = query.where(col(AuditEntry.at) >= since)
    if cursor:
        before = read_signed(cursor, key, lambda payload: uuid.UUID(payload["audit_before"]))
        query = query.where(col(AuditEntry.id) < before)
    rows = list((await session.scalars(query.order_by(col(AuditEntry.id).desc()).limit(limit + 1))).all())
    next_cursor = sign({"audit_before": str(rows[limit - 1].id)}, key) if len(rows) > limit else None
    return AuditPage(items=[AuditEntryRead.model_validate(r) for r in rows[:limit]], next_cursor=next_cursor)
