"""What every service's OpenAPI document shares: the package version, named operationIds and the response
headers the routes set.

FastAPI's default operationId (``create_contact_api_v1_contacts_post``) repeats the path and the method and
changes when a route moves; a client generator turns it into a method name. Ours is the route function's name in
camelCase (``createContact``), unique per document and stable while the function keeps its name."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

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
