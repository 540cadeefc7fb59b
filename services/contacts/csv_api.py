"""CSV routes of the contacts service: import (a stream of rows upserted in chunks) and export (streamed).

Included before the contact routes, so ``/v1/contacts/export.csv`` is not read as a contact id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from servicekit.csvio import CSV_MEDIA_TYPE
from servicekit.problems import PROBLEM_MEDIA_TYPE, ProblemError
from services.contacts import spreadsheets
from services.contacts.deps import ContactsDep
from services.contacts.schemas import STAGES, ImportResult
from services.contacts.settings import ContactsSettings

router = APIRouter(prefix="/v1/contacts", tags=["contacts"])
IMPORT_PATH = "/v1/contacts/import"


class UnsupportedMediaType(ProblemError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


def _problem(description: str) -> dict[str, object]:
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {}}}


@router.post(
    "/import",
    response_model=ImportResult,
    summary="Import contacts from CSV (upsert by identity; rows in error are listed and skipped)",
    responses={
        413: _problem("Body over CONTACTS_IMPORT_MAX_BYTES"),
        415: _problem("Not text/csv"),
        422: _problem("Unknown or repeated columns, no header, not UTF-8"),
    },
    openapi_extra={"requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def import_contacts(
    request: Request,
    contacts: ContactsDep,
    dry_run: Annotated[bool, Query(description="Report what would happen; write nothing")] = False,
) -> ImportResult:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ("text/csv", "application/csv"):
        raise UnsupportedMediaType(f"Send the rows as text/csv, not {media_type or 'no content type'}.")
    runtime = request.app.state.runtime
    settings: ContactsSettings = runtime.settings
    report = await spreadsheets.import_contacts(
        sessionmaker=runtime.sessionmaker,
        contacts=contacts,
        body=request.stream(),
        dry_run=dry_run,
        chunk_rows=settings.import_chunk_rows,
        max_rows=settings.import_max_rows,
        max_errors=settings.import_max_errors,
    )
    return ImportResult.model_validate({**report.__dict__, "dry_run": dry_run})


@router.get(
    "/export.csv",
    summary="Export the live contacts as CSV (filters as the list; merged ones as their survivor, erased never)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "UTF-8 CSV"}},
)
async def export_contacts(
    request: Request,
    contacts: ContactsDep,
    q: Annotated[str | None, Query(max_length=200, description="Prefix of name, company, email or phone")] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    tier: Annotated[str | None, Query(pattern="^(standard|premium)$")] = None,
    stage: Annotated[str | None, Query(pattern="^(" + "|".join(STAGES) + ")$")] = None,
    owner: Annotated[str | None, Query(max_length=200)] = None,
) -> StreamingResponse:
    filters = {"q": q, "tag": tag, "tier": tier, "stage": stage, "owner": owner,
               "region": contacts.default_region, "similarity": contacts.search_similarity}  # fmt: skip
    body = spreadsheets.export_contacts(sessionmaker=request.app.state.runtime.sessionmaker, filters=filters)
    return StreamingResponse(
        body, media_type=CSV_MEDIA_TYPE, headers={"Content-Disposition": 'attachment; filename="contacts.csv"'}
    )
