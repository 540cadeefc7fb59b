"""Nobody stalls the door (issue 18, items 8 and 9): password hashing runs off the event loop, sign-ins are limited
per client address as well as per email, and the per-email lockout cannot be reset by a flood of made-up emails."""

from __future__ import annotations

import asyncio
import time

import httpx

from gateway.app import create_app
from gateway.auth import passwords
from gateway.lockout import SignInGuard
from gateway.settings import GatewaySettings
from gateway.tests.conftest import ADMIN, StubServices
from servicekit.clock import MovableClock
from servicekit.testing.apps import running_app, served

PASSWORD = "correct horse battery"


class Ticking:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_of_made_up_emails_neither_resets_a_real_account_nor_grows_without_bound() -> None:
    clock = Ticking()
    guard = SignInGuard(max_failures=5, window_s=900, lockout_s=900, now=clock)
    for _ in range(4):
        guard.failed("victim@shop.example")
    # A made-up email under attack is kept too: it is the most attacked of its table.
    for _ in range(5):
        guard.failed("ghost@shop.example", account_exists=False)
    for n in range(100_001):
        guard.failed(f"made-up-{n}@spray.example", account_exists=False)
        clock.now += 0.001
    assert len(guard) <= guard.max_unknown + 1
    guard.failed("victim@shop.example")
    assert guard.locked_for("victim@shop.example") > 0, "the victim's four failures were forgotten"
    assert guard.locked_for("ghost@shop.example") > 0


def test_when_made_up_emails_fill_their_table_the_least_attacked_go_first() -> None:
    clock = Ticking()
    guard = SignInGuard(max_failures=5, window_s=900, lockout_s=900, max_unknown=100, now=clock)
    for _ in range(3):
        guard.failed("persistent@spray.example", account_exists=False)
    for n in range(150):
        guard.failed(f"once-{n}@spray.example", account_exists=False)
    guard.failed("persistent@spray.example", account_exists=False)
    guard.failed("persistent@spray.example", account_exists=False)
    assert guard.locked_for("persistent@spray.example") > 0  # its 3 earlier failures were remembered
    assert len(guard) <= 100


async def _login(client: httpx.AsyncClient, email: str, password: str = "wrong password!") -> httpx.Response:
    return await client.post("/api/v1/auth/login", json={"email": email, "password": password})


async def test_the_login_route_keeps_real_accounts_apart_from_made_up_emails(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices
) -> None:
    app = create_app(gateway_settings, clock=clock, transports=stub.transports())
    app.state.sign_in_guard = SignInGuard(max_unknown=3)
    async with running_app(app) as client:
        made = await client.post("/api/v1/users", json={"email": "victim@example.com", "password": PASSWORD,
                                                        "role": "agent"}, headers=ADMIN)  # fmt: skip
        assert made.status_code == 201, made.text
        for _ in range(4):
            assert (await _login(client, "victim@example.com")).status_code == 401
        for n in range(6):  # twice the made-up table's bound
            assert (await _login(client, f"made-up-{n}@example.com")).status_code == 401
        assert (await _login(client, "victim@example.com")).status_code == 401
        locked = await _login(client, "victim@example.com", PASSWORD)
        assert locked.status_code == 429 and locked.json()["type"].endswith("/sign-in-locked"), locked.text


async def test_sign_ins_are_limited_per_client_address_across_emails(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices
) -> None:
    settings = gateway_settings.model_copy(update={"sign_in_per_minute_per_address": 3})
    app = create_app(settings, clock=clock, transports=stub.transports())
    async with running_app(app) as client:
        made = await client.post("/api/v1/users", json={"email": "staff@example.com", "password": PASSWORD,
                                                        "role": "agent"}, headers=ADMIN)  # fmt: skip
        assert made.status_code == 201, made.text
        for _ in range(4):  # staff signing in from one office address do not use up its budget
            assert (await _login(client, "staff@example.com", PASSWORD)).status_code == 200
        for n in range(3):
            assert (await _login(client, f"guess-{n}@example.com")).status_code == 401
        limited = await _login(client, "guess-3@example.com")
        assert limited.status_code == 429 and limited.json()["type"].endswith("/rate-limited"), limited.text
        assert int(limited.headers["retry-after"]) >= 1
        elsewhere = httpx.ASGITransport(app=app, client=("198.51.100.7", 40000))
        async with httpx.AsyncClient(transport=elsewhere, base_url="http://test") as other:
            assert (await _login(other, "guess-4@example.com")).status_code == 401
        # The console signs in through the same route, counted against the browser's address, not its own.
        form = await client.post("/login", data={"email": "guess-5@example.com", "password": "nope"},
                                 headers={"origin": "http://test"})  # fmt: skip
        assert form.status_code == 429, form.text


async def test_healthz_stays_fast_while_sign_ins_hash_passwords(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices
) -> None:
    """On the event loop, each argon2 verify stalled every request of the process for its whole duration."""
    started = time.perf_counter()
    passwords.verify("x", passwords.hash("y"))
    one_verify_s = time.perf_counter() - started
    app = create_app(gateway_settings, clock=clock, transports=stub.transports())
    async with served(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        assert (await client.get("/healthz")).status_code == 200
        sign_ins = [asyncio.create_task(_login(client, f"nobody-{n}@example.com")) for n in range(6)]
        health: list[float] = []
        while not all(task.done() for task in sign_ins):
            asked = time.perf_counter()
            assert (await client.get("/healthz")).status_code == 200
            health.append(time.perf_counter() - asked)
            await asyncio.sleep(0.02)
        assert [task.result().status_code for task in sign_ins] == [401] * 6
    assert len(health) >= 5, health
    # A verify here takes tens of milliseconds to a second (shared cores); /healthz must never wait for one.
    assert max(health) < max(one_verify_s / 2, 0.05), (max(health), one_verify_s, sorted(health)[-5:])
