"""The gateway's own resources: API keys, staff users, the audit log, the timeline, the journey, metrics."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StringConstraints, WithJsonSchema

from gateway.auth import MAX_KEY_BURST, MAX_KEY_RATE_PER_MINUTE, Role
from gateway.schemas_services import ContactRead
from servicekit.catalogue import all_events
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
    rate_limit_per_minute: int | None = Field(
        None,
        ge=1,
        le=MAX_KEY_RATE_PER_MINUTE,
        description="Requests a minute this key may send (429 above); none: its role's default (ingest 60,000, "
        "others the gateway's GATEWAY_RATE_LIMIT_PER_MINUTE)",
    )
    rate_limit_burst: int | None = Field(
        None,
        ge=1,
        le=MAX_KEY_BURST,
        description="Requests this key may send at once before the per-minute rate applies; none: its role's "
        "default (ingest 1,000, others the gateway's GATEWAY_RATE_LIMIT_BURST)",
    )


class ApiKeyRead(BaseModel):
    id: uuid.UUID
    name: str
    role: Role
    prefix: str = Field(description="The public part of the key (`tp_<prefix>_…`), to recognise it")
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    rate_limit_per_minute: int = Field(description="Requests a minute this key may send (429 above)")
    rate_limit_burst: int = Field(description="Requests it may send at once before the per-minute rate applies")

    model_config = ConfigDict(from_attributes=True)


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The key itself: shown this once, stored only as a hash")


class ApiKeyList(BaseModel):
    items: list[ApiKeyRead]


def _known_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/Tallinn)") from None
    return value


TimeZone = Annotated[str, StringConstraints(max_length=64), AfterValidator(_known_timezone)]
# How staff and teams are named everywhere else (owners, assignees, agents, policies): lower case, no spaces.
HANDLE_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
Handle = Annotated[str, StringConstraints(pattern=HANDLE_PATTERN, max_length=64)]
TeamId = Annotated[str, StringConstraints(pattern=HANDLE_PATTERN, max_length=64)]
Teams = Annotated[list[TeamId], Field(max_length=20, description="Ids of known teams; the first is the home team")]


Password = Annotated[str, StringConstraints(min_length=12, max_length=256)]


class UserCreate(Strict):
    email: EmailStr
    password: Password | None = Field(
        None, description="None: the user cannot sign in until they set one through an invite link"
    )
    role: StaffRole
    name: Name | None = Field(None, description="Display name")
    handle: Handle | None = Field(
        None, description="How owners and assignees name this person (default: the email's local part)"
    )
    teams: Teams = Field(default_factory=list)
    timezone: TimeZone | None = Field(None, description="Their 'today' in the follow-up queue")


class UserUpdate(Strict):
    """Only what is sent changes. ``teams`` replaces the list."""

    name: Name | None = None
    role: StaffRole | None = None
    teams: Teams | None = None
    timezone: TimeZone | None = None


class UserRead(BaseModel):
    id: uuid.UUID
    email: str
    handle: str
    name: str | None
    role: Role
    teams: list[str]
    timezone: str | None
    created_at: datetime
    disabled_at: datetime | None
    invite_pending: bool = Field(False, description="An invited user who has not chosen a password yet")

    model_config = ConfigDict(from_attributes=True)


PasswordLinkPurpose = Literal["invite", "reset"]


class PasswordLinkCreated(BaseModel):
    """A one-time link to set a password: shown in this answer only (the gateway keeps a hash of the token)."""

    user_id: uuid.UUID
    purpose: PasswordLinkPurpose = Field(description="invite: no password yet; reset: replaces the one they have")
    token: str
    path: str = Field(description="The console page that takes the token (on this gateway's address)")
    expires_at: datetime


class PasswordLinkToken(Strict):
    token: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class PasswordLinkInfo(BaseModel):
    """Whom a password link is for, before they choose the password."""

    email: str
    name: str | None
    purpose: PasswordLinkPurpose
    expires_at: datetime


class PasswordSet(Strict):
    token: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    password: Password


class StaffMember(BaseModel):
    """A colleague as every staff member may see them (for assigning work): no email, no role."""

    handle: str
    name: str | None
    teams: list[str]
    active: bool


class StaffList(BaseModel):
    items: list[StaffMember]


class TeamCreate(Strict):
    id: TeamId
    name: Name
    timezone: TimeZone | None = Field(None, description="The team's 'today' in its queue")


class TeamUpdate(Strict):
    name: Name | None = None
    timezone: TimeZone | None = None


class TeamRead(BaseModel):
    id: str
    name: str
    timezone: str | None
    created_at: datetime
    members: list[str] = Field(default_factory=list, description="Handles of its active staff")

    model_config = ConfigDict(from_attributes=True)


class TeamList(BaseModel):
    items: list[TeamRead]


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
    handle: str | None = Field(None, description="A staff user's handle (what assignee=me means)")
    teams: list[str] = Field(default_factory=list)
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
    agent: str | None = None
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

# The events a webhook may ask for: those of the streams its feed reads (gateway.webhooks). The document lists
# them, so a client (and the fuzzer) knows the set; an unknown one is still refused by name (422).
WEBHOOK_PRODUCERS = ("contacts", "interactions", "followups")
WEBHOOK_EVENT_TYPES = sorted(doc.type for doc in all_events() if doc.producer in WEBHOOK_PRODUCERS)
EventType = Annotated[
    str,
    StringConstraints(min_length=1, max_length=120),
    WithJsonSchema({"type": "string", "enum": WEBHOOK_EVENT_TYPES}),
]


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
