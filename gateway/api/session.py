"""Staff login for the console: a session cookie (HttpOnly, SameSite=Lax, Secure outside dev) and a
CSRF token that every unsafe request made with the cookie must carry."""

from __future__ import annotations

import math
import secrets
from datetime import timedelta

from fastapi import APIRouter, Request, Response
from sqlalchemy import delete, select
from sqlmodel import col

from gateway.api.common import problem
from gateway.auth import (
    SESSION_COOKIE,
    CurrentPrincipal,
    PasswordHashing,
    Principal,
    RateLimiter,
    Role,
    Unauthorized,
    passwords,
    sha256,
)
from gateway.deps import RuntimeDep, SessionDep, SettingsDep, record_audit
from gateway.live import announce_revoked
from gateway.lockout import sign_in_guard
from gateway.models import StaffPasswordLink, StaffSession, StaffUser
from gateway.schemas import LoginRequest, PasswordLinkInfo, PasswordLinkToken, PasswordSet, SessionInfo
from servicekit.clock import as_utc
from servicekit.problems import Gone, ProblemError

router = APIRouter(prefix="/auth", tags=["auth"])

# Verifying against this when the email is unknown keeps the answer time the same (no user enumeration).
_DUMMY_HASH = passwords.hash("not-a-real-password-just-timing")


class SignInLocked(ProblemError):
    status, slug, title = 429, "sign-in-locked", "Too many failed sign-ins"

    def __init__(self, seconds: float) -> None:
        wait = max(1, math.ceil(seconds))
        super().__init__(
            f"Too many failed sign-ins for this account. Try again in {wait} seconds.",
            headers={"Retry-After": str(wait)},
        )


@router.post(
    "/login",
    response_model=SessionInfo,
    summary="Log a staff user in: sets the session cookie, returns the CSRF token",
    responses={401: problem("Wrong email or password"), 429: problem("Locked after repeated failures (Retry-After)")},
)
async def login(
    body: LoginRequest,
    request: Request,
    response: Response,
    session: SessionDep,
    runtime: RuntimeDep,
    settings: SettingsDep,
) -> SessionInfo:
    """Signs a staff user in with email and password: sets the session cookie and returns the CSRF token that writes
    made with the cookie must carry. Repeated failures lock the address for a while (429 with Retry-After)."""
    # Per client address first: one address trying many emails (each under its own lockout) still stops. Taken
    # before the password is hashed, so a burst cannot queue more hashes than the budget; given back on success,
    # so many staff signing in from one office address do not use it up.
    address = request.client.host if request.client else "unknown"
    address_limiter: RateLimiter = request.app.state.sign_in_limiter
    address_limiter.take(address)
    guard = sign_in_guard(request.app)
    locked = guard.locked_for(body.email)
    if locked:  # checked before the password: while locked, even the right one is not tried
        raise SignInLocked(locked)
    user = await session.scalar(select(StaffUser).where(col(StaffUser.email) == body.email.strip().lower()))
    hashing: PasswordHashing = request.app.state.password_hashing
    # An invited user with no password yet (an empty hash) is verified against the dummy too: never valid.
    valid = await hashing.verify(body.password, user.password_hash if user and user.password_hash else _DUMMY_HASH)
    valid = valid and user is not None and bool(user.password_hash)
    if user is None or not valid or user.disabled_at is not None:
        guard.failed(body.email, account_exists=user is not None)
        raise Unauthorized("Wrong email or password.")
    guard.succeeded(body.email)
    address_limiter.give_back(address)
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    now = runtime.clock.now()
    session.add(
        StaffSession(
            token_hash=sha256(token),
            user_id=user.id,
            csrf_token=csrf,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.session_ttl_s),
        )
    )
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.session_ttl_s,
        httponly=True,
        samesite="lax",
        secure=settings.cookie_secure,
        path="/",
    )
    return SessionInfo(principal_id=str(user.id), kind="user", role=user.role, name=user.email, handle=user.handle,
                       teams=list(user.teams), csrf_token=csrf)  # fmt: skip


@router.post("/logout", status_code=204, summary="End the session (needs the CSRF token)")
async def logout(principal: CurrentPrincipal, session: SessionDep, runtime: RuntimeDep, request: Request) -> Response:
    """Ends the session and clears its cookie. Needs the CSRF token."""
    if principal.session_id is not None:
        await session.execute(delete(StaffSession).where(col(StaffSession.id) == principal.session_id))
        await session.commit()
        # The session's open streams end, in this process at once and in the others when told.
        request.app.state.live.end_streams(str(principal.session_id))
        await announce_revoked(runtime.bus, str(principal.session_id))
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/me", response_model=SessionInfo, summary="Who is calling")
async def me(principal: CurrentPrincipal) -> SessionInfo:
    """The caller: id, kind (user or key), role, name, handle and teams; for a console session, the CSRF token too."""
    return SessionInfo(
        principal_id=principal.id,
        kind=principal.kind,
        role=principal.role,
        name=principal.name,
        handle=principal.handle,
        teams=list(principal.teams),
        csrf_token=principal.csrf_token,
    )


async def _open_link(
    request: Request, session: SessionDep, runtime: RuntimeDep, token: str
) -> tuple[StaffPasswordLink, StaffUser]:
    """The link a token opens and its user; 410 when it is unknown, used, expired or its user disabled. Limited per
    client address like a sign-in (a token is 256-bit random: the limit is for the hashing a set costs)."""
    address = request.client.host if request.client else "unknown"
    limiter: RateLimiter = request.app.state.sign_in_limiter
    limiter.take(address)
    found = (
        await session.execute(
            select(StaffPasswordLink, StaffUser)
            .join(StaffUser, col(StaffUser.id) == col(StaffPasswordLink.user_id))
            .where(col(StaffPasswordLink.token_hash) == sha256(token))
        )
    ).first()
    if found is None:
        raise Gone("This link is not valid (a newer one may have replaced it): ask an admin for a new one.")
    link, user = found
    if link.used_at is not None:
        raise Gone("This link was used already: sign in, or ask an admin for a new one.")
    if as_utc(link.expires_at) <= runtime.clock.now():
        raise Gone("This link has expired: ask an admin for a new one.")
    if user.disabled_at is not None:
        raise Gone("This account is disabled.")
    limiter.give_back(address)
    return link, user


@router.post(
    "/password-link",
    response_model=PasswordLinkInfo,
    summary="Whom a one-time password link is for (before they choose the password)",
    responses={410: problem("Unknown, used or expired link"), 429: problem("Too many tries from this address")},
)
async def read_password_link(
    body: PasswordLinkToken, request: Request, session: SessionDep, runtime: RuntimeDep
) -> PasswordLinkInfo:
    """The email, name and purpose (invite or reset) of a password link, and until when it works. Needs no sign-in:
    the token is the credential. Sent in the body, not the URL, so it stays out of access logs."""
    link, user = await _open_link(request, session, runtime, body.token)
    return PasswordLinkInfo(email=user.email, name=user.name, purpose=link.purpose,  # type: ignore[arg-type]
                            expires_at=link.expires_at)  # fmt: skip


@router.post(
    "/password",
    status_code=204,
    summary="Set a staff user's password with a one-time link (ends their sessions)",
    responses={410: problem("Unknown, used or expired link"), 429: problem("Too many tries from this address")},
)
async def set_password(body: PasswordSet, request: Request, session: SessionDep, runtime: RuntimeDep) -> Response:
    """Sets the password of the link's user and uses the link up. Every session they had ends (a reset is often
    because someone else may know the old password); they sign in with the new one."""
    link, user = await _open_link(request, session, runtime, body.token)
    hashing: PasswordHashing = request.app.state.password_hashing
    user.password_hash = await hashing.hash(body.password)
    link.used_at = runtime.clock.now()
    await session.execute(delete(StaffSession).where(col(StaffSession.user_id) == user.id))
    who = Principal(id=str(user.id), kind="user", role=Role(user.role), name=user.email, handle=user.handle)
    await record_audit(session=session, runtime=runtime, principal=who, action=f"user.password_{link.purpose}",
                       target=str(user.id), outcome=204)  # fmt: skip
    await session.commit()
    request.app.state.live.end_streams(str(user.id))
    await announce_revoked(runtime.bus, str(user.id))
    return Response(status_code=204)
