"""Request and response shapes of the interactions API (unknown fields are rejected on input)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import pydantic_core
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from servicekit.channels import Channel
from servicekit.clock import AwareInput, as_utc
from servicekit.jsonschema import both_or_neither, exactly_one_of, needs, stated
from servicekit.numbers import NotBoolean
from servicekit.text import trimmed

Direction = Literal["inbound", "outbound", "internal"]
DIRECTIONS: tuple[str, ...] = ("inbound", "outbound", "internal")
TouchpointType = Literal[
    "inquiry", "complaint", "purchase", "return", "feedback", "survey_response", "support", "sales", "note"
]
TYPES: tuple[str, ...] = (
    "inquiry", "complaint", "purchase", "return", "feedback", "survey_response", "support", "sales", "note",
)  # fmt: skip
ThreadStatus = Literal["open", "resolved"]

MAX_BODY_CHARS = 32_768
MAX_ATTRIBUTES_BYTES = 16_384
MAX_ATTRIBUTES_DEPTH = 8
MAX_DURATION_S = 7 * 86_400
MAX_BATCH = 1000
MAX_PAGE = 200
DEFAULT_PAGE = 50

_KEY_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,39}$"


def _depth(value: Any, level: int = 1) -> int:
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


def check_attributes(value: dict[str, Any]) -> dict[str, Any]:
    if _depth(value) > MAX_ATTRIBUTES_DEPTH:
        raise ValueError(f"attributes nest deeper than {MAX_ATTRIBUTES_DEPTH} levels")
    if len(json.dumps(value)) > MAX_ATTRIBUTES_BYTES:
        raise ValueError(f"attributes exceed {MAX_ATTRIBUTES_BYTES} bytes of JSON")
    return value


def _upper(value: str) -> str:
    return value.upper()


Text = Annotated[str, StringConstraints(min_length=1, max_length=200), trimmed()]
Team = Annotated[str, StringConstraints(min_length=1, max_length=100), trimmed()]
Subject = Annotated[str, StringConstraints(max_length=500)]
Body = Annotated[str, StringConstraints(max_length=MAX_BODY_CHARS)]
Outcome = Annotated[str, StringConstraints(max_length=500), trimmed(0)]


def _check_thread_id(value: str) -> str:
    if not value.strip() or not value.isprintable():
        raise ValueError("a thread id is printable text, not blank")
    return value


# Given by the sending system: any printable text (it is a bound value and a URL-encoded path segment).
ThreadId = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_check_thread_id)]
SourceName = Annotated[str, StringConstraints(pattern=_KEY_PATTERN)]
# Upper-cased before the check, so the document states the case-insensitive form.
Currency = Annotated[
    str,
    AfterValidator(_upper),
    StringConstraints(pattern=r"^[A-Z]{3}$"),
    Field(json_schema_extra={"pattern": "^[A-Za-z]{3}$"}),
]
Attributes = Annotated[dict[str, Any], AfterValidator(check_attributes)]
Amount = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=4)]
# Amounts leave as JSON numbers (the database keeps them exact).
AmountOut = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HandleIdentity(Strict):
    channel: Annotated[str, StringConstraints(pattern=_KEY_PATTERN)]
    value: Text


class ExternalIdentity(Strict):
    source: Annotated[str, StringConstraints(pattern=_KEY_PATTERN)]
    value: Text


def _contact_by_identity_schema(schema: dict[str, Any]) -> None:
    """The document names the two fields of a new contact that are plain text; any other field of the contacts
    service's ContactCreate is accepted too and checked there (so it is not listed: its rules live there)."""
    stated(exactly_one_of("email", "phone", "handle", "external_id"))(schema)
    text = {"type": "string", "minLength": 1, "maxLength": 200}
    schema["properties"].update({"name": text, "company": text})
    schema["additionalProperties"] = False


class ContactByIdentity(BaseModel):
    """Exactly one identity of the contact; other fields (``name``, ``company``, ``language`` …) describe
    the contact to create when nobody holds it, and are checked by the contacts service."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra=_contact_by_identity_schema,
    )

    email: Annotated[str, StringConstraints(min_length=3, max_length=320), trimmed(3)] | None = None
    phone: Annotated[str, StringConstraints(min_length=3, max_length=40), trimmed(3)] | None = None
    handle: HandleIdentity | None = None
    external_id: ExternalIdentity | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ContactByIdentity:
        given = [k for k in ("email", "phone", "handle", "external_id") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one identity: email, phone, handle or external_id")
        if self.model_extra and len(json.dumps(self.model_extra, default=str)) > MAX_ATTRIBUTES_BYTES:
            raise ValueError(f"the new contact's fields exceed {MAX_ATTRIBUTES_BYTES} bytes of JSON")
        return self

    def resolve_request(self) -> dict[str, Any]:
        """The body of the contacts service's ``POST /v1/contacts/resolve``."""
        identity = self.model_dump(include={"email", "phone", "handle", "external_id"}, exclude_none=True)
        create = dict(self.model_extra or {})
        return {**identity, "create": create} if create else identity

    def cache_key(self) -> str:
        return json.dumps(self.resolve_request(), sort_keys=True, default=str)


class TouchpointCreate(Strict):
    """A touchpoint to log. The contact is given by ``contact_id`` or by ``contact`` (one identity)."""

    # The rules of _consistent, stated in the document.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=stated(
            exactly_one_of("contact_id", "contact"),
            needs("amount", "currency"),
            both_or_neither("source", "external_id"),
        ),
    )

    contact_id: uuid.UUID | None = None
    contact: ContactByIdentity | None = None
    channel: Channel
    direction: Direction
    type: TouchpointType
    occurred_at: AwareInput
    agent: Text | None = None
    team: Team | None = None
    subject: Subject | None = None
    body: Body | None = None
    thread_id: ThreadId | None = None
    followup_id: uuid.UUID | None = Field(
        None, description="The follow-up this touchpoint fulfils (e.g. the call-back it is): that follow-up closes"
    )
    outcome: Outcome | None = None
    # NotBoolean: a JSON true is not a score of 1 (lax integers take booleans).
    csat: Annotated[int, Field(ge=1, le=5), NotBoolean] | None = None
    nps: Annotated[int, Field(ge=0, le=10), NotBoolean] | None = None
    duration_s: Annotated[int, Field(ge=0, le=MAX_DURATION_S), NotBoolean] | None = None
    amount: Amount | None = None
    currency: Currency | None = None
    source: SourceName | None = None
    external_id: Text | None = None
    # A factory, not ``= {}``: pydantic deep-copies a mutable default for every item (a quarter of an item's
    # validation in a batch); the document states the same default.
    attributes: Attributes = Field(default_factory=dict, json_schema_extra={"default": {}})

    @field_validator("occurred_at", mode="after")
    @classmethod
    def _representable_in_utc(cls, value: datetime) -> datetime:
        try:
            return as_utc(value)
        except OverflowError:
            raise ValueError("occurred_at is outside the range of dates (years 1 to 9999 in UTC)") from None

    @model_validator(mode="after")
    def _consistent(self) -> TouchpointCreate:
        if (self.contact_id is None) == (self.contact is None):
            raise ValueError("give the contact either by contact_id or by contact (one identity), not both")
        if self.amount is not None and self.currency is None:
            raise ValueError("an amount needs its currency (ISO 4217, e.g. EUR)")
        if (self.source is None) != (self.external_id is None):
            raise ValueError("source and external_id go together")
        return self


class TouchpointRead(BaseModel):
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
    amount: AmountOut | None
    currency: str | None
    source: str | None
    external_id: str | None
    attributes: dict[str, Any]
    sentiment: float | None
    version: int
    updated_at: datetime
    redacted_at: datetime | None = None

    model_config = ConfigDict(from_attributes=True)

    @field_validator("occurred_at", "received_at", "updated_at", "redacted_at", mode="after")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # SQLite hands back naive UTC; every time leaves as aware UTC.
        return as_utc(value) if value is not None else None


# TouchpointRead's fields in its order: what the contact page reads and writes.
READ_FIELDS: tuple[str, ...] = tuple(TouchpointRead.model_fields)
_ID_FIELDS = ("id", "contact_id", "original_contact_id")


def _written_as_read(item: dict[str, Any]) -> dict[str, Any]:
    """A touchpoint's values (times aware UTC) made ready for pydantic-core's ``to_json`` to write what
    TouchpointRead's serializer writes: the amount as a number (AmountOut), ids as text."""
    if item["amount"] is not None:
        item["amount"] = float(item["amount"])
    for name in _ID_FIELDS:
        # pydantic-core writes a uuid.UUID itself but asyncpg's subclass through a fallback 30 times slower
        # (a 50-row page: 270 against 100 us); asyncpg's own str() is C.
        if type(item[name]) is not uuid.UUID:
            item[name] = str(item[name])
    return item


def page_json(items: list[dict[str, Any]], *, next_cursor: str | None, next_before: str | None) -> bytes:
    """The JSON ``TouchpointPage(items=…, …).model_dump_json()`` writes, from touchpoints read from the table (dicts
    of READ_FIELDS, times aware UTC as servicekit.db.UTCDateTime and asyncpg give them), without validating each
    field again: pydantic-core writes ids, times (UTC as ``Z``), floats and attributes as the model's serializer
    does. Validating a 50-row page into models and dumping it was twice the CPU of this (a test compares the two
    documents byte for byte). The items are changed in place."""
    page = {"items": [_written_as_read(item) for item in items], "next_cursor": next_cursor,
            "next_before": next_before}  # fmt: skip
    return pydantic_core.to_json(page, inf_nan_mode="null")


def touchpoint_json(row: dict[str, Any]) -> str:
    """``TouchpointRead.model_validate(row).model_dump_json()`` for a row this service just built (times in UTC),
    without validating again what TouchpointCreate validated (a test compares the two)."""
    item = _written_as_read({name: row[name] for name in READ_FIELDS})
    return pydantic_core.to_json(item, inf_nan_mode="null").decode()


class TouchpointPatch(Strict):
    """Outcome, the status of the touchpoint's thread, and attributes (a JSON merge patch: a key set
    to ``null`` is removed)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    outcome: Outcome | None = None
    thread_status: ThreadStatus | SkipJsonSchema[None] = None
    attributes: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _something(self) -> TouchpointPatch:
        if not self.model_fields_set:
            raise ValueError("give at least one of outcome, thread_status, attributes")
        if "thread_status" in self.model_fields_set and self.thread_status is None:
            raise ValueError("thread_status is open or resolved")
        return self


class TouchpointPage(BaseModel):
    items: list[TouchpointRead]
    next_cursor: str | None = Field(description="Opaque cursor of the next (older) page; null on the last page")
    next_before: str | None = Field(
        description="The same position as `<occurred_at ISO>|<id>`, for the `before` parameter"
    )


class BatchCreate(Strict):
    items: list[dict[str, Any]] = Field(min_length=1, description=f"At most {MAX_BATCH} touchpoints")


class BatchItemResult(BaseModel):
    index: int
    status: int = Field(description="201 stored, 200 already stored (same source and external_id), 4xx/503 not")
    id: uuid.UUID | None = None
    problem: dict[str, Any] | None = None


class BatchResult(BaseModel):
    results: list[BatchItemResult]


class ThreadRead(BaseModel):
    thread_id: str
    contact_id: uuid.UUID
    status: ThreadStatus
    opened_at: datetime = Field(description="When the thread's first touchpoint occurred")
    resolved_at: datetime | None
    channel: str = Field(description="Channel of the first touchpoint")
    type: str = Field(description="Type of the first touchpoint")
    complaint: bool = Field(description="Whether any touchpoint of the thread is a complaint")
    first_response_s: float | None = Field(
        description="Seconds from the first inbound touchpoint to the next outbound one; null if none yet"
    )
    items: list[TouchpointRead]
    truncated: bool = Field(description="True when the thread has more touchpoints than were returned")
