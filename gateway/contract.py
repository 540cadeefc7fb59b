"""The gateway's OpenAPI document states what the services behind it accept.

The gateway's copies of the services' models (gateway/schemas_services.py) parse and forward; the service
checks the rest (patterns, lengths, cross-field rules, policy documents) and its 4xx is passed on. So that the
document does not call valid what the service refuses, it takes the services' own schemas, parameter schemas
and error responses from ``service_contract.json``: a snapshot of the services' OpenAPI documents (the gateway
never imports a service). tests/test_gateway_contract.py fails when the snapshot is stale and rewrites it with
``.venv/bin/python -m tests.test_gateway_contract``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI

CONTRACT_PATH = Path(__file__).with_name("service_contract.json")
_PATH_PARAMETER = re.compile(r"\{[^}]+\}")


@cache
def service_contract() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(CONTRACT_PATH.read_text(encoding="utf-8"))
    return loaded


def operation_key(method: str, path: str) -> str:
    """A gateway operation as the contract names it: ``GET /api/v1/contacts/{}`` (path parameters unnamed)."""
    return f"{method.upper()} {_PATH_PARAMETER.sub('{}', path)}"


def parameter_keys(parameters: list[dict[str, Any]]) -> list[str]:
    """How the contract names an operation's parameters: one in the path by its position (the gateway and the
    service name it differently), the others by where they are and their name."""
    keys: list[str] = []
    for parameter in parameters:
        if parameter["in"] == "path":
            keys.append(f"path {sum(k.startswith('path ') for k in keys)}")
        else:
            keys.append(f"{parameter['in']} {parameter['name'].lower()}")
    return keys


def apply_contract(document: dict[str, Any], contract: dict[str, Any]) -> None:
    """Put the services' schemas, parameter schemas and error responses into the gateway's document."""
    schemas = document.get("components", {}).get("schemas", {})
    for name, schema in contract["schemas"].items():
        for candidate in (name, f"{name}-Input", f"{name}-Output"):
            if candidate in schemas:
                schemas[candidate] = schema
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            theirs = contract["operations"].get(operation_key(method, path))
            if theirs is None:
                continue
            parameters = operation.get("parameters", [])
            for key, parameter in zip(parameter_keys(parameters), parameters, strict=True):
                if key in theirs["parameters"]:
                    parameter["schema"] = _parameter_schema(parameter, theirs["parameters"][key])
            responses = operation.setdefault("responses", {})
            for status, response in theirs["responses"].items():
                responses.setdefault(status, response)


def _parameter_schema(parameter: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """The service's schema; a path parameter that the gateway guards with a pattern of its own (the value
    goes into the service's URL) must follow both."""
    ours: dict[str, Any] = parameter["schema"]
    if parameter["in"] == "path" and "pattern" in ours and ours.get("pattern") != theirs.get("pattern"):
        return {"allOf": [ours, theirs]}
    return theirs


def publish_service_contract(app: FastAPI, *, amend: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Apply the contract when the document is built (after servicekit.http.document_problems); ``amend``
    states what the gateway's settings decide (the timeline's largest page)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        apply_contract(document, service_contract())
        if amend is not None:
            amend(document)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
