"""GET /api/v1/asyncapi.json: the event catalogue for any authenticated caller, the same as docs/asyncapi.yaml."""

from __future__ import annotations

import httpx
import yaml

from gateway.tests.conftest import make_key
from servicekit.asyncapi import DOCUMENT


async def test_every_role_reads_the_asyncapi_document_and_nobody_else(gateway: httpx.AsyncClient) -> None:
    committed = yaml.safe_load(DOCUMENT.read_text())
    for role in ("admin", "agent", "readonly", "ingest"):
        answer = await gateway.get("/api/v1/asyncapi.json", headers=await make_key(gateway, role))
        assert answer.status_code == 200, (role, answer.text)
        assert answer.headers["content-type"] == "application/json"
        assert answer.json() == committed
    anonymous = await gateway.get("/api/v1/asyncapi.json")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
