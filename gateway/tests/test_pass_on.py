"""The busiest writes pass the caller's body on as it came (issue 21): after authentication and the role check,
``POST /api/v1/interactions`` and its batch send the caller's bytes to the interactions service, which validates
them; its answer is relayed. What the gateway still owes the caller is checked here: who may send, the body's
size limit, the headers the service acts on, and the document that describes the body."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import func, select

from gateway import projection
from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.tests.conftest import ADMIN, StubServices, make_key
from servicekit.clock import MovableClock
from servicekit.testing.apps import running_app

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
SOMEONE = "7aa3a058-0088-18e0-b75e-779325d4b344"
TOUCHPOINT = {"contact_id": SOMEONE, "channel": "sms", "direction": "inbound", "type": "note",
              "occurred_at": "2026-01-05T09:00:00Z", "subject": "Ça va ? 👍"}  # fmt: skip


@pytest.mark.parametrize(
    "path, body",
    [("/api/v1/interactions", TOUCHPOINT), ("/api/v1/interactions/batch", {"items": [TOUCHPOINT]})],
)
async def test_the_body_reaches_the_service_byte_for_byte_with_the_callers_headers(
    gateway: httpx.AsyncClient, stub: StubServices, path: str, body: dict
) -> None:
    ingest = await make_key(gateway, "ingest")
    # Spacing, key order and non-ASCII as a sender wrote them: re-serialising would change every one.
    sent = json.dumps(body, ensure_ascii=False, indent=3).encode()
    before = len(stub.calls)
    await gateway.post(
        path,
        content=sent,
        headers={**ingest, "Content-Type": "application/json; charset=utf-8", "Idempotency-Key": "k-1",
                 "traceparent": TRACEPARENT},
    )  # fmt: skip
    assert len(stub.calls) == before + 1
    call = stub.calls[-1]
    assert call.url.path == path.removeprefix("/api")
    assert call.content == sent
    assert call.headers["content-type"] == "application/json; charset=utf-8"
    assert call.headers["idempotency-key"] == "k-1"
    assert call.headers["traceparent"].split("-")[1] == TRACEPARENT.split("-")[1]
    keys = (await gateway.get("/api/v1/api-keys", headers=ADMIN)).json()["items"]
    assert call.headers["x-touchpoint-caller"] == next(k["id"] for k in keys if k["role"] == "ingest")


async def test_the_services_refusal_is_relayed_as_a_problem(gateway: httpx.AsyncClient, stub: StubServices) -> None:
    before = len(stub.calls)
    response = await gateway.post("/api/v1/interactions", content=b"[1, 2]", headers={**ADMIN,
                                  "Content-Type": "application/json"})  # fmt: skip
    assert len(stub.calls) == before + 1  # the service judged it, not a copy of its schema
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_no_body_leaves_the_gateway_before_the_caller_may_send_it(
    gateway: httpx.AsyncClient, stub: StubServices
) -> None:
    readonly = await make_key(gateway, "readonly")
    before = len(stub.calls)
    for path in ("/api/v1/interactions", "/api/v1/interactions/batch"):
        assert (await gateway.post(path, json=TOUCHPOINT)).status_code == 401
        assert (await gateway.post(path, json=TOUCHPOINT, headers=readonly)).status_code == 403
        # The gateway's body limit (65,536 bytes in these tests) holds for bytes passed on as for parsed bodies.
        huge = {**TOUCHPOINT, "body": "x" * 70_000}
        too_big = await gateway.post(path, json=huge, headers=ADMIN)
        assert too_big.status_code == 413
    assert len(stub.calls) == before


async def test_the_document_shows_the_body_the_service_takes(gateway: httpx.AsyncClient) -> None:
    document = (await gateway.get("/api/v1/openapi.json")).json()
    for path, name in (("/api/v1/interactions", "InteractionCreate"), ("/api/v1/interactions/batch",
                                                                         "InteractionBatch")):  # fmt: skip
        body = document["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        assert body["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{name}"}
        assert "example" in body["content"]["application/json"]
        assert name in document["components"]["schemas"]
    assert "ContactRef" in document["components"]["schemas"]  # what InteractionCreate refers to is there too


async def test_a_logged_touchpoint_reaches_the_timeline_from_its_event_only(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices
) -> None:
    # The answer was written into the projection as well (a transaction per touchpoint on the busiest path), and
    # the event wrote the same row again: now the consumer alone writes it, from the event.
    contact = stub.add_contact()
    app = create_app(gateway_settings, clock=clock, transports=stub.transports())
    async with running_app(app) as client:
        logged = await client.post("/api/v1/interactions", json={**TOUCHPOINT, "contact_id": contact["id"]},
                                   headers=ADMIN)  # fmt: skip
        assert logged.status_code == 201, logged.text
        projected = select(func.count()).select_from(projection.TABLE)
        async with app.state.runtime.sessionmaker() as session:
            assert await session.scalar(projected) == 0
        await stub.project(app)  # as the gateway's consumer applies the touchpoint's event
        page = (await client.get(f"/api/v1/contacts/{contact['id']}/timeline", headers=ADMIN)).json()
        assert [item["id"] for item in page["items"] if item["kind"] == "interaction"] == [logged.json()["id"]]
