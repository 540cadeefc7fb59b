"""The console's touchpoints: the timeline item has no body (gateway/projection.py)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import httpx

from gateway.tests.conftest import ADMIN, StubServices

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SQL = "Robert'); DROP TABLE touchpoints;--"
HOSTILE = f"<script>alert('x')</script>\n{SQL}\n\n  <img src=x onerror=alert(1)>"


async def staff(gateway: httpx.AsyncClient, role: str) -> dict[str, str]:
    """The session cookie of a new staff user with this role."""
    email = f"{role}.{uuid.uuid4().hex[:8]}@example.com"
    made = await gateway.post("/api/v1/users", json={"email": email, "password": "correct horse battery",
                                                     "role": role, "name": f"Sam {role}"}, headers=ADMIN)  # fmt: skip
    assert made.status_code == 201, made.text
    login = await gateway.post("/api/v1/auth/login", json={"email": email, "password": "correct horse battery"})
    assert login.status_code == 200, login.text
    gateway.cookies.clear()  # each request says whose it is
    return {"Cookie": f"tp_session={login.cookies['tp_session']}"}


async def test_a_touchpoint_logged_from_the_console_is_drawn_as_the_timeline_draws_it(
    gateway: httpx.AsyncClient, stub: StubServices
) -> None:
    """The script's POST answers with the new item from ``interaction_item`` (no body): the same HTML as the
    timeline's own fragment gives for it once it is in the projection."""
    contact = stub.add_contact()
    agent = await staff(gateway, "agent")
    me = await gateway.get("/api/v1/auth/me", headers=agent)
    csrf = me.json()["csrf_token"]
    form = {"csrf_token": csrf, "idempotency_key": str(uuid.uuid4()), "channel": "phone", "direction": "outbound",
            "type": "support", "subject": "Called <back>", "body": "Secret\nnotes", "csat": "5",
            "occurred_at": T0.isoformat()}  # fmt: skip
    logged = await gateway.post(f"/customers/{contact['id']}/touchpoints", data=form,
                                headers={**agent, "X-Console": "fragment", "origin": "http://test"})  # fmt: skip
    assert logged.status_code == 201, logged.text
    drawn = logged.text
    assert "Called &lt;back&gt;" in drawn and "CSAT 5/5" in drawn and "Secret" not in drawn
    assert 'data-at="2026-03-01T12:00:00+00:00"' in drawn  # ISO 8601, as the timeline API gives it

    fragment = await gateway.get(f"/customers/{contact['id']}/timeline", headers=agent)
    assert fragment.status_code == 200, fragment.text
    item = re.search(r"<li class=\"item[^\"]*\" data-id=\"interaction:[^\"]+\".*?</li>", fragment.text, re.S)
    assert item is not None and item.group(0) in drawn
