"""An API key carries its own rate limit, set when it is made (issue 21): the default per role fits a machine
sender for an ingest key; the admin API shows each key's limit; keys made before keys had one keep the
gateway's setting."""

from __future__ import annotations

import uuid

import httpx

from gateway.app import create_app
from gateway.models import ApiKey
from gateway.settings import GatewaySettings
from gateway.tests.conftest import ADMIN, StubServices
from servicekit.clock import MovableClock
from servicekit.testing.apps import running_app

# A low setting, so that a key held to it is limited within a few requests.
SETTING = {"rate_limit_per_minute": 60, "rate_limit_burst": 3}


async def _key(
    client: httpx.AsyncClient, role: str, admin: dict[str, str] = ADMIN, **limits: int
) -> tuple[dict[str, str], dict]:
    made = await client.post("/api/v1/api-keys", json={"name": f"{role} key", "role": role, **limits}, headers=admin)
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['key']}"}, made.json()


async def _statuses(client: httpx.AsyncClient, headers: dict[str, str], n: int) -> list[int]:
    return [(await client.get("/api/v1/auth/me", headers=headers)).status_code for _ in range(n)]


async def test_each_key_is_held_to_its_own_limit(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices
) -> None:
    settings = gateway_settings.model_copy(update=SETTING)
    async with running_app(create_app(settings, clock=clock, transports=stub.transports())) as client:
        # The bootstrap admin key is held to the setting (3 at once): an admin key of its own makes the rest.
        admin, _ = await _key(client, "admin", rate_limit_per_minute=60_000, rate_limit_burst=100)
        # An ingest key made without a limit gets its role's: a machine sender is not throttled at 3 at once.
        ingest, made = await _key(client, "ingest", admin)
        assert (made["rate_limit_per_minute"], made["rate_limit_burst"]) == (60_000, 1_000)
        assert await _statuses(client, ingest, 20) == [200] * 20
        # Another role's key gets the gateway's setting as it is when the key is made.
        agent, made = await _key(client, "agent", admin)
        assert (made["rate_limit_per_minute"], made["rate_limit_burst"]) == (60, 3)
        assert await _statuses(client, agent, 4) == [200, 200, 200, 429]
        # A limit set by the key's maker holds, whatever the role's default.
        slow, made = await _key(client, "ingest", admin, rate_limit_per_minute=30, rate_limit_burst=2)
        assert (made["rate_limit_per_minute"], made["rate_limit_burst"]) == (30, 2)
        assert await _statuses(client, slow, 3) == [200, 200, 429]
        limited = await client.get("/api/v1/auth/me", headers=slow)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 2  # 30 a minute: one per 2 s
        assert "30 requests per minute" in limited.json()["detail"]
        fast, _ = await _key(client, "agent", admin, rate_limit_per_minute=6_000, rate_limit_burst=50)
        assert await _statuses(client, fast, 10) == [200] * 10

        listed = {k["name"] + str(k["rate_limit_burst"]): k for k in (await client.get(
            "/api/v1/api-keys", headers=admin)).json()["items"]}  # fmt: skip
        assert {(k["role"], k["rate_limit_per_minute"], k["rate_limit_burst"]) for k in listed.values()} == {
            ("admin", 60_000, 100), ("ingest", 60_000, 1_000), ("agent", 60, 3), ("ingest", 30, 2),
            ("agent", 6_000, 50)
        }  # fmt: skip


async def test_a_limit_out_of_range_is_refused(gateway: httpx.AsyncClient) -> None:
    for limits in ({"rate_limit_per_minute": 0}, {"rate_limit_burst": 0}, {"rate_limit_per_minute": 10**9},
                   {"rate_limit_burst": "many"}):  # fmt: skip
        refused = await gateway.post("/api/v1/api-keys", json={"name": "k", "role": "ingest", **limits}, headers=ADMIN)
        assert refused.status_code == 422, (limits, refused.text)
    assert (await gateway.get("/api/v1/api-keys", headers=ADMIN)).json()["items"] == []


async def test_a_key_made_before_keys_had_a_limit_follows_the_setting(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices
) -> None:
    settings = gateway_settings.model_copy(update=SETTING)
    app = create_app(settings, clock=clock, transports=stub.transports())
    async with running_app(app) as client:
        old, made = await _key(client, "ingest")
        # As the migration leaves a key of the previous release: no limit of its own.
        async with app.state.runtime.sessionmaker() as session, session.begin():
            row = await session.get(ApiKey, uuid.UUID(made["id"]))
            assert row is not None
            row.rate_limit_per_minute = row.rate_limit_burst = None
        app.state.authenticator.forget(made["id"])
        [legacy] = (await client.get("/api/v1/api-keys", headers=ADMIN)).json()["items"]
        assert (legacy["rate_limit_per_minute"], legacy["rate_limit_burst"]) == (60, 3)
        assert await _statuses(client, old, 4) == [200, 200, 200, 429]
