"""The follow-up queue: an agent's work list, read and worked through the gateway's ``/api/v1/followups``.

Tabs are the follow-ups service's buckets (due today in the agent's time zone, overdue, upcoming, done) with
their counts; filters and sort are the API's own; pages are its keyset pages. Every action goes through one bulk
form (``/api/v1/followups/bulk``): the ticked cards, or with none ticked the card the keyboard is on."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from gateway.console import labels
from gateway.console.routes import Desk, open_desk, posted_form, safe_next, to_sign_in, unavailable

router = APIRouter(include_in_schema=False)

TABS = {"due_today": "Due today", "overdue": "Overdue", "upcoming": "Upcoming", "done": "Done"}
SORTS = {
    "priority": "Priority, then due time",
    "due_at": "Due time, earliest first",
    "-due_at": "Due time, latest first",
    "-created_at": "Newest first",
    "-closed_at": "Closed, newest first",
}
PRIORITIES = ("urgent", "high", "normal", "low")
# The API's cancel reasons an agent chooses from (opted_out and erased are set by the system, answered by a reply).
CANCEL_REASONS = {
    "manual": "No longer needed",
    "superseded": "Duplicate, or replaced by another",
    "answered": "Already answered elsewhere",
    "opted_out": "The customer asked not to be contacted",
}
SNOOZES = {
    "hour": "1 hour",
    "tomorrow": "Tomorrow 09:00",
    "monday": "Next Monday 09:00",
    "week": "1 week",
    "at": "Until (pick a time)",
}
ACTIONS = ("complete", "snooze", "assign", "cancel")
PAGE_SIZE = 50
ANY = "any"  # the assignee filter's "anyone": an empty value means the default, the signed-in agent ("me")
RESULT_COOKIE = "tp_queue_result"
FAILURES_SHOWN = 10  # a result cookie stays far below 4 kB


def _now(request: Request) -> datetime:
    return request.app.state.runtime.clock.now()  # type: ignore[no-any-return]


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _agent_zone(desk: Desk, given: str | None = None) -> str:
    """Whose clock "today" and "tomorrow 09:00" follow: the zone the queue was counted in (the team's for a team's
    queue, else the agent's; the follow-ups service's default for an agent without one), else the agent's, else UTC."""
    for name in (given, desk.principal.timezone):
        if name and _zone(name).key == name:
            return name
    return "UTC"


def queue_params(
    *, tab: str, assignee: str, team: str, policy: str, channel: str, priority: str, sort: str
) -> dict[str, str]:
    """The API query a page of the queue asks (the cursor aside)."""
    params = {"bucket": tab, "sort": sort}
    if assignee != ANY:
        params["assignee"] = assignee or "me"
    params.update({k: v for k, v in (("team", team), ("policy", policy), ("channel", channel)) if v})
    if priority:
        params["priority"] = priority
    return params


@router.get("/queue")
async def queue_page(
    request: Request,
    tab: Annotated[str, Query(max_length=20)] = "",
    view: Annotated[str, Query(max_length=10)] = "",
    assignee: Annotated[str, Query(max_length=200)] = "",
    team: Annotated[str, Query(max_length=200)] = "",
    policy: Annotated[str, Query(max_length=100)] = "",
    channel: Annotated[str, Query(max_length=20)] = "",
    priority: Annotated[str, Query(max_length=10)] = "",
    sort: Annotated[str, Query(max_length=20)] = "",
    cursor: Annotated[str, Query(max_length=512)] = "",
    start: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    done: Annotated[str, Query(max_length=100)] = "",
) -> Response:
    desk = await open_desk(request)
    if desk is None:
        return to_sign_in(request)
    # The views of the old queue, as links and bookmarks had them.
    if view == "overdue" and not tab:
        tab = "overdue"
    elif view == "team" and not assignee:
        assignee = ANY
    elif view == "today" and not tab:
        tab = "due_today"
    tab = tab if tab in TABS else "due_today"
    team, assignee, policy = team.strip(), assignee.strip(), policy.strip()
    channel = channel if channel in labels.CHANNELS else ""
    priority = priority if priority in PRIORITIES else ""
    sort = sort if sort in SORTS else ("-closed_at" if tab == "done" else "priority")
    params = queue_params(
        tab=tab, assignee=assignee, team=team, policy=policy, channel=channel, priority=priority, sort=sort
    )
    # A later page has no counts of its own: the first page's (one row) gives the tabs their figures.
    pages = [desk.api.get("/followups", limit=PAGE_SIZE, **params, **({"cursor": cursor} if cursor else {}))]
    if cursor:
        pages.append(desk.api.get("/followups", limit=1, **params))
    answers = await asyncio.gather(*pages, desk.api.get("/staff"), desk.api.get("/teams"), desk.api.get("/policies"))
    listed, counted = answers[0], answers[len(pages) - 1]
    staff, teams, policies = answers[len(pages) :]
    items: list[dict[str, Any]] = listed.body["items"] if listed.ok else []
    counts: dict[str, Any] = (counted.body.get("counts") or {}) if counted.ok else {}
    contact_ids = sorted({str(i["contact_id"]) for i in items})
    contacts = {
        cid: a.body
        for cid, a in zip(contact_ids, await desk.api.get_many([f"/contacts/{c}" for c in contact_ids]), strict=True)
        if a.ok
    }
    now = _now(request)
    filters = {"assignee": assignee, "team": team, "policy": policy, "channel": channel, "priority": priority}
    kept = {k: v for k, v in {"tab": tab, **filters, "sort": sort}.items() if v}

    def link(**changes: Any) -> str:
        query = {**kept, **changes}
        return "/queue?" + urlencode({k: v for k, v in query.items() if v not in ("", None, 0)})

    next_page = (
        link(cursor=listed.body["next_cursor"], start=start + len(items))
        if listed.ok and listed.body.get("next_cursor")
        else None
    )
    back = link(cursor=cursor, start=start)
    response = desk.render(
        "queue.html",
        tabs=TABS,
        tab=tab,
        counts=counts,
        zone=counts.get("timezone") or _agent_zone(desk),
        items=items,
        contacts=contacts,
        late={str(i["id"]) for i in items if _is_late(i, now)},
        filters=filters,
        sort=sort,
        sorts=SORTS,
        priorities=PRIORITIES,
        staff=staff.body["items"] if staff.ok else [],
        teams=teams.body["items"] if teams.ok else [],
        policies=[p["id"] for p in policies.body["items"]] if policies.ok else [],
        cancel_reasons=CANCEL_REASONS,
        snoozes=SNOOZES,
        problem=listed.problem if not listed.ok else None,
        link=link,
        next_page=next_page,
        first_page=link() if cursor else None,
        start=start,
        back=back,
        done=done,
        result=_read_result(request),
        now=now,
    )
    if request.cookies.get(RESULT_COOKIE):
        response.delete_cookie(RESULT_COOKIE, path="/queue")
    return response


def _is_late(item: dict[str, Any], now: datetime) -> bool:
    overdue_at = labels.parse_time(item.get("overdue_at"))
    return item["status"] in ("scheduled", "due") and overdue_at is not None and overdue_at <= now


def snooze_until(choice: str, *, now: datetime, zone: str, at: str = "") -> datetime | None:
    """When a snooze ends, in the agent's zone for "tomorrow 09:00" and a picked time; ``None`` when the picked
    time is missing or not a time."""
    local = now.astimezone(_zone(zone))
    nine = time(9)
    if choice == "tomorrow":
        return datetime.combine(local.date() + timedelta(days=1), nine, tzinfo=local.tzinfo).astimezone(UTC)
    if choice == "monday":
        days = 7 - local.weekday()  # Monday is 0: a Monday snoozes to the next one
        return datetime.combine(local.date() + timedelta(days=days), nine, tzinfo=local.tzinfo).astimezone(UTC)
    if choice == "week":
        return now + timedelta(days=7)
    if choice == "at":
        try:
            picked = datetime.fromisoformat(at)
        except ValueError:
            return None
        return (picked if picked.tzinfo else picked.replace(tzinfo=local.tzinfo)).astimezone(UTC)
    return now + timedelta(hours=1)


def bulk_body(action: str, field: dict[str, str], *, now: datetime, zone: str) -> dict[str, Any] | str:
    """The bulk request's action fields from the form, or what is missing."""
    if action == "complete":
        return {"outcome": field["outcome"]} if field.get("outcome") else {}
    if action == "snooze":
        until = snooze_until(field.get("until", ""), now=now, zone=zone, at=field.get("until_at", ""))
        return {"until": until.isoformat()} if until else "Pick the time to snooze until."
    if action == "assign":
        chosen = {k: field[k] for k in ("assignee", "team") if field.get(k)}
        return chosen or "Choose a person or a team to give it to."
    reason = field.get("reason", "manual")
    return {"reason": reason if reason in CANCEL_REASONS else "manual"}


@router.post("/queue/work")
async def work_followups(request: Request) -> Response:
    """One action on the ticked follow-ups, or on the one the keyboard is on when none is ticked."""
    posted = await posted_form(request)
    if isinstance(posted, Response):
        return posted
    desk, field = posted
    back = safe_next(field.get("back") or "/queue")
    action = field.get("action", "")
    if action not in ACTIONS:
        return desk.render("error.html", status=404, title="Unknown action", message="No such follow-up action.")
    ids = [str(v) for v in (await request.form()).getlist("ids") if isinstance(v, str)] or (
        [field["current"]] if field.get("current") else []
    )
    try:
        ids = list(dict.fromkeys(str(uuid.UUID(i)) for i in ids))
    except ValueError:
        ids = []
    result: dict[str, Any] = {"action": action, "succeeded": 0, "failed": []}
    if not ids:
        result["problem"] = "Select one or more follow-ups first (x on a card, or its tick box)."
        return _with_result(RedirectResponse(back, status_code=303), result)
    body = bulk_body(action, field, now=_now(request), zone=_agent_zone(desk, field.get("tz")))
    if isinstance(body, str):
        result["problem"] = body
        return _with_result(RedirectResponse(back, status_code=303), result)
    answer = await desk.api.post("/followups/bulk", json={"action": action, "ids": ids, **body})
    if answer.status in (401, 403, 404) or answer.status >= 500:
        return unavailable(desk, answer, "The follow-ups")
    if not answer.ok:
        result["problem"] = answer.problem
    else:
        result["succeeded"] = answer.body["succeeded"]
        result["failed"] = [
            {"id": str(r["id"]), "why": r.get("detail") or r.get("title") or str(r["status"])}
            for r in answer.body["results"]
            if r["status"] != 200
        ]
    return _with_result(RedirectResponse(with_done(back, action), status_code=303), result)


def _with_result(response: Response, result: dict[str, Any]) -> Response:
    """What an action did, for the queue page it goes back to (once: that page deletes it)."""
    failed = result["failed"]
    result = {**result, "failed": failed[:FAILURES_SHOWN], "more_failed": max(0, len(failed) - FAILURES_SHOWN)}
    for entry in result["failed"]:
        entry["why"] = entry["why"][:160]
    value = base64.urlsafe_b64encode(json.dumps(result).encode()).decode()
    response.set_cookie(RESULT_COOKIE, value, max_age=120, path="/queue", httponly=True, samesite="lax")
    return response


def _read_result(request: Request) -> dict[str, Any] | None:
    raw = request.cookies.get(RESULT_COOKIE, "")
    if not raw:
        return None
    try:
        result = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except (binascii.Error, ValueError):
        return None
    return result if isinstance(result, dict) and result.get("action") in (*ACTIONS, "create") else None


def with_done(back: str, done: str) -> str:
    """The page to go back to, saying what was done: its own ``done`` (from an earlier action) is replaced, as a
    query parameter given twice is refused (servicekit.http)."""
    path, _, query = back.partition("?")
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "done"]
    return f"{path}?{urlencode([*kept, ('done', done)])}"


# --- a follow-up made by hand ------------------------------------------------------------------------------------


@router.get("/queue/new")
async def new_followup_page(
    request: Request,
    q: Annotated[str, Query(max_length=200)] = "",
    contact: Annotated[str, Query(max_length=40)] = "",
) -> Response:
    desk = await open_desk(request)
    if desk is None:
        return to_sign_in(request)
    return await _new_form(desk, q=q.strip(), contact=contact, field={}, problem=None)


async def _new_form(
    desk: Desk, *, q: str, contact: str, field: dict[str, str], problem: str | None, status: int = 200
) -> Response:
    try:
        chosen_id = str(uuid.UUID(contact)) if contact else ""
    except ValueError:
        chosen_id = ""
    calls = [desk.api.get("/staff"), desk.api.get("/teams")]
    if q:
        calls.append(desk.api.get("/contacts", q=q, limit=10))
    if chosen_id:
        calls.append(desk.api.get(f"/contacts/{chosen_id}"))
    answers = await asyncio.gather(*calls)
    staff, teams = answers[0], answers[1]
    found = answers[2] if q else None
    chosen = answers[-1].body if chosen_id and answers[-1].ok else None
    zone = _agent_zone(desk)
    now = _now(desk.request)
    default_due = (snooze_until("tomorrow", now=now, zone=zone) or now).astimezone(_zone(zone))
    return desk.render(
        "queue_new.html",
        status=status,
        q=q,
        found=found.body["items"] if found is not None and found.ok else [],
        search_problem=found.problem if found is not None and not found.ok else None,
        chosen=chosen,
        staff=staff.body["items"] if staff.ok else [],
        teams=teams.body["items"] if teams.ok else [],
        priorities=PRIORITIES,
        zone=zone,
        field={"due": default_due.strftime("%Y-%m-%dT%H:%M"), "priority": "normal", "assignee": "me", **field},
        problem=problem,
    )


@router.post("/queue/new")
async def create_followup(request: Request) -> Response:
    posted = await posted_form(request)
    if isinstance(posted, Response):
        return posted
    desk, field = posted
    contact = field.get("contact_id", "")
    zone = _agent_zone(desk)
    due = snooze_until("at", now=_now(request), zone=zone, at=field.get("due", ""))
    problem = None
    if not contact:
        problem = "Choose the customer: search, then pick one."
    elif due is None:
        problem = "Give the due time."
    if problem:
        return await _new_form(desk, q=field.get("q", ""), contact=contact, field=field, problem=problem, status=422)
    assert due is not None
    body: dict[str, Any] = {"contact_id": contact, "reason": field.get("reason", ""), "due_at": due.isoformat()}
    body.update({k: field[k] for k in ("channel", "priority", "assignee", "team") if field.get(k)})
    answer = await desk.api.post("/followups", json=body)
    if answer.status in (401, 403) or answer.status >= 500:
        return unavailable(desk, answer, "The follow-up")
    if not answer.ok:
        return await _new_form(desk, q="", contact=contact, field=field, problem=answer.problem, status=422)
    made = answer.body
    # To the tab it landed in, where the agent sees it: their own, or everyone's when it went to someone else.
    now = _now(request)
    tab = "overdue" if _is_late(made, now) else ("due_today" if due < _end_of_day(now, zone) else "upcoming")
    target = {"tab": tab, **({} if made.get("assignee") == desk.principal.handle else {"assignee": ANY})}
    response = RedirectResponse(with_done("/queue?" + urlencode(target), "create"), status_code=303)
    return _with_result(response, {"action": "create", "succeeded": 1, "failed": []})


def _end_of_day(now: datetime, zone: str) -> datetime:
    local = now.astimezone(_zone(zone))
    return datetime.combine(local.date() + timedelta(days=1), time(), tzinfo=local.tzinfo).astimezone(UTC)
