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
from gateway.auth import SESSION_COOKIE, CurrentPrincipal, PasswordHashing, RateLimiter, Unauthorized, passwords, sha256
from gateway.deps import RuntimeDep, SessionDep, SettingsDep
from gateway.live import announce_revoked
from gateway.lockout import sign_in_guard
from gateway.models import StaffSession, StaffUser
from gateway.schemas import LoginRequest, SessionInfo
from servicekit.problems import ProblemError

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
    valid = await hashing.verify(body.password, user.password_hash if user else _DUMMY_HASH)
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
