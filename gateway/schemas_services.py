"""The services' resources as the gateway publishes them: its public contract.

The gateway never imports a service: these shapes are duplicated on purpose, and
tests/test_gateway_contract.py compares them with each service's own OpenAPI so drift is caught.
Inputs of the services are validated again by the service (its 422 problem is passed on as it is).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from servicekit.channels import Channel
from servicekit.clock import AwareInput
from servicekit.numbers import NotBoolean

Tier = Literal["standard", "premium"]
Stage = Literal["lead", "prospect", "customer", "repeat", "at_risk", "churned"]
Direction = Literal["inbound", "outbound", "internal"]
InteractionType = Literal[
    "inquiry", "complaint", "purchase", "return", "feedback", "survey_response", "support", "sales", "note"
]
FollowupStatus = Literal["scheduled", "due", "completed", "cancelled", "skipped"]
Priority = Literal["low", "normal", "high", "urgent"]

INTERACTION_TYPES: tuple[str, ...] = InteractionType.__args__  # type: ignore[attr-defined]
FOLLOWUP_STATUSES: tuple[str, ...] = FollowupStatus.__args__  # type: ignore[attr-defined]

Text200 = Annotated[str, Field(min_length=1, max_length=200)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Open(BaseModel):
    """Validated by the service itself; extra fields are passed on."""

    model_config = ConfigDict(extra="allow")


# --- contacts -----------------------------------------------------------------------------------------------------


class ContactCreate(Strict):
    """A new contact. Emails are lower-cased and phones become E.164 by the contacts service."""

    name: Text200 | None = None
    company: Text200 | None = None
    emails: Annotated[list[str], Field(max_length=20)] = []
    phones: Annotated[list[str], Field(max_length=20)] = []
    handles: dict[str, str] = {}
    external_ids: dict[str, str] = {}
    tier: Tier = "standard"
    preferred_channel: Channel | None = None
    language: str | None = None
    timezone: str | None = None
    tags: Annotated[list[str], Field(max_length=100)] = []
    attributes: dict[str, Any] = {}
    consent: dict[Channel, bool] = {}
    stage: Stage = "lead"
    owner: Text200 | None = None


class ContactUpdate(Strict):
    """A JSON merge patch (RFC 7396): absent fields stay, ``null`` clears."""

    name: Text200 | None = None
    company: Text200 | None = None
    emails: list[str] | None = None
    phones: list[str] | None = None
    handles: dict[str, str | None] | None = None
    external_ids: dict[str, str | None] | None = None
    tier: Tier | None = None
    preferred_channel: Channel | None = None
    language: str | None = None
    timezone: str | None = None
    tags: list[str] | None = None
    attributes: dict[str, Any] | None = None
    consent: dict[Channel, bool | None] | None = None
    stage: Stage | None = None
    owner: Text200 | None = None


class ContactRead(BaseModel):
    id: uuid.UUID
    name: str | None
    company: str | None
    emails: list[str]
    phones: list[str]
    handles: dict[str, str]
    external_ids: dict[str, str]
    tier: str
    preferred_channel: str | None
    language: str | None
    timezone: str | None
    tags: list[str]
    attributes: dict[str, Any]
    consent: dict[str, bool]
    stage: str
    owner: str | None
    status: Literal["active", "merged", "erased"]
    merged_into: uuid.UUID | None = None
    created_at: datetime
    updated_at: datetime
    erased_at: datetime | None = None
    version: int


class ContactPage(BaseModel):
    items: list[ContactRead]
    next_cursor: str | None


class HandleIdentity(Strict):
    channel: str
    value: str


class ExternalIdentity(Strict):
    source: str
    value: str


class ResolveRequest(Strict):
    """Exactly one identity; ``create`` holds the fields of a contact made when none holds it."""

    email: str | None = None
    phone: str | None = None
    handle: HandleIdentity | None = None
    external_id: ExternalIdentity | None = None
    create: ContactCreate | None = None


class MergeRequest(Strict):
    source_id: uuid.UUID


class IdentityRead(BaseModel):
    kind: str
    value: str


class ContactExport(BaseModel):
    contact: ContactRead
    identities: list[IdentityRead]
    merged_from: list[uuid.UUID]
    events: list[dict[str, Any]]
    exported_at: datetime


class ImportRowError(BaseModel):
    row: int = Field(description="Line of the CSV the record starts on (the header is line 1); 0: the whole file")
    field: str | None = Field(description="The column at fault, as in the header (null: the row as a whole)")
    message: str


class ImportResult(BaseModel):
    """What a CSV import did (or, in a dry run, would do)."""

    created: int
    updated: int
    unchanged: int
    errors: list[ImportRowError] = Field(description="Rows not imported, the first CONTACTS_IMPORT_MAX_ERRORS of them")
    error_count: int = Field(description="Every row not imported, listed or not")
    rows: int = Field(description="Data rows read")
    complete: bool = Field(description="false when the import stopped early (row limit, or the file is not CSV)")
    dry_run: bool


# --- interactions -------------------------------------------------------------------------------------------------


class ContactRef(Open):
    """Exactly one identity of the contact; other fields (``name``, ``company`` …) describe the contact to
    create when nobody holds it."""

    email: str | None = None
    phone: str | None = None
    handle: HandleIdentity | None = None
    external_id: ExternalIdentity | None = None
    name: str | None = None
    company: str | None = None


# As the interactions service takes it (printable text, which it checks); only the gateway's threads route
# narrows it, because there the id goes into the service's URL.
ThreadId = Annotated[str, Field(min_length=1, max_length=200)]


class InteractionCreate(Strict):
    """A touchpoint. The contact is given by ``contact_id`` or by ``contact`` (resolved or created)."""

    contact_id: uuid.UUID | None = None
    contact: ContactRef | None = None
    channel: Channel
    direction: Direction
    type: InteractionType
    occurred_at: AwareInput
    agent: Text200 | None = None
    team: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    subject: Annotated[str, Field(max_length=500)] | None = None
    body: Annotated[str, Field(max_length=32_768)] | None = None
    thread_id: ThreadId | None = None
    followup_id: uuid.UUID | None = Field(
        None, description="The follow-up this touchpoint fulfils (e.g. the call-back it is): that follow-up closes"
    )
    outcome: Annotated[str, Field(max_length=500)] | None = None
    csat: Annotated[int, Field(ge=1, le=5), NotBoolean] | None = None
    nps: Annotated[int, Field(ge=0, le=10), NotBoolean] | None = None
    duration_s: Annotated[int, Field(ge=0), NotBoolean] | None = None
    amount: Annotated[float, Field(ge=0)] | None = None
    currency: Annotated[str, Field(pattern=r"^[A-Za-z]{3}$")] | None = None
    source: str | None = None
    external_id: Text200 | None = None
    attributes: dict[str, Any] = {}


class InteractionUpdate(Strict):
    """Outcome, the status of the touchpoint's thread, and attributes (JSON merge patch)."""

    outcome: Annotated[str, Field(max_length=500)] | None = None
    thread_status: Literal["open", "resolved"] | None = None
    attributes: dict[str, Any] | None = None


class InteractionRead(BaseModel):
    id: uuid.UUID
    contact_id: uuid.UUID
    original_contact_id: uuid.UUID
    channel: str
    direction: str
    type: str
    occurred_at: datetime
    received_at: datetime
    agent: str | None
    team: str | None
    subject: str | None
    body: str | None
    thread_id: str | None
    followup_id: uuid.UUID | None = None
    outcome: str | None
    csat: int | None
    nps: int | None
    duration_s: int | None
    amount: float | None
    currency: str | None
    source: str | None
    external_id: str | None
    attributes: dict[str, Any]
    sentiment: float | None
    version: int
    updated_at: datetime
    redacted_at: datetime | None = None


class InteractionPage(BaseModel):
    items: list[InteractionRead]
    next_cursor: str | None
    next_before: str | None = Field(description="The same position as `<occurred_at ISO>|<id>`, for `before`")


class InteractionBatch(Strict):
    items: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=1000)] = Field(
        description="At most 1000 touchpoints, each as in `POST /api/v1/interactions`"
    )


class BatchResult(BaseModel):
    index: int
    status: int = Field(description="201 stored, 200 already stored (same source and external_id), 4xx/503 not")
    id: uuid.UUID | None = None
    problem: dict[str, Any] | None = None


class BatchResults(BaseModel):
    results: list[BatchResult]


class ThreadRead(BaseModel):
    thread_id: str
    contact_id: uuid.UUID
    status: Literal["open", "resolved"]
    opened_at: datetime
    resolved_at: datetime | None
    channel: str
    type: str
    complaint: bool
    first_response_s: float | None
    items: list[InteractionRead]
    truncated: bool


# --- follow-ups and policies ----------------------------------------------------------------------------------


CloseReason = Literal["opted_out", "erased", "answered", "superseded", "manual"]
Name200 = Annotated[str, Field(min_length=1, max_length=200)]


class FollowupTrigger(BaseModel):
    event_id: str
    interaction_id: uuid.UUID | None
    at: datetime
    handled: Literal["reanchored", "covered"]


class FollowupRead(BaseModel):
    id: uuid.UUID
    contact_id: uuid.UUID
    policy: str | None
    policy_version: int | None
    step: str | None
    reason: str
    channel: str | None
    due_at: datetime
    status: FollowupStatus
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
    close_reason: str | None = Field(description="Why what closed it counted (docs/followups.md)")
    escalation_level: int
    cancel_reason: str | None
    skip_reason: str | None
    overdue_at: datetime | None
    closed_at: datetime | None
    timeline_at: datetime = Field(description="Where it shows on the timeline: closed_at once closed, else due_at")
    created_at: datetime
    updated_at: datetime
    version: int


FollowupBucket = Literal["overdue", "due_today", "upcoming", "done"]
FollowupSort = Literal["priority", "due_at", "-due_at", "-created_at", "-closed_at"]
BULK_LIMIT = 500


class BucketCounts(BaseModel):
    overdue: int
    due_today: int
    upcoming: int
    done: int
    timezone: str


class FollowupPage(BaseModel):
    items: list[FollowupRead]
    next_cursor: str | None = Field(description="Work-queue order: pass as cursor; timeline order: null")
    counts: BucketCounts | None = None


class FollowupBulk(Strict):
    """One action on many follow-ups (the follow-ups service checks which fields go with which action)."""

    action: Literal["assign", "complete", "snooze", "cancel"]
    ids: Annotated[list[uuid.UUID], Field(min_length=1, max_length=BULK_LIMIT)]
    assignee: Name200 | None = None
    team: Name200 | None = None
    until: AwareInput | None = None
    outcome: Annotated[str, Field(max_length=2000)] | None = None
    reason: CloseReason = "manual"


class BulkItemResult(BaseModel):
    id: uuid.UUID
    status: int
    title: str | None = None
    detail: str | None = None
    followup: FollowupRead | None = None


class FollowupBulkResult(BaseModel):
    action: str
    succeeded: int
    failed: int
    results: list[BulkItemResult]


class FollowupCreate(Strict):
    """A follow-up made by hand."""

    contact_id: uuid.UUID
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    due_at: AwareInput
    channel: Channel | None = None
    priority: Priority = "normal"
    assignee: Name200 | None = None
    team: Name200 | None = None
    thread_id: Annotated[str, Field(max_length=200)] | None = None


class FollowupComplete(Strict):
    outcome: Annotated[str, Field(max_length=2000)] | None = None
    interaction_id: uuid.UUID | None = None


class FollowupSnooze(Strict):
    until: AwareInput


class FollowupCancel(Strict):
    reason: CloseReason = "manual"


class FollowupAssign(Strict):
    """An assignee, a team, or both."""

    assignee: Name200 | None = None
    team: Name200 | None = None


class PolicyChange(Strict):
    """A follow-up policy (a new version when it replaces one): its trigger, steps, priority, channel,
    assignee, business and quiet hours, what closes it, its escalation, and what a repeated trigger does. The
    nested documents are described and checked by the follow-ups service."""

    id: str | None = None
    name: Annotated[str, Field(min_length=1, max_length=200)]
    description: str | None = None
    enabled: bool | None = None
    trigger: dict[str, Any]
    steps: list[dict[str, Any]]
    priority: Priority | None = None
    channel: dict[str, Any] | None = None
    assign: dict[str, Any] | None = None
    business_hours: dict[str, Any] | None = None
    quiet_hours: dict[str, Any] | None = None
    closing: dict[str, Any] | None = None
    escalation: dict[str, Any] | None = None
    repeat: Literal["reanchor", "covered", "stack"] | None = None


class PolicyDocument(PolicyChange):
    """A new follow-up policy."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")]  # type: ignore[assignment]


class FollowupSla(BaseModel):
    met: int
    missed: int
    open: int
    met_rate: float | None


class FollowupStats(BaseModel):
    since: datetime | None
    until: datetime | None
    team: str | None
    channel: str | None
    assignee: str | None = None
    as_of: datetime
    total: int
    sla: FollowupSla
    completed_on_time: int
    completed_late: int
    open_overdue: int
    escalations: int
    escalated_followups: int
    by_status: dict[str, int]
    by_policy: dict[str, dict[str, int]]


class PolicyRead(BaseModel):
    id: str
    version: int
    enabled: bool
    updated_at: datetime
    document: dict[str, Any]


class PolicyList(BaseModel):
    items: list[PolicyRead]


class PreviewItem(BaseModel):
    contact_id: uuid.UUID
    step: str
    trigger: str = Field(description="The touchpoint id, thread id or quiet contact that would trigger it")
    anchor_at: datetime
    due_at: datetime
    status: Literal["scheduled", "skipped", "closed"]
    skip_reason: str | None
    channel: str | None
    priority: str
    assignee: str | None
    team: str | None
    reason: str
    close_reason: str | None = None
    closed_by: str | None = None


class StepPreview(BaseModel):
    created: int
    skipped: dict[str, int]
    closed: dict[str, int]
    repeated: dict[str, int] = Field(default_factory=dict)


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
    steps: dict[str, StepPreview] = {}
    items: list[PreviewItem]
    truncated: bool
    draft: bool = False
