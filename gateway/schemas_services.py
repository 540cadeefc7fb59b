"""The services' resources as the gateway publishes them: its public contract.

The gateway never imports a service: these shapes are duplicated on purpose, and
tests/test_gateway_contract.py compares them with each service's own OpenAPI so drift is caught.
Inputs of the services are validated again by the service (its 422 problem is passed on as it is).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

Channel = Literal["phone", "in_person", "email", "sms", "live_chat", "social", "self_service"]
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


# --- interactions -------------------------------------------------------------------------------------------------


class ContactRef(Open):
    """Exactly one identity of the contact; other fields (``name``, ``company`` …) describe the contact to
    create when nobody holds it."""

    email: str | None = None
    phone: str | None = None
    handle: HandleIdentity | None = None
    external_id: ExternalIdentity | None = None


ThreadId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,199}$")]


class InteractionCreate(Strict):
    """A touchpoint. The contact is given by ``contact_id`` or by ``contact`` (resolved or created)."""

    contact_id: uuid.UUID | None = None
    contact: ContactRef | None = None
    channel: Channel
    direction: Direction
    type: InteractionType
    occurred_at: AwareDatetime
    agent: Text200 | None = None
    team: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    subject: Annotated[str, Field(max_length=500)] | None = None
    body: Annotated[str, Field(max_length=32_768)] | None = None
    thread_id: ThreadId | None = None
    outcome: Annotated[str, Field(max_length=500)] | None = None
    csat: Annotated[int, Field(ge=1, le=5)] | None = None
    nps: Annotated[int, Field(ge=0, le=10)] | None = None
    duration_s: Annotated[int, Field(ge=0)] | None = None
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


class FollowupRead(Open):
    id: uuid.UUID
    contact_id: uuid.UUID
    policy: str | None = None
    step: str | None = None
    reason: str | None = None
    channel: str | None = None
    due_at: datetime | None = None
    status: str
    priority: str | None = None
    assignee: str | None = None
    team: str | None = None
    trigger_event_id: str | None = None
    thread_id: str | None = None
    completed_at: datetime | None = None
    outcome: str | None = None
    interaction_id: uuid.UUID | None = None
    escalation_level: int | None = None
    cancel_reason: str | None = None
    skip_reason: str | None = None
    timeline_at: datetime | None = None


class FollowupPage(BaseModel):
    items: list[FollowupRead]
    next_cursor: str | None


class FollowupCreate(Open):
    contact_id: uuid.UUID
    reason: str
    due_at: datetime
    channel: Channel | None = None
    priority: Priority = "normal"
    assignee: str | None = None
    team: str | None = None


class FollowupComplete(Open):
    outcome: str | None = None
    interaction_id: uuid.UUID | None = None


class FollowupSnooze(Open):
    until: datetime


class FollowupCancel(Open):
    reason: str = "manual"


class FollowupAssign(Open):
    assignee: str | None = None
    team: str | None = None


class PolicyDocument(Open):
    """A follow-up policy: trigger, steps, hours, channel, assignee, priority, cancellation, escalation."""

    id: str | None = None
    name: str | None = None
    enabled: bool | None = None
    trigger: dict[str, Any] | None = None
    steps: list[dict[str, Any]] | None = None


class PolicyRead(Open):
    id: str
    enabled: bool | None = None
    version: int | None = None


class PolicyList(Open):
    items: list[PolicyRead] = []


class PolicyPreview(Open):
    items: list[dict[str, Any]] = []
