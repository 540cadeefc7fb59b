"""What the gateway's fuzz (tests/test_fuzz_apis.py) found in its query parameters and bodies: each is refused
with a 422 problem at the gateway, and nothing is forwarded to a service."""

from __future__ import annotations

import httpx

from gateway.console.queue import with_done
from gateway.tests.conftest import ADMIN, StubServices


async def refused(gateway: httpx.AsyncClient, stub: StubServices, url: str) -> dict[str, object]:
    before = len(stub.calls)
    response = await gateway.get(url, headers=ADMIN)
    assert response.status_code == 422, (url, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    assert len(stub.calls) == before, [str(c.url) for c in stub.calls[before:]]
    body: dict[str, object] = response.json()
    return body


async def test_a_query_parameter_given_twice_is_refused(gateway: httpx.AsyncClient, stub: StubServices) -> None:
    # FastAPI kept the last value and the gateway forwarded only that one: a 200 for a request it misread.
    problem = await refused(gateway, stub, "/api/v1/followups?assignee=ada&assignee=bob")
    assert "assignee" in str(problem["detail"])
    await refused(gateway, stub, "/api/v1/interactions?limit=5&limit=6")
    # Different parameters are forwarded as ever.
    await gateway.get("/api/v1/followups?assignee=ada&team=support", headers=ADMIN)
    assert stub.calls and {"assignee": "ada", "team": "support"}.items() <= dict(stub.calls[-1].url.params).items()


async def test_a_number_is_not_a_date_time_in_a_query(gateway: httpx.AsyncClient, stub: StubServices) -> None:
    # The gateway read 1700000000 as a Unix time and forwarded an ISO date the caller never wrote.
    for url in (
        "/api/v1/followups?due_before=1700000000",
        "/api/v1/interactions?since=1700000000",
        "/api/v1/interactions?until=1700000000.5",
        "/api/v1/metrics/service?since=1700000000",
    ):
        await refused(gateway, stub, url)


async def test_timeline_kinds_and_limit_follow_the_document(gateway: httpx.AsyncClient, stub: StubServices) -> None:
    document = (await gateway.get("/api/v1/openapi.json")).json()
    parameters = {
        p["name"]: p["schema"] for p in document["paths"]["/api/v1/contacts/{contact_id}/timeline"]["get"]["parameters"]
    }
    assert parameters["limit"]["maximum"] == 100  # GATEWAY_TIMELINE_MAX_LIMIT's default
    assert "pattern" in str(parameters["kinds"])
    contact = "/api/v1/contacts/7aa3a058-0088-18e0-b75e-779325d4b344/timeline"
    await refused(gateway, stub, f"{contact}?kinds=emails")
    await refused(gateway, stub, f"{contact}?limit=101")


async def test_a_number_is_not_a_date_time_in_a_body(gateway: httpx.AsyncClient, stub: StubServices) -> None:
    # The gateway's copies read 4102444800 as a Unix time and forwarded an ISO date the caller never wrote.
    # (A touchpoint's body is passed on as sent and the interactions service refuses the number itself:
    # tests/test_hostile_interactions.py.)
    someone = "7aa3a058-0088-18e0-b75e-779325d4b344"
    cases = [
        ("/api/v1/followups", {"contact_id": someone, "reason": "r", "due_at": 4102444800}),
        (f"/api/v1/followups/{someone}/snooze", {"until": "4102444800"}),
    ]
    for url, body in cases:
        before = len(stub.calls)
        response = await gateway.post(url, json=body, headers=ADMIN)
        assert response.status_code == 422, (url, response.status_code, response.text)
        assert len(stub.calls) == before, url


async def test_an_empty_idempotency_key_is_passed_on(gateway: httpx.AsyncClient, stub: StubServices) -> None:
    # It was dropped, so a batch with an empty key was taken as one without, though the document refuses it.
    touchpoint = {"contact_id": "7aa3a058-0088-18e0-b75e-779325d4b344", "channel": "sms", "direction": "inbound",
                  "type": "note", "occurred_at": "2026-01-05T09:00:00Z"}  # fmt: skip
    for url, body in (("/api/v1/interactions", touchpoint), ("/api/v1/interactions/batch", {"items": [touchpoint]})):
        before = len(stub.calls)
        await gateway.post(url, json=body, headers={**ADMIN, "Idempotency-Key": ""})
        assert len(stub.calls) == before + 1, url
        assert stub.calls[-1].headers.get("idempotency-key") == "", url


def test_the_console_goes_back_with_one_done() -> None:
    # The queue's back link kept the last action's done=, and the next action added another: now a 422.
    assert with_done("/queue?view=mine&done=complete%3Aa", "snooze:b") == "/queue?view=mine&done=snooze%3Ab"
    assert with_done("/queue", "assign:c") == "/queue?done=assign%3Ac"
