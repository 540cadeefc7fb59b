"""A customer's journey through the gateway only, with nats-server and all four services as real processes
(SQLite; PostgreSQL too when a cluster is available, always in CI)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicekit.devstack import Stack
from servicekit.testing.plugin import eventually
from tests.whole_stack import running_stack

pytestmark = pytest.mark.stack

ADMIN_KEY = "tp_journey_admin_key_" + uuid.uuid4().hex
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
CHANNELS = ["phone", "in_person", "email", "sms", "live_chat", "social", "self_service"]


@pytest.fixture
def stack(db_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(
        admin_key=ADMIN_KEY, db_backend=db_backend, request=request, tmp_path=tmp_path, database_prefix="j"
    ) as running:
        yield running


def at(minutes_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


async def items_of(
    api: httpx.AsyncClient, contact_id: str, headers: dict[str, str], **params: str
) -> list[dict[str, Any]]:
    """The whole timeline, page by page."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {"limit": "20", **params, **({"cursor": cursor} if cursor else {})}
        response = await api.get(f"/api/v1/contacts/{contact_id}/timeline", params=query, headers=headers)
        assert response.status_code == 200, response.text
        found.extend(response.json()["items"])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return found


async def test_a_customer_journey_through_the_gateway(stack: Stack) -> None:
    gateway_url = stack.services["gateway"].url
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as api:
        keys = {}
        for role in ("ingest", "agent", "readonly"):
            made = await api.post("/api/v1/api-keys", json={"name": f"journey {role}", "role": role}, headers=ADMIN)
            assert made.status_code == 201, made.text
            keys[role] = {"Authorization": f"Bearer {made.json()['key']}"}
        ingest, agent, reader = keys["ingest"], keys["agent"], keys["readonly"]
        n = uuid.uuid4().hex[:6]
        name, email, phone = f"Margaret Hamilton {n}", f"margaret.{n}@example.com", "+12025550187"
        secret_body = f"My order {n} arrived with a cracked screen"

        # A new contact from an ingest key: the web shop logs a first touchpoint by email identity.
        first = await api.post(
            "/api/v1/interactions",
            json={"contact": {"email": email, "name": name, "phones": [phone]}, "channel": "self_service",
                  "direction": "inbound", "type": "inquiry", "occurred_at": at(300), "subject": "Sizes?",
                  "body": f"Which size fits {name}?"},
            headers={**ingest, "Idempotency-Key": f"first-{n}"},
        )  # fmt: skip
        assert first.status_code == 201, first.text
        contact_id = first.json()["contact_id"]
        assert (await api.get(f"/api/v1/contacts/{contact_id}/timeline", headers=ingest)).status_code == 403

        # Touchpoints on all seven channels (by the agent), a purchase, a complaint with its thread, a low CSAT.
        for i, channel in enumerate(CHANNELS):
            logged = await api.post(
                "/api/v1/interactions",
                json={"contact_id": contact_id, "channel": channel, "direction": "outbound", "type": "note",
                      "occurred_at": at(290 - i), "agent": "grace", "subject": f"Note on {channel}"},
                headers=agent,
            )  # fmt: skip
            assert logged.status_code == 201, logged.text
        purchase = await api.post(
            "/api/v1/interactions",
            json={"contact_id": contact_id, "channel": "in_person", "direction": "inbound", "type": "purchase",
                  "occurred_at": at(200), "amount": 499.0, "currency": "EUR"},
            headers=agent,
        )  # fmt: skip
        assert purchase.status_code == 201, purchase.text
        # She is a customer now: the journey map shows the stage change.
        staged = await api.patch(f"/api/v1/contacts/{contact_id}", json={"stage": "customer"}, headers=agent)
        assert staged.status_code == 200, staged.text
        thread = f"complaint-{n}"
        complaint = await api.post(
            "/api/v1/interactions",
            json={"contact_id": contact_id, "channel": "phone", "direction": "inbound", "type": "complaint",
                  "occurred_at": at(100), "thread_id": thread, "subject": "Broken screen", "body": secret_body},
            headers=agent,
        )  # fmt: skip
        assert complaint.status_code == 201, complaint.text
        survey = await api.post(
            "/api/v1/interactions",
            json={"contact_id": contact_id, "channel": "email", "direction": "inbound", "type": "survey_response",
                  "occurred_at": at(90), "csat": 1, "nps": 2},
            headers=agent,
        )  # fmt: skip
        assert survey.status_code == 201, survey.text

        # The purchase's 2+2+2 follow-ups, the complaint's call-back and the low score's recovery appear.
        async def followups() -> list[dict[str, Any]]:
            found = await items_of(api, contact_id, reader, kinds="followup")
            policies = [f.get("policy") for f in found]
            ready = policies.count("purchase-2-2-2") == 3 and "complaint-callback" in policies
            return found if ready and "low-score-recovery" in policies else []

        scheduled = await eventually(followups, timeout=30)
        assert isinstance(scheduled, list)
        purchase_at = datetime.fromisoformat(purchase.json()["occurred_at"])
        thanks = sorted(datetime.fromisoformat(f["due_at"]) for f in scheduled if f["policy"] == "purchase-2-2-2")
        assert thanks[0] - purchase_at >= timedelta(days=2) - timedelta(hours=12)
        assert thanks[2] - purchase_at >= timedelta(days=55)
        callback = next(f for f in scheduled if f["policy"] == "complaint-callback")

        # The call-back done by an outbound call on the complaint's thread closes the loop by itself.
        call = await api.post(
            "/api/v1/interactions",
            json={"contact_id": contact_id, "channel": "phone", "direction": "outbound", "type": "support",
                  "occurred_at": at(0), "thread_id": thread, "outcome": "replacement sent"},
            headers=agent,
        )  # fmt: skip
        assert call.status_code == 201, call.text

        async def called_back() -> bool:
            done = (await api.get(f"/api/v1/followups/{callback['id']}", headers=reader)).json()
            return done["status"] == "completed" and done["interaction_id"] == call.json()["id"]

        await eventually(called_back, timeout=30)

        # The whole timeline, paged to the end while touchpoints keep arriving: no repeat, no gap.
        before = await items_of(api, contact_id, reader)
        seen: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = {"limit": "4", **({"cursor": cursor} if cursor else {})}
            page = (await api.get(f"/api/v1/contacts/{contact_id}/timeline", params=query, headers=reader)).json()
            seen.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
            added = await api.post(
                "/api/v1/interactions",
                json={"contact_id": contact_id, "channel": "live_chat", "direction": "inbound", "type": "inquiry",
                      "occurred_at": at(0)},
                headers=ingest,
            )  # fmt: skip
            assert added.status_code == 201
        ids = [i["id"] for i in seen]
        assert len(ids) == len(set(ids))
        assert {i["id"] for i in before} <= set(ids)
        header = page["contact"]
        assert header["profile"]["id"] == contact_id and header["csat_responses"] >= 1
        assert {c["channel"] for c in header["last_touch_per_channel"]} >= set(CHANNELS)

        # The stream receives a new touchpoint within a second.
        async with api.stream("GET", f"/api/v1/contacts/{contact_id}/timeline/stream", headers=reader) as stream:
            lines = stream.aiter_lines()

            async def next_event() -> dict[str, str]:
                event: dict[str, str] = {}
                async for line in lines:
                    if not line:
                        if event:
                            return event
                        continue
                    if not line.startswith(":"):
                        key, _, value = line.partition(":")
                        event[key] = value.lstrip()
                raise AssertionError("stream ended")

            assert (await asyncio.wait_for(next_event(), 10))["event"] == "ready"
            live = await api.post(
                "/api/v1/interactions",
                json={"contact_id": contact_id, "channel": "sms", "direction": "inbound", "type": "inquiry",
                      "occurred_at": at(0), "subject": "Still there?"},
                headers=ingest,
            )  # fmt: skip
            started = asyncio.get_running_loop().time()
            while True:
                pushed = await asyncio.wait_for(next_event(), 5)
                if json.loads(pushed["data"])["id"] == live.json()["id"]:
                    break
            assert asyncio.get_running_loop().time() - started < 1.5

        # The service-quality metrics.
        metrics = await api.get("/api/v1/metrics/service", headers=reader)
        assert metrics.status_code == 200, metrics.text
        figures = metrics.json()
        assert figures["csat"]["responses"] >= 1 and figures["complaints"]["opened"] >= 1
        assert figures["pareto"] is not None and figures["retention"] is not None and figures["sla"] is not None

        async def journey() -> dict[str, Any]:
            answer = await api.get(f"/api/v1/contacts/{contact_id}/journey", headers=reader)
            assert answer.status_code == 200, answer.text
            body: dict[str, Any] = answer.json()
            return body if [s["stage"] for s in body["stages"]] == ["lead", "customer"] else {}

        mapped = await eventually(journey, timeout=15)
        assert isinstance(mapped, dict)
        assert mapped["touchpoints_counted"] >= 12
        assert sum(s["touchpoints"] for s in mapped["stages"]) == mapped["touchpoints_counted"]
        lead, customer = mapped["stages"]
        assert lead["touchpoints_per_channel"]["self_service"] == 2 and lead["left_at"] == customer["entered_at"]
        assert customer["touchpoints"] >= 1 and customer["left_at"] is None

        # The erase leaves no name, email, phone or body anywhere in the API.
        assert (await api.delete(f"/api/v1/contacts/{contact_id}", headers=agent)).status_code == 403
        assert (await api.delete(f"/api/v1/contacts/{contact_id}", headers=ADMIN)).status_code == 204

        async def redacted() -> bool:
            page = (await api.get("/api/v1/interactions", params={"contact_id": contact_id, "limit": "200"},
                                  headers=reader)).json()  # fmt: skip
            return all(i["body"] is None and i["subject"] is None for i in page["items"])

        await eventually(redacted, timeout=30)
        answers = [
            await api.get(f"/api/v1/contacts/{contact_id}", headers=reader),
            await api.get(f"/api/v1/contacts/{contact_id}/export", headers=ADMIN),
            await api.get(f"/api/v1/contacts/{contact_id}/timeline", headers=reader),
            await api.get("/api/v1/contacts", params={"q": email}, headers=reader),
            await api.get("/api/v1/contacts", params={"q": name.split()[0].lower()}, headers=reader),
            await api.get("/api/v1/interactions", params={"contact_id": contact_id, "limit": "200"}, headers=reader),
            await api.get(f"/api/v1/interactions/{complaint.json()['id']}", headers=reader),
            await api.get(f"/api/v1/threads/{thread}", headers=reader),
            await api.get("/api/v1/followups", params={"contact_id": contact_id, "limit": "200"}, headers=reader),
            await api.get("/api/v1/audit", headers=ADMIN),
        ]
        for answer in answers:
            assert answer.status_code < 500, answer.text
            for secret in (name, email, phone, phone.lstrip("+"), secret_body):
                assert secret not in answer.text, (answer.request.url, secret)
