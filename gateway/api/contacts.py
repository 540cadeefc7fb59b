"""Contacts through the gateway: CRUD, search, resolve, merge, export, erase."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from gateway.api.common import (
    AUTH_ERRORS,
    CONTACT_ERRORS,
    INGEST_VIEW,
    body_of,
    forward,
    ids_only_for_ingest,
    ok,
    problem,
)
from gateway.auth import ContactsErase, ContactsExport, ContactsRead, ContactsResolve, ContactsWrite, Principal
from gateway.deps import RuntimeDep, ServicesDep, SessionDep, WriteThroughDep, record_audit
from gateway.schemas_services import (
    ContactCreate,
    ContactExport,
    ContactPage,
    ContactRead,
    ContactUpdate,
    MergeRequest,
    ResolveRequest,
)
from gateway.staff import StaffNamesDep, resolve_me
from gateway.upstream import upstream_path

router = APIRouter(prefix="/contacts", tags=["contacts"], responses=AUTH_ERRORS)


async def _check_owner(body: ContactCreate | ContactUpdate, principal: Principal, names: StaffNamesDep) -> None:
    """An owner is an active staff user, named by handle (``me``: the caller); 422 naming ``owner`` otherwise."""
    if body.owner is not None:
        body.owner = resolve_me(body.owner, principal, field="owner")
        await names.check_person(body.owner, field="owner")


@router.post(
    "",
    status_code=201,
    summary="Create a contact",
    responses={
        **ok(ContactRead, "Created", 201, headers=("ETag", "Location")),
        409: problem("An identity is held by another contact"),
    },
)
async def create_contact(
    body: ContactCreate, principal: ContactsWrite, services: ServicesDep, names: StaffNamesDep
) -> Response:
    """Creates a contact from its profile and identities. Emails are lower-cased and phones normalised to E.164; an
    identity already held by another live contact is a 409 naming it. The answer carries the contact's `ETag` and
    `Location`."""
    await _check_owner(body, principal, names)
    return await forward(services.contacts, "POST", "/v1/contacts", principal, body=body_of(body))


SEARCH = (
    "Name, company, email or phone: exact matches first, then prefix matches, then names within a typo; a phone "
    "number in any common format (national, 00 or + international, spaces, brackets, dashes)"
)


@router.get("", summary="List and search contacts", responses=ok(ContactPage))
async def list_contacts(
    principal: ContactsRead,
    services: ServicesDep,
    q: Annotated[str | None, Query(max_length=200, description=SEARCH)] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    tier: Annotated[str | None, Query(pattern="^(standard|premium)$")] = None,
    stage: Annotated[str | None, Query(max_length=20)] = None,
    owner: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """Pages through contacts, filtered by a search (`q`), a tag, tier, stage or owner (`me`: the caller). A search
    finds name, company, email or phone: first the contacts with a word or identity equal to it, then those starting
    with it, then those whose name or company words are each within a typo of the words typed (`fatma` finds
    Fatima); each group newest first. A phone number may be typed in any common format (`612 992 580`,
    `0034612992580`, `+34 612 992 580`, `(612) 992-580`). Follow `next_cursor` for the next page (through every
    group); it is absent on the last."""
    owner = resolve_me(owner, principal, field="owner")
    params = {"q": q, "tag": tag, "tier": tier, "stage": stage, "owner": owner, "limit": limit, "cursor": cursor}
    return await forward(services.contacts, "GET", "/v1/contacts", principal, params=params)


@router.post(
    "/resolve",
    summary="Find the contact holding an identity, or create it",
    description=INGEST_VIEW.format("id` and `status"),
    responses={**ok(ContactRead, "Found", headers=("ETag",)), **ok(ContactRead, "Created", 201, headers=("ETag",))},
)
async def resolve_contact(
    body: ResolveRequest, principal: ContactsResolve, services: ServicesDep, names: StaffNamesDep
) -> Response:
    # An owner in `create` is checked even when the contact turns out to exist: a bad request is refused whatever
    # the data holds, so a caller learns of it the first time, not when the contact is new.
    if body.create is not None and body.create.owner is not None:
        body.create.owner = resolve_me(body.create.owner, principal, field="create.owner")
        await names.check_person(body.create.owner, field="create.owner")
    answer = await forward(services.contacts, "POST", "/v1/contacts/resolve", principal, body=body_of(body))
    return ids_only_for_ingest(principal, answer, "id", "status")


@router.get(
    "/{contact_id}", summary="Read a contact", responses={**ok(ContactRead, headers=("ETag",)), **CONTACT_ERRORS}
)
async def get_contact(contact_id: uuid.UUID, principal: ContactsRead, services: ServicesDep) -> Response:
    """Returns the contact with its `ETag`. A contact merged into another answers 308 with the survivor's `Location`;
    an erased one answers 410."""
    return await forward(services.contacts, "GET", upstream_path("/v1/contacts/{}", contact_id), principal)


@router.patch(
    "/{contact_id}",
    summary="Change a contact (JSON merge patch; If-Match for optimistic concurrency)",
    responses={
        **ok(ContactRead, headers=("ETag",)),
        **CONTACT_ERRORS,
        409: problem("Identity taken"),
        412: problem("Stale If-Match"),
    },
)
async def patch_contact(
    contact_id: uuid.UUID,
    body: ContactUpdate,
    principal: ContactsWrite,
    services: ServicesDep,
    write_through: WriteThroughDep,
    names: StaffNamesDep,
    if_match: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """A JSON merge patch (RFC 7396): fields left out stay as they are, `null` clears. Send the `ETag` you read as `If-
    Match` to change the contact only if nobody else changed it since (412 otherwise)."""
    await _check_owner(body, principal, names)
    headers = {"If-Match": if_match} if if_match else None
    answer = await forward(
        services.contacts,
        "PATCH",
        upstream_path("/v1/contacts/{}", contact_id),
        principal,
        body=body_of(body),
        headers=headers,
    )
    return await write_through.contacts(answer, contact_id)


@router.post(
    "/{target_id}/merge",
    summary="Merge a duplicate (source_id) into this contact",
    responses={**ok(ContactRead), 404: problem("No such contact"), 422: problem("Self-merge or cycle")},
)
async def merge_contact(
    target_id: uuid.UUID,
    body: MergeRequest,
    principal: ContactsWrite,
    services: ServicesDep,
    session: SessionDep,
    runtime: RuntimeDep,
    write_through: WriteThroughDep,
) -> Response:
    """Merges the duplicate `source_id` into this contact: its identities move here and it then answers 308 pointing
    here. Audited."""
    response = await forward(
        services.contacts, "POST", upstream_path("/v1/contacts/{}/merge", target_id), principal, body=body_of(body)
    )
    await write_through.contacts(response, target_id, body.source_id)
    await record_audit(
        session=session,
        runtime=runtime,
        principal=principal,
        action="contact.merge",
        target=str(target_id),
        outcome=response.status_code,
        detail={"source_id": str(body.source_id)},
    )
    return response


@router.delete(
    "/{contact_id}",
    status_code=204,
    summary="Erase a contact's personal data everywhere (GDPR)",
    responses={404: problem("No such contact")},
)
async def erase_contact(
    contact_id: uuid.UUID,
    principal: ContactsErase,
    services: ServicesDep,
    session: SessionDep,
    runtime: RuntimeDep,
    write_through: WriteThroughDep,
) -> Response:
    """Erases the contact's personal data in every service (GDPR right to erasure); a tombstone keeps the id, tier and
    stage so counts stay right. Later reads answer 410. Audited."""
    response = await forward(services.contacts, "DELETE", upstream_path("/v1/contacts/{}", contact_id), principal)
    await write_through.contacts(response, contact_id)
    await record_audit(
        session=session,
        runtime=runtime,
        principal=principal,
        action="contact.erase",
        target=str(contact_id),
        outcome=response.status_code,
    )
    return response


@router.get(
    "/{contact_id}/export",
    summary="Everything the contacts service stores about a contact (GDPR access)",
    responses={**ok(ContactExport), 404: problem("No such contact")},
)
async def export_contact(
    contact_id: uuid.UUID, principal: ContactsExport, services: ServicesDep, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Everything the contacts service stores about one contact, for a data subject access request (GDPR). Audited."""
    response = await forward(services.contacts, "GET", upstream_path("/v1/contacts/{}/export", contact_id), principal)
    await record_audit(
        session=session,
        runtime=runtime,
        principal=principal,
        action="contact.export",
        target=str(contact_id),
        outcome=response.status_code,
    )
    return response
