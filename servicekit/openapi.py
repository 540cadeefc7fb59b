"""What every service's OpenAPI document shares: the package version, named operationIds, the response headers
the routes set, and examples.

FastAPI's default operationId (``create_contact_api_v1_contacts_post``) repeats the path and the method and
changes when a route moves; a client generator turns it into a method name. Ours is the route function's name in
camelCase (``createContact``), unique per document and stable while the function keeps its name."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

PACKAGE = "touchpoint"


@cache
def package_version() -> str:
    """The installed package's version (pyproject's ``version``): what ``info.version`` says."""
    try:
        return version(PACKAGE)
    except PackageNotFoundError:  # pragma: no cover - a source tree without an install
        return "0.0.0"


def operation_id(route: APIRoute) -> str:
    """``create_contact`` becomes ``createContact``: FastAPI's ``generate_unique_id_function``."""
    first, *rest = route.name.split("_")
    return first + "".join(word[:1].upper() + word[1:] for word in rest)


HEADERS: dict[str, dict[str, Any]] = {
    "ETag": {
        "description": "The contact's version; send it back in If-Match to change it only if unchanged",
        "schema": {"type": "string"},
    },
    "Location": {"description": "Where the resource lives", "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}},
    "Idempotency-Replayed": {
        "description": "`true` when this is the stored answer to an earlier request with the same Idempotency-Key",
        "schema": {"type": "string", "enum": ["true"]},
    },
}


def headers(*names: str) -> dict[str, dict[str, Any]]:
    """The ``headers`` of an OpenAPI response object: the named entries of ``HEADERS``."""
    return {name: HEADERS[name] for name in names}


def document_examples(app: FastAPI, *, by_schema: Mapping[str, Any], by_operation: Mapping[str, str]) -> None:
    """Give every request body and success response an ``example``: a JSON body's from ``by_schema`` (one per
    schema, whichever operation uses it; a list of a schema gets a list of one), any other media type's from
    ``by_operation`` (CSV, an event stream). Applied before the gateway's contract swaps in the services'
    schemas, which carry no examples."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                bodies = [operation.get("requestBody", {})]
                bodies += [r for status, r in operation.get("responses", {}).items() if status.startswith("2")]
                for body in bodies:
                    for media_type, content in body.get("content", {}).items():
                        example = _example(content.get("schema", {}), by_schema)
                        if example is None and not media_type.endswith("json"):
                            example = by_operation.get(operation.get("operationId", ""))
                        if example is not None:
                            content.setdefault("example", example)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _example(schema: dict[str, Any], by_schema: Mapping[str, Any]) -> Any:
    if "$ref" in schema:
        return by_schema.get(schema["$ref"].rsplit("/", 1)[-1])
    if schema.get("type") == "array":
        item = _example(schema.get("items", {}), by_schema)
        return None if item is None else [item]
    return None
