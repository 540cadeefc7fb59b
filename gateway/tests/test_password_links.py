"""One-time password links: an admin invites a staff user without a password, or resets one; the user sets their
password with the link, once, before it expires."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from gateway.app import create_app
from gateway.auth import sha256
from gateway.models import StaffPasswordLink
from gateway.settings import GatewaySettings
from gateway.tests.conftest import ADMIN, StubServices
from servicekit.clock import MovableClock
from servicekit.testing.apps import running_app

PASSWORD = "correct horse battery"


async def _login(gateway: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await gateway.post("/api/v1/auth/login", json={"email": email, "password": password})


async def _invite(gateway: httpx.AsyncClient, email: str) -> tuple[str, dict[str, Any]]:
    made = await gateway.post("/api/v1/users", json={"email": email, "role": "agent", "name": "Ines"}, headers=ADMIN)
    assert made.status_code == 201, made.text
    assert made.json()["invite_pending"] is True
    user_id = made.json()["id"]
    link = await gateway.post(f"/api/v1/users/{user_id}/password-link", headers=ADMIN)
    assert link.status_code == 201, link.text
    return user_id, link.json()


async def test_an_invited_user_sets_a_password_once_and_signs_in(
    gateway: httpx.AsyncClient, clock: MovableClock
) -> None:
    user_id, link = await _invite(gateway, "ines@example.com")
    assert link["purpose"] == "invite" and link["path"] == f"/password/{link['token']}"
    assert link["expires_at"].startswith((clock.now() + timedelta(days=7)).date().isoformat())
    # No password yet: nothing signs them in, not even an empty one.
    assert (await _login(gateway, "ines@example.com", "")).status_code == 401

    token = str(link["token"])
    info = await gateway.post("/api/v1/auth/password-link", json={"token": token})
    assert info.status_code == 200 and info.json()["email"] == "ines@example.com" and info.json()["name"] == "Ines"
    short = await gateway.post("/api/v1/auth/password", json={"token": token, "password": "short"})
    assert short.status_code == 422
    assert (await gateway.post("/api/v1/auth/password", json={"token": token, "password": PASSWORD})).status_code == 204
    assert (await _login(gateway, "ines@example.com", PASSWORD)).status_code == 200

    again = await gateway.post("/api/v1/auth/password", json={"token": token, "password": "another one entirely"})
    assert again.status_code == 410 and "used" in again.json()["detail"]
    listed = (await gateway.get("/api/v1/users", headers=ADMIN)).json()["items"]
    assert next(u for u in listed if u["id"] == user_id)["invite_pending"] is False
    audit = [a["action"] for a in (await gateway.get("/api/v1/audit", headers=ADMIN)).json()["items"]]
    assert audit[:3] == ["user.password_invite", "user.password_link", "user.create"]


async def test_the_token_is_stored_hashed_and_a_newer_link_ends_the_older(
    gateway_settings: GatewaySettings, clock: MovableClock, stub: StubServices
) -> None:
    app = create_app(gateway_settings, clock=clock, transports=stub.transports())
    async with running_app(app) as gateway:
        user_id, first = await _invite(gateway, "olaf@example.com")
        second = (await gateway.post(f"/api/v1/users/{user_id}/password-link", headers=ADMIN)).json()
        async with app.state.runtime.sessionmaker() as session:
            stored = (await session.scalars(select(StaffPasswordLink))).all()
        old = await gateway.post("/api/v1/auth/password", json={"token": first["token"], "password": PASSWORD})
        new = await gateway.post("/api/v1/auth/password", json={"token": second["token"], "password": PASSWORD})
    assert len(stored) == 1 and stored[0].token_hash == sha256(str(second["token"]))
    assert old.status_code == 410
    assert new.status_code == 204


async def test_a_reset_link_expires_after_a_day_and_ends_the_users_sessions(
    gateway: httpx.AsyncClient, clock: MovableClock
) -> None:
    made = await gateway.post(
        "/api/v1/users", json={"email": "rene@example.com", "role": "agent", "password": PASSWORD}, headers=ADMIN
    )
    user_id = made.json()["id"]
    reset = (await gateway.post(f"/api/v1/users/{user_id}/password-link", headers=ADMIN)).json()
    assert reset["purpose"] == "reset"
    clock.advance(hours=25)
    late = await gateway.post("/api/v1/auth/password", json={"token": reset["token"], "password": "a new password!"})
    assert late.status_code == 410 and "expired" in late.json()["detail"]

    reset = (await gateway.post(f"/api/v1/users/{user_id}/password-link", headers=ADMIN)).json()
    assert (await _login(gateway, "rene@example.com", PASSWORD)).status_code == 200
    assert (await gateway.get("/api/v1/auth/me")).status_code == 200
    done = await gateway.post("/api/v1/auth/password", json={"token": reset["token"], "password": "a new password!"})
    assert done.status_code == 204
    assert (await gateway.get("/api/v1/auth/me")).status_code == 401  # the old session ended
    gateway.cookies.clear()
    assert (await _login(gateway, "rene@example.com", PASSWORD)).status_code == 401
    assert (await _login(gateway, "rene@example.com", "a new password!")).status_code == 200


async def test_unknown_tokens_and_disabled_users_get_no_link(gateway: httpx.AsyncClient) -> None:
    unknown = await gateway.post("/api/v1/auth/password-link", json={"token": "not-a-token"})
    assert unknown.status_code == 410 and unknown.headers["content-type"].startswith("application/problem+json")
    user_id, link = await _invite(gateway, "gone@example.com")
    assert (await gateway.delete(f"/api/v1/users/{user_id}", headers=ADMIN)).status_code == 204
    refused = await gateway.post(f"/api/v1/users/{user_id}/password-link", headers=ADMIN)
    assert refused.status_code == 409
    assert (await gateway.post("/api/v1/auth/password-link", json={"token": link["token"]})).status_code == 410
    missing = await gateway.post("/api/v1/users/00000000-0000-0000-0000-000000000000/password-link", headers=ADMIN)
    assert missing.status_code == 404
