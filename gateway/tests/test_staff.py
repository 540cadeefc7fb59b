"""Staff and teams in the gateway: handles, teams managed by admins, the names owners and assignees may use,
``me``, and crm.staff.changed.v1 published through the outbox."""

from __future__ import annotations

import json
import uuid

import httpx
import nats

from gateway.settings import GatewaySettings
from gateway.tests.conftest import ADMIN, StubServices, make_key
from servicekit.testing.apps import EventTap

PASSWORD = "correct horse battery"


async def _user(client: httpx.AsyncClient, email: str, **fields: object) -> dict:
    body = {"email": email, "password": PASSWORD, "role": "agent", **fields}
    response = await client.post("/api/v1/users", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_teams_are_a_known_set_that_only_admins_change(gateway: httpx.AsyncClient) -> None:
    agent = await make_key(gateway, "agent")
    team = {"id": "support", "name": "Support", "timezone": "Europe/Tallinn"}
    assert (await gateway.post("/api/v1/teams", json=team, headers=agent)).status_code == 403
    created = await gateway.post("/api/v1/teams", json=team, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert (await gateway.post("/api/v1/teams", json=team, headers=ADMIN)).status_code == 409
    bad_zone = await gateway.post("/api/v1/teams", json={"id": "x", "name": "X", "timezone": "Nowhere"}, headers=ADMIN)
    assert bad_zone.status_code == 422
    await _user(gateway, "maria.berg@example.com", name="Maria Berg", teams=["support"])
    listed = (await gateway.get("/api/v1/teams", headers=agent)).json()["items"]
    assert [(t["id"], t["members"]) for t in listed] == [("support", ["maria.berg"])]
    renamed = await gateway.patch("/api/v1/teams/support", json={"name": "Customer support"}, headers=ADMIN)
    assert renamed.json()["name"] == "Customer support" and renamed.json()["timezone"] == "Europe/Tallinn"
    in_use = await gateway.delete("/api/v1/teams/support", headers=ADMIN)
    assert in_use.status_code == 409 and "maria.berg" in in_use.json()["detail"]


async def test_a_staff_user_has_a_handle_teams_and_a_time_zone(gateway: httpx.AsyncClient) -> None:
    await gateway.post("/api/v1/teams", json={"id": "billing", "name": "Billing"}, headers=ADMIN)
    derived = await _user(gateway, "Jorge.Diaz@Example.com", name="Jorge Díaz")
    assert derived["handle"] == "jorge.diaz" and derived["teams"] == []
    taken = await gateway.post(
        "/api/v1/users",
        json={"email": "jorge.diaz@other.example", "password": PASSWORD, "role": "agent"},
        headers=ADMIN,
    )
    assert taken.status_code == 409 and taken.json()["field"] == "handle"
    chosen = await _user(gateway, "jorge.diaz@other.example", handle="jdiaz2", teams=["billing"], timezone="UTC")
    assert (chosen["handle"], chosen["teams"], chosen["timezone"]) == ("jdiaz2", ["billing"], "UTC")
    unknown_team = await gateway.post(
        "/api/v1/users",
        json={"email": "c@example.com", "password": PASSWORD, "role": "agent", "teams": ["ghosts"]},
        headers=ADMIN,
    )
    assert unknown_team.status_code == 422 and unknown_team.json()["field"] == "teams"
    moved = await gateway.patch(
        f"/api/v1/users/{derived['id']}", json={"teams": ["billing"], "timezone": "America/Bogota"}, headers=ADMIN
    )
    assert moved.status_code == 200 and moved.json()["teams"] == ["billing"]
    staff = (await gateway.get("/api/v1/staff", headers=await make_key(gateway, "agent"))).json()["items"]
    assert [(s["handle"], s["name"]) for s in staff] == [("jdiaz2", None), ("jorge.diaz", "Jorge Díaz")]
    assert "email" not in json.dumps(staff)


async def test_owners_and_assignees_name_active_staff_or_are_a_422_naming_the_field(
    gateway: httpx.AsyncClient, stub: StubServices
) -> None:
    await gateway.post("/api/v1/teams", json={"id": "support", "name": "Support"}, headers=ADMIN)
    leaver = await _user(gateway, "leaver@example.com")
    await _user(gateway, "ana@example.com", teams=["support"])
    await gateway.delete(f"/api/v1/users/{leaver['id']}", headers=ADMIN)
    agent = await make_key(gateway, "agent")
    followup_id = uuid.uuid4()
    cases = [
        ("/api/v1/contacts", {"name": "Ada", "owner": "nobody.here@nowhere"}, "owner"),
        ("/api/v1/contacts", {"name": "Ada", "owner": "leaver"}, "owner"),
        ("/api/v1/contacts/resolve", {"email": "ada@example.com", "create": {"owner": "nobody.here"}}, "create.owner"),
        ("/api/v1/contacts/resolve", {"email": "ada@example.com", "create": {"owner": "leaver"}}, "create.owner"),
        ("/api/v1/contacts/resolve", {"email": "ada@example.com", "create": {"owner": "me"}}, "create.owner"),
        (f"/api/v1/followups/{followup_id}/assign", {"assignee": "nobody.here@nowhere"}, "assignee"),
        (f"/api/v1/followups/{followup_id}/assign", {"team": "ghosts"}, "team"),
        (f"/api/v1/followups/{followup_id}/assign", {"assignee": "me"}, "assignee"),  # an API key is nobody
        ("/api/v1/followups/bulk", {"action": "assign", "ids": [str(followup_id)], "assignee": "leaver"}, "assignee"),
    ]
    for path, body, field in cases:
        response = await gateway.post(path, json=body, headers=agent)
        assert response.status_code == 422, (path, body, response.text)
        assert response.json()["field"] == field and response.headers["content-type"] == "application/problem+json"
    assert stub.calls == []  # nothing refused reached a service
    await gateway.post(f"/api/v1/followups/{followup_id}/assign", json={"assignee": "ana", "team": "support"},
                       headers=agent)  # fmt: skip
    await gateway.post("/api/v1/contacts/resolve", json={"email": "ada@example.com", "create": {"owner": "ana"}},
                       headers=agent)  # fmt: skip
    assert [c.url.path for c in stub.calls] == [f"/v1/followups/{followup_id}/assign", "/v1/contacts/resolve"]


async def test_me_is_the_signed_in_staff_user(gateway: httpx.AsyncClient, stub: StubServices) -> None:
    await gateway.post("/api/v1/teams", json={"id": "support", "name": "Support", "timezone": "Asia/Tokyo"},
                       headers=ADMIN)  # fmt: skip
    await _user(gateway, "ana@example.com", teams=["support"], timezone="Europe/Tallinn")
    login = await gateway.post("/api/v1/auth/login", json={"email": "ana@example.com", "password": PASSWORD})
    assert login.json()["handle"] == "ana" and login.json()["teams"] == ["support"]
    await gateway.get("/api/v1/followups", params={"assignee": "me", "bucket": "due_today"})
    await gateway.get("/api/v1/followups", params={"team": "support", "bucket": "due_today"})
    asked = [dict(c.url.params) for c in stub.calls]
    assert asked[0]["assignee"] == "ana" and asked[0]["tz"] == "Europe/Tallinn"  # the caller's today
    assert asked[1]["team"] == "support" and asked[1]["tz"] == "Asia/Tokyo"  # the team's today


async def test_every_staff_change_is_published_through_the_outbox(
    gateway: httpx.AsyncClient, gateway_settings: GatewaySettings
) -> None:
    nc = await nats.connect(gateway_settings.nats_url)
    try:
        user = await _user(gateway, "ana@example.com", name="Ana")
        # The stream is the session's (other tests publish theirs): this user's subject only, from the start.
        subject = f"crm.staff.changed.{user['id']}"
        tap = await EventTap(nc.jetstream(), "CRM_STAFF", subject, durable=f"t{uuid.uuid4().hex}").start()
        await gateway.patch(f"/api/v1/users/{user['id']}", json={"timezone": "Europe/Tallinn"}, headers=ADMIN)
        await gateway.delete(f"/api/v1/users/{user['id']}", headers=ADMIN)
        events = await tap.take(3)
        assert [e.type for e in events] == ["crm.staff.changed.v1"] * 3
        assert [(e.data["handle"], e.data["timezone"], e.data["active"]) for e in events] == [
            ("ana", None, True), ("ana", "Europe/Tallinn", True), ("ana", "Europe/Tallinn", False)
        ]  # fmt: skip
        assert "ana@example.com" not in json.dumps([e.data for e in events])
        await tap.assert_no_more()
    finally:
        await nc.close()
