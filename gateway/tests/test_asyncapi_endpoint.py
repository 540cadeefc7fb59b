"""GET /api/v1/asyncapi.json: the event catalogue for any authenticated caller, the same as docs/asyncapi.yaml."""

from __future__ import annotations

import subprocess
import sys

import httpx
import yaml

from gateway.api.catalogue import asyncapi_document
from gateway.tests.conftest import make_key
from servicekit.asyncapi import DOCUMENT, build
from servicekit.catalogue import all_events


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


def test_the_gateway_serves_its_copy_without_importing_a_service() -> None:
    probe = (
        "import sys; from gateway.api.catalogue import asyncapi_document; document = asyncapi_document(); "
        "print(len(document['channels']), sorted(m for m in sys.modules if m.split('.')[0] == 'services'))"
    )
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert shown.stdout.split(None, 1) == [str(len(all_events())), "[]\n"]
    assert asyncapi_document() == build()
