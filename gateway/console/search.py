"""The console's search page: find a customer by name, company, email or phone, and the customers opened lately.

Like every console page it reads through the gateway's ``/api/v1`` as the signed-in staff member
(gateway/console/client.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from gateway.console.routes import _recent_ids, open_desk, to_sign_in

router = APIRouter(include_in_schema=False)


@router.get("/search")
async def search_page(request: Request, q: Annotated[str, Query(max_length=200)] = "") -> Response:
    desk = await open_desk(request)
    if desk is None:
        return to_sign_in(request)
    results = await desk.api.get("/contacts", q=q.strip(), limit=25) if q.strip() else None
    recent = [a.body for a in await desk.api.get_many([f"/contacts/{i}" for i in _recent_ids(request)]) if a.ok]
    return desk.render("search.html", q=q, results=results, recent=recent)


@router.get("/search/results")
async def search_results(request: Request, q: Annotated[str, Query(max_length=200)] = "") -> Response:
    desk = await open_desk(request)
    if desk is None:
        return Response(status_code=401)
    results = await desk.api.get("/contacts", q=q.strip(), limit=25) if q.strip() else None
    return desk.render("_results.html", q=q, results=results)
