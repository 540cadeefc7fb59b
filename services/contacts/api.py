"""HTTP routes of the contacts service: parse, call the service, return."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, status

from servicekit.openapi import headers
from servicekit.problems import PROBLEM_MEDIA_TYPE
from services.contacts import service
from services.contacts.deps import ContactsDep, SessionDep
from services.contacts.schemas import (
    MAX_RESOLVE_MANY,
    STAGES,
    ContactCreate,
    ContactExport,
    ContactPage,
    ContactRead,
    ContactUpdate,
    MergeRequest,
    ResolveManyRequest,
    ResolveManyResult,
    ResolveRequest,
)

router = APIRouter(prefix="/v1/contacts", tags=["contacts"])

SEARCH_DESCRIPTION = (
    "Name, company, email or phone: exact matches first, then prefix matches, then names within a typo; a phone "
    "number in any common format (national, 00 or + international, spaces, brackets, dashes)"
)


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {}}}


NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: _problem("No such contact"),
    308: _problem("Merged into another contact (Location)"),
    410: _problem("Erased"),
}


@router.post(
    "",
    status_code=201,
    response_model=ContactRead,
    summary="Create a contact",
    responses={
        201: {"description": "Created", "headers": headers("ETag", "Location")},
        409: _problem("An identity is held by another live contact"),
    },
)
async def create_contact(
    body: ContactCreate, session: SessionDep, contacts: ContactsDep, response: Response
) -> ContactRead:
    contact = await contacts.create(session=session, data=body)
    response.headers["ETag"] = service.etag(contact)
    response.headers["Location"] = f"/v1/contacts/{contact.id}"
    return service.to_read(contact)


@router.get(
    "", response_model=ContactPage, summary="List and search contacts", responses={400: _problem("Invalid cursor")}
)
async def list_contacts(
    session: SessionDep,
    contacts: ContactsDep,
    q: Annotated[str | None, Query(max_length=200, description=SEARCH_DESCRIPTION)] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    tier: Annotated[str | None, Query(pattern="^(standard|premium)$")] = None,
    stage: Annotated[str | None, Query(pattern="^(" + "|".join(STAGES) + ")$")] = None,
    owner: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> ContactPage:
    rows, next_cursor = await service.list_contacts(
        session=session, q=q, tag=tag, tier=tier, stage=stage, owner=owner, limit=limit, cursor=cursor,
        region=contacts.default_region, similarity=contacts.search_similarity,
    )  # fmt: skip
    return ContactPage(items=[service.to_read(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "/resolve",
    response_model=ContactRead,
    summary="Find the contact holding an identity, or create it",
    responses={
        200: {"description": "Found", "headers": headers("ETag")},
        201: {"model": ContactRead, "description": "Created", "headers": headers("ETag")},
        409: _problem("An identity given in create is held by another live contact"),
    },
)
async def resolve_contact(
    body: ResolveRequest, session: SessionDep, contacts: ContactsDep, response: Response
) -> ContactRead:
    contact, created = await contacts.resolve(session=session, request=body)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    response.headers["ETag"] = service.etag(contact)
    return service.to_read(contact)


@router.post(
    "/resolve-many",
    response_model=ResolveManyResult,
    response_model_exclude_none=True,
    summary="Find or create the contacts holding many identities at once",
    description=f"Up to {MAX_RESOLVE_MANY} items, each resolved as `POST /v1/contacts/resolve` does (found: 200, "
    "created: 201, refused: its problem), in one transaction. Each result holds the contact's id only.",
)
async def resolve_many(body: ResolveManyRequest, session: SessionDep, contacts: ContactsDep) -> ResolveManyResult:
    outcomes = await contacts.resolve_many(session=session, items=body.items)
    return ResolveManyResult(results=[service.resolve_many_item(index, o) for index, o in enumerate(outcomes)])


@router.get(
    "/{contact_id}",
    response_model=ContactRead,
    summary="Read a contact",
    responses={200: {"description": "OK", "headers": headers("ETag")}, **NOT_FOUND},
)
async def get_contact(contact_id: uuid.UUID, session: SessionDep, response: Response) -> ContactRead:
    contact = await service.get_contact(session=session, contact_id=contact_id)
    response.headers["ETag"] = service.etag(contact)
    return service.to_read(contact)


@router.patch(
    "/{contact_id}",
    response_model=ContactRead,
    summary="Change a contact (JSON merge patch)",
    responses={
        200: {"description": "OK", "headers": headers("ETag")},
        **NOT_FOUND,
        409: _problem("Identity taken"),
        412: _problem("Stale If-Match"),
    },
)
async def patch_contact(
    contact_id: uuid.UUID,
    body: ContactUpdate,
    session: SessionDep,
    contacts: ContactsDep,
    response: Response,
    if_match: Annotated[str | None, Header(max_length=200)] = None,
) -> ContactRead:
    contact = await contacts.update(session=session, contact_id=contact_id, patch=body, if_match=if_match)
    response.headers["ETag"] = service.etag(contact)
    return service.to_read(contact)


@router.post(
    "/{target_id}/merge",
    response_model=ContactRead,
    summary="Merge a duplicate into this contact",
    responses={404: _problem("No such contact"), 422: _problem("Self-merge or cycle")},
)
async def merge_contact(
    target_id: uuid.UUID, body: MergeRequest, session: SessionDep, contacts: ContactsDep
) -> ContactRead:
    contact = await contacts.merge(session=session, target_id=target_id, source_id=body.source_id)
    return service.to_read(contact)


@router.delete(
    "/{contact_id}",
    status_code=204,
    summary="Erase a contact's personal data (GDPR)",
    responses={404: _problem("No such contact")},
)
async def erase_contact(contact_id: uuid.UUID, session: SessionDep, contacts: ContactsDep) -> Response:
    await contacts.erase(session=session, contact_id=contact_id)
    return Response(status_code=204)


@router.get(
    "/{contact_id}/export",
    response_model=ContactExport,
    summary="Everything stored about a contact",
    responses={404: _problem("No such contact")},
)
async def export_contact(contact_id: uuid.UUID, session: SessionDep, contacts: ContactsDep) -> ContactExport:
    return await contacts.export(session=session, contact_id=contact_id)
