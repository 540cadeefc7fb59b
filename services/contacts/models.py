"""Tables of the contacts database (its own metadata: no other service shares it)."""

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


class ContactsTable(SQLModel, registry=registry()):
    pass


metadata = ContactsTable.metadata
outbox_table, inbox_table = shared_tables(metadata)

# Prefix search needs byte order on PostgreSQL whatever the database's locale.
_TERM = sa.String(200).with_variant(sa.String(200, collation="C"), "postgresql")


class Contact(ContactsTable, table=True):
    __tablename__ = "contacts"
    __table_args__ = (sa.Index("ix_contacts_status_id", "status", "id"),)

    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)
    name: str | None = Field(default=None, max_length=200)
    company: str | None = Field(default=None, max_length=200)
    emails: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    phones: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    handles: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    external_ids: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    tier: str = Field(default="standard", max_length=20)
    preferred_channel: str | None = Field(default=None, max_length=20)
    language: str | None = Field(default=None, max_length=35)
    timezone: str | None = Field(default=None, max_length=64)
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    consent: dict[str, bool] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    stage: str = Field(default="lead", max_length=20)
    owner: str | None = Field(default=None, max_length=200, index=True)
    status: str = Field(default="active", max_length=10)  # active | merged | erased
    merged_into: uuid.UUID | None = Field(default=None, index=True)
    created_at: datetime = Field(sa_type=UTCDateTime())  # type: ignore[call-overload]
    updated_at: datetime = Field(sa_type=UTCDateTime())  # type: ignore[call-overload]
    erased_at: datetime | None = Field(default=None, sa_type=UTCDateTime())  # type: ignore[call-overload]
    version: int = Field(default=1)


class Identity(ContactsTable, table=True):
    """One identity (an email, a phone, a handle on a channel, an id in another system) held by
    at most one live contact: the primary key makes resolve safe under concurrency."""

    __tablename__ = "identities"

    kind: str = Field(primary_key=True, max_length=80)  # email | phone | handle:<channel> | external:<source>
    value: str = Field(primary_key=True, max_length=320)
    contact_id: uuid.UUID = Field(foreign_key="contacts.id", index=True)


class SearchTerm(ContactsTable, table=True):
    """Lower-cased words of name and company, emails and phone digits (field ``q``), phones' national parts (field
    ``national``), tags (field ``tag``), and name and company again (field ``name``) for the typo search: prefix
    search and tag filters are index range scans; on PostgreSQL a GIN trigram index (``pg_trgm``) over the ``name``
    terms answers the typo search (``ddl_if``: it exists there only, and the migrations' comparisons honour that)."""

    __tablename__ = "search_terms"
    __table_args__ = (
        sa.Index("ix_search_terms_lookup", "field", "term", "contact_id"),
        sa.Index(
            "ix_search_terms_name_trgm",
            "term",
            postgresql_using="gin",
            postgresql_ops={"term": "gin_trgm_ops"},
            postgresql_where=sa.text("field = 'name'"),
        ).ddl_if(dialect="postgresql"),
    )

    contact_id: uuid.UUID = Field(foreign_key="contacts.id", primary_key=True)
    field: str = Field(primary_key=True, max_length=8)
    term: str = Field(primary_key=True, sa_type=_TERM)  # type: ignore[call-overload]


class SearchTrigram(ContactsTable, table=True):
    """SQLite's typo search: the trigrams (as ``pg_trgm`` cuts them) of every distinct ``name`` term a live contact
    has, with the term's trigram count for the similarity. One row per word, not per contact, so a common name
    costs nothing more; a word leaves when no live contact has it any more. Empty on PostgreSQL (``pg_trgm``)."""

    __tablename__ = "search_trigrams"
    __table_args__ = (sa.Index("ix_search_trigrams_term", "term"),)

    trigram: str = Field(primary_key=True, max_length=3)
    term: str = Field(primary_key=True, max_length=200)
    grams: int


class StaffHandle(ContactsTable, table=True):
    """This service's copy of the staff handles (the gateway owns staff and publishes every change as
    ``crm.staff.changed.v1``): what a CSV import checks an ``owner`` against. ``changed_at`` is the time of the
    event that wrote the row, so an older event delivered late never overwrites a newer one."""

    __tablename__ = "staff_handles"

    handle: str = Field(primary_key=True, max_length=64)
    active: bool
    changed_at: datetime = Field(sa_type=UTCDateTime())  # type: ignore[call-overload]
