"""The console's search page: find a customer by name, company, email or phone (in any common format, with a typo),
page through every match, and the customers opened lately.

Like every console page it reads through the gateway's ``/api/v1`` as the signed-in staff member
(gateway/console/client.py). The contacts service ranks the matches (exact, then starting with what was typed,
then within a typo) and pages them by cursor; this page shows them 25 at a time."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from gateway.console.client import Answer
from gateway.console.routes import Desk, _recent_ids, open_desk, to_sign_in

router = APIRouter(include_in_schema=False)

PAGE = 25
# How many were shown before this page: only for the "26 to 50" in the page's words, never trusted for anything else.
SHOWN_MAX = 1_000_000

Text = Annotated[str, Query(max_length=200)]
Cursor = Annotated[str, Query(max_length=512)]
Shown = Annotated[int, Query(ge=0, le=SHOWN_MAX)]


async def _results(desk: Desk, q: str, cursor: str) -> Answer | None:
    if not q.strip():
        return None
    return await desk.api.get("/contacts", q=q.strip(), limit=PAGE, cursor=cursor or None)


def _paging(q: str, cursor: str, shown: int, results: Answer | None) -> dict[str, Any]:
    """What the results say about their place: the first and last number shown, and the links to the next page
    and back to the first."""
    if results is None or not results.ok:
        return {"first": 0, "last": 0, "next_href": None, "first_href": None}
    count = len(results.body["items"])
    next_cursor = results.body.get("next_cursor")
    next_href = None
    if next_cursor:
        next_href = "/search?" + urlencode({"q": q.strip(), "cursor": next_cursor, "shown": shown + count})
    first_href = "/search?" + urlencode({"q": q.strip()}) if cursor else None
    return {"first": shown + 1, "last": shown + count, "next_href": next_href, "first_href": first_href}


@router.get("/search")
async def search_page(request: Request, q: Text = "", cursor: Cursor = "", shown: Shown = 0) -> Response:
    desk = await open_desk(request)
    if desk is None:
        return to_sign_in(request)
    results = await _results(desk, q, cursor)
    recent = [a.body for a in await desk.api.get_many([f"/contacts/{i}" for i in _recent_ids(request)]) if a.ok]
    paging = _paging(q, cursor, shown if cursor else 0, results)
    return desk.render("search.html", q=q, results=results, recent=recent, **paging)


@router.get("/search/results")
async def search_results(request: Request, q: Text = "") -> Response:
    """The first page of results as a fragment, for the search box's live answer as the agent types."""
    desk = await open_desk(request)
    if desk is None:
        return Response(status_code=401)
    results = await _results(desk, q, "")
    return desk.render("_results.html", q=q, results=results, **_paging(q, "", 0, results))
