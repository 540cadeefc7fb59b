"""The console's customer pages beyond the timeline: create and edit a customer, duplicate suggestions and the
side-by-side merge, export as a download, and erase behind a typed confirmation.

Like every console page these read and write through the gateway's ``/api/v1`` as the signed-in staff member
(gateway/console/client.py), so the roles, the CSRF check and the audit log are the API's own."""

from __future__ import annotations

import json
import uuid
from typing import Any
from zoneinfo import available_timezones

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from gateway.auth import Action, allowed
from gateway.console import labels
from gateway.console.client import Answer
from gateway.console.duplicates import same_person
from gateway.console.routes import Desk, open_desk, posted_form, to_sign_in, unavailable

router = APIRouter(include_in_schema=False)

TIERS = ("standard", "premium")
# Zone names for the form's suggestion list (any IANA name is accepted; the contacts service checks it).
TIME_ZONES = sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/")))
# The word that erases a customer without a name (and works for any customer).
ERASE_WORD = "ERASE"
CONFLICT_MESSAGE = "This customer was changed by someone else since you opened it."


# --- the form ---------------------------------------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    """One value a line (or comma separated): how the form takes emails and phones."""
    return [v.strip() for v in text.replace(",", "\n").splitlines() if v.strip()]


def profile_from_form(field: dict[str, str], *, before: dict[str, Any] | None) -> dict[str, Any]:
    """The contact the form describes, as the API takes it: a full profile on create, on edit a JSON merge patch
    where a handle or consent left empty that was set before is sent as ``null`` (removed)."""
    handles: dict[str, str | None] = {}
    consent: dict[str, bool | None] = {}
    old_handles = (before or {}).get("handles", {})
    old_consent = (before or {}).get("consent", {})
    for channel in [*labels.CHANNELS, *[k for k in old_handles if k not in labels.CHANNELS]]:
        value = field.get(f"handle_{channel}", "")
        if value:
            handles[channel] = value
        elif channel in old_handles:
            handles[channel] = None
    for channel in labels.CHANNELS:
        choice = field.get(f"consent_{channel}", "")
        if choice in ("yes", "no"):
            consent[channel] = choice == "yes"
        elif channel in old_consent:
            consent[channel] = None
    body: dict[str, Any] = {
        "name": field.get("name") or None,
        "company": field.get("company") or None,
        "emails": _lines(field.get("emails", "")),
        "phones": _lines(field.get("phones", "")),
        "handles": handles,
        "tier": field.get("tier") or "standard",
        "stage": field.get("stage") or "lead",
        "owner": field.get("owner") or None,
        "tags": [t.strip() for t in field.get("tags", "").split(",") if t.strip()],
        "consent": consent,
        "language": field.get("language") or None,
        "timezone": field.get("timezone") or None,
        "preferred_channel": field.get("preferred_channel") or None,
    }
    if before is None:  # a new contact: nothing to clear, and the API's defaults stand for what is left out
        return {k: v for k, v in body.items() if v not in (None, [], {})}
    return body


def form_values(contact: dict[str, Any] | None, field: dict[str, str] | None = None) -> dict[str, str]:
    """What the form's controls show: what was just submitted (after a refusal), else the contact as read."""
    if field is not None:
        return field
    c = contact or {}
    values = {
        "name": c.get("name") or "",
        "company": c.get("company") or "",
        "emails": "\n".join(c.get("emails", [])),
        "phones": "\n".join(c.get("phones", [])),
        "tier": c.get("tier") or "standard",
        "stage": c.get("stage") or "lead",
        "owner": c.get("owner") or "",
        "tags": ", ".join(c.get("tags", [])),
        "language": c.get("language") or "",
        "timezone": c.get("timezone") or "",
        "preferred_channel": c.get("preferred_channel") or "",
    }
    for channel, handle in c.get("handles", {}).items():
        values[f"handle_{channel}"] = handle
    for channel, yes in c.get("consent", {}).items():
        values[f"consent_{channel}"] = "yes" if yes else "no"
    return values


def handle_channels(contact: dict[str, Any] | None) -> list[tuple[str, str]]:
    """A handle field for each channel, and one for each other handle the customer has (made through the API):
    the form must show it, or saving would remove it."""
    others = [k for k in (contact or {}).get("handles", {}) if k not in labels.CHANNELS]
    return [*labels.CHANNELS.items(), *((k, k) for k in others)]


IDENTITY_FIELDS = {"email": "emails", "phone": "phones"}


def field_errors(answer: Answer) -> dict[str, str]:
    """The API's refusal per form field (``loc``/``field`` of a 422, the identity of a 409), so each message is
    shown beside its control; ``""`` holds what names no field."""
    body = answer.body if isinstance(answer.body, dict) else {}
    found: dict[str, str] = {}
    if answer.status == 409 and isinstance(body.get("identity"), dict):
        kind = str(body["identity"].get("kind", ""))
        name = IDENTITY_FIELDS.get(kind) or (f"handle_{kind.split(':', 1)[1]}" if kind.startswith("handle:") else "")
        holder = body.get("contact_id")
        found[name] = f"{body['identity'].get('value')} already belongs to another customer."
        if holder:
            found["_holder"] = str(holder)
        return found
    for error in body.get("errors") or []:
        if not isinstance(error, dict):
            continue
        loc = [str(p) for p in error.get("loc", []) if not isinstance(p, int)]
        name = loc[1] if len(loc) > 1 and loc[0] == "body" else (loc[0] if loc else "")
        if name in ("handles", "consent") and len(loc) > 2:
            name = f"{name[:-1] if name == 'handles' else name}_{loc[2]}"
        found.setdefault(name, str(error.get("msg", "")))
    if isinstance(body.get("field"), str):
        found.setdefault(body["field"], answer.problem)
    if not found:
        found[""] = answer.problem
    return found


async def _staff(desk: Desk) -> list[dict[str, Any]]:
    staff = await desk.api.get("/staff")
    return list(staff.body.get("items", [])) if staff.ok else []


async def _form(
    desk: Desk,
    *,
    contact: dict[str, Any] | None,
    values: dict[str, str],
    errors: dict[str, str] | None = None,
    etag: str = "",
    conflict: bool = False,
    status: int = 200,
) -> Response:
    return desk.render(
        "customer_form.html",
        status=status,
        contact=contact,
        v=values,
        errors=errors or {},
        etag=etag,
        conflict=conflict,
        staff=await _staff(desk),
        handle_channels=handle_channels(contact),
        tiers=TIERS,
        stages=labels.STAGES,
        time_zones=TIME_ZONES,
    )


def not_for_role(desk: Desk, action: Action, what: str) -> Response | None:
    """The refusal page before a form the API would refuse anyway: not a form that fails when sent."""
    if allowed(desk.principal.role, action):
        return None
    return desk.render("error.html", status=403, title="Not for your role",
                       message=f"{what} needs the {action.value} permission.")  # fmt: skip


@router.get("/customers/new")
async def new_customer_form(request: Request) -> Response:
    desk = await open_desk(request)
    if desk is None:
        return to_sign_in(request)
    if refused := not_for_role(desk, Action.contacts_write, "Adding a customer"):
        return refused
    return await _form(desk, contact=None, values=form_values(None))


@router.post("/customers")
async def create_customer(request: Request) -> Response:
    posted = await posted_form(request)
    if isinstance(posted, Response):
        return posted
    desk, field = posted
    answer = await desk.api.post("/contacts", json=profile_from_form(field, before=None))
    if answer.status in (409, 422):
        return await _form(desk, contact=None, values=field, errors=field_errors(answer), status=answer.status)
    if not answer.ok:
        return unavailable(desk, answer, "The new customer")
    return RedirectResponse(f"/customers/{answer.body['id']}", status_code=303)


@router.get("/customers/{contact_id}/edit")
async def edit_customer_form(request: Request, contact_id: uuid.UUID) -> Response:
    desk = await open_desk(request)
    if desk is None:
        return to_sign_in(request)
    if refused := not_for_role(desk, Action.contacts_write, "Changing a customer"):
        return refused
    contact = await desk.api.get(f"/contacts/{contact_id}")
    if contact.status == 308:  # merged away: the survivor is the one to edit
        survivor = (contact.body or {}).get("merged_into") or contact.headers.get("location", "").rsplit("/", 1)[-1]
        return RedirectResponse(f"/customers/{survivor}/edit", status_code=303)
    if not contact.ok:
        return unavailable(desk, contact, "This customer")
    return await _form(desk, contact=contact.body, values=form_values(contact.body),
                       etag=contact.headers.get("etag", ""))  # fmt: skip


@router.post("/customers/{contact_id}/edit")
async def edit_customer(request: Request, contact_id: uuid.UUID) -> Response:
    posted = await posted_form(request)
    if isinstance(posted, Response):
        return posted
    desk, field = posted
    current = await desk.api.get(f"/contacts/{contact_id}")
    if not current.ok:
        return unavailable(desk, current, "This customer")
    # The patch is worked out against the profile as it is now (which handles to remove); If-Match, with the
    # version the agent read, makes the service refuse it if anyone changed the customer in between.
    patch = profile_from_form(field, before=current.body)
    etag = field.get("etag", "")
    answer = await desk.api.call(
        "PATCH", f"/contacts/{contact_id}", json=patch, headers={"If-Match": etag} if etag else None
    )
    result = answer[0]
    if result.status == 412:
        return await _form(desk, contact=current.body, values=field, etag=etag, conflict=True, status=412)
    if result.status in (409, 422):
        return await _form(desk, contact=current.body, values=field, errors=field_errors(result), etag=etag,
                           status=result.status)  # fmt: skip
    if not result.ok:
        return unavailable(desk, result, "This customer")
    return RedirectResponse(f"/customers/{contact_id}", status_code=303)


# --- duplicates and merge -----------------------------------------------------------------------------------------


@router.get("/customers/{contact_id}/merge/{other_id}")
async def merge_page(request: Request, contact_id: uuid.UUID, other_id: uuid.UUID) -> Response:
    desk = await open_desk(request)
    if desk is None:
        return to_sign_in(request)
    return await _merge_page(desk, contact_id, other_id, problem=None)


async def _merge_page(
    desk: Desk, contact_id: uuid.UUID, other_id: uuid.UUID, *, problem: str | None, status: int = 200
) -> Response:
    if contact_id == other_id:
        return desk.render("error.html", status=422, title="Nothing to merge",
                           message="A customer cannot be merged with itself.")  # fmt: skip
    this, other = await desk.api.get_many([f"/contacts/{contact_id}", f"/contacts/{other_id}"])
    for answer in (this, other):
        if answer.status == 308:
            return desk.render("error.html", status=409, title="Already merged",
                               message="One of these customers was merged into another already.")  # fmt: skip
        if not answer.ok:
            return unavailable(desk, answer, "A customer to merge")
    return desk.render(
        "customer_merge.html",
        status=status,
        pair=[this.body, other.body],
        reasons=same_person(this.body, other.body),
        problem=problem,
        may_merge=allowed(desk.principal.role, Action.contacts_write),
    )


@router.post("/customers/{contact_id}/merge/{other_id}")
async def merge_customers(request: Request, contact_id: uuid.UUID, other_id: uuid.UUID) -> Response:
    posted = await posted_form(request)
    if isinstance(posted, Response):
        return posted
    desk, field = posted
    pair = {str(contact_id): other_id, str(other_id): contact_id}
    survivor = field.get("survivor", "")
    if survivor not in pair:
        return await _merge_page(desk, contact_id, other_id, status=422,
                                 problem="Choose which customer stays.")  # fmt: skip
    source = pair[survivor]
    answer = await desk.api.post(f"/contacts/{survivor}/merge", json={"source_id": str(source)})
    if not answer.ok:
        return await _merge_page(desk, contact_id, other_id, problem=answer.problem, status=answer.status)
    return RedirectResponse(f"/customers/{survivor}?merged_from={source}", status_code=303)


# --- export and erase ---------------------------------------------------------------------------------------------


@router.get("/customers/{contact_id}/export")
async def export_customer(request: Request, contact_id: uuid.UUID) -> Response:
    """Everything the contacts service stores about the customer, as a file to hand to them (GDPR access)."""
    desk = await open_desk(request)
    if desk is None:
        return to_sign_in(request)
    answer = await desk.api.get(f"/contacts/{contact_id}/export")
    if not answer.ok:
        return unavailable(desk, answer, "The export")
    return Response(
        json.dumps(answer.body, indent=2, ensure_ascii=False),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="customer-{contact_id}.json"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


def erase_word(contact: dict[str, Any]) -> str:
    return str(contact.get("name") or ERASE_WORD)


@router.get("/customers/{contact_id}/erase")
async def erase_page(request: Request, contact_id: uuid.UUID) -> Response:
    desk = await open_desk(request)
    if desk is None:
        return to_sign_in(request)
    return await _erase_page(desk, contact_id, problem=None)


async def _erase_page(desk: Desk, contact_id: uuid.UUID, *, problem: str | None, status: int = 200) -> Response:
    if refused := not_for_role(desk, Action.contacts_erase, "Erasing a customer"):
        return refused
    contact = await desk.api.get(f"/contacts/{contact_id}")
    if not contact.ok:
        return unavailable(desk, contact, "This customer")
    return desk.render("customer_erase.html", status=status, contact=contact.body, word=erase_word(contact.body),
                       problem=problem)  # fmt: skip


@router.post("/customers/{contact_id}/erase")
async def erase_customer(request: Request, contact_id: uuid.UUID) -> Response:
    posted = await posted_form(request)
    if isinstance(posted, Response):
        return posted
    desk, field = posted
    contact = await desk.api.get(f"/contacts/{contact_id}")
    if not contact.ok:
        return unavailable(desk, contact, "This customer")
    typed = field.get("confirm", "")
    if typed not in (erase_word(contact.body), ERASE_WORD):
        problem = f"Type {erase_word(contact.body)} (or {ERASE_WORD}) to erase this customer."
        return await _erase_page(desk, contact_id, problem=problem, status=422)
    answer = await desk.api.send("DELETE", f"/contacts/{contact_id}")
    if not answer.ok:
        return await _erase_page(desk, contact_id, problem=answer.problem, status=answer.status)
    return RedirectResponse(f"/customers/{contact_id}", status_code=303)
