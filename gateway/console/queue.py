"""The follow-up queue: an agent's work list, read and worked through the gateway's ``/api/v1/followups``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from gateway.console import labels
from gateway.console.routes import open_desk, posted_form, safe_next, to_sign_in, unavailable

router = APIRouter(include_in_schema=False)

TEAM_COOKIE = "tp_team"
QUEUE_VIEWS = {"mine": "Mine", "team": "My team's", "overdue": "Overdue", "today": "Due today"}


@router.get("/queue")
async def queue_page(
    request: Request,
    view: Annotated[str, Query(max_length=10)] = "mine",
    team: Annotated[str, Query(max_length=200)] = "",
    done: Annotated[str, Query(max_length=100)] = "",
) -> Response:
    desk = await open_desk(request)
    if desk is None:
        return to_sign_in(request)
    view = view if view in QUEUE_VIEWS else "mine"
    # The team a person last looked at, else their home team (the first of their teams).
    home = desk.principal.teams[0] if desk.principal.teams else ""
    team = team.strip() or request.cookies.get(TEAM_COOKIE, "")[:200] or home
    now = datetime.now(UTC)
    end_of_day = datetime.combine(now.date() + timedelta(days=1), time(), tzinfo=UTC).isoformat()
    if view == "mine":
        calls = [{"assignee": "me", "status": "due"}, {"assignee": "me", "status": "scheduled"}]
    elif view == "team":
        calls = [{"team": team, "status": "due"}, {"team": team, "status": "scheduled"}] if team else []
    elif view == "overdue":
        calls = [{"overdue": "true", "status": "due"}]
    else:
        calls = [{"due_before": end_of_day, "status": "due"}, {"due_before": end_of_day, "status": "scheduled"}]
    answers = [await desk.api.get("/followups", limit=100, **c) for c in calls]
    failed = next((a for a in answers if not a.ok), None)
    items = [i for a in answers if a.ok for i in a.body["items"]]
    items.sort(key=lambda i: labels.parse_time(i.get("due_at")) or now)
    contact_ids = sorted({str(i["contact_id"]) for i in items})
    contacts = {
        cid: a.body
        for cid, a in zip(contact_ids, await desk.api.get_many([f"/contacts/{c}" for c in contact_ids]), strict=True)
        if a.ok
    }
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    late = {
        str(i["id"]) for i in items if (labels.parse_time(i.get("overdue_at")) or now) < now and i["status"] == "due"
    }
    response = desk.render(
        "queue.html",
        late=late,
        view=view,
        views=QUEUE_VIEWS,
        team=team,
        items=items,
        contacts=contacts,
        problem=failed.problem if failed else None,
        back=back,
        done=done,
        now=now,
    )
    if view == "team" and team:
        response.set_cookie(TEAM_COOKIE, team, max_age=365 * 86400, httponly=True, samesite="lax")
    return response


def _snooze_until(choice: str, now: datetime) -> datetime:
    if choice == "tomorrow":
        return datetime.combine(now.date() + timedelta(days=1), time(9), tzinfo=UTC)
    if choice == "week":
        return now + timedelta(days=7)
    return now + timedelta(hours=1)


@router.post("/followups/{followup_id}/{action}")
async def work_followup(request: Request, followup_id: uuid.UUID, action: str) -> Response:
    posted = await posted_form(request)
    if isinstance(posted, Response):
        return posted
    desk, field = posted
    body: dict[str, Any]
    if action == "complete":
        body = {"outcome": field.get("outcome") or None}
    elif action == "snooze":
        body = {"until": _snooze_until(field.get("until", ""), datetime.now(UTC)).isoformat()}
    elif action == "assign":
        body = {k: field[k] for k in ("assignee", "team") if field.get(k)}
    else:
        return desk.render("error.html", status=404, title="Unknown action", message="No such follow-up action.")
    answer = await desk.api.post(f"/followups/{followup_id}/{action}", json=body)
    if not answer.ok:
        return unavailable(desk, answer, "The follow-up")
    return RedirectResponse(with_done(safe_next(field.get("back")), f"{action}:{followup_id}"), status_code=303)


def with_done(back: str, done: str) -> str:
    """The page to go back to, saying what was done: its own ``done`` (from an earlier action) is replaced, as a
    query parameter given twice is refused (servicekit.http)."""
    path, _, query = back.partition("?")
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "done"]
    return f"{path}?{urlencode([*kept, ('done', done)])}"
