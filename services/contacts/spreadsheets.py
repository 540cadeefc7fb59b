"""Contacts as CSV: import (upsert by identity, in chunks, each chunk one transaction) and export (keyset pages).

Columns (header names, case-insensitive; order free; a column left out or a cell left empty leaves the field as
it is on an existing contact):

- ``id``: the contact to update (a merged one is followed to its survivor; an unknown or erased one is a row
  error). Without it the row is matched by its identities.
- ``name``, ``company``, ``tier``, ``stage``, ``owner``, ``language``, ``timezone``, ``preferred_channel``.
  ``owner`` is an active staff user's handle (checked against this service's copy of the staff handles,
  services/contacts/staff.py) when it gives the contact to someone (not the owner it has): any other is a row
  error naming the column.
- ``emails`` (or ``email``), ``phones`` (or ``phone``), ``tags`` (or ``tag``): several values separated by ``;``.
  Emails and phones are added to an existing contact's (an import never removes an identity); tags replace its tags.
- ``handle.<channel>`` (e.g. ``handle.whatsapp``), ``external_id.<source>`` (e.g. ``external_id.shop``).
- ``consent.<channel>`` for the seven channels: ``true``/``false`` (also ``yes``/``no``, ``1``/``0``).
- ``attributes``: a JSON object, merged key by key into the contact's.
- ``created_at``, ``updated_at``, ``status``, ``version``: written by export, ignored by import.

A row is matched to the live contact holding any of its identities (email, phone, handle, external id); a row
whose identities belong to two contacts is an error (merge them first); no match creates a contact.
"""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from servicekit.channels import CHANNELS
from servicekit.csvio import LIST_SEPARATOR, CsvTooLong, Record, csv_line, records, restore
from servicekit.problems import ProblemError, Unprocessable
from services.contacts.models import Contact, Identity
from services.contacts.schemas import ContactCreate, ContactUpdate
from services.contacts.service import ContactService, get_contact, list_contacts, normalise_phone
from services.contacts.staff import owner_problem

SCALAR_COLUMNS = ("name", "company", "tier", "stage", "owner", "language", "timezone", "preferred_channel")
LIST_COLUMNS = {name: name + "s" for name in ("email", "phone", "tag")} | {n: n for n in ("emails", "phones", "tags")}
IGNORED_COLUMNS = frozenset({"created_at", "updated_at", "status", "version"})
PREFIXED = {"handle.": "handles", "external_id.": "external_ids", "consent.": "consent"}
_TRUE = frozenset({"true", "yes", "1", "y"})
_FALSE = frozenset({"false", "no", "0", "n"})
EXPORT_PAGE = 500


class BadCsv(Unprocessable):
    slug, title = "bad-csv", "The CSV cannot be imported"


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rows: int = 0
    error_count: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = True

    def error(self, *, row: int, column: str | None, message: str, max_errors: int) -> None:
        self.error_count += 1
        if len(self.errors) < max_errors:
            self.errors.append({"row": row, "field": column, "message": message})


class RowError(Exception):
    def __init__(self, column: str | None, message: str) -> None:
        super().__init__(message)
        self.column = column
        self.message = message


@dataclass(frozen=True)
class Column:
    name: str  # as in the header
    target: str | None  # the contact field, None for ignored columns
    key: str | None = None  # the key within handles, external_ids or consent


def columns_of(header: list[str]) -> list[Column]:
    """The header's columns; unknown or repeated ones are refused before any row is read."""
    found: list[Column] = []
    unknown: list[str] = []
    seen: set[tuple[str | None, str | None]] = set()
    for raw in header:
        name = raw.strip()
        lowered = name.lower()
        column: Column | None = None
        if lowered == "id" or lowered in SCALAR_COLUMNS or lowered == "attributes":
            column = Column(name, lowered)
        elif lowered in LIST_COLUMNS:
            column = Column(name, LIST_COLUMNS[lowered])
        elif lowered in IGNORED_COLUMNS:
            column = Column(name, None)
        else:
            for prefix, target in PREFIXED.items():
                key = name[len(prefix) :].strip()
                if lowered.startswith(prefix) and key:
                    column = Column(name, target, key)
        if column is None:
            unknown.append(name)
            continue
        if column.target is not None and (column.target, column.key) in seen:
            raise BadCsv(f"The column {name!r} is given twice.", column=name)
        seen.add((column.target, column.key))
        found.append(column)
    if unknown:
        raise BadCsv(
            "Unknown columns: " + ", ".join(repr(u) for u in unknown) + ". See the import columns in docs/contacts.md.",
            columns=unknown,
        )
    return found


def _split(cell: str) -> list[str]:
    return [value.strip() for value in cell.split(LIST_SEPARATOR) if value.strip()]


def fields_of(columns: list[Column], cells: list[str]) -> tuple[uuid.UUID | None, dict[str, Any]]:
    """The contact fields a row sets (empty cells set nothing) and the id it names, if any."""
    if len(cells) > len(columns):
        raise RowError(None, f"The row has {len(cells)} cells; the header has {len(columns)} columns.")
    contact_id: uuid.UUID | None = None
    fields: dict[str, Any] = {}
    for column, raw in zip(columns, cells, strict=False):
        cell = restore(raw.strip())
        if not cell or column.target is None:
            continue
        if column.target == "id":
            try:
                contact_id = uuid.UUID(cell)
            except ValueError:
                raise RowError(column.name, "not a contact id (UUID)") from None
        elif column.target in ("emails", "phones", "tags"):
            fields[column.target] = _split(cell)
        elif column.target == "consent":
            lowered = cell.lower()
            if lowered not in _TRUE | _FALSE:
                raise RowError(column.name, "consent is true or false (yes/no, 1/0)")
            fields.setdefault("consent", {})[column.key] = lowered in _TRUE
        elif column.target in ("handles", "external_ids"):
            fields.setdefault(column.target, {})[column.key] = cell
        elif column.target == "attributes":
            try:
                value = json.loads(cell)
            except ValueError:
                raise RowError(column.name, "attributes is a JSON object") from None
            if not isinstance(value, dict):
                raise RowError(column.name, "attributes is a JSON object")
            fields["attributes"] = value
        else:
            fields[column.target] = cell
    return contact_id, fields


def _column_of(columns: list[Column], loc: tuple[Any, ...]) -> str | None:
    target = str(loc[0]) if loc else None
    key = str(loc[1]) if len(loc) > 1 and isinstance(loc[1], str) else None
    for column in columns:
        if column.target == target and (column.key is None or key is None or column.key == key):
            return column.name
    return target


class ContactImport:
    """One import: its columns, the service that writes, and the report so far."""

    def __init__(self, *, contacts: ContactService, columns: list[Column], report: ImportReport, max_errors: int):
        self.contacts = contacts
        self.columns = columns
        self.report = report
        self.max_errors = max_errors
        self._owner_problems: dict[str, str | None] = {}

    def _validation_error(self, exc: ValidationError) -> RowError:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        return RowError(_column_of(self.columns, tuple(first["loc"])), message)

    async def row(self, *, session: AsyncSession, record: Record) -> str:
        """Upsert one row: ``created``, ``updated`` or ``unchanged``; a RowError says why it cannot be."""
        contact_id, fields = fields_of(self.columns, record.cells)
        try:
            ContactUpdate.model_validate(fields)
        except ValidationError as exc:
            raise self._validation_error(exc) from None
        try:
            fields["phones"] = [normalise_phone(p, self.contacts.default_region) for p in fields.get("phones", [])]
        except Unprocessable as exc:
            raise RowError(_column_of(self.columns, ("phones",)), exc.detail or "not a phone number") from None
        checked = ContactUpdate.model_validate(fields)
        holders = await self._holders(session, checked)
        if contact_id is not None:
            try:
                target = await get_contact(session=session, contact_id=contact_id, follow_merges=True)
            except ProblemError as exc:
                raise RowError("id", exc.detail or exc.title) from None
            others = holders - {target.id}
            if others:
                raise RowError(None, f"An identity of this row belongs to another contact ({min(others)}).")
        elif len(holders) > 1:
            ids = ", ".join(str(h) for h in sorted(holders))
            raise RowError(None, f"The identities of this row belong to different contacts ({ids}); merge them first.")
        elif holders:
            target = await get_contact(session=session, contact_id=next(iter(holders)))
        else:
            try:
                data = ContactCreate.model_validate(checked.model_dump(exclude_unset=True))
            except ValidationError as exc:
                raise self._validation_error(exc) from None
            await self._check_owner(session, data.owner)
            async with session.begin_nested():
                await self.contacts.create(session=session, data=data)
            return "created"
        # An owner the contact has already is not given to anyone: re-importing an export of a leaver's contacts
        # changes nothing, as any export does.
        if checked.owner != target.owner:
            await self._check_owner(session, checked.owner)
        patch = checked.model_dump(exclude_unset=True)
        # Identities are added, never removed by an import: a file lists what it knows, not all there is.
        if "emails" in patch:
            patch["emails"] = list(dict.fromkeys([*target.emails, *(checked.emails or [])]))
        if "phones" in patch:
            patch["phones"] = list(dict.fromkeys([*target.phones, *(checked.phones or [])]))
        version = target.version
        try:
            async with session.begin_nested():
                updated = await self.contacts.update(
                    session=session, contact_id=target.id, patch=ContactUpdate.model_validate(patch), if_match=None
                )
        except ValidationError as exc:  # the contact as patched, checked whole (e.g. a handle's channel name)
            raise self._validation_error(exc) from None
        return "updated" if updated.version != version else "unchanged"

    async def _check_owner(self, session: AsyncSession, handle: str | None) -> None:
        """An owner is an active staff handle (this service's copy of them); each handle is looked up once per
        import, as a file names the same few owners on many rows."""
        if handle is None:
            return
        if handle not in self._owner_problems:
            self._owner_problems[handle] = await owner_problem(session=session, handle=handle)
        problem = self._owner_problems[handle]
        if problem is not None:
            raise RowError(_column_of(self.columns, ("owner",)), problem)

    async def _holders(self, session: AsyncSession, row: ContactUpdate) -> set[uuid.UUID]:
        wanted = [("email", e) for e in row.emails or []] + [("phone", p) for p in row.phones or []]
        wanted += [(f"handle:{ch}", (h or "").lower()) for ch, h in (row.handles or {}).items()]
        wanted += [(f"external:{src}", v or "") for src, v in (row.external_ids or {}).items()]
        holders: set[uuid.UUID] = set()
        for kind, value in wanted:
            identity = await session.get(Identity, (kind, value))
            if identity is not None:
                holders.add(identity.contact_id)
        return holders


async def import_contacts(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    contacts: ContactService,
    body: AsyncIterable[bytes],
    dry_run: bool,
    chunk_rows: int,
    max_rows: int,
    max_errors: int,
) -> ImportReport:
    """Read the CSV as it arrives and upsert it ``chunk_rows`` rows per transaction (rolled back in a dry run).

    A row that cannot be imported is reported and skipped; the others are imported. A file that is not CSV
    (bad header, not UTF-8, a record that never ends) stops the import: rows already read stay imported and the
    report says ``complete: false``."""
    report = ImportReport()
    importer: ContactImport | None = None
    pending: list[Record] = []

    async def flush() -> None:
        assert importer is not None
        async with sessionmaker() as session:
            for record in pending:
                try:
                    outcome = await importer.row(session=session, record=record)
                except RowError as exc:
                    report.error(row=record.line, column=exc.column, message=exc.message, max_errors=max_errors)
                    continue
                except ProblemError as exc:  # e.g. an identity taken by a concurrent writer meanwhile
                    column = exc.extensions.get("field")
                    message = exc.detail or exc.title
                    report.error(row=record.line, column=column, message=message, max_errors=max_errors)
                    continue
                setattr(report, outcome, getattr(report, outcome) + 1)
            if dry_run:
                await session.rollback()
            else:
                await session.commit()
        pending.clear()

    try:
        async for batch in records(body):
            for record in batch:
                if not any(cell.strip() for cell in record.cells):
                    continue
                if importer is None:
                    importer = ContactImport(
                        contacts=contacts, columns=columns_of(record.cells), report=report, max_errors=max_errors
                    )
                    continue
                if report.rows >= max_rows:
                    report.error(
                        row=record.line, column=None, message=f"Over the limit of {max_rows} rows: not imported.",
                        max_errors=max_errors,
                    )  # fmt: skip
                    report.complete = False
                    break
                report.rows += 1
                pending.append(record)
                if len(pending) >= chunk_rows:
                    await flush()
            if not report.complete:
                break
    except (UnicodeDecodeError, CsvTooLong, csv.Error) as exc:
        if importer is None:
            raise BadCsv(f"The body is not UTF-8 CSV: {exc}") from None
        if pending:
            await flush()
        report.error(row=0, column=None, message=f"Import stopped: {exc}", max_errors=max_errors)
        report.complete = False
        return report
    if importer is None:
        raise BadCsv("The body has no header row.")
    if pending:
        await flush()
    return report


# --- export ---------------------------------------------------------------------------------------------------


async def export_header(*, session: AsyncSession) -> list[str]:
    """The export's columns: one per handle channel and external source some live contact has."""
    kinds = (await session.scalars(select(col(Identity.kind)).distinct().order_by(col(Identity.kind)))).all()
    handles = [f"handle.{k.removeprefix('handle:')}" for k in kinds if k.startswith("handle:")]
    externals = [f"external_id.{k.removeprefix('external:')}" for k in kinds if k.startswith("external:")]
    consent = [f"consent.{channel}" for channel in CHANNELS]
    return [
        "id", "name", "company", "emails", "phones", "tier", "stage", "owner", "language", "timezone",
        "preferred_channel", "tags", *handles, *externals, *consent, "attributes", "created_at", "updated_at",
    ]  # fmt: skip


def export_cells(header: list[str], contact: Contact) -> list[str]:
    values: list[str] = []
    for name in header:
        if name.startswith("handle."):
            value = contact.handles.get(name.removeprefix("handle."), "")
        elif name.startswith("external_id."):
            value = contact.external_ids.get(name.removeprefix("external_id."), "")
        elif name.startswith("consent."):
            given = contact.consent.get(name.removeprefix("consent."))
            value = "" if given is None else str(given).lower()
        elif name in ("emails", "phones", "tags"):
            value = LIST_SEPARATOR.join(getattr(contact, name))
        elif name == "attributes":
            value = json.dumps(contact.attributes, ensure_ascii=False, sort_keys=True) if contact.attributes else ""
        elif name in ("created_at", "updated_at"):
            value = getattr(contact, name).isoformat()
        else:
            raw = getattr(contact, name)
            value = "" if raw is None else str(raw)
        values.append(value)
    return values


async def export_contacts(
    *, sessionmaker: async_sessionmaker[AsyncSession], filters: dict[str, Any]
) -> AsyncIterator[bytes]:
    """The live contacts matching ``filters`` (those of the list API) as UTF-8 CSV, newest first, one keyset page
    of ``EXPORT_PAGE`` per short read transaction. Merged contacts appear as their survivor; erased ones never."""
    async with sessionmaker() as session:
        header = await export_header(session=session)
    yield csv_line(header).encode()
    cursor: str | None = None
    while True:
        async with sessionmaker() as session:
            rows, cursor = await list_contacts(session=session, limit=EXPORT_PAGE, cursor=cursor, **filters)
            page = "".join(csv_line(export_cells(header, contact)) for contact in rows)
        if page:
            yield page.encode()
        if cursor is None:
            return
