"""The gateway publishes the services' resources with its own copies of their schemas (it never imports a
service). These tests compare each copy with the service's own OpenAPI document, so drift is caught: the
copies' fields, and the constraints (patterns, lengths, enums, oneOf rules, formats, nullability, error
responses) that the gateway's document takes from gateway/service_contract.json.

``.venv/bin/python -m tests.test_gateway_contract`` rewrites that snapshot from the services' documents."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from pydantic import BaseModel

from gateway import schemas_services as ours
from gateway.app import create_app as create_gateway
from gateway.contract import CONTRACT_PATH, operation_key, parameter_keys, service_contract
from gateway.settings import GatewaySettings


def contacts_openapi() -> dict[str, Any]:
    from services.contacts.app import create_app
    from services.contacts.settings import ContactsSettings

    return create_app(ContactsSettings()).openapi()


def interactions_openapi() -> dict[str, Any]:
    from services.interactions.app import create_app
    from services.interactions.settings import InteractionsSettings

    return create_app(InteractionsSettings()).openapi()


def followups_openapi() -> dict[str, Any]:
    from services.followups.app import create_app
    from services.followups.settings import FollowupsSettings

    return create_app(FollowupsSettings()).openapi()


PAIRS: list[tuple[type[BaseModel], str, str]] = [
    (ours.ContactCreate, "contacts", "ContactCreate"),
    (ours.ContactUpdate, "contacts", "ContactUpdate"),
    (ours.ContactRead, "contacts", "ContactRead"),
    (ours.ContactPage, "contacts", "ContactPage"),
    (ours.ResolveRequest, "contacts", "ResolveRequest"),
    (ours.MergeRequest, "contacts", "MergeRequest"),
    (ours.ContactExport, "contacts", "ContactExport"),
    (ours.IdentityRead, "contacts", "IdentityRead"),
    (ours.ImportResult, "contacts", "ImportResult"),
    (ours.ImportRowError, "contacts", "ImportRowError"),
    (ours.HandleIdentity, "contacts", "HandleIdentity"),
    (ours.ExternalIdentity, "contacts", "ExternalIdentity"),
    (ours.InteractionCreate, "interactions", "TouchpointCreate"),
    (ours.ContactRef, "interactions", "ContactByIdentity"),
    (ours.InteractionUpdate, "interactions", "TouchpointPatch"),
    (ours.InteractionRead, "interactions", "TouchpointRead"),
    (ours.InteractionPage, "interactions", "TouchpointPage"),
    (ours.InteractionBatch, "interactions", "BatchCreate"),
    (ours.BatchResult, "interactions", "BatchItemResult"),
    (ours.BatchResults, "interactions", "BatchResult"),
    (ours.ThreadRead, "interactions", "ThreadRead"),
    (ours.FollowupRead, "followups", "FollowupRead"),
    (ours.FollowupPage, "followups", "FollowupPage"),
    (ours.FollowupCreate, "followups", "FollowupCreate"),
    (ours.FollowupComplete, "followups", "FollowupComplete"),
    (ours.FollowupSnooze, "followups", "FollowupSnooze"),
    (ours.FollowupCancel, "followups", "FollowupCancel"),
    (ours.FollowupAssign, "followups", "FollowupAssign"),
    (ours.PolicyDocument, "followups", "PolicyDocument"),
    (ours.PolicyChange, "followups", "PolicyChange"),
    (ours.PolicyRead, "followups", "PolicyRead"),
    (ours.PolicyList, "followups", "PolicyList"),
    (ours.PolicyPreview, "followups", "PolicyPreview"),
    (ours.PreviewItem, "followups", "PreviewItem"),
    (ours.FollowupStats, "followups", "FollowupStats"),
    (ours.FollowupSla, "followups", "StatsSla"),
]
OPENAPI = {"contacts": contacts_openapi, "interactions": interactions_openapi, "followups": followups_openapi}


def _schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    schemas = document["components"]["schemas"]
    for candidate in (name, f"{name}-Input", f"{name}-Output"):
        if candidate in schemas:
            found: dict[str, Any] = schemas[candidate]
            return found
    raise AssertionError(f"the service documents no schema {name}")


@pytest.mark.parametrize(("model", "service", "name"), PAIRS, ids=[f"{s}.{n}" for _, s, n in PAIRS])
def test_our_copy_has_the_fields_of_the_service_schema(model: type[BaseModel], service: str, name: str) -> None:
    theirs = _schema(OPENAPI[service](), name)
    assert set(model.model_fields) == set(theirs.get("properties", {})), f"{name} drifted from {service}"
    required = {n for n, f in model.model_fields.items() if f.is_required()}
    assert required == set(theirs.get("required", [])), f"required fields of {name} drifted from {service}"


def test_the_gateway_documents_every_resource_with_its_schema() -> None:
    document = create_gateway(GatewaySettings(dev_mode=True)).openapi()
    schemas = document["components"]["schemas"]
    for name in ("ContactRead", "InteractionRead", "FollowupRead", "TimelinePage", "ApiKeyCreated", "ServiceMetrics"):
        assert name in schemas
    contact = document["paths"]["/api/v1/contacts/{contact_id}"]["get"]
    assert contact["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ContactRead")
    assert document["components"]["securitySchemes"]


def _inlined(value: Any, document: dict[str, Any], depth: int = 0) -> Any:
    """A schema with every ``$ref`` replaced by what it names (the gateway's document has other names)."""
    assert depth < 50, "a recursive schema"
    if isinstance(value, dict):
        if "$ref" in value:
            return _inlined(document["components"]["schemas"][value["$ref"].rsplit("/", 1)[1]], document, depth + 1)
        return {k: _inlined(v, document, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_inlined(v, document, depth + 1) for v in value]
    return value


def _gateway_document() -> dict[str, Any]:
    return create_gateway(GatewaySettings(dev_mode=True)).openapi()


def contract_from_services() -> dict[str, Any]:
    """What the gateway's document must say, read from the services' documents: the schema of each copied
    model, and for each operation the gateway forwards, the service's parameter schemas and non-2xx responses."""
    documents = {name: make() for name, make in OPENAPI.items()}
    schemas = {
        model.__name__: _inlined(_schema(documents[service], name), documents[service])
        for model, service, name in PAIRS
    }
    theirs: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for document in documents.values():
        for path, service_operations in document["paths"].items():
            for method, operation in service_operations.items():
                theirs[operation_key(method, "/api" + path)] = (operation, document)
    operations: dict[str, Any] = {}
    for path, gateway_operations in _gateway_document()["paths"].items():
        for method in gateway_operations:
            key = operation_key(method, path)
            if key not in theirs:
                continue  # the gateway's own (timeline, journey, metrics, keys, users, audit, session)
            operation, document = theirs[key]
            listed = operation.get("parameters", [])
            parameters = {
                key: _inlined(parameter["schema"], document)
                for key, parameter in zip(parameter_keys(listed), listed, strict=True)
            }
            responses = {
                status: _inlined(response, document)
                for status, response in operation.get("responses", {}).items()
                if not status.startswith("2")
            }
            operations[key] = {"parameters": parameters, "responses": responses}
    return {"schemas": schemas, "operations": operations}


def write_contract() -> None:
    CONTRACT_PATH.write_text(json.dumps(contract_from_services(), indent=1, sort_keys=True) + "\n", encoding="utf-8")


def test_the_gateway_contract_snapshot_is_what_the_services_document() -> None:
    assert service_contract() == contract_from_services(), (
        "gateway/service_contract.json is stale: run .venv/bin/python -m tests.test_gateway_contract"
    )


def test_the_gateway_document_states_the_services_constraints() -> None:
    """Every copied model, forwarded parameter and error response in the gateway's document is the service's."""
    document = _gateway_document()
    contract = contract_from_services()
    schemas = document["components"]["schemas"]
    published = 0
    for name, schema in contract["schemas"].items():
        for candidate in (name, f"{name}-Input", f"{name}-Output"):
            if candidate in schemas:
                assert _inlined(schemas[candidate], document) == schema, f"{candidate} differs from the service's"
                published += 1
    assert published >= 30, published
    forwarded = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            theirs = contract["operations"].get(operation_key(method, path))
            if theirs is None:
                continue
            forwarded += 1
            listed = operation.get("parameters", [])
            for name, parameter in zip(parameter_keys(listed), listed, strict=True):
                if name in theirs["parameters"]:
                    schema = parameter["schema"]
                    assert theirs["parameters"][name] in (schema, *schema.get("allOf", [])), (method, path, name)
            missing = set(theirs["responses"]) - set(operation["responses"])
            assert not missing, f"{method.upper()} {path} does not document {sorted(missing)}"
    assert forwarded >= 25, forwarded


if __name__ == "__main__":
    write_contract()
    print(f"wrote {CONTRACT_PATH}", file=sys.stderr)
