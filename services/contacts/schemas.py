"""Request and response shapes of the contacts API (unknown fields are rejected)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import langcodes
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.json_schema import SkipJsonSchema

from servicekit.channels import Channel
from servicekit.identities import normalise_email
from servicekit.jsonschema import exactly_one_of, stated
from servicekit.text import trimmed

Tier = Literal["standard", "premium"]
Stage = Literal["lead", "prospect", "customer", "repeat", "at_risk", "churned"]
STAGES: tuple[str, ...] = ("lead", "prospect", "customer", "repeat", "at_risk", "churned")

MAX_IDENTITIES = 20
_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("not an IANA time zone (e.g. Europe/Paris)") from None
    return value


def _check_language(value: str) -> str:
    if not langcodes.tag_is_valid(value):
        raise ValueError("not a BCP 47 language tag (e.g. en, fr-CA)")
    return str(langcodes.standardize_tag(value))


def _check_keys(value: dict[str, Any]) -> dict[str, Any]:
    for key in value:
        if not _KEY.match(key):
            raise ValueError(f"key {key!r} must be 1-40 lower-case letters, digits, '_', '.' or '-'")
    return value


def _normalise_tags(value: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for tag in value:
        cleaned = tag.strip().lower()
        if cleaned:
            seen.setdefault(cleaned, None)
    return list(seen)


def _check_json_size(value: dict[str, Any]) -> dict[str, Any]:
    if _depth(value) > 8:
        raise ValueError("attributes nest deeper than 8 levels")
    if len(json.dumps(value)) > 16_384:
        raise ValueError("attributes exceed 16384 bytes of JSON")
    return value


def _depth(value: Any, level: int = 1) -> int:
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


Text200 = Annotated[str, StringConstraints(min_length=1, max_length=200), trimmed()]
Email = Annotated[str, StringConstraints(max_length=320), AfterValidator(normalise_email)]
Phone = Annotated[str, StringConstraints(min_length=3, max_length=40), trimmed(3)]
Handle = Annotated[str, StringConstraints(min_length=1, max_length=200), trimmed()]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64), trimmed()]
TimeZone = Annotated[str, StringConstraints(max_length=64), AfterValidator(_check_timezone)]
Language = Annotated[str, StringConstraints(max_length=35), AfterValidator(_check_language)]
# The key rule is checked by _check_keys (its message names the key) and stated in the document for clients.
KEYS_SCHEMA: dict[str, Any] = {"propertyNames": {"pattern": _KEY.pattern}}
Handles = Annotated[
    dict[str, Handle], Field(max_length=MAX_IDENTITIES, json_schema_extra=KEYS_SCHEMA), AfterValidator(_check_keys)
]
ExternalIds = Annotated[
    dict[str, Handle], Field(max_length=MAX_IDENTITIES, json_schema_extra=KEYS_SCHEMA), AfterValidator(_check_keys)
]
Tags = Annotated[list[Tag], Field(max_length=100), AfterValidator(_normalise_tags)]
Attributes = Annotated[dict[str, Any], AfterValidator(_check_json_size)]
Consent = dict[Channel, bool]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContactCreate(Strict):
    """A new contact. Emails are lower-cased; phones become E.164."""

    name: Text200 | None = None
    company: Text200 | None = None
    emails: Annotated[list[Email], Field(max_length=MAX_IDENTITIES)] = []
    phones: Annotated[list[Phone], Field(max_length=MAX_IDENTITIES)] = []
    handles: Handles = {}
    external_ids: ExternalIds = {}
    tier: Tier = "standard"
    preferred_channel: Channel | None = None
    language: Language | None = None
    timezone: TimeZone | None = None
    tags: Tags = []
    attributes: Attributes = {}
    consent: Consent = {}
    stage: Stage = "lead"
    owner: Text200 | None = None


class ContactUpdate(Strict):
    """A JSON merge patch (RFC 7396): absent fields stay, ``null`` clears; in ``handles``,
    ``external_ids``, ``consent`` and ``attributes`` a key set to ``null`` is removed."""

    name: Text200 | None = None
    company: Text200 | None = None
    emails: Annotated[list[Email], Field(max_length=MAX_IDENTITIES)] | None = None
    phones: Annotated[list[Phone], Field(max_length=MAX_IDENTITIES)] | None = None
    handles: Annotated[dict[str, Handle | None], Field(json_schema_extra=KEYS_SCHEMA)] | None = None
    external_ids: Annotated[dict[str, Handle | None], Field(json_schema_extra=KEYS_SCHEMA)] | None = None
    # tier and stage cannot be cleared (422): the document offers no null for them.
    tier: Tier | SkipJsonSchema[None] = None
    preferred_channel: Channel | None = None
    language: Language | None = None
    timezone: TimeZone | None = None
    tags: Tags | None = None
    attributes: dict[str, Any] | None = None
    consent: dict[Channel, bool | None] | None = None
    stage: Stage | SkipJsonSchema[None] = None
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

    model_config = ConfigDict(from_attributes=True)


class ContactPage(BaseModel):
    items: list[ContactRead]
    next_cursor: str | None


class HandleIdentity(Strict):
    channel: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,39}$")]
    value: Handle


class ExternalIdentity(Strict):
    source: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,39}$")]
    value: Handle


class ResolveRequest(Strict):
    """Exactly one identity; ``create`` holds the fields of a contact made when none holds it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=stated(exactly_one_of("email", "phone", "handle", "external_id")),
    )

    email: Email | None = None
    phone: Phone | None = None
    handle: HandleIdentity | None = None
    external_id: ExternalIdentity | None = None
    create: ContactCreate | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ResolveRequest:
        given = [k for k in ("email", "phone", "handle", "external_id") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one identity: email, phone, handle or external_id")
        return self


# Items of one resolve-many call: the interactions service sends the unknown identities of one batch of touchpoints
# (at most 500 distinct ones per call) in one request.
MAX_RESOLVE_MANY = 500


class ResolveManyRequest(Strict):
    """Up to ``MAX_RESOLVE_MANY`` resolve requests, each as ``POST /v1/contacts/resolve`` takes it. Each item is
    checked and answered on its own: an invalid one gets its 422 in the results, the others are resolved."""

    # Each item is documented as an object, not as a ResolveRequest: an invalid item is not a refusal of the whole
    # request (it gets its own 422 in the results), as in the touchpoint batch.
    items: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_RESOLVE_MANY,
        description=f"At most {MAX_RESOLVE_MANY} items, each as POST /v1/contacts/resolve takes it (ResolveRequest)",
    )


class ResolveManyItem(BaseModel):
    """What became of one item: 200 found, 201 created (``id`` set), or a 4xx ``problem`` (RFC 9457 body)."""

    index: int
    status: int
    id: uuid.UUID | None = None
    problem: dict[str, Any] | None = None


class ResolveManyResult(BaseModel):
    """One result per item, in the order of the items. Only ids and statuses: the caller (the ingest path) needs
    no profile."""

    results: list[ResolveManyItem]


class MergeRequest(Strict):
    source_id: uuid.UUID


class IdentityRead(BaseModel):
    kind: str
    value: str


class ContactExport(BaseModel):
    """Everything this service stores about one contact (GDPR access)."""

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
