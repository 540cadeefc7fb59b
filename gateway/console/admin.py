"""The console's admin pages: API keys, staff users and follow-up policies. Like every console page they read
and write through the gateway's ``/api/v1`` as the signed-in admin (gateway/console/client.py)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from gateway.console.routes import Desk, _day, admin_desk, refused_origin, same_origin, unavailable
from gateway.upstream import path_segment

router = APIRouter(include_in_schema=False)


@router.get("/admin")
async def admin_home(request: Request) -> Response:
    return RedirectResponse("/admin/keys", status_code=303)


@router.get("/admin/keys")
async def keys_page(request: Request) -> Response:
    desk = await admin_desk(request)
    if not isinstance(desk, Desk):
        return desk
    return await _keys(desk, created=None, problem=None)


async def _keys(desk: Desk, *, created: dict[str, Any] | None, problem: str | None, status: int = 200) -> Response:
    keys = await desk.api.get("/api-keys")
    if not keys.ok:
        return unavailable(desk, keys, "API keys")
    return desk.render("admin_keys.html", status=status, keys=keys.body["items"], created=created, problem=problem,
                       tab="keys")  # fmt: skip


@router.post("/admin/keys")
async def create_key(request: Request) -> Response:
    desk = await admin_desk(request)
    if not isinstance(desk, Desk):
        return desk
    if not same_origin(request):
        return refused_origin(request)
    form = await request.form()
    field = {k: str(v).strip() for k, v in form.items() if isinstance(v, str)}
    desk.api.csrf = field.get("csrf_token", "")
    body: dict[str, Any] = {"name": field.get("name", ""), "role": field.get("role", "")}
    if field.get("expires_on"):
        body["expires_at"] = _day(field["expires_on"], end=True)
    answer = await desk.api.post("/api-keys", json=body)
    if not answer.ok:
        return await _keys(desk, created=None, problem=answer.problem, status=answer.status)
    # Rendered, not redirected: the key is shown this once and never travels in a URL.
    return await _keys(desk, created=answer.body, problem=None, status=201)


@router.post("/admin/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: uuid.UUID) -> Response:
    desk = await admin_desk(request)
    if not isinstance(desk, Desk):
        return desk
    if not same_origin(request):
        return refused_origin(request)
    desk.api.csrf = str((await request.form()).get("csrf_token", ""))
    answer = await desk.api.send("DELETE", f"/api-keys/{key_id}")
    if not answer.ok:
        return await _keys(desk, created=None, problem=answer.problem, status=answer.status)
    return RedirectResponse("/admin/keys", status_code=303)


@router.get("/admin/users")
async def users_page(request: Request) -> Response:
    desk = await admin_desk(request)
    if not isinstance(desk, Desk):
        return desk
    return await _users(desk, problem=None)


async def _users(desk: Desk, *, problem: str | None, status: int = 200) -> Response:
    users = await desk.api.get("/users")
    if not users.ok:
        return unavailable(desk, users, "Staff users")
    return desk.render("admin_users.html", status=status, users=users.body["items"], problem=problem, tab="users")


@router.post("/admin/users")
async def create_user(request: Request) -> Response:
    desk = await admin_desk(request)
    if not isinstance(desk, Desk):
        return desk
    if not same_origin(request):
        return refused_origin(request)
    form = await request.form()
    field = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    desk.api.csrf = field.get("csrf_token", "")
    body = {
        "email": field.get("email", "").strip(),
        "password": field.get("password", ""),
        "role": field.get("role", ""),
        "name": field.get("name", "").strip() or None,
    }
    answer = await desk.api.post("/users", json=body)
    if not answer.ok:
        return await _users(desk, problem=answer.problem, status=answer.status)
    return RedirectResponse("/admin/users", status_code=303)


@router.post("/admin/users/{user_id}/disable")
async def disable_user(request: Request, user_id: uuid.UUID) -> Response:
    desk = await admin_desk(request)
    if not isinstance(desk, Desk):
        return desk
    if not same_origin(request):
        return refused_origin(request)
    desk.api.csrf = str((await request.form()).get("csrf_token", ""))
    answer = await desk.api.send("DELETE", f"/users/{user_id}")
    if not answer.ok:
        return await _users(desk, problem=answer.problem, status=answer.status)
    return RedirectResponse("/admin/users", status_code=303)


@router.get("/admin/policies")
async def policies_page(request: Request) -> Response:
    desk = await admin_desk(request)
    if not isinstance(desk, Desk):
        return desk
    policies = await desk.api.get("/policies")
    return desk.render(
        "admin_policies.html",
        policies=policies.body.get("items", []) if policies.ok else [],
        problem=None if policies.ok else policies.problem,
        tab="policies",
    )


@router.get("/admin/policies/{policy_id}")
async def policy_page(request: Request, policy_id: str) -> Response:
    desk = await admin_desk(request)
    if not isinstance(desk, Desk):
        return desk
    policy = await desk.api.get(f"/policies/{path_segment(policy_id)}")
    if not policy.ok:
        return unavailable(desk, policy, "The policy")
    return desk.render("admin_policy.html", policy=policy.body, document=_document(policy.body),
                       preview=None, problem=None, tab="policies")  # fmt: skip


PREVIEW_ROWS = 50


def _document(policy: dict[str, Any]) -> str:
    """The part of a policy an admin edits (its id, version and switch live outside the document)."""
    return json.dumps(policy.get("document", policy), indent=2, ensure_ascii=False)


@router.post("/admin/policies/{policy_id}/{action}")
async def change_policy(request: Request, policy_id: str, action: str) -> Response:
    desk = await admin_desk(request)
    if not isinstance(desk, Desk):
        return desk
    if not same_origin(request):
        return refused_origin(request)
    form = await request.form()
    field = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    desk.api.csrf = field.get("csrf_token", "")
    if action in ("enable", "disable"):
        answer = await desk.api.post(f"/policies/{path_segment(policy_id)}/{action}")
        if not answer.ok:
            return unavailable(desk, answer, "The policy")
        return RedirectResponse("/admin/policies", status_code=303)
    policy = await desk.api.get(f"/policies/{path_segment(policy_id)}")
    if not policy.ok:
        return unavailable(desk, policy, "The policy")
    document, preview, problem = field.get("document", ""), None, None
    if action == "preview":
        answer = await desk.api.post(f"/policies/{path_segment(policy_id)}/preview", days=30)
        preview, problem = (answer.body, None) if answer.ok else (None, answer.problem)
        if preview is not None:
            shown = preview.get("items", [])[:PREVIEW_ROWS]
            ids = sorted({str(item["contact_id"]) for item in shown})
            found = await desk.api.get_many([f"/contacts/{i}" for i in ids])
            names = {i: a.body.get("name") for i, a in zip(ids, found, strict=True) if a.ok}
            preview = {**preview, "shown": shown, "names": names}
    elif action == "save":
        try:
            parsed = json.loads(document)
        except ValueError as error:
            problem = f"The policy is not valid JSON: {error}"
        else:
            answer = await desk.api.send("PUT", f"/policies/{path_segment(policy_id)}", json=parsed)
            if answer.ok:
                return RedirectResponse(f"/admin/policies/{policy_id}", status_code=303)
            problem = answer.problem
    else:
        return desk.render("error.html", status=404, title="Unknown action", message="No such policy action.")
    return desk.render("admin_policy.html", status=200 if problem is None else 422, policy=policy.body,
                       document=document or _document(policy.body), preview=preview, problem=problem,
                       tab="policies")  # fmt: skip
