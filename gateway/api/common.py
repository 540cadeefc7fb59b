"""What the routes share: documented problem responses and the pass-through of a service's answer."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Response
from fastapi.responses import JSONResponse

from gateway.auth import Principal, Role
from gateway.upstream import ServiceClient, relay
from servicekit.openapi import headers as response_headers
from servicekit.problems import PROBLEM_MEDIA_TYPE


def problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {}}}


AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: problem("No or invalid credentials"),
    403: problem("The caller's role may not do this (or CSRF token missing)"),
    429: problem("Rate limit reached (Retry-After)"),
    503: problem("A service is unreachable (names it; Retry-After)"),
    504: problem("A service did not answer in time (names it)"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: problem("Not found")}
CONTACT_ERRORS: dict[int | str, dict[str, Any]] = {
    404: problem("No such contact"),
    308: problem("Merged into another contact (Location)"),
    410: problem("Erased"),
}


def ok(
    model: Any, description: str = "OK", status: int = 200, *, headers: tuple[str, ...] = ()
) -> dict[int | str, dict[str, Any]]:
    """A success response; ``headers`` names the response headers the route sets (servicekit.openapi.HEADERS)."""
    response: dict[str, Any] = {"model": model, "description": description}
    if headers:
        response["headers"] = response_headers(*headers)
    return {status: response}


async def forward(
    service: ServiceClient,
    method: str,
    path: str,
    principal: Principal,
    *,
    params: dict[str, Any] | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Call the service on behalf of the caller and answer with its answer."""
    response = await service.request(method, path, caller=principal.id, params=params, json=body, headers=headers)
    return relay(response, service=service.name)


def body_of(model: Any) -> Any:
    """A request model as the JSON the service receives (only the fields the caller sent)."""
    return model.model_dump(mode="json", exclude_unset=True)


def ids_only_for_ingest(principal: Principal, response: Response, *fields: str) -> Response:
    """An ingest key's view of a successful answer: only ``fields`` (ids and statuses), never the profile or the
    content. Automated systems write; what a contact or a touchpoint holds is for staff (an ingest key that
    resolved an email got the whole profile, and one that re-posted another system's source and external_id got
    that system's touchpoint, subject and body)."""
    if principal.role is not Role.ingest or not 200 <= response.status_code < 300 or not response.body:
        return response
    document = json.loads(bytes(response.body))
    kept = {name: document[name] for name in fields if name in document}
    # The ETag names the whole resource's version, which this is not.
    dropped = ("content-length", "content-type", "etag")
    headers = {name: value for name, value in response.headers.items() if name.lower() not in dropped}
    return JSONResponse(kept, status_code=response.status_code, headers=headers)


INGEST_VIEW = "An ingest key gets `{}` only."
