"""The console's pages. Each one reads and writes through the gateway's ``/api/v1`` as the signed-in staff
member (gateway/console/client.py); nothing here talks to a service or a table directly, except the
session look-up that decides between a page and the sign-in form."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from gateway.auth import Action, Principal, allowed
from gateway.console import labels
from gateway.console.client import Answer, Gateway, signed_in

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


# --- admin --------------------------------------------------------------------------------------------------------


async def admin_desk(request: Request) -> Desk | Response:
    desk = await open_desk(request)
    if desk is None:
        return to_sign_in(request)
    if not desk.is_admin:
        return desk.render("error.html", status=403, title="Admins only",
                           message="Your role does not include the admin pages.")  # fmt: skip
    return desk
