"""The event catalogue as an AsyncAPI 3.0 document, for systems that consume Touchpoint's events."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from gateway.api.common import problem
from gateway.auth import CurrentPrincipal

# Written by `python -m servicekit.asyncapi` with docs/asyncapi.yaml (a test keeps both current): the document is
# made from the services' models, and the gateway never imports a service.
DOCUMENT = Path(__file__).resolve().parents[1] / "asyncapi.json"
router = APIRouter(tags=["events"])
# The document's outline, cut to one channel: the whole document is the answer's own best example.
_EXAMPLE = {
    "asyncapi": "3.0.0",
    "info": {"title": "Touchpoint events", "version": "0.1.0"},
    "channels": {
        "crm.interaction.logged.v1": {
            "address": "crm.interactions.logged.{contact_id}",
            "messages": {"crm.interaction.logged.v1": {"$ref": "#/components/messages/crm.interaction.logged.v1"}},
        }
    },
}


@cache
def asyncapi_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DOCUMENT.read_text())
    return document


@router.get(
    "/asyncapi.json",
    summary="The event catalogue as AsyncAPI 3.0 (channels, messages, a JSON Schema for every event's data)",
    description="Any authenticated caller may read it, whatever its role (ingest keys included): it describes the "
    "events' shape and holds no data. The same document as docs/asyncapi.yaml.",
    responses={
        200: {"content": {"application/json": {"example": _EXAMPLE}}},
        401: problem("No or invalid credentials"),
        429: problem("Rate limit reached (Retry-After)"),
    },
)
async def read_asyncapi_document(principal: CurrentPrincipal) -> dict[str, Any]:
    return asyncapi_document()
