"""The API documents a client generator and a reader rely on: ``info.version`` is the package's, every
operation has a named operationId, and the response headers the routes set (ETag, Location, Retry-After,
Idempotency-Replayed) are documented where they are set."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from gateway.app import create_app as create_gateway
from gateway.examples import EXAMPLES
from gateway.settings import GatewaySettings
from tests.test_gateway_contract import contacts_openapi, followups_openapi, interactions_openapi

METHODS = ("get", "put", "post", "patch", "delete")
CAMEL_CASE = re.compile(r"^[a-z][a-zA-Z0-9]*$")
# FastAPI's default ends with the method (``list_contacts_api_v1_contacts_get``).
DEFAULT_LOOKING = re.compile(r"(_|^)(get|put|post|patch|delete)$|api_v1|_")


def gateway_openapi() -> dict[str, Any]:
    return create_gateway(GatewaySettings(dev_mode=True)).openapi()


DOCUMENTS = {
    "gateway": gateway_openapi,
    "contacts": contacts_openapi,
    "interactions": interactions_openapi,
    "followups": followups_openapi,
}

# Where a route sets a header on its answer, by operationId and status (the gateway relays the services').
SET_BY_ROUTES: dict[str, dict[str, set[tuple[str, str]]]] = {
    "gateway": {
        "createContact": {("201", "ETag"), ("201", "Location")},
        "resolveContact": {("200", "ETag"), ("201", "ETag")},
        "getContact": {("200", "ETag"), ("308", "Location")},
        "patchContact": {("200", "ETag"), ("308", "Location")},
        "logInteraction": {("201", "Location"), ("201", "Idempotency-Replayed"), ("200", "Idempotency-Replayed")},
        "logInteractions": {("200", "Idempotency-Replayed")},
        "createFollowup": {("201", "Location")},
        "createWebhook": {("201", "Location")},
        "login": {("429", "Retry-After")},
    },
    "contacts": {
        "createContact": {("201", "ETag"), ("201", "Location")},
        "resolveContact": {("200", "ETag"), ("201", "ETag")},
        "getContact": {("200", "ETag"), ("308", "Location")},
        "patchContact": {("200", "ETag"), ("308", "Location")},
    },
    "interactions": {
        "logTouchpoint": {("201", "Location"), ("201", "Idempotency-Replayed"), ("200", "Idempotency-Replayed")},
        "logBatch": {("200", "Idempotency-Replayed")},
    },
    "followups": {"createFollowup": {("201", "Location")}},
}


@pytest.fixture(scope="module", params=sorted(DOCUMENTS))
def named_document(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param, DOCUMENTS[request.param]()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield method, path, item[method]


def test_info_version_is_the_package_version(named_document: tuple[str, dict[str, Any]]) -> None:
    _name, document = named_document
    assert document["info"]["version"] == version("touchpoint") == "0.1.0"


def test_every_operation_has_a_named_unique_operation_id(named_document: tuple[str, dict[str, Any]]) -> None:
    _name, document = named_document
    ids = [operation["operationId"] for _method, _path, operation in operations(document)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for operation_id in ids:
        assert CAMEL_CASE.match(operation_id) and not DEFAULT_LOOKING.search(operation_id), operation_id


def test_the_gateway_names_operations_as_clients_call_them() -> None:
    ids = {(method, path): operation["operationId"] for method, path, operation in operations(gateway_openapi())}
    assert ids["post", "/api/v1/contacts"] == "createContact"
    assert ids["get", "/api/v1/followups"] == "listFollowups"
    assert ids["get", "/api/v1/contacts/{contact_id}/timeline"] == "getTimeline"


def test_headers_are_documented_where_the_routes_set_them(named_document: tuple[str, dict[str, Any]]) -> None:
    name, document = named_document
    by_id = {operation["operationId"]: operation for _method, _path, operation in operations(document)}
    for operation_id, expected in SET_BY_ROUTES[name].items():
        responses = by_id[operation_id]["responses"]
        for status, header in expected:
            documented = responses[status].get("headers", {})
            assert header in documented, f"{name} {operation_id} {status} does not document {header}"
            assert documented[header]["description"] and documented[header]["schema"]


def test_every_429_and_503_says_when_to_retry(named_document: tuple[str, dict[str, Any]]) -> None:
    _name, document = named_document
    for method, path, operation in operations(document):
        for status in ("429", "503"):
            if status in operation["responses"]:
                assert "Retry-After" in operation["responses"][status].get("headers", {}), (method, path, status)


def test_every_gateway_operation_is_described() -> None:
    """A summary names an operation; the description says what a caller must know (FastAPI takes it from the
    route function's docstring). The services' documents are internal: their operations are named only."""
    for method, path, operation in operations(gateway_openapi()):
        assert operation.get("summary") and operation.get("description"), (method, path)


def _examples(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(where, media type, content) of every request body and first success response of the public API."""
    for method, path, operation in operations(document):
        if not path.startswith("/api/v1/"):
            continue
        where = f"{method.upper()} {path}"
        body = operation.get("requestBody")
        if body is not None:
            for media_type, content in body["content"].items():
                yield f"{where} request", media_type, content
        success = min(status for status in operation["responses"] if status.startswith("2"))
        for media_type, content in operation["responses"][success].get("content", {}).items():
            yield f"{where} {success}", media_type, content


def test_every_gateway_body_and_success_answer_has_an_example_its_schema_accepts() -> None:
    document = gateway_openapi()
    checked = 0
    for where, media_type, content in _examples(document):
        assert "example" in content, f"{where} {media_type} has no example"
        if media_type.endswith("json"):
            schema = {**content["schema"], "components": document["components"]}
            validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
            errors = [
                f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(content["example"])
            ]
            assert not errors, f"{where}: the example does not fit the schema: {errors}"
        else:
            assert isinstance(content["example"], str) and content["example"], where
        checked += 1
    assert checked > 60


def test_every_example_is_used() -> None:
    """An example for a schema no operation sends or answers is stale."""
    used = {content["schema"].get("$ref", content["schema"].get("items", {}).get("$ref", "")).rsplit("/", 1)[-1]
            for _where, media_type, content in _examples(gateway_openapi()) if media_type.endswith("json")}  # fmt: skip
    assert set(EXAMPLES) <= used, sorted(set(EXAMPLES) - used)
