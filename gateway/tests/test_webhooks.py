"""Outbound webhooks: the API (admin only, secret shown once, SSRF guard), and deliveries from the bus to a real
HTTP receiver on 127.0.0.1 that fails, times out and then succeeds, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import nats
import pytest
import standardwebhooks
import uvicorn
from nats.js.api import StreamConfig
from sqlalchemy import select
from sqlmodel import col
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway import webhooks
from gateway.app import create_app
from gateway.models import Webhook, WebhookDelivery
from gateway.settings import GatewaySettings
from gateway.tests.conftest import ADMIN, make_key
from servicekit.clock import MovableClock
from servicekit.db import make_engine, make_sessionmaker
from servicekit.events import CloudEvent, make_event
from servicekit.testing.apps import running_app
from servicekit.testing.nats import NatsServer
from servicekit.testing.plugin import eventually
from servicekit.testing.ports import free_port

LOGGED = "crm.interaction.logged.v1"
TIMEOUT_S = 0.5


def reference_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """The signature the Standard Webhooks reference library computes, independently of gateway.webhooks (its
    ``verify`` would also check the timestamp against the real time, which the tests' moved clock is not)."""
    signed_at = datetime.fromtimestamp(int(timestamp), UTC)
    return standardwebhooks.Webhook(secret).sign(msg_id=msg_id, timestamp=signed_at, data=body)


def test_signature_reproduces_the_published_standard_webhooks_vector() -> None:
    secret, msg_id, timestamp, body = (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    )  # fmt: skip
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert webhooks.signature(secret=secret, msg_id=msg_id, timestamp=timestamp, body=body) == expected
    assert reference_signature(secret, msg_id, str(timestamp), body) == expected


def test_sealed_secret_opens_only_with_the_same_server_key() -> None:
    secret = webhooks.new_secret()
    sealed = webhooks.seal(secret, b"server-key-one-0123456789")
    assert secret not in sealed and secret.removeprefix("whsec_") not in sealed
    assert webhooks.unseal(sealed, b"server-key-one-0123456789") == secret
    with pytest.raises(ValueError, match="another GATEWAY_SECRET_KEY"):
        webhooks.unseal(sealed, b"server-key-two-0123456789")


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    for attempts, ceiling in ((1, 5.0), (2, 10.0), (3, 20.0), (12, 3600.0), (80, 3600.0)):
        delays = [webhooks.backoff_s(attempts, first_s=5.0, max_s=3600.0, rng=rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered, not one value


# --- a real receiver ----------------------------------------------------------------------------------------------


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 whose answers follow ``script`` per ``webhook-id``: "fail" (500), "slow"
    (answers only after the sender's timeout), "ok" (204); the last entry repeats."""

    script: list[str]
    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    answered_ok: Counter[str] = field(default_factory=Counter)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def attempts(self) -> Counter[str]:
        return Counter(r["headers"]["webhook-id"] for r in self.received)

    async def handle(self, request: Request) -> PlainTextResponse:
        body = await request.body()
        ident = request.headers["webhook-id"]
        seen = sum(1 for r in self.received if r["headers"]["webhook-id"] == ident)
        self.received.append({"headers": dict(request.headers), "body": body})
        mode = self.script[min(seen, len(self.script) - 1)]
        if mode == "fail":
            return PlainTextResponse("receiver broke", status_code=500)
        if mode == "slow":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), TIMEOUT_S * 6)
            return PlainTextResponse("too late", status_code=200)
        self.answered_ok[ident] += 1
        return PlainTextResponse("", status_code=204)


@contextlib.asynccontextmanager
async def receiving(script: list[str]) -> AsyncIterator[Receiver]:
    receiver = Receiver(script)
    port = free_port()
    app = Starlette(routes=[Route("/hook", receiver.handle, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    receiver.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.should_exit = True
        await task


# --- the gateway with its bus -------------------------------------------------------------------------------------


@pytest.fixture
def private_nats(nats_factory: Callable[[], NatsServer]) -> NatsServer:
    # A server of its own: the webhook durables must not see other tests' events.
    return nats_factory()


@pytest.fixture
def hook_settings(gateway_db: str, private_nats: NatsServer) -> GatewaySettings:
    return GatewaySettings(
        database_url=gateway_db,
        nats_url=private_nats.url,
        dev_mode=True,
        log_json=False,
        webhooks_allow_private=True,
        webhooks_timeout_s=TIMEOUT_S,
        webhooks_poll_s=0.05,
        webhooks_backoff_s=5.0,
        consumer_wait_s=0.02,
    )


@pytest.fixture
async def js(private_nats: NatsServer) -> AsyncIterator[Any]:
    """JetStream with the producers' streams (the gateway only reads them)."""
    nc = await nats.connect(private_nats.url)
    js = nc.jetstream()
    for stream, _durable, subjects in webhooks.consumers():
        await js.add_stream(StreamConfig(name=stream, subjects=subjects))
    yield js
    await nc.close()


@contextlib.asynccontextmanager
async def gateway_with(settings: GatewaySettings, clock: MovableClock) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, clock=clock)
    async with running_app(app) as client:
        client.app = app  # type: ignore[attr-defined]
        yield client


async def feed_ready(js: Any) -> None:
    """The webhook durables exist (they start at new events: what is published before them is not theirs)."""

    async def ready() -> bool:
        for stream, durable, _subjects in webhooks.consumers():
            try:
                await js.consumer_info(stream, durable)
            except Exception:
                return False
        return True

    await eventually(ready)


async def deliveries(client: httpx.AsyncClient, webhook_id: str, **params: Any) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/webhooks/{webhook_id}/deliveries", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def logged_event(clock: MovableClock) -> CloudEvent:
    return make_event(type=LOGGED, source="test", subject=None, data={"channel": "email"}, time=clock.now())


# --- the API ------------------------------------------------------------------------------------------------------


async def test_the_secret_is_shown_once_and_stored_sealed(hook_settings: GatewaySettings, clock: MovableClock) -> None:
    async with gateway_with(hook_settings, clock) as client:
        body = {"url": "https://hooks.example.com/in", "events": [LOGGED], "description": "Billing"}
        created = await client.post("/api/v1/webhooks", json=body, headers=ADMIN)
        assert created.status_code == 201, created.text
        hook = created.json()
        secret = hook["secret"]
        assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
        assert created.headers["location"] == f"/api/v1/webhooks/{hook['id']}"
        assert hook["events"] == [LOGGED] and hook["url"] == body["url"]

        listed = await client.get("/api/v1/webhooks", headers=ADMIN)
        one = await client.get(f"/api/v1/webhooks/{hook['id']}", headers=ADMIN)
        for answer in (listed, one):
            assert answer.status_code == 200
            assert "secret" not in answer.text and secret[6:] not in answer.text
        assert [item["id"] for item in listed.json()["items"]] == [hook["id"]]

        app = client.app  # type: ignore[attr-defined]
        async with app.state.runtime.sessionmaker() as session:
            row = (await session.scalars(select(Webhook))).one()
        assert secret[6:] not in row.sealed_secret
        assert webhooks.unseal(row.sealed_secret, hook_settings.signing_key) == secret

        audit = await client.get("/api/v1/audit", params={"action": "webhook.create"}, headers=ADMIN)
        assert [entry["target"] for entry in audit.json()["items"]] == [hook["id"]]

        assert (await client.delete(f"/api/v1/webhooks/{hook['id']}", headers=ADMIN)).status_code == 204
        assert (await client.get(f"/api/v1/webhooks/{hook['id']}", headers=ADMIN)).status_code == 404
        assert (await client.delete(f"/api/v1/webhooks/{hook['id']}", headers=ADMIN)).status_code == 404


async def test_unknown_event_types_and_bad_bodies_are_422(hook_settings: GatewaySettings, clock: MovableClock) -> None:
    async with gateway_with(hook_settings, clock) as client:
        unknown = await client.post(
            "/api/v1/webhooks",
            json={"url": "https://hooks.example.com/", "events": [LOGGED, "crm.contact.teleported.v1"]},
            headers=ADMIN,
        )
        assert unknown.status_code == 422
        assert unknown.headers["content-type"].startswith("application/problem+json")
        assert unknown.json()["unknown"] == ["crm.contact.teleported.v1"]
        for body in (
            {"url": "ftp://hooks.example.com/", "events": [LOGGED]},
            {"url": "https://hooks.example.com/", "events": []},
            {"url": "https://hooks.example.com/", "events": [LOGGED], "secret": "mine"},
            {"url": "https://hooks.example.com:99999/", "events": [LOGGED]},
        ):
            answer = await client.post("/api/v1/webhooks", json=body, headers=ADMIN)
            assert answer.status_code == 422, (body, answer.text)
        assert (await client.get("/api/v1/webhooks", headers=ADMIN)).json()["items"] == []


NOT_PUBLIC = [
    "http://127.0.0.1:8000/hook",
    "http://localhost/hook",
    "http://10.1.2.3/hook",
    "http://192.168.1.10/hook",
    "http://172.16.0.1/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://100.64.0.1/hook",
    "http://0.0.0.0/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[fe80::1]/hook",
    "http://[fd00::1]/hook",
    "http://224.0.0.1/hook",
]


async def test_a_url_that_is_not_public_is_refused(hook_settings: GatewaySettings, clock: MovableClock) -> None:
    settings = hook_settings.model_copy(update={"webhooks_allow_private": False})
    async with gateway_with(settings, clock) as client:
        for url in NOT_PUBLIC:
            answer = await client.post("/api/v1/webhooks", json={"url": url, "events": [LOGGED]}, headers=ADMIN)
            assert answer.status_code == 422, (url, answer.text)
            assert answer.json()["field"] == "url"
            assert "non-public" in answer.json()["detail"], url
        assert (await client.get("/api/v1/webhooks", headers=ADMIN)).json()["items"] == []
        public = await client.post(
            "/api/v1/webhooks", json={"url": "https://93.184.215.14/hook", "events": [LOGGED]}, headers=ADMIN
        )
        assert public.status_code == 201, public.text


async def test_only_admins_manage_webhooks(hook_settings: GatewaySettings, clock: MovableClock) -> None:
    async with gateway_with(hook_settings, clock) as client:
        created = await client.post(
            "/api/v1/webhooks", json={"url": "https://hooks.example.com/", "events": [LOGGED]}, headers=ADMIN
        )
        hook_id = created.json()["id"]
        for role in ("agent", "readonly", "ingest"):
            headers = await make_key(client, role)
            calls = [
                client.post("/api/v1/webhooks", json={"url": "https://x.example.com/", "events": [LOGGED]},
                            headers=headers),
                client.get("/api/v1/webhooks", headers=headers),
                client.get(f"/api/v1/webhooks/{hook_id}", headers=headers),
                client.get(f"/api/v1/webhooks/{hook_id}/deliveries", headers=headers),
                client.delete(f"/api/v1/webhooks/{hook_id}", headers=headers),
            ]  # fmt: skip
            for answer in await asyncio.gather(*calls):
                assert answer.status_code == 403, (role, answer.request.url, answer.text)
        assert (await client.get("/api/v1/webhooks")).status_code == 401
        assert len((await client.get("/api/v1/webhooks", headers=ADMIN)).json()["items"]) == 1


# --- deliveries ---------------------------------------------------------------------------------------------------


async def test_deliveries_survive_a_failing_then_slow_receiver_none_lost_none_doubled(
    hook_settings: GatewaySettings, clock: MovableClock, js: Any
) -> None:
    async with receiving(["fail", "slow", "ok"]) as receiver, gateway_with(hook_settings, clock) as client:
        created = await client.post("/api/v1/webhooks", json={"url": receiver.url, "events": [LOGGED]}, headers=ADMIN)
        hook = created.json()
        await feed_ready(js)
        sent = [logged_event(clock) for _ in range(5)]
        for event in sent:
            await js.publish("crm.interactions.logged.c1", event.to_json(), headers={"Nats-Msg-Id": event.id})
        # The same event again under another message id (JetStream keeps both): recorded once all the same.
        await js.publish("crm.interactions.logged.c1", sent[0].to_json(), headers={"Nats-Msg-Id": "again"})
        other = make_event(type="crm.interaction.updated.v1", source="test", subject=None, data={}, time=clock.now())
        await js.publish("crm.interactions.updated.c1", other.to_json(), headers={"Nats-Msg-Id": other.id})

        async def all_tried(times: int) -> list[dict[str, Any]] | None:
            items = await deliveries(client, hook["id"])
            return items if len(items) == len(sent) and all(d["attempts"] == times for d in items) else None

        first = await eventually(lambda: all_tried(1))
        assert isinstance(first, list)
        for item in first:
            assert item["status"] == "pending" and item["last_status_code"] == 500
            assert item["last_error"].startswith("HTTP 500")
            wait = (clock.now() - _time(item["next_attempt_at"])).total_seconds()
            assert -5.0 <= wait <= -2.5  # first retry: 5 s, jittered between half and all of it

        clock.advance(seconds=5)
        second = await eventually(lambda: all_tried(2))
        assert isinstance(second, list)
        assert all(d["last_error"] == f"timed out after {TIMEOUT_S:g} s" for d in second)
        assert all(d["last_status_code"] is None and d["status"] == "pending" for d in second)

        clock.advance(seconds=10)

        async def all_delivered() -> list[dict[str, Any]] | None:
            items = await deliveries(client, hook["id"], status="delivered")
            return items if len(items) == len(sent) else None

        done = await eventually(all_delivered)
        assert isinstance(done, list)
        assert all(d["attempts"] == 3 and d["delivered_at"] and d["next_attempt_at"] is None for d in done)
        assert await client.app.state.delivery_worker.run_once() == 0  # type: ignore[attr-defined]

    # Per webhook-id: every event arrived, was answered 2xx exactly once, after one failure and one timeout.
    assert receiver.answered_ok == Counter({event.id: 1 for event in sent})
    assert receiver.attempts() == Counter({event.id: 3 for event in sent})
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for request in receiver.received:
        by_id[request["headers"]["webhook-id"]].append(request)
    secret = hook["secret"]
    for event in sent:
        for request in by_id[event.id]:
            headers, body = request["headers"], request["body"]
            assert headers["content-type"] == "application/cloudevents+json"
            assert headers["webhook-signature"] == reference_signature(
                secret, event.id, headers["webhook-timestamp"], body
            )
            assert CloudEvent.from_json(body) == event
        stamps = [int(r["headers"]["webhook-timestamp"]) for r in by_id[event.id]]
        assert stamps[-1] == int(clock.now().timestamp())  # signed at the attempt, by the injected clock


async def test_a_delivery_is_dead_lettered_after_the_retry_window_and_can_be_sent_again(
    hook_settings: GatewaySettings, clock: MovableClock, js: Any
) -> None:
    async with receiving(["fail", "fail", "fail", "ok"]) as receiver, gateway_with(hook_settings, clock) as client:
        hook = (
            await client.post("/api/v1/webhooks", json={"url": receiver.url, "events": [LOGGED]}, headers=ADMIN)
        ).json()
        await feed_ready(js)
        event = logged_event(clock)
        await js.publish("crm.interactions.logged.c2", event.to_json(), headers={"Nats-Msg-Id": event.id})

        async def tried(times: int) -> dict[str, Any] | None:
            items = await deliveries(client, hook["id"])
            return items[0] if items and items[0]["attempts"] == times else None

        await eventually(lambda: tried(1))
        clock.advance(hours=23)
        await eventually(lambda: tried(2))
        clock.advance(hours=2)  # past the 24 h window: the next failure is the last

        async def dead() -> list[dict[str, Any]]:
            return await deliveries(client, hook["id"], status="dead")

        found = await eventually(dead)
        assert isinstance(found, list) and len(found) == 1
        item: dict[str, Any] = found[0]
        assert item["attempts"] == 3 and item["next_attempt_at"] is None
        assert _time(item["dead_lettered_at"]) == clock.now()
        assert item["last_error"].startswith("HTTP 500")
        assert await deliveries(client, hook["id"], status="pending") == []
        clock.advance(hours=48)
        assert await client.app.state.delivery_worker.run_once() == 0  # type: ignore[attr-defined]
        assert receiver.attempts() == Counter({event.id: 3})

        # An admin sends it again: due now, a new window; the receiver is fixed and takes it.
        retry = f"/api/v1/webhooks/{hook['id']}/deliveries/{item['id']}/retry"
        agent = await make_key(client, "agent")
        assert (await client.post(retry, headers=agent)).status_code == 403
        again = await client.post(retry, headers=ADMIN)
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "pending"
        assert _time(again.json()["retry_until"]) == clock.now() + timedelta(hours=24)

        async def delivered() -> list[dict[str, Any]]:
            return await deliveries(client, hook["id"], status="delivered")

        await eventually(delivered)
        assert (await client.post(retry, headers=ADMIN)).status_code == 409
        other = f"/api/v1/webhooks/{hook['id']}/deliveries/{uuid.uuid4()}/retry"
        assert (await client.post(other, headers=ADMIN)).status_code == 404
    assert receiver.attempts() == Counter({event.id: 4})
    assert receiver.answered_ok == Counter({event.id: 1})


async def test_a_claim_whose_sender_died_is_sent_when_its_lease_runs_out(
    hook_settings: GatewaySettings, clock: MovableClock
) -> None:
    async with receiving(["ok"]) as receiver, gateway_with(hook_settings, clock) as client:
        hook = (
            await client.post("/api/v1/webhooks", json={"url": receiver.url, "events": [LOGGED]}, headers=ADMIN)
        ).json()
        app = client.app  # type: ignore[attr-defined]
        runtime = app.state.runtime
        feed = webhooks.WebhookFeed(sessionmaker=runtime.sessionmaker, clock=clock, name="test", recorded=lambda: None)
        dying = webhooks.DeliveryWorker(sessionmaker=runtime.sessionmaker, clock=clock, settings=hook_settings)
        clock.advance(seconds=1)
        event = logged_event(clock)
        await feed.record([(event, event.to_json().decode())])
        claimed = await dying._claim()  # claimed, then the process dies before sending
        await dying.close()
        if not claimed:  # the app's own worker was first: then it has sent it
            await eventually(lambda: receiver.answered_ok[event.id] == 1)
        else:
            assert await app.state.delivery_worker.run_once() == 0  # leased: nobody else sends it
            clock.advance(seconds=hook_settings.webhooks_timeout_s + 31)
            await eventually(lambda: receiver.answered_ok[event.id] == 1)

        async def recorded() -> list[dict[str, Any]] | None:
            # The worker records the answer after the receiver has sent it: the receiver can be first.
            items = await deliveries(client, hook["id"])
            return items if items and items[0]["status"] != "pending" else None

        found = await eventually(recorded)
        assert isinstance(found, list)
        (item,) = found
        assert item["status"] == "delivered" and item["attempts"] == 1
    assert receiver.attempts() == Counter({event.id: 1})


async def test_the_destination_is_checked_again_at_delivery(
    hook_settings: GatewaySettings, clock: MovableClock, js: Any
) -> None:
    async with receiving(["ok"]) as receiver, gateway_with(hook_settings, clock) as client:
        hook = (
            await client.post("/api/v1/webhooks", json={"url": receiver.url, "events": [LOGGED]}, headers=ADMIN)
        ).json()
        app = client.app  # type: ignore[attr-defined]
        # As if the name now resolved to a private address: the guard is on when the attempt is made.
        app.state.settings.webhooks_allow_private = False
        await feed_ready(js)
        event = logged_event(clock)
        await js.publish("crm.interactions.logged.c3", event.to_json(), headers={"Nats-Msg-Id": event.id})

        async def refused() -> list[dict[str, Any]] | None:
            items = await deliveries(client, hook["id"])
            return items if items and items[0]["attempts"] == 1 else None

        found = await eventually(refused)
        assert isinstance(found, list) and len(found) == 1
        item: dict[str, Any] = found[0]
        assert item["status"] == "pending" and item["last_error"].startswith("refused:")
    assert receiver.received == []


async def test_two_workers_never_send_one_delivery_twice(
    hook_settings: GatewaySettings, clock: MovableClock, js: Any
) -> None:
    """Work claiming: two workers on one database (SKIP LOCKED on PostgreSQL, one writer on SQLite)."""
    settings = hook_settings.model_copy(update={"webhooks_concurrency": 3})
    async with receiving(["ok"]) as receiver, gateway_with(settings, clock) as client:
        hook = (
            await client.post("/api/v1/webhooks", json={"url": receiver.url, "events": [LOGGED]}, headers=ADMIN)
        ).json()
        app = client.app  # type: ignore[attr-defined]
        runtime = app.state.runtime
        feed = webhooks.WebhookFeed(sessionmaker=runtime.sessionmaker, clock=clock, name="test", recorded=lambda: None)
        events = [logged_event(clock) for _ in range(20)]
        assert await feed.record([(event, event.to_json().decode()) for event in events]) == 20
        assert await feed.record([(events[0], events[0].to_json().decode())]) == 1  # offered, not recorded
        workers = [
            webhooks.DeliveryWorker(sessionmaker=runtime.sessionmaker, clock=clock, settings=settings) for _ in range(2)
        ]
        sent = await asyncio.gather(*(worker.run_once() for worker in workers), app.state.delivery_worker.run_once())
        for worker in workers:
            await worker.close()
        assert sum(sent) <= 20  # with the app's own worker, which claims beside them
        assert len(await deliveries(client, hook["id"], status="delivered", limit=200)) == 20
    assert receiver.answered_ok == Counter({event.id: 1 for event in events})


async def test_deliveries_page_by_keyset(hook_settings: GatewaySettings, clock: MovableClock) -> None:
    # A local receiver: the worker sends these deliveries while the test pages, and must not reach the internet.
    async with asyncio.timeout(60), receiving(["ok"]) as receiver, gateway_with(hook_settings, clock) as client:
        hook = (
            await client.post("/api/v1/webhooks", json={"url": receiver.url, "events": [LOGGED]}, headers=ADMIN)
        ).json()
        app = client.app  # type: ignore[attr-defined]
        feed = webhooks.WebhookFeed(
            sessionmaker=app.state.runtime.sessionmaker, clock=clock, name="test", recorded=lambda: None
        )
        events = [logged_event(clock) for _ in range(5)]
        await feed.record([(event, event.to_json().decode()) for event in events])
        seen: list[str] = []
        cursor = None
        pages = 0
        while pages < 10:  # 3 are expected: a cursor that never ends fails below, it does not loop
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            answer = await client.get(f"/api/v1/webhooks/{hook['id']}/deliveries", params=params, headers=ADMIN)
            assert answer.status_code == 200
            page = answer.json()
            seen += [d["event_id"] for d in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3 and seen == [event.id for event in reversed(events)]
        bad = await client.get(
            f"/api/v1/webhooks/{hook['id']}/deliveries", params={"cursor": "forged.cursor"}, headers=ADMIN
        )
        assert bad.status_code == 400
        wrong = await client.get(f"/api/v1/webhooks/{hook['id']}/deliveries", params={"status": "x"}, headers=ADMIN)
        assert wrong.status_code == 422
    await no_task_left_behind()


async def no_task_left_behind(timeout_s: float = 10.0) -> None:
    """Every task the gateway started has ended: one left waiting forever hung the event loop's shutdown (and the
    test with it, until pytest-timeout) instead of failing here."""
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    if others:
        _done, pending = await asyncio.wait(others, timeout=timeout_s)
        assert not pending, f"tasks still running after the gateway stopped: {[t.get_coro() for t in pending]}"


async def test_a_worker_stopped_mid_transaction_leaves_no_task_behind(
    gateway_db: str, hook_settings: GatewaySettings, clock: MovableClock
) -> None:
    """The app stops its worker by cancelling it, at any point of its loop. A cancellation inside a claim's or a
    record's transaction once left SQLAlchemy's close of the aiosqlite connection waiting on a stopped thread: a
    task nothing could end (a CI run hung 300 s in the event loop's shutdown). Stopped 60 times at random points,
    with due deliveries to claim and record, the worker and the engine must end within their bound each time."""
    engine = make_engine(gateway_db)
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as session, session.begin():
        await webhooks.create_webhook(
            session=session, url="http://127.0.0.1:9/", event_types_wanted=[LOGGED], description=None,
            created_by="test", now=clock.now(), settings=hook_settings,
        )  # fmt: skip
    feed = webhooks.WebhookFeed(sessionmaker=sessionmaker, clock=clock, name="test", recorded=lambda: None)
    events = [logged_event(clock) for _ in range(3000)]
    await feed.record([(event, event.to_json().decode()) for event in events])
    await engine.dispose()
    settings = hook_settings.model_copy(update={"webhooks_poll_s": 0.001})
    rng = random.Random(11)
    for _ in range(60):
        engine = make_engine(gateway_db)
        worker = webhooks.DeliveryWorker(sessionmaker=make_sessionmaker(engine), clock=clock, settings=settings)
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(rng.uniform(0, 0.05))
        task.cancel()
        await asyncio.wait([task], timeout=10)
        await asyncio.wait_for(engine.dispose(), timeout=10)
        await no_task_left_behind()


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_an_erasure_drops_the_unsent_events_about_the_contact(
    hook_settings: GatewaySettings, clock: MovableClock, js: Any
) -> None:
    erased_type = "crm.contact.erased.v1"
    async with receiving(["fail"]) as receiver, gateway_with(hook_settings, clock) as client:
        hook = (
            await client.post(
                "/api/v1/webhooks", json={"url": receiver.url, "events": [LOGGED, erased_type]}, headers=ADMIN
            )
        ).json()
        app = client.app  # type: ignore[attr-defined]
        runtime = app.state.runtime
        await feed_ready(js)
        erased, merged, kept = (str(uuid.uuid4()) for _ in range(3))
        about = {
            contact: make_event(type=LOGGED, source="test", subject=contact, time=clock.now(),
                                data={"interaction": {"contact_id": contact, "subject": "Ada's order"}})
            for contact in (erased, merged, kept)
        }  # fmt: skip
        feed = webhooks.WebhookFeed(sessionmaker=runtime.sessionmaker, clock=clock, name="test", recorded=lambda: None)
        await feed.record([(event, event.to_json().decode()) for event in about.values()])
        await eventually(lambda: len(receiver.received) == 3)  # tried once each, failed: pending

        erasure = make_event(
            type=erased_type, source="test", subject=erased, time=clock.now(),
            data={"contact_id": erased, "merged_ids": [merged]},
        )  # fmt: skip
        await js.publish(f"crm.contacts.erased.{erased}", erasure.to_json(), headers={"Nats-Msg-Id": erasure.id})

        async def dropped() -> list[dict[str, Any]] | None:
            items = await deliveries(client, hook["id"], status="dead")
            return items if len(items) == 2 else None

        dead = await eventually(dropped)
        assert isinstance(dead, list)
        assert {d["event_id"] for d in dead} == {about[erased].id, about[merged].id}
        assert all(d["last_error"] == webhooks.ERASED_BEFORE_DELIVERY for d in dead)
        pending = await deliveries(client, hook["id"], status="pending")
        assert about[kept].id in {d["event_id"] for d in pending}
        async with runtime.sessionmaker() as session:
            bodies = dict(
                (await session.execute(select(col(WebhookDelivery.event_id), col(WebhookDelivery.body)))).all()
            )
        assert bodies[about[erased].id] is None and bodies[about[merged].id] is None
        assert bodies[about[kept].id] is not None
        again = await client.post(f"/api/v1/webhooks/{hook['id']}/deliveries/{dead[0]['id']}/retry", headers=ADMIN)
        assert again.status_code == 409 and "erased" in again.json()["detail"]

        async def erasure_recorded() -> bool:
            return erasure.id in {d["event_id"] for d in await deliveries(client, hook["id"])}

        await eventually(erasure_recorded)  # the erasure itself (ids only) is still sent
