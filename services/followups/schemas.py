"""Request and response shapes of the follow-ups API (unknown fields are rejected)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from servicekit.channels import Channel
from servicekit.clock import AwareInput, as_utc, in_utc
from servicekit.jsonschema import at_least_one_of, stated
from servicekit.text import trimmed

Status = Literal["scheduled", "due", "completed", "cancelled", "skipped"]
Priority = Literal["low", "normal", "high", "urgent"]
CloseReason = Literal["opted_out", "erased", "answered", "superseded", "manual"]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200), trimmed()]
# Due times after this are refused: the overdue and escalation times a policy adds to them (durations of at
# most 10 years) must still be dates.
LATEST_DUE = datetime(9000, 1, 1, tzinfo=UTC)


def _due(value: datetime) -> datetime:
    moment = in_utc(value)
    if moment >= LATEST_DUE:
        raise ValueError("must be before the year 9000")
    return moment


DueTime = Annotated[AwareInput, AfterValidator(_due)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FollowupTrigger(BaseModel):
    """A later trigger of the same (contact, policy, step) that came while the follow-up was open."""

    event_id: str
    interaction_id: uuid.UUID | None = Field(description="The touchpoint (a resolved thread's first one)")
    at: datetime
    handled: Literal["reanchored", "covered"] = Field(
        description="reanchored: the follow-up's due time now counts from it; covered: it changed nothing"
    )


class FollowupRead(BaseModel):
    """A follow-up as the API returns it and as every follow-up event carries it."""

    id: uuid.UUID
    contact_id: uuid.UUID
    policy: str | None
    policy_version: int | None
    step: str | None
    reason: str
    channel: str | None
    due_at: datetime
    status: Status
    priority: Priority
    assignee: str | None
    team: str | None
    trigger_event_id: str | None
    trigger_interaction_id: uuid.UUID | None = Field(description="The touchpoint it answers")
    trigger_channel: str | None = Field(description="The channel of the touchpoint it answers")
    thread_id: str | None = Field(description="The thread of the touchpoint it answers")
    triggers: list[FollowupTrigger] = Field(description="Later triggers it re-anchored to or covered")
    completed_at: datetime | None
    outcome: str | None
    interaction_id: uuid.UUID | None = Field(description="The touchpoint that closed it")
    close_reason: str | None = Field(description="Why what closed it counted (see docs/followups.md)")
    escalation_level: int
    cancel_reason: str | None
    skip_reason: str | None
    overdue_at: datetime | None
    closed_at: datetime | None
    timeline_at: datetime = Field(description="Where it shows on the timeline: closed_at once closed, else due_at")
    created_at: datetime
    updated_at: datetime
    version: int

    model_config = ConfigDict(from_attributes=True)

    @field_validator("due_at", "completed_at", "overdue_at", "closed_at", "timeline_at", "created_at", "updated_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # SQLite hands back naive UTC; every time leaves as aware UTC.
        return as_utc(value) if value is not None else None


Bucket = Literal["overdue", "due_today", "upcoming", "done"]
QueueSort = Literal["priority", "due_at", "-due_at", "-created_at", "-closed_at"]
# One bulk request changes at most this many follow-ups (a request above it is refused whole, 422): a page of
# the console's queue is 100, a team lead's "give all of these to X" rarely more than a few hundred.
BULK_LIMIT = 500


class BucketCounts(BaseModel):
    """Follow-ups per bucket, for the same filters as the page (bucket and cursor aside)."""

    overdue: int
    due_today: int
    upcoming: int
    done: int = Field(description="Completed or cancelled (all time, or as the filters narrow it)")
    timezone: str = Field(description="Whose today: the IANA time zone due_today was counted in")


class FollowupPage(BaseModel):
    items: list[FollowupRead]
    next_cursor: str | None = Field(description="Work-queue order: pass as cursor; timeline order: null")
    counts: BucketCounts | None = Field(
        None, description="On a work-queue page asked without a cursor: open follow-ups per bucket, same filters"
    )


class FollowupBulk(Strict):
    """One action on many follow-ups: ``assign`` (assignee and/or team), ``complete`` (outcome), ``snooze``
    (until), ``cancel`` (reason). Each id gets its own result; one failing does not stop the others."""

    action: Literal["assign", "complete", "snooze", "cancel"]
    ids: Annotated[list[uuid.UUID], Field(min_length=1, max_length=BULK_LIMIT)]
    assignee: Name | None = None
    team: Name | None = None
    until: DueTime | None = None
    outcome: Annotated[str, Field(max_length=2000)] | None = None
    reason: CloseReason = "manual"

    @model_validator(mode="after")
    def _fits_the_action(self) -> FollowupBulk:
        given = self.model_fields_set
        belongs = {"assign": {"assignee", "team"}, "complete": {"outcome"}, "snooze": {"until"}, "cancel": {"reason"}}
        stray = sorted(given & (set().union(*belongs.values()) - belongs[self.action]))
        if stray:
            raise ValueError(f"{', '.join(stray)} do not go with {self.action}")
        if self.action == "assign" and self.assignee is None and self.team is None:
            raise ValueError("assign needs an assignee or a team")
        if self.action == "snooze" and self.until is None:
            raise ValueError("snooze needs until")
        return self


class BulkItemResult(BaseModel):
    id: uuid.UUID
    status: int = Field(description="As the single action would answer: 200, 404, 409 or 422")
    title: str | None = Field(None, description="Why it failed (the problem's title)")
    detail: str | None = None
    followup: FollowupRead | None = Field(None, description="The follow-up after the action, when it succeeded")


class FollowupBulkResult(BaseModel):
    action: str
    succeeded: int
    failed: int
    results: list[BulkItemResult]


class FollowupCreate(Strict):
    """A follow-up made by hand."""

    contact_id: uuid.UUID
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500), trimmed()]
    due_at: DueTime
    channel: Channel | None = None
    priority: Priority = "normal"
    assignee: Name | None = None
    team: Name | None = None
    thread_id: Annotated[str, StringConstraints(max_length=200)] | None = None


class FollowupComplete(Strict):
    outcome: Annotated[str, StringConstraints(max_length=2000)] | None = None
    interaction_id: uuid.UUID | None = None


class FollowupSnooze(Strict):
    until: DueTime


class FollowupCancel(Strict):
    reason: CloseReason = "manual"


class FollowupAssign(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra=stated(at_least_one_of("assignee", "team")))

    assignee: Name | None = None
    team: Name | None = None

    @model_validator(mode="after")
    def _one_given(self) -> FollowupAssign:
        if self.assignee is None and self.team is None:
            raise ValueError("give an assignee, a team, or both")
        return self


class PolicyRead(BaseModel):
    id: str
    version: int
    enabled: bool
    updated_at: datetime
    document: dict[str, Any]

    @field_validator("updated_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value)


class PolicyList(BaseModel):
    items: list[PolicyRead]


class PreviewItem(BaseModel):
    contact_id: uuid.UUID
    step: str
    trigger: str = Field(description="The touchpoint id, thread id or quiet contact that would trigger it")
    anchor_at: datetime
    due_at: datetime
    status: Literal["scheduled", "skipped", "closed"] = Field(
        description="closed: a later touchpoint of the replayed days would have closed it"
    )
    skip_reason: str | None
    channel: str | None
    priority: str
    assignee: str | None
    team: str | None
    reason: str
    close_reason: str | None = None
    closed_by: str | None = Field(None, description="The touchpoint that would have closed it")


class StepPreview(BaseModel):
    """What one step would have done over the replayed days."""

    created: int = Field(0, description="Follow-ups made (closed ones included)")
    skipped: dict[str, int] = Field(default_factory=dict, description="Skipped, per reason (e.g. opted_out)")
    closed: dict[str, int] = Field(default_factory=dict, description="Of those made, closed by a later touchpoint, "
                                   "per close reason")  # fmt: skip
    repeated: dict[str, int] = Field(default_factory=dict, description="Triggers that repeated one still open, "
                                     "per what the policy's repeat did: covered or reanchored (none made)")  # fmt: skip


class PolicyPreview(BaseModel):
    policy: str
    version: int
    enabled: bool
    days: int
    since: datetime
    until: datetime
    considered: int = Field(description="Touchpoints and thread resolutions replayed")
    count: int = Field(description="Follow-ups it would have made (items holds at most the first 1000)")
    by_step: dict[str, int]
    steps: dict[str, StepPreview] = Field(default_factory=dict, description="Per step: created, skipped, closed")
    items: list[PreviewItem]
    truncated: bool
    draft: bool = Field(False, description="A draft was previewed (not saved; version is the saved one's, 0 if none)")


class StatsSla(BaseModel):
    met: int
    missed: int
    open: int
    met_rate: float | None


class FollowupStats(BaseModel):
    """Follow-ups falling due in [since, until) (all time when absent), for one team, channel or assignee if given."""

    since: datetime | None
    until: datetime | None
    team: str | None
    channel: str | None
    assignee: str | None = None
    as_of: datetime
    total: int
    sla: StatsSla
    completed_on_time: int
    completed_late: int
    open_overdue: int
    escalations: int = Field(description="Escalation steps taken (a follow-up escalated twice counts 2)")
    escalated_followups: int
    by_status: dict[str, int]
    by_policy: dict[str, dict[str, int]]
