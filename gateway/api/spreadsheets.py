"""CSV through the gateway: contacts import (the body streamed to the contacts service, which parses and
upserts it), contacts export (the service's stream passed on) and touchpoints export (the interactions list
read page by page). Bulk copies of personal data: every export is in the audit log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from gateway.api.common import AUTH_ERRORS, ok, problem
from gateway.auth import ContactsExport, ContactsWrite, InteractionsRead
from gateway.deps import RuntimeDep, ServicesDep, SessionDep, record_audit
from gateway.schemas_services import ImportResult
from gateway.settings import GatewaySettings
from gateway.upstream import GatewayTimeout, ServiceClient, relay
from servicekit.clock import InUtc
from servicekit.csvio import CSV_MEDIA_TYPE, csv_line
from servicekit.logging import get_logger
from servicekit.problems import ServiceUnavailable

log = get_logger(__name__)
router = APIRouter(responses=AUTH_ERRORS)
IMPORT_PATH = "/api/v1/contacts/import"
CSV_BODY = {"content": {"text/csv": {"schema": {"type": "string"}}}}
INTERACTION_COLUMNS = (
    "id", "occurred_at", "contact_id", "original_contact_id", "channel", "direction", "type", "agent", "team",
    "subject", "body", "thread_id", "outcome", "csat", "nps", "duration_s", "amount", "currency", "sentiment",
    "source", "external_id", "attributes", "received_at", "updated_at", "redacted_at", "version",
)  # fmt: skip
EXPORT_PAGE = 200


def _settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


async def _send(service: ServiceClient, request: httpx.Request, *, stream: bool) -> httpx.Response:
    """One long call (no retry: an import is a write, an export is restarted by its client)."""
    try:
        return await service.client.send(request, stream=stream)
    except httpx.TimeoutException:
        raise GatewayTimeout(f"The {service.name} service did not answer in time.", service=service.name) from None
    except httpx.TransportError as exc:
        log.warning("upstream_failed", upstream=service.name, error=repr(exc))
        raise ServiceUnavailable(
            f"The {service.name} service cannot be reached.", retry_after=5, service=service.name
        ) from None


def _long_timeout(request: Request) -> httpx.Timeout:
    settings = _settings(request)
    return httpx.Timeout(settings.csv_timeout_s, connect=settings.upstream_connect_timeout_s)


@router.post(
    "/contacts/import",
    summary="Import contacts from CSV: upsert by identity, bad rows listed and skipped (?dry_run=true writes nothing)",
    responses={
        **ok(ImportResult, "created, updated, unchanged and the rows in error (see docs/contacts.md)"),
        413: problem("Body over GATEWAY_IMPORT_MAX_BYTES or CONTACTS_IMPORT_MAX_BYTES"),
        415: problem("Not text/csv"),
        422: problem("Unknown or repeated columns, no header, not UTF-8"),
    },
    openapi_extra={"requestBody": {"required": True, **CSV_BODY}},
)
async def import_contacts(
    request: Request,
    principal: ContactsWrite,
    services: ServicesDep,
    dry_run: Annotated[bool, Query(description="Report what the import would do; write nothing")] = False,
) -> Response:
    """Send the CSV as the body (`text/csv`, a header row naming the columns). Each row is matched to a contact by its
    identities (email, phone, external id) and created or updated; a row that fails is reported with its row number,
    field and reason and the others still apply. With `?dry_run=true` nothing is written and the counts say what
    would happen."""
    service = services.contacts
    headers = service._headers(principal.id, {"Content-Type": request.headers.get("content-type", "")})
    upstream = service.client.build_request(
        "POST",
        "/v1/contacts/import",
        params={"dry_run": str(dry_run).lower()},
        content=request.stream(),
        headers=headers,
        timeout=_long_timeout(request),
    )
    response = await _send(service, upstream, stream=False)
    return relay(response, service=service.name)


@router.get(
    "/contacts/export.csv",
    summary="Export the live contacts as CSV (filters as the list; merged ones as their survivor, erased never)",
    responses={200: {"description": "UTF-8 CSV with a header row (columns: docs/contacts.md)", **CSV_BODY}},
    response_class=StreamingResponse,
)
async def export_contacts(
    request: Request,
    principal: ContactsExport,
    services: ServicesDep,
    session: SessionDep,
    runtime: RuntimeDep,
    q: Annotated[str | None, Query(max_length=200, description="Prefix of name, company, email or phone")] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    tier: Annotated[str | None, Query(pattern="^(standard|premium)$")] = None,
    stage: Annotated[str | None, Query(max_length=20)] = None,
    owner: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Streams every live contact matching the filters as CSV, one row per contact. A cell that a spreadsheet would run
    as a formula is neutralised."""
    service = services.contacts
    # Given empty is given: the service judges it by the document (an empty stage is refused), not dropped here.
    filters = {"q": q, "tag": tag, "tier": tier, "stage": stage, "owner": owner}
    params = {k: v for k, v in filters.items() if v is not None}
    upstream = service.client.build_request(
        "GET",
        "/v1/contacts/export.csv",
        params=params,
        headers=service._headers(principal.id, None),
        timeout=_long_timeout(request),
    )
    response = await _send(service, upstream, stream=True)
    await record_audit(
        session=session, runtime=runtime, principal=principal, action="contacts.export_csv", target="contacts",
        outcome=response.status_code, detail={"filters": sorted(params)},  # their names: a q may be a name
    )  # fmt: skip
    if response.status_code != 200:
        await response.aread()
        await response.aclose()
        return relay(response, service=service.name)

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        finally:
            await response.aclose()

    return StreamingResponse(
        body(), media_type=CSV_MEDIA_TYPE, headers={"Content-Disposition": 'attachment; filename="contacts.csv"'}
    )


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True) if value else ""
    return str(value)


async def _interaction_pages(service: ServiceClient, caller: str, params: dict[str, Any]) -> AsyncIterator[bytes]:
    yield csv_line(INTERACTION_COLUMNS).encode()
    cursor: str | None = None
    while True:
        page = await service.json(
            "GET", "/v1/interactions", caller=caller, params={**params, "limit": EXPORT_PAGE, "cursor": cursor}
        )
        items = page["items"]
        if items:
            yield "".join(csv_line([_cell(item.get(c)) for c in INTERACTION_COLUMNS]) for item in items).encode()
        cursor = page.get("next_cursor")
        if not cursor:
            return


@router.get(
    "/interactions/export.csv",
    summary="Export touchpoints as CSV, newest first (occurred_at in [since, until))",
    responses={200: {"description": "UTF-8 CSV with a header row (columns: docs/gateway.md)", **CSV_BODY}},
    response_class=StreamingResponse,
)
async def export_interactions(
    principal: InteractionsRead,
    services: ServicesDep,
    session: SessionDep,
    runtime: RuntimeDep,
    since: Annotated[InUtc | None, Query(description="occurred_at ≥ since (ISO 8601)")] = None,
    until: Annotated[InUtc | None, Query(description="occurred_at < until (ISO 8601)")] = None,
) -> Response:
    """Streams the touchpoints that occurred in `[since, until)` as CSV, newest first. Formula-like cells are
    neutralised as in the contacts export."""
    params = {"since": since.isoformat() if since else None, "until": until.isoformat() if until else None}
    pages = _interaction_pages(services.interactions, principal.id, params)
    # The first page is read before the answer starts, so a service that is down is a 503 problem, not a
    # truncated file; a failure later ends the stream early (the client sees an incomplete transfer).
    first = await anext(pages)
    second = await anext(pages, b"")
    await record_audit(
        session=session, runtime=runtime, principal=principal, action="interactions.export_csv",
        target="interactions", outcome=200, detail={k: v for k, v in params.items() if v},
    )  # fmt: skip

    async def body() -> AsyncIterator[bytes]:
        yield first + second
        async for chunk in pages:
            yield chunk

    return StreamingResponse(
        body(), media_type=CSV_MEDIA_TYPE, headers={"Content-Disposition": 'attachment; filename="interactions.csv"'}
    )
