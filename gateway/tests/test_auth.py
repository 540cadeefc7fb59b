from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import DEV_ADMIN_KEY, GatewaySettings
from gateway.tests.conftest import ADMIN, StubServices, make_key
from servicekit.clock import MovableClock
from servicekit.testing.apps import running_app
from servicekit.testing.plugin import eventually


async def test_no_credentials_is_401_and_a_wrong_key_too(gateway: httpx.AsyncClient) -> None:
    none = await gateway.get("/api/v1/api-keys")
    assert none.status_code == 401
    assert none.headers["content-type"].startswith("application/problem+json")
    assert none.headers["www-authenticate"].startswith("Bearer")
    wrong = await gateway.get("/api/v1/api-keys", headers={"Authorization": "Bearer tp_000000000000_nope"})
    assert wrong.status_code == 401
    garbage = await gateway.get("/api/v1/api-keys", headers={"Authorization": "Bearer x"})
    assert garbage.status_code == 401


async def test_keys_are_shown_once_stored_hashed_listed_and_revoked(gateway: httpx.AsyncClient) -> None:
    created = await gateway.post("/api/v1/api-keys", json={"name": "web shop", "role": "ingest"}, headers=ADMIN)
    assert created.status_code == 201, created.text
    body = created.json()
    key = body["key"]
    assert key.startswith(f"tp_{body['prefix']}_") and body["role"] == "ingest"

    listed = (await gateway.get("/api/v1/api-keys", headers=ADMIN)).json()["items"]
    assert [k["id"] for k in listed] == [body["id"]]
    assert "key" not in listed[0] and key not in (await gateway.get("/api/v1/api-keys", headers=ADMIN)).text

    ingest = {"Authorization": f"Bearer {key}"}
    assert (await gateway.get("/api/v1/auth/me", headers=ingest)).json()["role"] == "ingest"
    assert (await gateway.get("/api/v1/api-keys", headers=ingest)).status_code == 403

    assert (await gateway.delete(f"/api/v1/api-keys/{body['id']}", headers=ADMIN)).status_code == 204
    assert (await gateway.get("/api/v1/auth/me", headers=ingest)).status_code == 401
    revoked = (await gateway.get("/api/v1/api-keys", headers=ADMIN)).json()["items"][0]
    assert revoked["revoked_at"] is not None

    audit = (await gateway.get("/api/v1/audit", headers=ADMIN)).json()["items"]
    assert [a["action"] for a in audit] == ["api_key.revoke", "api_key.create"]
    assert all(a["actor_id"] == "bootstrap-admin" and a["target"] == body["id"] for a in audit)
    assert (await gateway.get("/api/v1/audit", headers=ingest)).status_code == 401


async def test_an_expired_key_is_refused(gateway: httpx.AsyncClient, clock: MovableClock) -> None:
    expires = (clock.now() + timedelta(hours=1)).isoformat()
    created = await gateway.post(
        "/api/v1/api-keys", json={"name": "temp", "role": "readonly", "expires_at": expires}, headers=ADMIN
    )
    key = {"Authorization": f"Bearer {created.json()['key']}"}
    assert (await gateway.get("/api/v1/auth/me", headers=key)).status_code == 200
    clock.advance(hours=2)
    expired = await gateway.get("/api/v1/auth/me", headers=key)
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    past = await gateway.post(
        "/api/v1/api-keys", json={"name": "old", "role": "readonly", "expires_at": expires}, headers=ADMIN
    )
    assert past.status_code == 422


async def test_bad_input_is_a_problem_never_a_500(gateway: httpx.AsyncClient) -> None:
    bad_role = await gateway.post("/api/v1/api-keys", json={"name": "x", "role": "root"}, headers=ADMIN)
    assert bad_role.status_code == 422 and bad_role.headers["content-type"].startswith("application/problem+json")
    extra = await gateway.post("/api/v1/api-keys", json={"name": "x", "role": "agent", "key": "mine"}, headers=ADMIN)
    assert extra.status_code == 422
    big = await gateway.post("/api/v1/api-keys", content=b"x" * 70_000, headers=ADMIN)
    assert big.status_code == 413
    tampered = await gateway.get("/api/v1/audit?cursor=abc.def", headers=ADMIN)
    assert tampered.status_code == 400


async def test_rate_limit_per_key_answers_429_with_retry_after(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices
) -> None:
    settings = gateway_settings.model_copy(update={"rate_limit_per_minute": 60, "rate_limit_burst": 3})
    async with running_app(create_app(settings, clock=clock, transports=stub.transports())) as client:
        agent = await make_key(client, "agent")
        statuses = [(await client.get("/api/v1/auth/me", headers=agent)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = await client.get("/api/v1/auth/me", headers=agent)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        # Another caller has its own bucket.
        other = await make_key(client, "readonly")
        assert (await client.get("/api/v1/auth/me", headers=other)).status_code == 200


async def _login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/api/v1/auth/login", json={"email": email, "password": password})


async def test_staff_login_sets_a_safe_cookie_and_unsafe_requests_need_the_csrf_token(
    gateway: httpx.AsyncClient,
) -> None:
    created = await gateway.post(
        "/api/v1/users",
        json={"email": "Grace@Example.com", "password": "correct horse battery", "role": "admin", "name": "Grace"},
        headers=ADMIN,
    )
    assert created.status_code == 201, created.text
    assert "password" not in created.text and created.json()["email"] == "grace@example.com"
    duplicate = await gateway.post(
        "/api/v1/users", json={"email": "grace@example.com", "password": "x" * 12, "role": "agent"}, headers=ADMIN
    )
    assert duplicate.status_code == 409

    assert (await _login(gateway, "grace@example.com", "wrong password!")).status_code == 401
    assert (await _login(gateway, "nobody@example.com", "correct horse battery")).status_code == 401
    login = await _login(gateway, "grace@example.com", "correct horse battery")
    assert login.status_code == 200, login.text
    cookie = login.headers["set-cookie"]
    assert "tp_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # dev mode; outside dev the cookie is Secure (test below)
    csrf = login.json()["csrf_token"]

    me = await gateway.get("/api/v1/auth/me")
    assert me.status_code == 200 and me.json()["role"] == "admin" and me.json()["kind"] == "user"

    no_token = await gateway.post("/api/v1/api-keys", json={"name": "k", "role": "agent"})
    assert no_token.status_code == 403 and no_token.json()["type"].endswith("/csrf")
    wrong = await gateway.post("/api/v1/api-keys", json={"name": "k", "role": "agent"}, headers={"X-CSRF-Token": "x"})
    assert wrong.status_code == 403
    with_header = await gateway.post(
        "/api/v1/api-keys", json={"name": "k", "role": "agent"}, headers={"X-CSRF-Token": csrf}
    )
    assert with_header.status_code == 201

    # A server-rendered form posts the token as a field.
    form_without = await gateway.post("/api/v1/auth/logout", data={"other": "x"})
    assert form_without.status_code == 403
    form = await gateway.post("/api/v1/auth/logout", data={"csrf_token": csrf})
    assert form.status_code == 204
    gateway.cookies.clear()
    assert (await gateway.get("/api/v1/auth/me")).status_code == 401

    audit = (await gateway.get("/api/v1/audit", headers=ADMIN)).json()["items"]
    assert [a["action"] for a in audit] == ["api_key.create", "user.create"]
    assert audit[0]["actor_kind"] == "user"


async def test_a_disabled_user_loses_their_session(gateway: httpx.AsyncClient) -> None:
    user = (
        await gateway.post(
            "/api/v1/users", json={"email": "a@example.com", "password": "p" * 12, "role": "agent"}, headers=ADMIN
        )
    ).json()
    assert (await _login(gateway, "a@example.com", "p" * 12)).status_code == 200
    assert (await gateway.get("/api/v1/auth/me")).status_code == 200
    assert (await gateway.delete(f"/api/v1/users/{user['id']}", headers=ADMIN)).status_code == 204
    assert (await gateway.get("/api/v1/auth/me")).status_code == 401
    gateway.cookies.clear()
    assert (await _login(gateway, "a@example.com", "p" * 12)).status_code == 401


async def test_staff_users_cannot_have_the_ingest_role(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post(
        "/api/v1/users", json={"email": "b@example.com", "password": "p" * 12, "role": "ingest"}, headers=ADMIN
    )
    assert response.status_code == 422


async def test_outside_dev_mode_the_cookie_is_secure(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices
) -> None:
    settings = gateway_settings.model_copy(
        update={"dev_mode": False, "admin_key": "a-real-admin-key-of-some-length", "secret_key": "s" * 32}
    )
    async with running_app(create_app(settings, clock=clock, transports=stub.transports())) as client:
        admin = {"Authorization": "Bearer a-real-admin-key-of-some-length"}
        assert (
            await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {DEV_ADMIN_KEY}"})
        ).status_code == 401
        await client.post(
            "/api/v1/users", json={"email": "c@example.com", "password": "p" * 12, "role": "agent"}, headers=admin
        )
        login = await _login(client, "c@example.com", "p" * 12)
        assert "Secure" in login.headers["set-cookie"]


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"TOUCHPOINT_ADMIN_KEY": DEV_ADMIN_KEY, "GATEWAY_SECRET_KEY": "s" * 32},
        {"TOUCHPOINT_ADMIN_KEY": "short", "GATEWAY_SECRET_KEY": "s" * 32},
        {"TOUCHPOINT_ADMIN_KEY": "a-real-admin-key-of-some-length"},
    ],
)
def test_outside_dev_mode_the_gateway_refuses_development_or_missing_secrets(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOUCHPOINT_ADMIN_KEY", raising=False)
    monkeypatch.delenv("GATEWAY_SECRET_KEY", raising=False)
    monkeypatch.setenv("GATEWAY_DEV_MODE", "false")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError):
        GatewaySettings()


def test_dev_mode_falls_back_to_the_documented_development_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from servicekit import devstack

    monkeypatch.delenv("TOUCHPOINT_ADMIN_KEY", raising=False)
    monkeypatch.setenv("GATEWAY_DEV_MODE", "true")
    assert GatewaySettings().admin_key == DEV_ADMIN_KEY == devstack.DEV_ADMIN_KEY
    monkeypatch.setenv("TOUCHPOINT_ADMIN_KEY", "mine-mine-mine-mine-mine")
    assert GatewaySettings().admin_key == "mine-mine-mine-mine-mine"


async def test_api_login_locks_an_account_after_5_failures_and_the_console_counts_the_same(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices
) -> None:
    """One lockout (gateway/lockout.py) for both ways in: wrong passwords tried through /api/v1/auth/login and
    through the console's sign-in form add up, and a locked account is refused on both, even with the right
    password, until the lockout ends."""
    from gateway.lockout import SignInGuard

    seconds = [1000.0]
    app = create_app(gateway_settings, clock=clock, transports=stub.transports())
    app.state.sign_in_guard = SignInGuard(now=lambda: seconds[0])
    async with running_app(app) as client:
        for email in ("lock@example.com", "other@example.com"):
            made = await client.post("/api/v1/users", json={"email": email, "password": "correct horse battery",
                                                            "role": "agent"}, headers=ADMIN)  # fmt: skip
            assert made.status_code == 201, made.text
        for _ in range(3):
            assert (await _login(client, "lock@example.com", "wrong password!")).status_code == 401
        origin = {"origin": "http://test"}
        for _ in range(2):
            form = await client.post("/login", data={"email": "Lock@Example.com", "password": "nope"}, headers=origin)
            assert form.status_code == 401
        locked = await _login(client, "lock@example.com", "correct horse battery")
        assert locked.status_code == 429, locked.text
        assert locked.headers["content-type"].startswith("application/problem+json")
        assert locked.json()["type"].endswith("/sign-in-locked") and int(locked.headers["retry-after"]) == 900
        assert "tp_session" not in locked.headers.get("set-cookie", "")
        page = await client.post("/login", data={"email": "lock@example.com", "password": "correct horse battery"},
                                 headers=origin)  # fmt: skip
        assert page.status_code == 429 and "Try again in 15 minutes" in page.text
        # Another account is not touched; an unknown email locks the same way (no way to tell who exists).
        assert (await _login(client, "other@example.com", "correct horse battery")).status_code == 200
        for _ in range(5):
            assert (await _login(client, "ghost@example.com", "guess")).status_code == 401
        assert (await _login(client, "ghost@example.com", "guess")).status_code == 429
        seconds[0] += 15 * 60 + 1
        assert (await _login(client, "lock@example.com", "correct horse battery")).status_code == 200
        # A success clears the count: four more failures do not lock.
        for _ in range(4):
            assert (await _login(client, "lock@example.com", "wrong password!")).status_code == 401
        assert (await _login(client, "lock@example.com", "correct horse battery")).status_code == 200


async def test_a_key_revoked_through_one_gateway_process_is_refused_by_the_others_at_once(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices
) -> None:
    # Keys are trusted from a per-process cache; a long one shows the revocation does not wait for it.
    settings = gateway_settings.model_copy(update={"key_cache_s": 600.0})
    first, second = (create_app(settings, clock=clock, transports=stub.transports()) for _ in range(2))
    async with running_app(first) as one, running_app(second) as other:
        key = await make_key(one, "readonly")
        assert (await other.get("/api/v1/auth/me", headers=key)).status_code == 200  # now cached in `other`
        [key_id] = [k["id"] for k in (await one.get("/api/v1/api-keys", headers=ADMIN)).json()["items"]]
        await asyncio.sleep(0.3)  # both processes' live subscriptions are up
        assert (await one.delete(f"/api/v1/api-keys/{key_id}", headers=ADMIN)).status_code == 204
        assert (await one.get("/api/v1/auth/me", headers=key)).status_code == 401

        async def refused() -> bool:
            return (await other.get("/api/v1/auth/me", headers=key)).status_code == 401

        await eventually(refused, timeout=2.0)
