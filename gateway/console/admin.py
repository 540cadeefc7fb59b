"""The console's admin pages: API keys, staff users and teams, and follow-up policies; and the page where a staff
member sets their password from an invite or reset link. Like every console page they read and write through the
gateway's ``/api/v1`` as the signed-in admin (gateway/console/client.py).

Every form answers with a redirect (POST/redirect/GET), so a reload never makes a second key, user or link; a
secret made by the form (a key, a link) is shown once on the page the redirect leads to (gateway/console/flash.py).
A refused form is shown again with the refusal beside the control it concerns."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from gateway.console import flash, policy_form
from gateway.console.client import Answer, Gateway
from gateway.console.customers import TIME_ZONES, field_errors
from gateway.console.routes import (
    Desk,
    _day,
    admin_desk,
    posted_form,
    refused_origin,
    render,
    same_origin,
    unavailable,
)
from gateway.upstream import path_segment

router = APIRouter(include_in_schema=False)

STAFF_ROLES = ("agent", "readonly", "admin")
KEY_ROLES = ("ingest", "agent", "readonly", "admin")
PREVIEW_ROWS = 50


async def admin_form(request: Request) -> tuple[Desk, dict[str, str]] | Response:
    """A posted admin form: signed in, same origin, and an admin (the API would refuse the rest anyway)."""
    posted = await posted_form(request)
    if isinstance(posted, Response):
        return posted
    desk, field = posted
    if not desk.is_admin:
        return desk.render("error.html", status=403, title="Admins only",
                           message="Your role does not include the admin pages.")  # fmt: skip
    return desk, field


@router.get("/admin")
async def admin_home(request: Request) -> Response:
    return RedirectResponse("/admin/keys", status_code=303)


# --- API keys -------------------------------------------------------------------------------------------------------


@router.get("/admin/keys")
async def keys_page(request: Request) -> Response:
    desk = await admin_desk(request)
    if not isinstance(desk, Desk):
        return desk
    created = await flash.take(request, desk.principal, "api_key")
    return await _keys(desk, created=created, problem=None)


async def _keys(desk: Desk, *, created: dict[str, Any] | None, problem: str | None, status: int = 200,
                values: dict[str, str] | None = None) -> Response:  # fmt: skip
    keys = await desk.api.get("/api-keys")
    if not keys.ok:
        return unavailable(desk, keys, "API keys")
    return desk.render("admin_keys.html", status=status, keys=keys.body["items"], created=created, problem=problem,
                       roles=KEY_ROLES, v=values or {}, tab="keys")  # fmt: skip


@router.post("/admin/keys")
async def create_key(request: Request) -> Response:
    posted = await admin_form(request)
    if isinstance(posted, Response):
        return posted
    desk, field = posted
    body: dict[str, Any] = {"name": field.get("name", ""), "role": field.get("role", "")}
    if field.get("expires_on"):
        body["expires_at"] = _day(field["expires_on"], end=True)
    answer = await desk.api.post("/api-keys", json=body)
    if not answer.ok:
        return await _keys(desk, created=None, problem=answer.problem, status=answer.status, values=field)
    made = answer.body
    await flash.keep(request, desk.principal, "api_key",
                     {"name": made["name"], "role": made["role"], "key": made["key"]})  # fmt: skip
    return RedirectResponse("/admin/keys", status_code=303)


@router.post("/admin/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: uuid.UUID) -> Response:
    posted = await admin_form(request)
    if isinstance(posted, Response):
        return posted
    desk, _ = posted
    answer = await desk.api.send("DELETE", f"/api-keys/{key_id}")
    if not answer.ok:
        return await _keys(desk, created=None, problem=answer.problem, status=answer.status)
    return RedirectResponse("/admin/keys", status_code=303)


# --- staff users and teams ------------------------------------------------------------------------------------------


async def _teams(desk: Desk) -> list[dict[str, Any]]:
    teams = await desk.api.get("/teams")
    return list(teams.body.get("items", [])) if teams.ok else []


@router.get("/admin/users")
async def users_page(request: Request) -> Response:
    desk = await admin_desk(request)
    if not isinstance(desk, Desk):
        return desk
    link = await flash.take(request, desk.principal, "password_link")
    return await _users(desk, link=link)


async def _users(desk: Desk, *, link: dict[str, Any] | None = None, errors: dict[str, str] | None = None,
                 values: dict[str, str] | None = None, ticked: list[str] | None = None,
                 team_errors: dict[str, str] | None = None, status: int = 200) -> Response:  # fmt: skip
    users, teams = await desk.api.get("/users"), await _teams(desk)
    if not users.ok:
        return unavailable(desk, users, "Staff users")
    errors = errors or {}
    return desk.render(
        "admin_users.html",
        status=status,
        users=users.body["items"],
        teams=teams,
        link=link,
        errors=errors,
        team_errors=team_errors or {},
        problem=errors.get(""),
        v=values or {"access": "invite", "role": "agent"},
        ticked=ticked or [],
        roles=STAFF_ROLES,
        time_zones=TIME_ZONES,
        tab="users",
    )


def _link_flash(request: Request, email: str, link: dict[str, Any]) -> dict[str, Any]:
    return {
        "email": email,
        "purpose": link["purpose"],
        "url": str(request.base_url).rstrip("/") + link["path"],
        "expires_at": link["expires_at"],
    }


async def _teams_posted(request: Request) -> list[str]:
    return [str(t) for t in (await request.form()).getlist("teams") if str(t).strip()]


@router.post("/admin/users")
async def create_user(request: Request) -> Response:
    posted = await admin_form(request)
    if isinstance(posted, Response):
        return posted
    desk, field = posted
    teams = await _teams_posted(request)
    invite = field.get("access", "invite") != "password"
    body: dict[str, Any] = {
        "email": field.get("email", ""),
        "role": field.get("role", ""),
        "name": field.get("name") or None,
        "teams": teams,
        "timezone": field.get("timezone") or None,
    }
    if not invite:  # as typed: posted_form trims fields, and a password's spaces are part of it
        body["password"] = str((await request.form()).get("password", ""))
    answer = await desk.api.post("/users", json=body)
    if not answer.ok:
        return await _users(desk, errors=field_errors(answer), values=field, ticked=teams, status=answer.status)
    if invite:
        link = await desk.api.post(f"/users/{answer.body['id']}/password-link")
        if not link.ok:  # the user exists: the admin makes the link again from their row
            return await _users(desk, errors={"": f"User made, but no invite link: {link.problem}"}, status=link.status)
        await flash.keep(
            request, desk.principal, "password_link", _link_flash(request, answer.body["email"], link.body)
        )
    return RedirectResponse("/admin/users", status_code=303)


@router.post("/admin/users/{user_id}/link")
async def make_password_link(request: Request, user_id: uuid.UUID) -> Response:
    posted = await admin_form(request)
    if isinstance(posted, Response):
        return posted
    desk, field = posted
    link = await desk.api.post(f"/users/{user_id}/password-link")
    if not link.ok:
        return await _users(desk, errors={"": link.problem}, status=link.status)
    await flash.keep(request, desk.principal, "password_link", _link_flash(request, field.get("email", ""), link.body))
    return RedirectResponse("/admin/users", status_code=303)


@router.post("/admin/users/{user_id}/disable")
async def disable_user(request: Request, user_id: uuid.UUID) -> Response:
    posted = await admin_form(request)
    if isinstance(posted, Response):
        return posted
    desk, _ = posted
    answer = await desk.api.send("DELETE", f"/users/{user_id}")
    if not answer.ok:
        return await _users(desk, errors={"": answer.problem}, status=answer.status)
    return RedirectResponse("/admin/users", status_code=303)


async def _user(desk: Desk, user_id: uuid.UUID) -> dict[str, Any] | Answer:
    users = await desk.api.get("/users")
    if not users.ok:
        return users
    found = next((u for u in users.body["items"] if u["id"] == str(user_id)), None)
    return found if found is not None else Answer(404, {"detail": f"No staff user {user_id}."}, users.headers)


@router.get("/admin/users/{user_id}")
async def user_page(request: Request, user_id: uuid.UUID) -> Response:
    desk = await admin_desk(request)
    if not isinstance(desk, Desk):
        return desk
    user = await _user(desk, user_id)
    if isinstance(user, Answer):
        return unavailable(desk, user, "The staff user")
    values = {"name": user.get("name") or "", "role": user["role"], "timezone": user.get("timezone") or ""}
    return await _user_form(desk, user, values=values, ticked=list(user.get("teams", [])))


async def _user_form(desk: Desk, user: dict[str, Any], *, values: dict[str, str], ticked: list[str],
                     errors: dict[str, str] | None = None, status: int = 200) -> Response:  # fmt: skip
    teams = await _teams(desk)
    known = {t["id"] for t in teams}
    teams += [{"id": t, "name": f"{t} (unknown team)"} for t in ticked if t not in known]
    errors = errors or {}
    return desk.render("admin_user.html", status=status, user=user, v=values, ticked=ticked, teams=teams,
                       errors=errors, problem=errors.get(""), roles=STAFF_ROLES, time_zones=TIME_ZONES,
                       tab="users")  # fmt: skip


@router.post("/admin/users/{user_id}")
async def change_user(request: Request, user_id: uuid.UUID) -> Response:
    posted = await admin_form(request)
    if isinstance(posted, Response):
        return posted
    desk, field = posted
    teams = await _teams_posted(request)
    patch = {"name": field.get("name") or None, "role": field.get("role") or None, "teams": teams,
             "timezone": field.get("timezone") or None}  # fmt: skip
    answer = await desk.api.send("PATCH", f"/users/{user_id}", json=patch)
    if not answer.ok:
        user = await _user(desk, user_id)
        if isinstance(user, Answer):
            return unavailable(desk, user, "The staff user")
        return await _user_form(desk, user, values=field, ticked=teams, errors=field_errors(answer),
                                status=answer.status)  # fmt: skip
    return RedirectResponse("/admin/users", status_code=303)


@router.post("/admin/teams")
async def create_team(request: Request) -> Response:
    posted = await admin_form(request)
    if isinstance(posted, Response):
        return posted
    desk, field = posted
    body = {"id": field.get("team_id", ""), "name": field.get("team_name", ""),
            "timezone": field.get("team_timezone") or None}  # fmt: skip
    answer = await desk.api.post("/teams", json=body)
    if not answer.ok:
        errors = {f"team_{k}" if k in ("id", "name", "timezone") else k: v for k, v in field_errors(answer).items()}
        return await _users(desk, team_errors=errors, values={"access": "invite", "role": "agent", **field},
                            status=answer.status)  # fmt: skip
    return RedirectResponse("/admin/users#teams", status_code=303)


# --- setting a password from a link (no sign-in: the link's token is the credential) -----------------------------


@router.get("/password/done")
async def password_done(request: Request) -> Response:
    return render(request, "password_done.html")


@router.get("/password/{token}")
async def password_page(request: Request, token: str) -> Response:
    info, _ = await Gateway(request).call("POST", "/auth/password-link", json={"token": token[:200]})
    if not info.ok:
        return _link_refused(request, info)
    return render(request, "password.html", info=info.body, token=token, errors={})


def _link_refused(request: Request, answer: Answer) -> Response:
    title = "This link no longer works" if answer.status == 410 else "This link could not be opened"
    return render(request, "error.html", status=answer.status if answer.status >= 400 else 502, title=title,
                  message=answer.problem)  # fmt: skip


@router.post("/password/{token}")
async def set_password(request: Request, token: str) -> Response:
    if not same_origin(request):
        return refused_origin(request)
    form = await request.form()
    password, again = str(form.get("password", "")), str(form.get("password_again", ""))
    info, _ = await Gateway(request).call("POST", "/auth/password-link", json={"token": token[:200]})
    if not info.ok:
        return _link_refused(request, info)
    if password != again:
        return render(request, "password.html", status=422, info=info.body, token=token,
                      errors={"password_again": "The two passwords differ."})  # fmt: skip
    answer, _ = await Gateway(request).call("POST", "/auth/password", json={"token": token[:200], "password": password})
    if answer.status == 422:
        errors = {"password": "At least 12 characters (and at most 256)."}
        return render(request, "password.html", status=422, info=info.body, token=token, errors=errors)
    if not answer.ok:
        return _link_refused(request, answer)
    return RedirectResponse("/password/done", status_code=303)


# --- follow-up policies ---------------------------------------------------------------------------------------------


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
        templates=policy_form.TEMPLATES,
        tab="policies",
    )


@router.get("/admin/policies/new")
async def new_policy_page(request: Request, template: Annotated[str, Query(max_length=100)] = "") -> Response:
    desk = await admin_desk(request)
    if not isinstance(desk, Desk):
        return desk
    chosen = policy_form.TEMPLATES.get(template) or next(iter(policy_form.TEMPLATES.values()))
    form = policy_form.split(chosen["document"])
    form.values["enabled"] = "no"  # a new policy is previewed before it makes anything
    return await _policy_page(desk, policy=None, form=form, template=chosen)


@router.post("/admin/policies/new")
async def create_policy(request: Request) -> Response:
    posted = await admin_form(request)
    if isinstance(posted, Response):
        return posted
    desk, field = posted
    form = await _posted_policy(request, field)
    form.values.setdefault("enabled", "no")
    policy_id = form.values.get("id", "")
    try:
        document, rows = policy_form.merge(form, policy_id=policy_id)
    except policy_form.RestInvalid as error:
        return await _policy_page(desk, policy=None, form=form, errors={"rest": str(error)}, status=422)
    if field.get("action") == "preview":
        return await _previewed(desk, policy=None, form=form, document=document, rows=rows, days=field.get("days"))
    answer = await desk.api.post("/policies", json=document)
    if not answer.ok:
        errors = policy_form.errors_by_field(answer.body, rows, answer.problem)
        return await _policy_page(desk, policy=None, form=form, errors=errors, status=answer.status)
    return RedirectResponse(f"/admin/policies/{path_segment(answer.body['id'])}?saved=created", status_code=303)


@router.get("/admin/policies/{policy_id}")
async def policy_page(request: Request, policy_id: str, saved: Annotated[str, Query(max_length=20)] = "") -> Response:
    desk = await admin_desk(request)
    if not isinstance(desk, Desk):
        return desk
    policy = await desk.api.get(f"/policies/{path_segment(policy_id)}")
    if not policy.ok:
        return unavailable(desk, policy, "The policy")
    form = policy_form.split(policy.body.get("document", {}))
    return await _policy_page(desk, policy=policy.body, form=form, saved=saved)


async def _posted_policy(request: Request, field: dict[str, str]) -> policy_form.PolicyForm:
    form = await request.form()
    multi = {name: [str(v) for v in form.getlist(name)] for name in ("trigger_type", "trigger_channel",
                                                                      "trigger_direction")}  # fmt: skip
    # The JSON view keeps its own spacing: posted_form trims every field, and a trimmed JSON is still the same.
    return policy_form.from_post(field, multi)


async def _policy_page(
    desk: Desk,
    *,
    policy: dict[str, Any] | None,
    form: policy_form.PolicyForm,
    errors: dict[str, str] | None = None,
    preview: dict[str, Any] | None = None,
    template: dict[str, Any] | None = None,
    saved: str = "",
    days: int = 30,
    status: int = 200,
) -> Response:
    errors = errors or {}
    steps = [*form.steps, dict.fromkeys(policy_form.STEP_FIELDS, "")]  # and a blank row for a new step
    return desk.render(
        "admin_policy.html",
        status=status,
        policy=policy,
        f=form,
        v=form.values,
        steps=steps,
        errors=errors,
        problem=errors.get("") or ("Not saved: see the fields marked below." if errors else None),
        preview=preview,
        start=template,
        saved=saved,
        days=days,
        preview_days=policy_form.PREVIEW_DAYS,
        teams=await _teams(desk),
        trigger_events=policy_form.TRIGGER_EVENTS,
        priorities=policy_form.PRIORITIES,
        repeats=policy_form.REPEATS,
        channel_uses=policy_form.channel_choices(),
        tab="policies",
    )


async def _previewed(
    desk: Desk,
    *,
    policy: dict[str, Any] | None,
    form: policy_form.PolicyForm,
    document: dict[str, Any],
    rows: list[int | None],
    days: str | None,
) -> Response:
    """The edited draft (not the saved policy) replayed over the last days: what it would have made."""
    chosen = int(days) if days and days.isdigit() and int(days) in policy_form.PREVIEW_DAYS else 30
    draft = {**document, "id": document.get("id") or "draft"}
    answer = await desk.api.post("/policies/preview", json=draft, days=chosen)
    if not answer.ok:
        errors = policy_form.errors_by_field(answer.body, rows, answer.problem)
        return await _policy_page(desk, policy=policy, form=form, errors=errors, days=chosen, status=answer.status)
    preview = answer.body
    shown = preview.get("items", [])[:PREVIEW_ROWS]
    ids = sorted({str(item["contact_id"]) for item in shown})
    found = await desk.api.get_many([f"/contacts/{i}" for i in ids])
    names = {i: a.body.get("name") for i, a in zip(ids, found, strict=True) if a.ok}
    preview = {**preview, "shown": shown, "names": names}
    return await _policy_page(desk, policy=policy, form=form, preview=preview, days=chosen)


@router.post("/admin/policies/{policy_id}/{action}")
async def change_policy(request: Request, policy_id: str, action: str) -> Response:
    posted = await admin_form(request)
    if isinstance(posted, Response):
        return posted
    desk, field = posted
    if action in ("enable", "disable"):
        answer = await desk.api.post(f"/policies/{path_segment(policy_id)}/{action}")
        if not answer.ok:
            return unavailable(desk, answer, "The policy")
        back = field.get("back", "")
        target = f"/admin/policies/{path_segment(policy_id)}" if back == "policy" else "/admin/policies"
        return RedirectResponse(target, status_code=303)
    if action not in ("save", "preview"):
        return desk.render("error.html", status=404, title="Unknown action", message="No such policy action.")
    policy = await desk.api.get(f"/policies/{path_segment(policy_id)}")
    if not policy.ok:
        return unavailable(desk, policy, "The policy")
    form = await _posted_policy(request, field)
    try:
        document, rows = policy_form.merge(form, policy_id=policy_id)
    except policy_form.RestInvalid as error:
        return await _policy_page(desk, policy=policy.body, form=form, errors={"rest": str(error)}, status=422)
    if action == "preview":
        return await _previewed(desk, policy=policy.body, form=form, document=document, rows=rows,
                                days=field.get("days"))  # fmt: skip
    answer = await desk.api.send("PUT", f"/policies/{path_segment(policy_id)}", json=document)
    if not answer.ok:
        errors = policy_form.errors_by_field(answer.body, rows, answer.problem)
        return await _policy_page(desk, policy=policy.body, form=form, errors=errors, status=answer.status)
    return RedirectResponse(f"/admin/policies/{path_segment(policy_id)}?saved=saved", status_code=303)
