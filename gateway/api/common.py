"""What the routes share: documented problem responses and the pass-through of a service's answer."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

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


async def pass_on(
    service: ServiceClient,
    method: str,
    path: str,
    principal: Principal,
    request: Request,
    *,
    headers: dict[str, str] | None = None,
) -> Response:
    """Call the service with the caller's body as it came (its bytes and Content-Type), and answer with its answer.

    For the busiest writes: the service validates the body and its refusal (problem+json) is relayed, so parsing
    it against our copy of the schema and serialising it again only cost CPU (about a third of the gateway's time
    per touchpoint, issue 21). The body's size limit is the middleware's, as for every route."""
    passed = {"Content-Type": content_type} if (content_type := request.headers.get("content-type")) else {}
    response = await service.request(
        method, path, caller=principal.id, content=await request.body(), headers={**passed, **(headers or {})}
    )
    return relay(response, service=service.name)


def passed_on_body(model: type[BaseModel]) -> dict[str, Any]:
    """The ``openapi_extra`` of a route that passes its body on (``pass_on``): the document shows the body the
    service takes as ``model``, as a parsed body parameter would (``document_passed_on_bodies`` adds the schema)."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def document_passed_on_bodies(app: FastAPI, models: tuple[type[BaseModel], ...]) -> None:
    """Adds the schemas of the bodies passed on (``passed_on_body``) to the OpenAPI document's components, as
    FastAPI does for the models of parsed bodies."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        passed = [passed_on_body(model)["requestBody"] for model in models]
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                if operation.get("requestBody") in passed and "responses" in operation:
                    operation["responses"] = operation.pop("responses")  # after the body, where FastAPI puts it
        _, found = models_json_schema(
            [(model, "validation") for model in models], ref_template="#/components/schemas/{model}"
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in found.get("$defs", {}).items():
            schemas.setdefault(name, schema)
        document["components"]["schemas"] = dict(sorted(schemas.items()))
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


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
