"""Tables of the follow-ups database (its own metadata: no other service shares it)."""

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


class FollowupsTable(SQLModel, registry=registry()):
    pass


metadata = FollowupsTable.metadata
outbox_table, inbox_table = shared_tables(metadata)

OPEN = ("scheduled", "due")
PRIORITY_RANK = {"urgent": 0, "high": 1, "normal": 2, "low": 3}

_TS = UTCDateTime()


class Followup(FollowupsTable, table=True):
    """One promised contact with a customer. ``next_action_at`` is when the scheduler must look at it
    next (becoming due, overdue, or the next escalation); null once nothing is left to fire."""

    __tablename__ = "followups"
    __table_args__ = (
        # The same event never makes the same step twice (NULLs, i.e. manual follow-ups, never clash).
        sa.UniqueConstraint("policy", "step", "trigger_event_id", name="uq_followups_policy_step_trigger"),
        sa.Index("ix_followups_work_queue", "priority_rank", "due_at", "id"),
        sa.Index("ix_followups_contact_timeline", "contact_id", "timeline_at", "id"),
        sa.Index("ix_followups_assignee_queue", "assignee", "priority_rank", "due_at", "id"),
        sa.Index("ix_followups_team_queue", "team", "priority_rank", "due_at", "id"),
        sa.Index(
            "ix_followups_next_action",
            "next_action_at",
            sqlite_where=sa.text("next_action_at IS NOT NULL"),
            postgresql_where=sa.text("next_action_at IS NOT NULL"),
        ),
        sa.Index("ix_followups_due_at", "due_at"),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    contact_id: uuid.UUID
    policy: str | None = Field(default=None, max_length=100)
    policy_version: int | None = None
    step: str | None = Field(default=None, max_length=100)
    reason: str = Field(max_length=500)
    channel: str | None = Field(default=None, max_length=20)
    due_at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]
    status: str = Field(default="scheduled", max_length=10, index=True)
    priority: str = Field(default="normal", max_length=10)
    priority_rank: int = Field(default=2)
    assignee: str | None = Field(default=None, max_length=200)
    team: str | None = Field(default=None, max_length=200)
    trigger_event_id: str | None = Field(default=None, max_length=200)
    # What it answers: the touchpoint that made it (a resolved thread's first one), that touchpoint's channel and
    # thread (``thread_id``). Only work on that thing closes it (services/followups/closing.py).
    trigger_interaction_id: uuid.UUID | None = None
    trigger_channel: str | None = Field(default=None, max_length=20)
    thread_id: str | None = Field(default=None, max_length=200)
    # Later triggers of the same (contact, policy, step) while it was open: re-anchored to, or covered by, it.
    triggers: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default=sa.text("'[]'"))
    )
    completed_at: datetime | None = Field(default=None, sa_type=_TS)  # type: ignore[call-overload]
    outcome: str | None = Field(default=None, max_length=2000)
    # The touchpoint that closed it, and why it counted (services/followups/closing.py: CLOSE_REASONS).
    interaction_id: uuid.UUID | None = None
    close_reason: str | None = Field(default=None, max_length=40)
    escalation_level: int = Field(default=0)
    cancel_reason: str | None = Field(default=None, max_length=20)
    skip_reason: str | None = Field(default=None, max_length=20)
    closed_at: datetime | None = Field(default=None, sa_type=_TS)  # type: ignore[call-overload]
    timeline_at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]
    # What the policy decided when it was made, so a later policy version never changes it.
    anchor_at: datetime | None = Field(default=None, sa_type=_TS)  # type: ignore[call-overload]
    plan: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    overdue_at: datetime | None = Field(default=None, sa_type=_TS)  # type: ignore[call-overload]
    overdue: bool = Field(default=False, description="crm.followup.overdue.v1 was sent for the current due_at")
    next_action_at: datetime | None = Field(default=None, sa_type=_TS)  # type: ignore[call-overload]
    fired_at: datetime | None = Field(default=None, sa_type=_TS)  # type: ignore[call-overload]
    fired_by: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]
    updated_at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]
    version: int = Field(default=1)


class Policy(FollowupsTable, table=True):
    """The current state of a policy: which version is in force, whether it is on."""

    __tablename__ = "policies"

    id: str = Field(primary_key=True, max_length=100)
    version: int = Field(default=1)
    enabled: bool = Field(default=True)
    deleted_at: datetime | None = Field(default=None, sa_type=_TS)  # type: ignore[call-overload]
    updated_at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]


class PolicyVersion(FollowupsTable, table=True):
    """Every version of every policy document, kept: a follow-up names the version that made it."""

    __tablename__ = "policy_versions"

    id: str = Field(primary_key=True, max_length=100)
    version: int = Field(primary_key=True)
    document: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]


class KnownContact(FollowupsTable, table=True):
    """What the policies need to know about a contact, kept up to date from the contacts events."""

    __tablename__ = "known_contacts"
    __table_args__ = (sa.Index("ix_known_contacts_quiet", "tier", "status", "last_touch_at"),)

    id: uuid.UUID = Field(primary_key=True)
    status: str = Field(default="active", max_length=10)  # active | merged | erased
    merged_into: uuid.UUID | None = None
    tier: str = Field(default="standard", max_length=20)
    timezone: str | None = Field(default=None, max_length=64)
    preferred_channel: str | None = Field(default=None, max_length=20)
    consent: dict[str, bool] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    owner: str | None = Field(default=None, max_length=200)
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    version: int = Field(default=0)
    known_since: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]
    last_touch_at: datetime | None = Field(default=None, sa_type=_TS)  # type: ignore[call-overload]
    updated_at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]


class SeenTouch(FollowupsTable, table=True):
    """Touchpoints and thread resolutions as they arrived (no text): what a policy preview replays."""

    __tablename__ = "seen_touches"
    __table_args__ = (sa.Index("ix_seen_touches_at", "at"), sa.Index("ix_seen_touches_contact", "contact_id"))

    event_id: str = Field(primary_key=True, max_length=200)
    event_type: str = Field(max_length=60)
    contact_id: uuid.UUID
    at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]
    data: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class Lease(FollowupsTable, table=True):
    """A job only one replica may run at a time (the premium-quiet sweep) and who holds it until when."""

    __tablename__ = "leases"

    name: str = Field(primary_key=True, max_length=60)
    holder: str = Field(max_length=200)
    expires_at: datetime = Field(sa_type=_TS)  # type: ignore[call-overload]
