"""The gateway's own resources: API keys, staff users, the audit log, the timeline, the journey, metrics."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from gateway.auth import Role
from gateway.schemas_services import ContactRead
from servicekit.clock import InUtc
from servicekit.text import trimmed


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Name = Annotated[str, StringConstraints(min_length=1, max_length=200), trimmed()]
StaffRole = Literal["admin", "agent", "readonly"]


class ApiKeyCreate(Strict):
    name: Name
    role: Role
    expires_at: InUtc | None = Field(None, description="When the key stops working (none: never)")


class ApiKeyRead(BaseModel):
    id: uuid.UUID
    name: str
    role: Role
    prefix: str = Field(description="The public part of the key (`tp_<prefix>_…`), to recognise it")
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None

    model_config = ConfigDict(from_attributes=True)


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The key itself: shown this once, stored only as a hash")


class ApiKeyList(BaseModel):
    items: list[ApiKeyRead]


class UserCreate(Strict):
    email: EmailStr
    password: Annotated[str, StringConstraints(min_length=12, max_length=256)]
    role: StaffRole
    name: Name | None = None


class UserRead(BaseModel):
    id: uuid.UUID
    email: str
    name: str | None
    role: Role
    created_at: datetime
    disabled_at: datetime | None

    model_config = ConfigDict(from_attributes=True)


class UserList(BaseModel):
    items: list[UserRead]


class LoginRequest(Strict):
    email: Annotated[str, StringConstraints(max_length=320)]
    password: Annotated[str, StringConstraints(max_length=256)]


class SessionInfo(BaseModel):
    """The logged-in caller; ``csrf_token`` must accompany every unsafe request made with the cookie."""

    principal_id: str
    kind: str
    role: Role
    name: str
    csrf_token: str | None = None


class AuditRead(BaseModel):
    id: uuid.UUID
    at: datetime
    actor_kind: str
    actor_id: str
    role: str
    action: str
    target: str | None
    outcome: int
    request_id: str | None
    detail: dict[str, Any]

    model_config = ConfigDict(from_attributes=True)


class AuditPage(BaseModel):
    items: list[AuditRead]
    next_cursor: str | None


# --- timeline -----------------------------------------------------------------------------------------------------

Kind = Literal["interaction", "followup", "contact_event"]


class TimelineItem(BaseModel):
    """One thing that happened to the customer or is due. Beside these fields, the item carries the
    fields of its source (the touchpoint, the follow-up, or the contact event's details)."""

    model_config = ConfigDict(extra="allow")

    id: uuid.UUID
    kind: Kind
    at: datetime
    channel: str | None
    type: str
    title: str
    summary: str


class ChannelTouch(BaseModel):
    channel: str
    last_at: datetime
    touches: int


class TimelineContact(BaseModel):
    """The timeline's header: who the customer is and where they stand."""

    profile: ContactRead
    stage: str
    tier: str
    owner: str | None
    open_followups: int
    overdue_followups: int
    last_touch_per_channel: list[ChannelTouch]
    csat_average: float | None
    csat_responses: int
    first_touch_at: datetime | None
    last_touch_at: datetime | None


class TimelinePage(BaseModel):
    contact: TimelineContact
    items: list[TimelineItem]
    next_cursor: str | None = Field(description="Opaque, signed; pass it back as `cursor` for the next page")


class JourneyStage(BaseModel):
    stage: str
    entered_at: datetime
    left_at: datetime | None
    seconds_in_stage: float
    touchpoints: int
    touchpoints_per_channel: dict[str, int]
    touchpoints_per_type: dict[str, int]


class Journey(BaseModel):
    contact_id: uuid.UUID
    stages: list[JourneyStage]
    touchpoints_counted: int
    truncated: bool = Field(description="True when the contact has more touchpoints than the map reads")


class ServiceMetrics(BaseModel):
    """Service quality over a period, from the interactions and follow-ups services."""

    model_config = ConfigDict(extra="allow")

    since: datetime | None
    until: datetime | None
    channel: str | None
    team: str | None
    csat: dict[str, Any] | None
    nps: dict[str, Any] | None
    first_response: dict[str, Any] | None
    complaints: dict[str, Any] | None
    sla: dict[str, Any] | None
    followups: dict[str, Any] | None
    retention: dict[str, Any] | None
    pareto: dict[str, Any] | None
    sources: dict[str, Any]


# --- outbound webhooks ----------------------------------------------------------------------------------------------

EventType = Annotated[str, StringConstraints(min_length=1, max_length=120)]


class WebhookCreate(Strict):
    url: Annotated[str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True)] = Field(
        description="Where each event is POSTed (http or https; must resolve to public addresses)",
        examples=["https://hooks.example.com/touchpoint"],
    )
    events: list[EventType] = Field(
        min_length=1,
        max_length=50,
        description="Event types to send (see the event catalogue)",
        examples=[["crm.interaction.logged.v1", "crm.contact.created.v1"]],
    )
    description: Name | None = None


class WebhookRead(BaseModel):
    id: uuid.UUID
    url: str
    events: list[str]
    description: str | None
    created_at: datetime
    created_by: str

    model_config = ConfigDict(from_attributes=True)


class WebhookCreated(WebhookRead):
    secret: str = Field(
        description="The signing secret (`whsec_<base64>`, Standard Webhooks): shown this once, never again"
    )


class WebhookList(BaseModel):
    items: list[WebhookRead]


DeliveryStatus = Literal["pending", "delivered", "dead"]


class WebhookDeliveryRead(BaseModel):
    id: uuid.UUID
    webhook_id: uuid.UUID
    event_id: str = Field(description="The CloudEvent's id, sent as `webhook-id`")
    event_type: str
    status: DeliveryStatus = Field(description="pending (to send or retry), delivered, dead (dead-lettered)")
    attempts: int
    last_status_code: int | None = Field(description="The receiver's HTTP status at the last attempt")
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime | None
    retry_until: datetime = Field(description="Failures after this time dead-letter the delivery")
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    dead_lettered_at: datetime | None

    model_config = ConfigDict(from_attributes=True)


class WebhookDeliveryPage(BaseModel):
    items: list[WebhookDeliveryRead]
    next_cursor: str | None = Field(description="Opaque, signed; pass it back as `cursor` for the next page")
