"""Tables of the gateway database: callers (API keys, staff users, sessions), the audit log, and the
projections of contact, touchpoint and follow-up events the timeline reads locally."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import registry
from sqlmodel import JSON, Column, Field, SQLModel

from servicekit.db import UTCDateTime
from servicekit.ids import new_id
from servicekit.runtime import shared_tables


class GatewayTable(SQLModel, registry=registry()):
    pass


metadata = GatewayTable.metadata
outbox_table, inbox_table = shared_tables(metadata)

_TS = UTCDateTime()


class ApiKey(GatewayTable, table=True):
    """An API key: only its public prefix (for the look-up) and a SHA-256 of the whole key are stored."""

    __tablename__ = "api_keys"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    name: str = Field(max_length=200)
    role: str = Field(max_length=20)
    prefix: str = Field(max_length=32, unique=True)
    key_hash: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]
    created_by: str = Field(max_length=64)
    expires_at: datetime | None = Field(default=None, sa_type=_TS)  # type: ignore[call-overload]
    revoked_at: datetime | None = Field(default=None, sa_type=_TS)  # type: ignore[call-overload]
    # The key's own limit, set when it was made; none (a key made before keys had one): the gateway's setting.
    rate_limit_per_minute: int | None = None
    rate_limit_burst: int | None = None


class StaffUser(GatewayTable, table=True):
    """A person who signs in to the console. ``handle`` is how the rest of Touchpoint names them (a contact's
    owner, a follow-up's assignee, a touchpoint's agent, a policy's escalation assignee); ``name`` is the display
    name; ``teams`` are ids of known teams; ``timezone`` decides their "today" in the follow-up queue."""

    __tablename__ = "staff_users"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    email: str = Field(max_length=320, unique=True)
    handle: str = Field(max_length=64, unique=True)
    name: str | None = Field(default=None, max_length=200)
    teams: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    timezone: str | None = Field(default=None, max_length=64)
    role: str = Field(max_length=20)
    password_hash: str = Field(max_length=255)
    created_at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]
    disabled_at: datetime | None = Field(default=None, sa_type=_TS)  # type: ignore[call-overload]


class StaffPasswordLink(GatewayTable, table=True):
    """A one-time link that lets a staff user set their password: an ``invite`` (a user made without one) or a
    ``reset``. Only the SHA-256 of its token is stored (256-bit random, like an API key, so a fast hash is a safe
    verifier); it ends when used, when it expires, or when a newer link is made for the same user."""

    __tablename__ = "staff_password_links"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="staff_users.id", index=True)
    purpose: str = Field(max_length=10)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]
    created_by: str = Field(max_length=64)
    expires_at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]
    used_at: datetime | None = Field(default=None, sa_type=_TS)  # type: ignore[call-overload]


class ConsoleFlash(GatewayTable, table=True):
    """A secret the console shows once, on the page a form redirects to (a new API key, an invite link): sealed
    with a key derived from ``GATEWAY_SECRET_KEY``, readable only by the console session that made it, deleted
    when read or, unread, once expired. In the database rather than in one process's memory: the redirected GET
    may reach another gateway replica."""

    __tablename__ = "console_flashes"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    session_id: uuid.UUID = Field(index=True)
    sealed: str = Field(sa_type=sa.Text)  # type: ignore[call-overload]
    expires_at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]


class Team(GatewayTable, table=True):
    """A team: a queue follow-ups can be given to and a group of staff. Only admins make and change them."""

    __tablename__ = "teams"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    timezone: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]


class StaffSession(GatewayTable, table=True):
    """A console login: the cookie holds a random token, the table its SHA-256 and the CSRF token."""

    __tablename__ = "staff_sessions"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    user_id: uuid.UUID = Field(foreign_key="staff_users.id", index=True)
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]
    expires_at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]


class AuditEntry(GatewayTable, table=True):
    """Who did what: every admin action and every erase. Holds ids, never personal data."""

    __tablename__ = "audit_log"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]
    actor_kind: str = Field(max_length=20)
    actor_id: str = Field(max_length=64, index=True)
    role: str = Field(max_length=20)
    action: str = Field(max_length=60, index=True)
    target: str | None = Field(default=None, max_length=200)
    outcome: int = Field(default=200)
    request_id: str | None = Field(default=None, max_length=128)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class ContactEvent(GatewayTable, table=True):
    """A contact event as a timeline item (created, stage/consent/tier changed, merged, erased).

    ``contact_id`` is re-keyed to the surviving contact on a merge; ``original_contact_id`` keeps
    the contact the event was about. ``detail`` holds no personal data (stages, consent flags, ids)."""

    __tablename__ = "contact_events"
    __table_args__ = (sa.Index("ix_contact_events_timeline", "contact_id", "at", "id"),)

    id: uuid.UUID = Field(primary_key=True)
    contact_id: uuid.UUID
    original_contact_id: uuid.UUID
    at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]
    type: str = Field(max_length=30)
    title: str = Field(max_length=200)
    summary: str = Field(default="", max_length=500)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class ContactAlias(GatewayTable, table=True):
    """A merged-away contact and the contact that survived it (chains are flattened)."""

    __tablename__ = "contact_aliases"

    source_id: uuid.UUID = Field(primary_key=True)
    target_id: uuid.UUID = Field(index=True)


class TouchSummary(GatewayTable, table=True):
    """Per contact and channel: first and last touch, count, CSAT sum (for the timeline header)."""

    __tablename__ = "touch_summaries"

    contact_id: uuid.UUID = Field(primary_key=True)
    channel: str = Field(primary_key=True, max_length=20)
    first_at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]
    last_at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]
    touches: int = 0
    csat_sum: int = 0
    csat_count: int = 0


class TimelineItem(GatewayTable, table=True):
    """One timeline item, as the API gives it out: a touchpoint (everything but its body), a follow-up at its
    ``timeline_at``, or a contact event. Kept from the events, so a page is one indexed read of this table.

    ``sort_rank`` is 2 for a touchpoint, 1 for a follow-up and 0 for a contact event: the timeline order
    (newest first, then touchpoints before follow-ups before contact events at one instant, then id) is then
    ``(at, sort_rank, id)`` descending, one index and one row-value comparison for a page. ``document`` is the
    item's JSON, encoded once when the event is applied. ``version`` is the source's change counter (an older
    event arriving late changes nothing). ``redacted`` marks a touchpoint of an erased contact: whatever
    arrives about it later is stored without its personal fields."""

    __tablename__ = "timeline_items"
    __table_args__ = (sa.Index("ix_timeline_items_page", "contact_id", "at", "sort_rank", "id"),)

    id: uuid.UUID = Field(primary_key=True)
    contact_id: uuid.UUID
    original_contact_id: uuid.UUID = Field(index=True)
    at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]
    sort_rank: int = Field(sa_type=sa.SmallInteger)  # type: ignore[call-overload]
    channel: str | None = Field(default=None, max_length=20)
    type: str = Field(max_length=30)
    version: int = 0
    redacted: bool = False
    document: str = Field(sa_type=sa.Text)  # type: ignore[call-overload]


class FollowupState(GatewayTable, table=True):
    """The latest known status of each follow-up (for the header's open and overdue counts)."""

    __tablename__ = "followup_states"

    id: uuid.UUID = Field(primary_key=True)
    contact_id: uuid.UUID = Field(index=True)
    status: str = Field(max_length=20)
    overdue: bool = False
    due_at: datetime | None = Field(default=None, sa_type=_TS)  # type: ignore[call-overload]
    updated_at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]


class Webhook(GatewayTable, table=True):
    """An outside system's subscription: the event types it wants POSTed to ``url``.

    ``sealed_secret`` is the signing secret sealed with a key derived from ``GATEWAY_SECRET_KEY``
    (``gateway.webhooks.seal``): signing needs the secret itself, so a hash would not do, and a copy of the
    database alone does not give it away."""

    __tablename__ = "webhooks"

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    url: str = Field(max_length=2000)
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    description: str | None = Field(default=None, max_length=200)
    sealed_secret: str = Field(max_length=200)
    created_at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]
    created_by: str = Field(max_length=64)


class WebhookDelivery(GatewayTable, table=True):
    """One event for one webhook: recorded once (unique ``webhook_id, event_id``), then sent until it is
    ``delivered`` or, past ``retry_until``, ``dead`` (dead-lettered; an admin may send it again). ``body`` is the
    CloudEvent as it came from the bus; it is dropped once delivered, so the table keeps no personal data it no
    longer needs."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.UniqueConstraint("webhook_id", "event_id", name="uq_webhook_deliveries_webhook_event"),
        sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        sa.Index("ix_webhook_deliveries_page", "webhook_id", "id"),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    webhook_id: uuid.UUID = Field(foreign_key="webhooks.id", ondelete="CASCADE")
    event_id: str = Field(max_length=64)
    event_type: str = Field(max_length=120)
    contact_id: uuid.UUID | None = Field(default=None, index=True)
    body: str | None = Field(default=None, sa_type=sa.Text)  # type: ignore[call-overload]
    status: str = Field(default="pending", max_length=20)
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]
    next_attempt_at: datetime | None = Field(default=None, sa_type=_TS)  # type: ignore[call-overload]
    retry_until: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]
    last_attempt_at: datetime | None = Field(default=None, sa_type=_TS)  # type: ignore[call-overload]
    delivered_at: datetime | None = Field(default=None, sa_type=_TS)  # type: ignore[call-overload]
    dead_lettered_at: datetime | None = Field(default=None, sa_type=_TS)  # type: ignore[call-overload]
