"""The console's pages. Each one reads and writes through the gateway's ``/api/v1`` as the signed-in staff
member (gateway/console/client.py); nothing here talks to a service or a table directly, except the
session look-up that decides between a page and the sign-in form."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from gateway.auth import Action, Principal, allowed
from gateway.console import labels
from gateway.console.client import Answer, Gateway, signed_in
from gateway.console.duplicates import duplicates
from gateway.projection import interaction_item, to_json
from gateway.upstream import path_segment

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.autoescape = True  # every template, whatever its name: data is shown as text
templates.env.filters.update(
    when=labels.when,
    ago=labels.ago,
    channel=labels.channel,
    words=labels.words,
    sentiment=labels.sentiment,
    duration=labels.duration,
)
templates.env.globals.update(
    CHANNELS=labels.CHANNELS,
    DIRECTIONS=labels.DIRECTIONS,
    TOUCHPOINT_TYPES=labels.TOUCHPOINT_TYPES,
    KINDS=labels.KINDS,
)

STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".txt": "text/plain"}
RECENT_COOKIE = "tp_recent"
RECENT_MAX = 8
# Scripts and styles only from the gateway itself: a script smuggled into customer data cannot run.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

router = APIRouter(include_in_schema=False)


class Desk:
    """One request of a signed-in staff member: who they are and the API as them."""

    def __init__(self, request: Request, principal: Principal, token: str) -> None:
        self.request = request
        self.principal = principal
        self.api = Gateway(request, token=token, csrf=principal.csrf_token)

    @property
    def is_admin(self) -> bool:
        return allowed(self.principal.role, Action.users_manage)

    @property
    def may_work(self) -> bool:
        return allowed(self.principal.role, Action.followups_work)

    @property
    def may_log(self) -> bool:
        return allowed(self.principal.role, Action.interactions_log)

    @property
    def may_edit_customers(self) -> bool:
        return allowed(self.principal.role, Action.contacts_write)

    @property
    def may_export_customers(self) -> bool:
        return allowed(self.principal.role, Action.contacts_export)

    @property
    def may_erase_customers(self) -> bool:
        return allowed(self.principal.role, Action.contacts_erase)

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        section = template.split("_")[0].split(".")[0]
        active = {"customer": "search", "admin": "admin"}.get(section, section)
        return render(self.request, template, status=status, desk=self, active=active, **context)


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    response = templates.TemplateResponse(request, template, {"desk": None, **context}, status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


async def open_desk(request: Request) -> Desk | None:
    found = await signed_in(request)
    return Desk(request, *found) if found else None


def to_sign_in(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)


def safe_next(value: str | None) -> str:
    """Only a path on this site (no ``//host`` or scheme): a sign-in link cannot send staff elsewhere."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/search"


def same_origin(request: Request) -> bool:
    """Browsers send Origin on form posts; one from another site is refused (login CSRF and the like)."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host")


def refused_origin(request: Request) -> HTMLResponse:
    return render(request, "error.html", status=403, title="Refused", message="This form came from another site.")


async def posted_form(request: Request) -> tuple[Desk, dict[str, str]] | Response:
    """A console form post: the signed-in desk and the trimmed fields (the form's CSRF token handed to the API
    client), or the answer that stops it there: sign in first, or refused as sent from another site."""
    desk = await open_desk(request)
    if desk is None:
        return to_sign_in(request)
    if not same_origin(request):
        return refused_origin(request)
    form = await request.form()
    field = {k: str(v).strip() for k, v in form.items() if isinstance(v, str)}
    desk.api.csrf = field.get("csrf_token", "")
    return desk, field


def unavailable(desk: Desk, answer: Answer, what: str) -> HTMLResponse:
    status = answer.status if answer.status >= 400 else 502
    if answer.status == 403:
        return desk.render("error.html", status=403, title="Not for your role", message=answer.problem)
    return desk.render("error.html", status=status, title=f"{what} could not be loaded", message=answer.problem)


# --- static assets ----------------------------------------------------------------------------------------------


@router.get("/console/static/{name}")
async def static_asset(name: str) -> Response:
    path = HERE / "static" / name
    if "/" in name or name.startswith(".") or path.suffix not in STATIC_TYPES or not path.is_file():
        return Response(status_code=404)
    return Response(
        path.read_bytes(),
        media_type=STATIC_TYPES[path.suffix],
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


# --- sign-in ------------------------------------------------------------------------------------------------------


@router.get("/")
async def home(request: Request) -> Response:
    return RedirectResponse("/search" if await signed_in(request) else "/login", status_code=303)


@router.get("/login")
async def sign_in_form(request: Request, next: str | None = None) -> Response:
    if await signed_in(request):
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "login.html", next=safe_next(next), email="", message=None)


@router.post("/login")
async def sign_in(
    request: Request,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=256)],
    next: Annotated[str, Form(max_length=2000)] = "/search",
) -> Response:
    if not same_origin(request):
        return refused_origin(request)
    # The lockout is the API's (gateway/lockout.py): one count whichever way a password is tried.
    answer, raw = await Gateway(request).call("POST", "/auth/login", json={"email": email, "password": password})
    if answer.status == 429:
        retry_after = answer.headers.get("retry-after", "60")
        minutes = max(1, round(int(retry_after) / 60)) if retry_after.isdigit() else 1
        message = f"Too many failed sign-ins for this account. Try again in {minutes} minute{'s' * (minutes != 1)}."
        return render(request, "login.html", status=429, next=safe_next(next), email=email, message=message)
    if answer.status == 401:
        message = "Wrong email or password."
        return render(request, "login.html", status=401, next=safe_next(next), email=email, message=message)
    if not answer.ok:
        return render(request, "login.html", status=answer.status, next=safe_next(next), email=email,
                      message=answer.problem)  # fmt: skip
    response = RedirectResponse(safe_next(next), status_code=303)
    for cookie in raw.headers.get_list("set-cookie"):
        response.headers.append("set-cookie", cookie)
    return response


@router.post("/logout")
async def sign_out(request: Request) -> Response:
    desk = await open_desk(request)
    if desk is None:
        return RedirectResponse("/login", status_code=303)
    if not same_origin(request):
        return refused_origin(request)
    form = await request.form()
    desk.api.csrf = str(form.get("csrf_token", ""))
    answer, raw = await desk.api.call("POST", "/auth/logout")
    if not answer.ok:
        return unavailable(desk, answer, "Sign-out")
    response = RedirectResponse("/login", status_code=303)
    for cookie in raw.headers.get_list("set-cookie"):
        response.headers.append("set-cookie", cookie)
    return response


# --- search -------------------------------------------------------------------------------------------------------


def _recent_ids(request: Request) -> list[str]:
    found = []
    for part in request.cookies.get(RECENT_COOKIE, "").split("."):
        try:
            found.append(str(uuid.UUID(part)))
        except ValueError:
            continue
    return found[:RECENT_MAX]


# --- the customer -------------------------------------------------------------------------------------------------


def _day(value: str | None, *, end: bool = False) -> str | None:
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
        moment = datetime.combine(day + timedelta(days=1) if end else day, time(), tzinfo=UTC)
    except (ValueError, OverflowError):  # OverflowError: the day after 9999-12-31, i.e. no end at all
        return None
    return moment.isoformat()


def _timeline_params(channel: str, kind: str, since: str, until: str) -> dict[str, Any]:
    return {
        "channel": channel if channel in labels.CHANNELS else None,
        "kinds": kind if kind in labels.KINDS else None,
        "since": _day(since),
        "until": _day(until, end=True),
    }


async def _timeline(desk: Desk, contact_id: uuid.UUID, params: dict[str, Any], cursor: str | None) -> Answer:
    return await desk.api.get(f"/contacts/{contact_id}/timeline", limit=30, cursor=cursor, **params)


@router.get("/customers/{contact_id}")
async def customer_page(
    request: Request,
    contact_id: uuid.UUID,
    channel: Annotated[str, Query(max_length=20)] = "",
    kind: Annotated[str, Query(max_length=20)] = "",
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
    merged_from: uuid.UUID | None = None,
) -> Response:
    desk = await open_desk(request)
    if desk is None:
        return to_sign_in(request)
    params = _timeline_params(channel, kind, since, until)
    timeline = await _timeline(desk, contact_id, params, cursor)
    if timeline.status == 410:  # erased: the page says so, and shows nothing of who they were
        return desk.render("customer_erased.html", status=410, contact_id=contact_id)
    if not timeline.ok:
        return unavailable(desk, timeline, "This customer")
    surviving = timeline.body["contact"]["profile"]["id"]
    if surviving != str(contact_id):  # merged away: the survivor's page is the customer's page
        return RedirectResponse(f"/customers/{surviving}?merged_from={contact_id}", status_code=303)
    journey, similar = await asyncio.gather(
        desk.api.get(f"/contacts/{contact_id}/journey"), duplicates(desk.api, timeline.body["contact"]["profile"])
    )
    filters = {"channel": channel, "kind": kind, "since": since, "until": until}
    response = desk.render(
        "customer.html",
        header=timeline.body["contact"],
        page=timeline.body,
        journey=journey.body if journey.ok else None,
        duplicates=similar,
        merged_from=merged_from,
        filters=filters,
        filtered=any(filters.values()),
        more_query=_more_query(filters, timeline.body.get("next_cursor")),
        fragment_query=urlencode({k: v for k, v in filters.items() if v}),
        idempotency_key=str(uuid.uuid4()),
        now=datetime.now(UTC),
    )
    recent = [str(contact_id), *[i for i in _recent_ids(request) if i != str(contact_id)]][:RECENT_MAX]
    response.set_cookie(RECENT_COOKIE, ".".join(recent), max_age=90 * 86400, httponly=True, samesite="lax")
    return response


def _more_query(filters: dict[str, str], cursor: str | None) -> str | None:
    if not cursor:
        return None
    return urlencode({**{k: v for k, v in filters.items() if v}, "cursor": cursor})


@router.get("/customers/{contact_id}/timeline")
async def timeline_fragment(
    request: Request,
    contact_id: uuid.UUID,
    channel: Annotated[str, Query(max_length=20)] = "",
    kind: Annotated[str, Query(max_length=20)] = "",
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> Response:
    """Timeline items as HTML for the page's script: the next page on scroll, the newest on a live event."""
    desk = await open_desk(request)
    if desk is None:
        return Response(status_code=401)
    timeline = await _timeline(desk, contact_id, _timeline_params(channel, kind, since, until), cursor)
    if not timeline.ok:
        return Response(timeline.problem, status_code=timeline.status, media_type="text/plain")
    filters = {"channel": channel, "kind": kind, "since": since, "until": until}
    return desk.render(
        "_items.html",
        items=timeline.body["items"],
        more_query=_more_query(filters, timeline.body.get("next_cursor")),
        contact_id=contact_id,
        now=datetime.now(UTC),
    )


@router.post("/customers/{contact_id}/touchpoints")
async def log_touchpoint(request: Request, contact_id: uuid.UUID) -> Response:
    posted = await posted_form(request)
    if isinstance(posted, Response):
        return posted
    desk, field = posted
    occurred = labels.parse_time(field.get("occurred_at")) or datetime.now(UTC)
    touchpoint: dict[str, Any] = {
        "contact_id": str(contact_id),
        "channel": field.get("channel"),
        "direction": field.get("direction"),
        "type": field.get("type"),
        "occurred_at": occurred.isoformat(),
        "agent": desk.principal.handle or desk.principal.name,
        "subject": field.get("subject") or None,
        "body": field.get("body") or None,
        "thread_id": field.get("thread_id") or None,
    }
    if field.get("csat"):
        touchpoint["csat"] = int(field["csat"]) if field["csat"].isdigit() else field["csat"]
    key = field.get("idempotency_key") or str(uuid.uuid4())
    answer = await desk.api.post("/interactions", json=touchpoint, headers={"Idempotency-Key": key})
    from_script = request.headers.get("x-console") == "fragment"
    if not answer.ok:
        if from_script:
            return Response(answer.problem, status_code=answer.status, media_type="text/plain")
        return unavailable(desk, answer, "The touchpoint")
    if from_script:
        # The item as the timeline API will give it out (the projection's JSON: no body, times as text).
        item = json.loads(to_json(interaction_item(answer.body)))
        response = desk.render(
            "_items.html", items=[item], more_query=None, contact_id=contact_id, now=datetime.now(UTC), status=201
        )
        response.headers["X-Console-Next-Key"] = str(uuid.uuid4())
        return response
    return RedirectResponse(f"/customers/{contact_id}", status_code=303)


async def _touchpoint(desk: Desk, contact_id: uuid.UUID, interaction_id: uuid.UUID) -> Answer | Response:
    """The touchpoint with its body, or the answer to give instead: an error page, or the touchpoint's own
    address when it is filed under another customer now (merged since the link was drawn)."""
    touchpoint = await desk.api.get(f"/interactions/{interaction_id}")
    if not touchpoint.ok:
        return touchpoint
    filed_under = str(touchpoint.body["contact_id"])
    if filed_under != str(contact_id):
        return RedirectResponse(f"/customers/{filed_under}/touchpoints/{interaction_id}", status_code=303)
    return touchpoint


@router.get("/customers/{contact_id}/touchpoints/{interaction_id}")
async def touchpoint_page(request: Request, contact_id: uuid.UUID, interaction_id: uuid.UUID) -> Response:
    """One touchpoint with its message: the timeline has every field of it but the body, which only the
    interactions service keeps (read here through ``GET /api/v1/interactions/{id}``, as this staff member)."""
    desk = await open_desk(request)
    if desk is None:
        return to_sign_in(request)
    touchpoint = await _touchpoint(desk, contact_id, interaction_id)
    if not isinstance(touchpoint, Answer):
        return touchpoint
    if not touchpoint.ok:
        return unavailable(desk, touchpoint, "This touchpoint")
    contact = await desk.api.get(f"/contacts/{contact_id}")
    return desk.render(
        "customer_touchpoint.html",
        touchpoint=touchpoint.body,
        title=interaction_item(touchpoint.body)["title"],  # the timeline item's title, so both read the same
        contact=contact.body if contact.ok else None,
        now=datetime.now(UTC),
    )


@router.get("/customers/{contact_id}/touchpoints/{interaction_id}/message")
async def message_fragment(request: Request, contact_id: uuid.UUID, interaction_id: uuid.UUID) -> Response:
    """The touchpoint's message as HTML for the page's script, to show it under the timeline item."""
    desk = await open_desk(request)
    if desk is None:
        return Response(status_code=401)
    touchpoint = await _touchpoint(desk, contact_id, interaction_id)
    if not isinstance(touchpoint, Answer):  # moved to another customer: the script opens the full page instead
        return Response("The touchpoint is filed under another customer now.", status_code=409,
                        media_type="text/plain")  # fmt: skip
    if not touchpoint.ok:
        return Response(touchpoint.problem, status_code=touchpoint.status, media_type="text/plain")
    return desk.render("_message.html", touchpoint=touchpoint.body)


# --- the follow-up queue ------------------------------------------------------------------------------------------

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


# --- the service dashboard ----------------------------------------------------------------------------------------


@router.get("/dashboard")
async def dashboard_page(
    request: Request,
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
) -> Response:
    desk = await open_desk(request)
    if desk is None:
        return to_sign_in(request)
    today = datetime.now(UTC).date()
    end_day = _parse_day(until) or today
    start_day = _parse_day(since) or end_day - timedelta(days=29)
    if start_day > end_day:
        start_day, end_day = end_day, start_day
    start = datetime.combine(start_day, time(), tzinfo=UTC)
    end = datetime.combine(end_day + timedelta(days=1), time(), tzinfo=UTC)
    metrics = await desk.api.get("/metrics/service", since=start.isoformat(), until=end.isoformat())
    buckets = _buckets(start, end, 6)
    per_bucket = [await desk.api.get("/metrics/service", since=a.isoformat(), until=b.isoformat()) for a, b in buckets]
    csat_series = [
        {"from": a, "to": b, "average": (m.body.get("csat") or {}).get("average") if m.ok else None,
         "responses": (m.body.get("csat") or {}).get("responses", 0) if m.ok else 0}
        for (a, b), m in zip(buckets, per_bucket, strict=True)
    ]  # fmt: skip
    return desk.render(
        "dashboard.html",
        metrics=metrics.body if metrics.ok else None,
        problem=None if metrics.ok else metrics.problem,
        since=start_day.isoformat(),
        until=end_day.isoformat(),
        csat_series=csat_series,
        followup_figures=_followup_figures(metrics.body.get("followups") if metrics.ok else None),
    )


def _parse_day(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _buckets(start: datetime, end: datetime, count: int) -> list[tuple[datetime, datetime]]:
    step = (end - start) / count
    return [(start + step * i, start + step * (i + 1)) for i in range(count)]


FOLLOWUP_FIGURES = (
    ("On time", ("completed_on_time",)),
    ("Late", ("completed_late",)),
    ("Open and overdue", ("open_overdue",)),
    ("Escalated", ("escalated_followups",)),
    ("Reply SLA met", ("sla", "met")),
    ("Reply SLA missed", ("sla", "missed")),
)


def _followup_figures(followups: dict[str, Any] | None) -> list[tuple[str, float]]:
    """The follow-up counts the dashboard draws as bars, in the order a team lead reads them."""
    found: list[tuple[str, float]] = []
    for label, path in FOLLOWUP_FIGURES:
        value: Any = followups or {}
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            found.append((label, float(value)))
    return found


# --- admin --------------------------------------------------------------------------------------------------------


async def admin_desk(request: Request) -> Desk | Response:
    desk = await open_desk(request)
    if desk is None:
        return to_sign_in(request)
    if not desk.is_admin:
        return desk.render("error.html", status=403, title="Admins only",
                           message="Your role does not include the admin pages.")  # fmt: skip
    return desk


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
