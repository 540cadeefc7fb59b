"""Tables of the interactions database (its own metadata: no other service shares it)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import registry
from sqlmodel import JSON, Column, Field, SQLModel

from servicekit.db import UTCDateTime
from servicekit.ids import new_id
from servicekit.runtime import shared_tables


class InteractionsTable(SQLModel, registry=registry()):
    pass


metadata = InteractionsTable.metadata
outbox_table, inbox_table = shared_tables(metadata)

_AT = UTCDateTime()


class Touchpoint(InteractionsTable, table=True):
    """One interaction with a customer on one channel."""

    __tablename__ = "interactions"
    __table_args__ = (
        # One contact's timeline page is an index range scan: O(page size) at millions of rows.
        sa.Index("ix_interactions_contact_timeline", "contact_id", "occurred_at", "id"),
        sa.Index("ix_interactions_timeline", "occurred_at", "id"),
        sa.Index("ix_interactions_thread", "thread_id", "occurred_at", "id"),
        sa.Index("ix_interactions_original_contact", "original_contact_id"),
        # A re-sent touchpoint from the same system is found, never stored twice (NULLs never clash).
        sa.UniqueConstraint("source", "external_id", name="uq_interactions_source_external_id"),
        sa.UniqueConstraint("ingest_key", name="uq_interactions_ingest_key"),
    )

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    contact_id: uuid.UUID
    # The contact the touchpoint was logged for; ``contact_id`` moves when that contact is merged away.
    original_contact_id: uuid.UUID
    channel: str = Field(max_length=20)
    direction: str = Field(max_length=10)
    type: str = Field(max_length=20)
    occurred_at: datetime = Field(sa_type=_AT)  # type: ignore[call-overload]
    received_at: datetime = Field(sa_type=_AT)  # type: ignore[call-overload]
    agent: str | None = Field(default=None, max_length=200)
    team: str | None = Field(default=None, max_length=100)
    subject: str | None = Field(default=None, max_length=500)
    body: str | None = Field(default=None, sa_type=sa.Text)  # type: ignore[call-overload]
    thread_id: str | None = Field(default=None, max_length=200)
    # The follow-up this touchpoint fulfils, when the agent said so (the follow-ups service closes it).
    followup_id: uuid.UUID | None = None
    outcome: str | None = Field(default=None, max_length=500)
    csat: int | None = Field(default=None)
    nps: int | None = Field(default=None)
    duration_s: int | None = Field(default=None)
    amount: Decimal | None = Field(default=None, sa_type=sa.Numeric(18, 4))  # type: ignore[call-overload]
    currency: str | None = Field(default=None, max_length=3)
    source: str | None = Field(default=None, max_length=80)
    external_id: str | None = Field(default=None, max_length=200)
    # Nats-Msg-Id (or stream position) of a touchpoint that came over NATS: a redelivery is not stored twice.
    ingest_key: str | None = Field(default=None, max_length=300)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    sentiment: float | None = Field(default=None)
    version: int = Field(default=1)
    updated_at: datetime = Field(sa_type=_AT)  # type: ignore[call-overload]
    redacted_at: datetime | None = Field(default=None, sa_type=_AT)  # type: ignore[call-overload]


class Thread(InteractionsTable, table=True):
    """Status of a thread; a thread without a row is open (rows are written when the status changes)."""

    __tablename__ = "threads"

    thread_id: str = Field(primary_key=True, max_length=200)
    contact_id: uuid.UUID = Field(index=True)
    status: str = Field(default="open", max_length=10)  # open | resolved
    resolved_at: datetime | None = Field(default=None, sa_type=_AT, index=True)  # type: ignore[call-overload]
    updated_at: datetime = Field(sa_type=_AT)  # type: ignore[call-overload]


class ContactFate(InteractionsTable, table=True):
    """Contacts merged away or erased, learned from the contacts service's events.

    Checked in every write transaction, so a replica whose memory of live contacts is stale
    still files a touchpoint under the surviving contact, or refuses one for an erased contact."""

    __tablename__ = "contact_fates"

    contact_id: uuid.UUID = Field(primary_key=True)
    fate: str = Field(max_length=10)  # merged | erased
    merged_into: uuid.UUID | None = Field(default=None, index=True)
    at: datetime = Field(sa_type=_AT)  # type: ignore[call-overload]


class KnownIdentity(InteractionsTable, table=True):
    """This service's copy of the contacts service's identity directory: which contact holds an identity, so a
    touchpoint naming a known email, phone, handle or external id is filed without a call to contacts.

    Fed by the contacts service's events (created, updated, merged, erased) and by the answers of resolve-many
    calls. Holds no personal data: an identity is kept as the HMAC-SHA256 of its normalised value under a key
    that is a setting, not in the database (``servicekit.identities.identity_digest``), and an erase deletes
    every row of the contact and of the contacts merged into it. ``changed_at`` is the time of the event that
    wrote the row, so an older event delivered late never overwrites a newer one; a row learned from an answer
    carries the earliest time (any event about it wins). ``held`` false: the identity was removed from the contact
    at ``changed_at`` (kept so that an older event cannot bring it back)."""

    __tablename__ = "known_identities"

    digest: bytes = Field(sa_type=sa.LargeBinary(32), primary_key=True)  # type: ignore[call-overload]
    contact_id: uuid.UUID = Field(index=True)
    held: bool = Field(default=True)
    changed_at: datetime = Field(sa_type=_AT)  # type: ignore[call-overload]


class IdempotencyRecord(InteractionsTable, table=True):
    """An Idempotency-Key of one caller, with the fingerprint of its request and, once done, the response."""

    __tablename__ = "idempotency_keys"

    caller: str = Field(primary_key=True, max_length=200)
    key: str = Field(primary_key=True, max_length=255)
    fingerprint: str = Field(max_length=64)
    status: int | None = Field(default=None)  # NULL while the first request is in flight
    response: str | None = Field(default=None, sa_type=sa.Text)  # type: ignore[call-overload]
    # The touchpoint the response is about: an erase of its contact replaces the response (see idempotency.py).
    touchpoint_id: uuid.UUID | None = Field(default=None, index=True)
    created_at: datetime = Field(sa_type=_AT)  # type: ignore[call-overload]
    expires_at: datetime = Field(sa_type=_AT, index=True)  # type: ignore[call-overload]
