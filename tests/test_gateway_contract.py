"""The gateway publishes the services' resources with its own copies of their schemas (it never imports a
service). These tests compare each copy with the service's own OpenAPI document, so drift is caught."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from gateway import schemas_services as ours
from gateway.app import create_app as create_gateway
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
