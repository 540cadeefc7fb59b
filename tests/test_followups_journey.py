"""The follow-ups service behind the real contacts and interactions services (one nats-server, real HTTP to
contacts): touchpoints logged over HTTP become follow-ups, replies close them, a resolved complaint thread
brings its satisfaction check, a merge moves them and an erase cancels them. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicekit.clock import MovableClock
from servicekit.testing.apps import running_app, served
from servicekit.testing.nats import NatsServer
from servicekit.testing.plugin import eventually
from services.contacts.app import create_app as create_contacts_app
from services.contacts.settings import ContactsSettings
from services.followups.app import create_app as create_followups_app
from services.followups.settings import FollowupsSettings
from services.interactions.app import create_app as create_interactions_app
from services.interactions.settings import InteractionsSettings

ROOT = Path(__file__).resolve().parents[1]
MONDAY_10 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
SLOW = 60.0  # generous on a busy shared machine; short when it works


@pytest.fixture
def databases(database_factory: Callable[[Path], str]) -> dict[str, str]:
    return {
        name: database_factory(ROOT / f"services/{name}/alembic.ini")
        for name in ("contacts", "interactions", "followups")
    }


@pytest.fixture
def nats_private(nats_factory: Callable[[], NatsServer]) -> NatsServer:
    return nats_factory()


async def test_touchpoints_logged_over_http_become_followups_and_close_the_loop(
    databases: dict[str, str], nats_private: NatsServer, clock: MovableClock
) -> None:
    clock.set(MONDAY_10)
    common: dict[str, Any] = {"nats_url": nats_private.url, "log_json": False, "outbox_poll_s": 0.05}
    contacts_app = create_contacts_app(ContactsSettings(database_url=databases["contacts"], **common), clock=clock)
    async with served(contacts_app) as contacts_url, httpx.AsyncClient(base_url=contacts_url, timeout=10) as contacts:
        interactions_settings = InteractionsSettings(
            database_url=databases["interactions"], contacts_url=contacts_url, **common
        )
        followups_settings = FollowupsSettings(
            database_url=databases["followups"], contacts_url=contacts_url, scheduler_enabled=False, **common
        )
        async with (
            running_app(create_interactions_app(interactions_settings, clock=clock)) as interactions,
            running_app(create_followups_app(followups_settings, clock=clock)) as followups,
        ):

            async def new_contact(**fields: Any) -> dict[str, Any]:
                body = {"name": "Ada", "emails": [f"ada.{uuid.uuid4().hex[:10]}@example.com"], **fields}
                response = await contacts.post("/v1/contacts", json=body)
                assert response.status_code == 201, response.text
                return dict(response.json())

            async def log(contact_id: str, **fields: Any) -> dict[str, Any]:
                body = {"contact_id": contact_id, "occurred_at": clock.now().isoformat(), "subject": "Hello", **fields}
                response = await interactions.post("/v1/interactions", json=body)
                assert response.status_code == 201, response.text
                return dict(response.json())

            async def followups_of(contact_id: str, count: int, **params: Any) -> list[dict[str, Any]]:
                found: list[dict[str, Any]] = []

                async def enough() -> bool:
                    nonlocal found
                    query = {"contact_id": contact_id, "limit": 200, **params}
                    found = (await followups.get("/v1/followups", params=query)).json()["items"]
                    return len(found) >= count

                await eventually(enough, timeout=SLOW)
                assert len(found) == count, found
                return found

            ada = await new_contact(preferred_channel="email", owner="grace", consent={"sms": False})
            await log(ada["id"], channel="in_person", direction="inbound", type="purchase", amount=120, currency="EUR")
            bought = await followups_of(ada["id"], 3, policy="purchase-2-2-2")
            assert {(f["channel"], f["assignee"]) for f in bought} == {("email", "grace")}

            complaint = await log(ada["id"], channel="phone", direction="inbound", type="complaint", agent="alan",
                                  thread_id="T-1")  # fmt: skip
            callback = (await followups_of(ada["id"], 1, policy="complaint-callback"))[0]
            sla = (await followups_of(ada["id"], 1, policy="response-sla"))[0]
            assert callback["assignee"] == "alan" and sla["channel"] == "phone"
            clock.advance(hours=1)
            reply = await log(ada["id"], channel="phone", direction="outbound", type="support", thread_id="T-1")
            closed = await followups_of(ada["id"], 1, policy="complaint-callback", status="completed")
            assert closed[0]["interaction_id"] == reply["id"]
            answered = await followups_of(ada["id"], 1, policy="response-sla", status="cancelled")
            assert answered[0]["cancel_reason"] == "answered"

            resolved = await interactions.patch(
                f"/v1/interactions/{complaint['id']}", json={"thread_status": "resolved"}
            )
            assert resolved.status_code == 200, resolved.text
            check = await followups_of(ada["id"], 1, policy="complaint-callback", status="scheduled")
            assert check[0]["step"] == "satisfaction-check" and check[0]["thread_id"] == "T-1"

            # A duplicate of Ada with its own follow-up is merged into her: it moves.
            duplicate = await new_contact(preferred_channel="email")
            await log(duplicate["id"], channel="email", direction="inbound", type="inquiry")
            moving = (await followups_of(duplicate["id"], 1, policy="response-sla"))[0]
            merged = await contacts.post(f"/v1/contacts/{ada['id']}/merge", json={"source_id": duplicate["id"]})
            assert merged.status_code == 200, merged.text
            moved = await followups_of(ada["id"], 1, policy="response-sla", status="scheduled")
            assert moved[0]["id"] == moving["id"]

            erased = await contacts.delete(f"/v1/contacts/{ada['id']}")
            assert erased.status_code == 204
            cancelled = await followups_of(ada["id"], 6, status="cancelled")  # 3 + check + moved, answered
            assert {f["cancel_reason"] for f in cancelled} == {"erased", "answered"}
            assert await followups_of(ada["id"], 0, status="scheduled") == []
