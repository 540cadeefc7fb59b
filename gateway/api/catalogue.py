"""The event catalogue as an AsyncAPI 3.0 document, for systems that consume Touchpoint's events."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway.api.common import problem
from gateway.auth import CurrentPrincipal
from servicekit.asyncapi import build

router = APIRouter(tags=["events"])


@router.get(
    "/asyncapi.json",
    summary="The event catalogue as AsyncAPI 3.0 (channels, messages, a JSON Schema for every event's data)",
    description="Any authenticated caller may read it, whatever its role (ingest keys included): it describes the "
    "events' shape and holds no data. The same document as docs/asyncapi.yaml.",
    responses={401: problem("No or invalid credentials"), 429: problem("Rate limit reached (Retry-After)")},
)
async def asyncapi_document(principal: CurrentPrincipal) -> dict[str, Any]:
    return build()
