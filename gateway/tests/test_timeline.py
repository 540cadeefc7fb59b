"""The timeline through the gateway, over in-test stand-ins of the services (the keyset contract of
docs/CONVENTIONS.md) and the gateway's own projection of contact events."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import nats
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.tests.conftest import ADMIN, StubServices, live_ready, make_key
from gateway.timeline import Position, decode_position, encode_position
from servicekit.clock import MovableClock
from servicekit.cursors import InvalidCursor, sign
from servicekit.testing.apps import running_app, served
from servicekit.testing.nats import NatsServer
from servicekit.testing.plugin import eventually

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_a_changed_or_foreign_cursor_is_refused() -> None:
    contact = uuid.uuid4()
    token = encode_position(Position(T0, 0, uuid.uuid4()), contact_id=contact, scope="s", key=b"k" * 16)
    assert decode_position(token, contact_id=contact, scope="s", key=b"k" * 16).at == T0
    body, mac = token.split(".")
    for bad in (body[:-2] + "AA." + mac, body + "." + mac[::-1], "nonsense", token + "x"):
        with pytest.raises(InvalidCursor):
            decode_position(bad, contact_id=contact, scope="s", key=b"k" * 16)
    with pytest.raises(InvalidCursor):
        decode_position(token, contact_id=uuid.uuid4(), scope="s", key=b"k" * 16)
    with pytest.raises(InvalidCursor):
        decode_position(token, contact_id=contact, scope="other-filters", key=b"k" * 16)
    with pytest.raises(InvalidCursor):
        decode_position(token, contact_id=contact, scope="s", key=b"another-key-1234")


def _seed(stub: StubServices, contact_id: str, rng: random.Random, n: int) -> None:
    # Many items share an instant, across kinds, so the tie-breaks are exercised.
    instants = [T0 - timedelta(minutes=rng.randint(0, 40)) for _ in range(n)]
    for at in instants:
        if rng.random() < 0.6:
            stub.add_interaction(contact_id, at, channel=rng.choice(["email", "phone", "sms"]))
        else:
            stub.add_followup(contact_id, at, status=rng.choice(["scheduled", "completed"]))


async def _page_through(
    client: httpx.AsyncClient, contact_id: str, headers: dict[str, str], query: str = "", limit: int = 7,
    between_pages: Any = None,
) -> list[dict[str, Any]]:  # fmt: skip
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(500):
        url = f"/api/v1/contacts/{contact_id}/timeline?limit={limit}{query}" + (f"&cursor={cursor}" if cursor else "")
        response = await client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        seen.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return seen
        if between_pages is not None:
            between_pages()
    raise AssertionError("never reached the end")


async def test_pages_never_repeat_or_skip_while_new_items_arrive(
    gateway: httpx.AsyncClient, stub: StubServices
) -> None:
    rng = random.Random(7)
    contact = stub.add_contact()
    _seed(stub, contact["id"], rng, 120)
    before = {(i["id"]) for i in stub.interactions} | {f["id"] for f in stub.followups}
    reader = await make_key(gateway, "readonly")

    def new_arrivals() -> None:
        # Newer than everything read so far, and back at an instant already shared by others.
        stub.add_interaction(contact["id"], T0 + timedelta(minutes=rng.randint(1, 5)))
        stub.add_followup(contact["id"], T0 + timedelta(minutes=1))

    items = await _page_through(gateway, contact["id"], reader, between_pages=new_arrivals)
    ids = [i["id"] for i in items]
    assert len(ids) == len(set(ids)), "no item twice"
    assert before <= set(ids), "no item of the first read skipped"
    keys = [(datetime.fromisoformat(i["at"]), {"interaction": 0, "followup": 1}[i["kind"]], uuid.UUID(i["id"]).int)
            for i in items]  # fmt: skip
    assert keys == sorted(keys, key=lambda k: (k[0], -k[1], k[2]), reverse=True), "in timeline order"
    first = items[0]
    assert {"id", "kind", "at", "channel", "type", "title", "summary"} <= set(first)


async def test_filters_and_the_contact_header(gateway: httpx.AsyncClient, stub: StubServices) -> None:
    rng = random.Random(3)
    contact = stub.add_contact(stage="customer", tier="premium", owner="grace")
    _seed(stub, contact["id"], rng, 60)
    agent = await make_key(gateway, "agent")
    sms = await _page_through(gateway, contact["id"], agent, "&channel=sms", limit=5)
    assert sms and all(i["channel"] == "sms" for i in sms)
    assert len(sms) == sum(1 for i in stub.interactions if i["channel"] == "sms") + sum(
        1 for f in stub.followups if f["channel"] == "sms"
    )
    only_followups = await _page_through(gateway, contact["id"], agent, "&kinds=followup", limit=9)
    assert len(only_followups) == len(stub.followups) and {i["kind"] for i in only_followups} == {"followup"}
    completed = await _page_through(gateway, contact["id"], agent, "&type=completed", limit=9)
    assert completed and all(i["kind"] == "followup" and i["type"] == "completed" for i in completed)
    window = await _page_through(
        gateway, contact["id"], agent, f"&since={(T0 - timedelta(minutes=10)).isoformat()}".replace("+", "%2B")
    )
    assert window and all(datetime.fromisoformat(i["at"]) >= T0 - timedelta(minutes=10) for i in window)

    page = (await gateway.get(f"/api/v1/contacts/{contact['id']}/timeline?limit=3", headers=agent)).json()
    header = page["contact"]
    assert header["profile"]["id"] == contact["id"]
    assert (header["stage"], header["tier"], header["owner"]) == ("customer", "premium", "grace")

    # A cursor made for other filters is refused; so is a changed one.
    other = await gateway.get(
        f"/api/v1/contacts/{contact['id']}/timeline?channel=sms&cursor={page['next_cursor']}", headers=agent
    )
    assert other.status_code == 400 and other.json()["type"].endswith("/invalid-cursor")
    forged = sign({"at": T0.isoformat(), "r": 0, "id": str(uuid.uuid4()), "c": contact["id"], "s": "x"}, b"guess")
    assert (
        await gateway.get(f"/api/v1/contacts/{contact['id']}/timeline?cursor={forged}", headers=agent)
    ).status_code == 400
    too_big = await gateway.get(f"/api/v1/contacts/{contact['id']}/timeline?limit=1000", headers=agent)
    assert too_big.status_code == 422
    bad_kind = await gateway.get(f"/api/v1/contacts/{contact['id']}/timeline?kinds=emails", headers=agent)
    assert bad_kind.status_code == 422


async def test_a_merged_away_contact_answers_with_its_target(gateway: httpx.AsyncClient, stub: StubServices) -> None:
    target = stub.add_contact()
    source = stub.add_contact(status="merged", merged_into=target["id"])
    stub.add_interaction(target["id"], T0)
    page = await gateway.get(f"/api/v1/contacts/{source['id']}/timeline", headers=ADMIN)
    assert page.status_code == 200
    assert page.json()["contact"]["profile"]["id"] == target["id"]
    assert len(page.json()["items"]) == 1
    unknown = await gateway.get(f"/api/v1/contacts/{uuid.uuid4()}/timeline", headers=ADMIN)
    assert unknown.status_code == 404


async def test_the_caller_request_id_and_traceparent_reach_the_services(
    gateway: httpx.AsyncClient, stub: StubServices
) -> None:
    contact = stub.add_contact()
    key = await make_key(gateway, "agent")
    me = (await gateway.get("/api/v1/auth/me", headers=key)).json()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    response = await gateway.get(
        f"/api/v1/contacts/{contact['id']}/timeline",
        headers={**key, "X-Request-ID": "req-7", "traceparent": traceparent, "tracestate": "vendor=7"},
    )
    assert response.status_code == 200
    upstream = [r for r in stub.calls if r.url.path.startswith("/v1/")]
    assert upstream and all(r.headers["x-request-id"] == "req-7" for r in upstream)
    assert all(r.headers["traceparent"] == traceparent and r.headers["tracestate"] == "vendor=7" for r in upstream)
    assert all(r.headers["x-touchpoint-caller"] == me["principal_id"] for r in upstream)


async def _read_events(response: httpx.Response, out: asyncio.Queue[dict[str, Any]]) -> None:
    event: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if not line:
            if event:
                await out.put(event)
            event = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        event[name] = value.lstrip(" ")


async def _next(queue: asyncio.Queue[dict[str, Any]], timeout: float = 5.0) -> dict[str, Any]:
    return await asyncio.wait_for(queue.get(), timeout)


async def test_the_stream_pushes_a_new_item_within_a_second_and_replays_after_reconnect(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices, nats_server: NatsServer
) -> None:
    contact = stub.add_contact()
    stub.add_interaction(contact["id"], T0 - timedelta(days=1))
    app = create_app(gateway_settings, clock=clock, transports=stub.transports())
    async with served(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        await live_ready(app)
        await stub.project(app)
        url = f"/api/v1/contacts/{contact['id']}/timeline/stream"

        async def applied() -> float:
            # As the gateway's consumer does: the projection commits, then the contact is announced.
            started = asyncio.get_running_loop().time()
            await stub.project(app)
            return started

        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        async with client.stream("GET", url, headers=ADMIN) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            reader = asyncio.create_task(_read_events(response, queue))
            assert (await _next(queue))["event"] == "ready"
            await asyncio.sleep(0.2)
            first = stub.add_interaction(contact["id"], T0, subject="Order arrived broken", type="complaint")
            started = await applied()
            pushed = await _next(queue)
            assert asyncio.get_running_loop().time() - started < 1.0
            assert pushed["event"] == "item"
            data = json.loads(pushed["data"])
            assert (
                data["id"] == first["id"] and data["kind"] == "interaction" and data["title"] == "Order arrived broken"
            )
            last_id = pushed["id"]
            reader.cancel()

        # While nobody listens, two more arrive; a reconnect with Last-Event-ID gets both, in order.
        missed = [
            stub.add_interaction(contact["id"], T0 + timedelta(minutes=1)),
            stub.add_followup(contact["id"], T0 + timedelta(minutes=2)),
        ]
        await stub.project(app, announce=False)
        queue = asyncio.Queue()
        async with client.stream("GET", url, headers={**ADMIN, "Last-Event-ID": last_id}) as response:
            reader = asyncio.create_task(_read_events(response, queue))
            replayed = [await _next(queue), await _next(queue)]
            assert [json.loads(e["data"])["id"] for e in replayed] == [m["id"] for m in missed]
            assert (await _next(queue))["event"] == "ready"
            reader.cancel()


async def test_an_unknown_contact_stream_is_a_problem_not_a_stream(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get(f"/api/v1/contacts/{uuid.uuid4()}/timeline/stream", headers=ADMIN)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_a_page_is_reused_until_an_event_about_the_contact_arrives(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices, nats_server: NatsServer
) -> None:
    settings = gateway_settings.model_copy(update={"timeline_cache_s": 600.0, "header_cache_s": 600.0})
    app = create_app(settings, clock=clock, transports=stub.transports())
    async with running_app(app) as gateway:
        contact = stub.add_contact()
        stub.add_interaction(contact["id"], T0)
        await asyncio.sleep(0.3)  # the live subscription is up
        await stub.project(app)
        await asyncio.sleep(0.3)  # its announcement has come back (and retired nothing yet cached)
        url = f"/api/v1/contacts/{contact['id']}/timeline"
        assert len((await gateway.get(url, headers=ADMIN)).json()["items"]) == 1
        stub.add_interaction(contact["id"], T0 + timedelta(minutes=1))
        await stub.project(app, announce=False)
        # Without an announcement the gateway has no reason to look again (for GATEWAY_TIMELINE_CACHE_S) …
        assert len((await gateway.get(url, headers=ADMIN)).json()["items"]) == 1
        # … and the announcement of the contact (by whichever gateway process applied the event) retires the
        # page, long before the 600 s.
        nc = await nats.connect(nats_server.url)
        await nc.publish(f"gateway.projected.{contact['id']}", b"")
        await nc.close()

        async def fresh() -> bool:
            return len((await gateway.get(url, headers=ADMIN)).json()["items"]) == 2

        await eventually(fresh, timeout=5.0)


async def test_a_channel_filter_never_skips_follow_ups_buried_under_other_channels(
    gateway: httpx.AsyncClient, stub: StubServices
) -> None:
    contact = stub.add_contact()
    wanted = [stub.add_followup(contact["id"], T0 - timedelta(days=30 + i), channel="sms")["id"] for i in range(3)]
    for i in range(60):  # newer follow-ups on another channel, more than one page's scan can look through
        stub.add_followup(contact["id"], T0 - timedelta(hours=i), channel="phone")
    wanted += [stub.add_interaction(contact["id"], T0 - timedelta(days=i), channel="sms")["id"] for i in range(2)]
    items = await _page_through(gateway, contact["id"], ADMIN, "&channel=sms", limit=2)
    assert sorted(i["id"] for i in items) == sorted(wanted)
    assert all(i["channel"] == "sms" for i in items)


async def test_a_page_comes_from_the_projection_alone_and_its_readers_share_one_read_of_the_contact(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices
) -> None:
    settings = gateway_settings.model_copy(update={"timeline_cache_s": 600.0, "header_cache_s": 600.0})
    app = create_app(settings, clock=clock, transports=stub.transports())
    async with running_app(app) as gateway:
        contact = stub.add_contact()
        for minutes in range(5):
            stub.add_interaction(contact["id"], T0 - timedelta(minutes=minutes))
            stub.add_followup(contact["id"], T0 - timedelta(minutes=minutes, seconds=30))
        # Applied without the live announcement: it reaches the live feed at some later moment and would forget
        # the contact between the reads below (CI met that once); nothing was cached before, so nothing is stale.
        await stub.project(app, announce=False)
        url = f"/api/v1/contacts/{contact['id']}/timeline?limit=4"
        await make_key(gateway, "readonly")  # the key's own calls are not the timeline's
        stub.calls.clear()
        pages = await asyncio.gather(*(gateway.get(url, headers=ADMIN) for _ in range(16)))
        assert {p.status_code for p in pages} == {200}
        assert len({p.content for p in pages}) == 1
        upstream = sorted(r.url.path for r in stub.calls if r.url.path.startswith("/v1/"))
        assert upstream == [f"/v1/contacts/{contact['id']}"]
        # The page read again is the same answer, assembled from the cached JSON.
        body = pages[0].json()
        again = await gateway.get(url, headers=ADMIN)
        assert again.content == pages[0].content and len(stub.calls) == len(upstream)
        assert [i["kind"] for i in body["items"]] == ["interaction", "followup"] * 2
        nxt = await gateway.get(url + f"&cursor={body['next_cursor']}", headers=ADMIN)
        assert nxt.status_code == 200 and nxt.json()["items"][0]["at"] < body["items"][-1]["at"]
        # The interactions and follow-ups services were never asked.
        assert not [r for r in stub.calls if r.url.path.startswith(("/v1/interactions", "/v1/followups"))]


async def test_a_stream_on_one_gateway_process_gets_what_another_process_projected(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices
) -> None:
    contact = stub.add_contact()
    applying, streaming = (create_app(gateway_settings, clock=clock, transports=stub.transports()) for _ in range(2))
    async with (
        running_app(applying),
        served(streaming) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=10) as client,
    ):
        await live_ready(streaming)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        url = f"/api/v1/contacts/{contact['id']}/timeline/stream"
        async with client.stream("GET", url, headers=ADMIN) as response:
            reader = asyncio.create_task(_read_events(response, queue))
            assert (await _next(queue))["event"] == "ready"
            await asyncio.sleep(0.3)  # both processes' live subscriptions are up
            added = stub.add_interaction(contact["id"], T0, subject="Seen by the other process")
            started = asyncio.get_running_loop().time()
            await stub.project(applying)  # the other process's consumer applies and announces it
            pushed = await _next(queue)
            assert asyncio.get_running_loop().time() - started < 1.0
            assert pushed["event"] == "item" and json.loads(pushed["data"])["id"] == added["id"]
            reader.cancel()


async def test_a_contact_changed_or_erased_through_the_gateway_is_never_shown_as_it_was(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices
) -> None:
    """The contact event that retires the cached header comes over the bus, seconds later under load: a timeline
    read right after an erasure through the gateway showed the erased customer's name (CI, test_journey)."""
    settings = gateway_settings.model_copy(update={"timeline_cache_s": 600.0, "header_cache_s": 600.0})
    writing, other = (create_app(settings, clock=clock, transports=stub.transports()) for _ in range(2))
    async with running_app(writing) as gateway, running_app(other) as elsewhere:
        await live_ready(other)
        contact = stub.add_contact(name="Grace Hopper", emails=["grace@example.com"])
        url = f"/api/v1/contacts/{contact['id']}/timeline"
        assert await _named(gateway, url, "Grace Hopper") and await _named(elsewhere, url, "Grace Hopper")  # cached
        changed = await gateway.patch(f"/api/v1/contacts/{contact['id']}", json={"name": "Grace B. Hopper"},
                                      headers=ADMIN)  # fmt: skip
        assert changed.status_code == 200, changed.text
        assert await _named(gateway, url, "Grace B. Hopper")
        await eventually(lambda: _named(elsewhere, url, "Grace B. Hopper"), timeout=5.0)

        assert (await gateway.delete(f"/api/v1/contacts/{contact['id']}", headers=ADMIN)).status_code == 204
        assert "Grace" not in (await gateway.get(url, headers=ADMIN)).text
        await eventually(lambda: _named(elsewhere, url, None), timeout=5.0)
        assert "Grace" not in (await elsewhere.get(url, headers=ADMIN)).text


async def _named(client: httpx.AsyncClient, url: str, name: str | None) -> bool:
    answer = await client.get(url, headers=ADMIN)
    return answer.status_code == 200 and answer.json()["contact"]["profile"]["name"] == name
