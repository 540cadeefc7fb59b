"""Who may do what: roles, the one permission table, and the typed per-action dependencies.

A caller is a *principal*: an API key (``Authorization: Bearer <key>``), the first admin key from
``TOUCHPOINT_ADMIN_KEY``, or a staff user logged in through the session cookie. Each route declares
the action it performs (``ContactsRead``, ``FollowupsWork`` …); the table below decides, per role.
Requests authenticated by the session cookie must carry the session's CSRF token on unsafe methods
(``X-CSRF-Token`` header, or a ``csrf_token`` form field for server-rendered forms).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from pwdlib import PasswordHash
from sqlalchemy import select
from sqlmodel import col

from servicekit.clock import as_utc
from servicekit.problems import ProblemError

SESSION_COOKIE = "tp_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FORM_FIELD = "csrf_token"
KEY_PREFIX = "tp_"


class Role(StrEnum):
    admin = "admin"
    agent = "agent"
    ingest = "ingest"
    readonly = "readonly"


class Action(StrEnum):
    contacts_read = "contacts:read"
    contacts_write = "contacts:write"
    contacts_resolve = "contacts:resolve"
    contacts_export = "contacts:export"
    contacts_erase = "contacts:erase"
    interactions_read = "interactions:read"
    interactions_log = "interactions:log"
    interactions_update = "interactions:update"
    followups_read = "followups:read"
    followups_work = "followups:work"
    policies_read = "policies:read"
    policies_manage = "policies:manage"
    timeline_read = "timeline:read"
    metrics_read = "metrics:read"
    api_keys_manage = "api-keys:manage"
    users_manage = "users:manage"
    audit_read = "audit:read"
    webhooks_manage = "webhooks:manage"


_READ = {
    Action.contacts_read,
    Action.interactions_read,
    Action.followups_read,
    Action.policies_read,
    Action.timeline_read,
    Action.metrics_read,
}

# The permission table: the only place that says which role may do what (rendered into docs/gateway.md).
PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.admin: frozenset(Action),
    Role.agent: frozenset(
        _READ
        | {
            Action.contacts_write,
            Action.contacts_resolve,
            Action.interactions_log,
            Action.interactions_update,
            Action.followups_work,
        }
    ),
    Role.ingest: frozenset({Action.interactions_log, Action.contacts_resolve}),
    Role.readonly: frozenset(_READ),
}

# Roles a staff user may have (ingest is for automated systems only).
STAFF_ROLES = (Role.admin, Role.agent, Role.readonly)


def allowed(role: Role | str, action: Action) -> bool:
    return action in PERMISSIONS.get(Role(role), frozenset())


class Unauthorized(ProblemError):
    status, slug, title = 401, "unauthorized", "Credentials required"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="touchpoint"'})


class Forbidden(ProblemError):
    status, slug, title = 403, "forbidden", "Not allowed for this role"


class CsrfFailed(ProblemError):
    status, slug, title = 403, "csrf", "Missing or wrong CSRF token"


class RateLimited(ProblemError):
    status, slug, title = 429, "rate-limited", "Too many requests"


@dataclass(frozen=True)
class RateLimit:
    """How many requests a caller may send: ``per_minute`` on average, ``burst`` at once."""

    per_minute: int
    burst: int


# An API key's own limit when its maker sets none, by role (issue 21): an ingest key is a machine sender, whose
# backlog after an outage or whose nightly sync comes at hundreds a second; the gateway's default for people
# (1,200 a minute) answered such a sender with 429s at 20 requests a second. Other roles: the gateway's setting.
KEY_RATE_LIMITS: dict[Role, RateLimit] = {Role.ingest: RateLimit(per_minute=60_000, burst=1_000)}
MAX_KEY_RATE_PER_MINUTE = 6_000_000  # 100,000 a second: more than one gateway process serves
MAX_KEY_BURST = 100_000


def key_rate_limit(role: Role, per_minute: int | None, burst: int | None, *, default: RateLimit) -> RateLimit:
    """The limit a new key gets: what its maker set, else its role's default, else ``default`` (the setting)."""
    base = KEY_RATE_LIMITS.get(role, default)
    return RateLimit(per_minute=per_minute or base.per_minute, burst=burst or base.burst)


@dataclass(frozen=True)
class Principal:
    """The caller of one request."""

    id: str
    kind: str  # api_key | bootstrap | user
    role: Role
    name: str
    csrf_token: str | None = None  # set when authenticated by the session cookie
    session_id: uuid.UUID | None = None
    handle: str | None = None  # a staff user's handle: what assignee=me and "Mine" mean
    teams: tuple[str, ...] = ()
    timezone: str | None = None
    rate_limit: RateLimit | None = None  # an API key's own; none: the gateway's setting
    display_name: str | None = None  # a staff user's name as people know it; ``name`` is their email

    @property
    def via_session(self) -> bool:
        return self.csrf_token is not None


# --- secrets ---------------------------------------------------------------------------------------------------


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_api_key() -> tuple[str, str]:
    """A new key and its public prefix: ``tp_<prefix>_<secret>``. Keys are 256-bit random, so a SHA-256
    of the key is a safe verifier (a slow password hash would only slow every request)."""
    prefix = secrets.token_hex(6)
    return f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}", prefix


def key_prefix(key: str) -> str | None:
    if not key.startswith(KEY_PREFIX):
        return None
    prefix, sep, _rest = key[len(KEY_PREFIX) :].partition("_")
    return prefix if sep and len(prefix) == 12 else None


passwords = PasswordHash.recommended()


class PasswordHashing:
    """argon2 hashing and verifying in worker threads, at most ``concurrency`` at once (more callers wait).

    On the event loop one verify stalled every other request of the process for its whole duration: 12 sign-ins at
    once made /healthz take 195-312 ms. argon2-cffi releases the GIL, so a thread leaves the loop free; the bound
    keeps a burst of sign-ins from taking every core (argon2 is built to be expensive)."""

    def __init__(self, concurrency: int) -> None:
        self._limiter = anyio.CapacityLimiter(concurrency)

    async def verify(self, password: str, hashed: str) -> bool:
        return await anyio.to_thread.run_sync(passwords.verify, password, hashed, limiter=self._limiter)

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(passwords.hash, password, limiter=self._limiter)


# --- rate limit --------------------------------------------------------------------------------------------------


class RateLimiter:
    """A token bucket per caller, in this process (each gateway replica limits on its own)."""

    def __init__(self, *, per_minute: int, burst: int) -> None:
        self.default = RateLimit(per_minute=per_minute, burst=max(burst, 1))
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, caller: str, limit: RateLimit | None = None) -> None:
        """Takes a token from ``caller``'s bucket, sized by ``limit`` (an API key's own) or this limiter's."""
        limit = limit or self.default
        rate, burst = limit.per_minute / 60.0, float(max(limit.burst, 1))
        now = time.monotonic()
        tokens, stamp = self._buckets.get(caller, (burst, now))
        tokens = min(burst, tokens + (now - stamp) * rate)
        if tokens < 1.0:
            wait = max(1, int((1.0 - tokens) / rate + 0.999))
            self._buckets[caller] = (tokens, now)
            raise RateLimited(
                f"More than {limit.per_minute} requests per minute; retry in {wait} s.",
                headers={"Retry-After": str(wait)},
            )
        self._buckets[caller] = (tokens - 1.0, now)
        if len(self._buckets) > 100_000:
            self._buckets.clear()

    def give_back(self, caller: str) -> None:
        """Returns the token a request took (a sign-in that succeeded does not count against its address)."""
        found = self._buckets.get(caller)
        if found is not None:
            self._buckets[caller] = (min(float(self.default.burst), found[0] + 1.0), found[1])


# --- authentication ----------------------------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer tp_…`")
_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="Staff session (console)")


class Authenticator:
    """Turns a Bearer key or a session cookie into a principal; caches verified keys briefly."""

    def __init__(self, *, runtime: Any, admin_key: str, cache_s: float) -> None:
        self.runtime = runtime
        self._admin_hash = sha256(admin_key)
        self.cache_s = cache_s
        self._keys: dict[str, tuple[float, Principal | None, datetime | None]] = {}

    def forget(self, key_id: uuid.UUID | str) -> None:
        """Drop a revoked key from this process's cache at once."""
        self._keys = {h: v for h, v in self._keys.items() if v[1] is None or v[1].id != str(key_id)}

    async def from_key(self, key: str) -> Principal:
        digest = sha256(key)
        if hmac.compare_digest(digest, self._admin_hash):
            return Principal(id="bootstrap-admin", kind="bootstrap", role=Role.admin, name="TOUCHPOINT_ADMIN_KEY")
        now_mono = time.monotonic()
        cached = self._keys.get(digest)
        if cached is None or now_mono - cached[0] > self.cache_s:
            cached = (now_mono, *await self._look_up(key, digest))
            self._keys[digest] = cached
            if len(self._keys) > 10_000:
                self._keys.clear()
        _, principal, expires_at = cached
        if principal is None:
            raise Unauthorized("The API key is not valid (unknown or revoked).")
        if expires_at is not None and as_utc(expires_at) <= self.runtime.clock.now():
            raise Unauthorized("The API key has expired.")
        return principal

    async def _look_up(self, key: str, digest: str) -> tuple[Principal | None, datetime | None]:
        from gateway.models import ApiKey

        prefix = key_prefix(key)
        if prefix is None:
            return None, None
        async with self.runtime.sessionmaker() as session:
            row = await session.scalar(select(ApiKey).where(col(ApiKey.prefix) == prefix))
        if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, digest):
            return None, None
        own = None
        if row.rate_limit_per_minute is not None and row.rate_limit_burst is not None:
            own = RateLimit(per_minute=row.rate_limit_per_minute, burst=row.rate_limit_burst)
        principal = Principal(id=str(row.id), kind="api_key", role=Role(row.role), name=row.name, rate_limit=own)
        return principal, row.expires_at

    async def still_valid(self, principal: Principal) -> bool:
        """Whether the caller's credential still holds, read from the database (no cache): a long-lived request
        (a timeline stream) asks every few seconds, so a revocation, a disabled user or a sign-out ends it."""
        from gateway.models import ApiKey, StaffSession, StaffUser

        if principal.kind == "bootstrap":
            return True
        now = self.runtime.clock.now()
        async with self.runtime.sessionmaker() as session:
            if principal.kind == "api_key":
                key = await session.get(ApiKey, uuid.UUID(principal.id))
                return (
                    key is not None
                    and key.revoked_at is None
                    and (key.expires_at is None or as_utc(key.expires_at) > now)
                )
            if principal.session_id is None:
                return False
            found = (
                await session.execute(
                    select(col(StaffSession.expires_at), col(StaffUser.disabled_at))
                    .join(StaffUser, col(StaffUser.id) == col(StaffSession.user_id))
                    .where(col(StaffSession.id) == principal.session_id)
                )
            ).first()
        return found is not None and found[1] is None and as_utc(found[0]) > now

    async def from_session(self, token: str) -> Principal | None:
        from gateway.models import StaffSession, StaffUser

        async with self.runtime.sessionmaker() as session:
            found = (
                await session.execute(
                    select(StaffSession, StaffUser)
                    .join(StaffUser, col(StaffUser.id) == col(StaffSession.user_id))
                    .where(col(StaffSession.token_hash) == sha256(token))
                )
            ).first()
        if found is None:
            return None
        staff_session, user = found
        if user.disabled_at is not None or as_utc(staff_session.expires_at) <= self.runtime.clock.now():
            return None
        return Principal(
            id=str(user.id),
            kind="user",
            role=Role(user.role),
            name=user.email,
            display_name=user.name,
            csrf_token=staff_session.csrf_token,
            session_id=staff_session.id,
            handle=user.handle,
            teams=tuple(user.teams),
            timezone=user.timezone,
        )


async def current_principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    session_token: Annotated[str | None, Depends(_cookie)],
) -> Principal:
    """The caller, from a Bearer key or the session cookie (401 when neither is valid).

    Also applies the caller's rate limit and, for cookie sessions, the CSRF check on unsafe methods.
    The console (gateway/console) uses this same dependency."""
    state = request.app.state
    authenticator: Authenticator = state.authenticator
    principal: Principal | None
    if bearer is not None:
        principal = await authenticator.from_key(bearer.credentials)
    elif session_token:
        principal = await authenticator.from_session(session_token)
        if principal is None:
            raise Unauthorized("The session has expired or was ended; log in again.")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            await verify_csrf(request, principal)
    else:
        raise Unauthorized("Send an API key (Authorization: Bearer …) or log in.")
    state.rate_limiter.take(principal.id, principal.rate_limit)
    request.state.principal = principal
    return principal


async def verify_csrf(request: Request, principal: Principal) -> None:
    """Synchroniser token: the header (API calls from the browser) or the form field (HTML forms)."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FORM_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or principal.csrf_token is None or not hmac.compare_digest(sent, principal.csrf_token):
        raise CsrfFailed("Send the session's CSRF token in X-CSRF-Token or the csrf_token form field.")


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require(action: Action) -> Any:
    """A dependency that lets the request through only when the caller's role may do ``action``."""

    async def permitted(principal: CurrentPrincipal) -> Principal:
        if not allowed(principal.role, action):
            raise Forbidden(f"The {principal.role} role may not {action.value}.", action=action.value)
        return principal

    permitted.action = action  # type: ignore[attr-defined]  # read by the role-matrix test and the docs
    return Depends(permitted)


ContactsRead = Annotated[Principal, require(Action.contacts_read)]
ContactsWrite = Annotated[Principal, require(Action.contacts_write)]
ContactsResolve = Annotated[Principal, require(Action.contacts_resolve)]
ContactsExport = Annotated[Principal, require(Action.contacts_export)]
ContactsErase = Annotated[Principal, require(Action.contacts_erase)]
InteractionsRead = Annotated[Principal, require(Action.interactions_read)]
InteractionsLog = Annotated[Principal, require(Action.interactions_log)]
InteractionsUpdate = Annotated[Principal, require(Action.interactions_update)]
FollowupsRead = Annotated[Principal, require(Action.followups_read)]
FollowupsWork = Annotated[Principal, require(Action.followups_work)]
PoliciesRead = Annotated[Principal, require(Action.policies_read)]
PoliciesManage = Annotated[Principal, require(Action.policies_manage)]
TimelineRead = Annotated[Principal, require(Action.timeline_read)]
MetricsRead = Annotated[Principal, require(Action.metrics_read)]
ApiKeysManage = Annotated[Principal, require(Action.api_keys_manage)]
UsersManage = Annotated[Principal, require(Action.users_manage)]
AuditRead = Annotated[Principal, require(Action.audit_read)]
WebhooksManage = Annotated[Principal, require(Action.webhooks_manage)]


def render_matrix_markdown() -> str:
    """The permission table as Markdown (docs/gateway.md embeds it; a test keeps the two equal)."""
    roles = list(Role)
    lines = ["| action | " + " | ".join(r.value for r in roles) + " |", "|---|" + "---|" * len(roles)]
    for action in Action:
        cells = ["yes" if allowed(r, action) else "-" for r in roles]
        lines.append(f"| `{action.value}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
