"""One trace from a gateway POST /api/v1/interactions through the interactions service, its event over the bus to
the follow-ups consumer, the follow-ups that consumer emits, and the gateway's projection of both: the real
services (contacts and interactions on uvicorn ports, follow-ups and the gateway in-process), a real nats-server,
and OpenTelemetry's in-memory exporter in place of OTLP."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from gateway.app import create_app as create_gateway
from gateway.settings import DEV_ADMIN_KEY, GatewaySettings
from servicekit.clock import MovableClock
from servicekit.testing.apps import running_app, served
from servicekit.testing.nats import NatsServer
from servicekit.testing.plugin import eventually
from servicekit.testing.tracing import recorded_spans
from servicekit.tracing import recording
from services.contacts.app import create_app as create_contacts
from services.contacts.settings import ContactsSettings
from services.followups.app import create_app as create_followups
from services.followups.settings import FollowupsSettings
from services.interactions.app import create_app as create_interactions
from services.interactions.settings import InteractionsSettings

ROOT = Path(__file__).resolve().parents[1]
ADMIN = {"Authorization": f"Bearer {DEV_ADMIN_KEY}"}
SLOW = 60.0


@pytest.fixture
def databases(database_factory: Callable[[Path], str]) -> dict[str, str]:
    return {name: database_factory(ROOT / ini) for name, ini in (
        ("contacts", "services/contacts/alembic.ini"), ("interactions", "services/interactions/alembic.ini"),
        ("followups", "services/followups/alembic.ini"), ("gateway", "gateway/alembic.ini"))}  # fmt: skip


def consumed(spans: list[ReadableSpan], group: str, event_type: str) -> list[ReadableSpan]:
    return [s for s in spans if s.kind == SpanKind.CONSUMER and s.name == f"{event_type} process"
            and (s.attributes or {}).get("messaging.consumer.group.name") == group]  # fmt: skip


async def test_one_trace_from_a_gateway_post_through_interactions_follow_ups_and_the_projection(
    databases: dict[str, str], nats_factory: Callable[[], NatsServer], clock: MovableClock
) -> None:
    nats_server = nats_factory()
    common: dict[str, Any] = {"nats_url": nats_server.url, "log_json": False, "outbox_poll_s": 0.05}
    with recorded_spans() as exporter:
        contacts_app = create_contacts(ContactsSettings(database_url=databases["contacts"], **common), clock=clock)
        async with served(contacts_app) as contacts_url:
            interactions_app = create_interactions(InteractionsSettings(
                database_url=databases["interactions"], contacts_url=contacts_url, **common), clock=clock)  # fmt: skip
            followups_app = create_followups(FollowupsSettings(
                database_url=databases["followups"], contacts_url=contacts_url, scheduler_enabled=False, **common,
            ), clock=clock)  # fmt: skip
            async with served(interactions_app) as interactions_url, running_app(followups_app):
                gateway_app = create_gateway(GatewaySettings(
                    database_url=databases["gateway"], dev_mode=True, contacts_url=contacts_url,
                    interactions_url=interactions_url, followups_url="http://followups", **common,
                ), clock=clock, transports={"followups": httpx.ASGITransport(app=followups_app)})  # fmt: skip
                async with running_app(gateway_app) as gateway:
                    n = uuid.uuid4().hex[:8]
                    ada = await gateway.post("/api/v1/contacts", headers=ADMIN,
                                             json={"name": f"Ada {n}", "emails": [f"ada.{n}@example.com"]})  # fmt: skip
                    assert ada.status_code == 201, ada.text
                    complaint = {"contact_id": ada.json()["id"], "channel": "phone", "direction": "inbound",
                                 "type": "complaint", "occurred_at": clock.now().isoformat()}  # fmt: skip
                    logged = await gateway.post("/api/v1/interactions", headers=ADMIN, json=complaint)
                    assert logged.status_code == 201, logged.text

                    def post_span() -> ReadableSpan | None:
                        return next((s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER
                                     and s.name == "POST /api/v1/interactions"), None)  # fmt: skip

                    def projected_followup() -> list[ReadableSpan]:
                        post = post_span()
                        if post is None:
                            return []
                        spans = [s for s in exporter.get_finished_spans()
                                 if s.context.trace_id == post.context.trace_id]  # fmt: skip
                        return consumed(spans, "gateway-followups", "crm.followup.scheduled.v1")

                    await eventually(projected_followup, timeout=SLOW)
        post = post_span()
        assert post is not None
        trace_id = post.context.trace_id
        spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
    assert not recording()  # the process is untraced again for the tests that follow
    by_id = {s.context.span_id: s for s in spans}
    # interactions served the gateway's call, within the gateway's request
    (answered,) = [s for s in spans if s.kind == SpanKind.SERVER and s.name == "POST /v1/interactions"]
    chain = _ancestors(answered, by_id)
    assert chain[-1] is post and any(s.kind == SpanKind.CLIENT for s in chain[1:-1])  # the gateway's call's span
    # the follow-ups consumer handled the event interactions wrote, as the child of the request that wrote it
    (followed,) = consumed(spans, "followups-interactions", "crm.interaction.logged.v1")
    assert followed.parent is not None and followed.parent.span_id == answered.context.span_id
    # the gateway's projection applied the touchpoint, and the follow-ups the consumer made, in the same trace
    (projected,) = consumed(spans, "gateway-interactions", "crm.interaction.logged.v1")
    assert projected.parent is not None and projected.parent.span_id == answered.context.span_id
    for scheduled in consumed(spans, "gateway-followups", "crm.followup.scheduled.v1"):
        assert scheduled.parent is not None and scheduled.parent.span_id == followed.context.span_id
    # and the databases' statements are in it (SQLAlchemy instrumented)
    assert any((s.attributes or {}).get("db.system") or (s.attributes or {}).get("db.system.name") for s in spans)


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = [span]
    while chain[-1].parent is not None and chain[-1].parent.span_id in by_id:
        chain.append(by_id[chain[-1].parent.span_id])
    return chain
