"""Stories of people, teams and the queue: work belongs to someone who can sign in and see it in "Mine"; when they
leave, it goes back to their team; a team lead moves work in bulk; an admin previews a policy before saving it.
Through the gateway, as the console and API clients use it."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.stories.conftest import SLOW, World, now

pytestmark = [pytest.mark.stack]
PASSWORD = "correct horse battery staple"


async def team(world: World, team_id: str) -> None:
    made = await world.gateway.post("/api/v1/teams", json={"id": team_id, "name": team_id.title()})
    assert made.status_code in (201, 409), made.text  # teams are shared by the stories of one stack


async def agent(world: World, *teams: str, timezone: str | None = None) -> dict[str, Any]:
    """A new staff member (agent role) in ``teams``; their handle is unique to the story."""
    handle = f"agent.{secrets.token_hex(4)}"
    body = {"email": f"{handle}@shop.example", "password": PASSWORD, "role": "agent", "name": handle.title(),
            "teams": list(teams), "timezone": timezone}  # fmt: skip
    made = await world.gateway.post("/api/v1/users", json=body)
    assert made.status_code == 201, made.text
    return dict(made.json())


@contextlib.asynccontextmanager
async def signed_in(world: World, person: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    """A console session of ``person``: cookie and CSRF token, no API key."""
    async with httpx.AsyncClient(base_url=world.running.url("gateway"), timeout=30) as client:
        login = await client.post("/api/v1/auth/login", json={"email": person["email"], "password": PASSWORD})
        assert login.status_code == 200, login.text
        # The cookie is Secure outside dev mode; this plain-HTTP test client sends it by hand.
        client.cookies.clear()
        client.headers["Cookie"] = f"tp_session={login.cookies['tp_session']}"
        client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
        yield client


async def callback_of(world: World, customer: dict[str, Any], **touch: Any) -> dict[str, Any]:
    """The complaint call-back made when ``customer`` complains by phone."""
    await world.log(customer, channel="phone", direction="inbound", type="complaint", thread_id=f"c-{customer['id']}",
                    **touch)  # fmt: skip
    return await world.one(customer, policy="complaint-callback", step="call-back")


async def test_assigning_a_follow_up_to_an_unknown_person_is_a_422(world: World) -> None:
    """Policy: complaint-callback.

    Given a customer who complained by phone, whose call-back waits in the support team's queue,
    when a team lead reassigns it to "nobody.here@nowhere" (a typo, someone who never worked here),
    then the gateway refuses with a 422 problem naming the assignee field, nothing changes,
    and the call-back stays where the team sees it; given to a real colleague, it goes to them."""
    await team(world, "support")
    ada = await world.customer(preferred_channel="phone")
    callback = await callback_of(world, ada)
    assert callback["assignee"] is None and callback["team"] == "support"
    refused = await world.gateway.post(f"/api/v1/followups/{callback['id']}/assign",
                                       json={"assignee": "nobody.here@nowhere"})  # fmt: skip
    assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["field"] == "assignee" and "nobody.here@nowhere" in refused.json()["detail"]
    assert await world.current(callback) == callback
    colleague = await agent(world, "support")
    given = await world.gateway.post(f"/api/v1/followups/{callback['id']}/assign",
                                     json={"assignee": colleague["handle"]})  # fmt: skip
    assert given.status_code == 200 and given.json()["assignee"] == colleague["handle"]


async def test_disabling_an_agent_returns_their_follow_ups_to_the_team(world: World) -> None:
    """Policy: complaint-callback.

    Given an agent of the support team who took a complaint call and so owns the customer's call-back,
    when an admin disables the agent (they left the company),
    then the call-back is no longer theirs: it is unassigned in the support team's queue, announced as changed,
    and the agent can no longer sign in; nobody can give them new work."""
    await team(world, "support")
    leaver = await agent(world, "support")
    ada = await world.customer(preferred_channel="phone")
    callback = await callback_of(world, ada, agent=leaver["handle"])
    assert callback["assignee"] == leaver["handle"]
    gone = await world.gateway.delete(f"/api/v1/users/{leaver['id']}")
    assert gone.status_code == 204
    returned = await world.changed(callback)
    assert (returned["assignee"], returned["team"], returned["status"]) == (None, "support", callback["status"])
    queue = await world.gateway.get(
        "/api/v1/followups", params={"team": "support", "contact_id": ada["id"], "policy": "complaint-callback"}
    )
    assert [f["id"] for f in queue.json()["items"]] == [callback["id"]]
    login = await world.gateway.post("/api/v1/auth/login", json={"email": leaver["email"], "password": PASSWORD})
    assert login.status_code == 401
    again = await world.gateway.post(f"/api/v1/followups/{callback['id']}/assign",
                                     json={"assignee": leaver["handle"]})  # fmt: skip
    assert again.status_code == 422 and again.json()["field"] == "assignee"


async def test_mine_is_the_signed_in_agent_s_work_with_counts_per_bucket(world: World) -> None:
    """Policy: response-sla.

    Given an agent in Tokyo who chatted with a customer (the customer's message names the agent),
    when the agent opens "Mine" (assignee=me) signed in to the console,
    then the reply they owe is there, counted as due today in Tokyo; an API key asking for "me" is told it is
    nobody (422), and another agent's "Mine" does not show it."""
    await team(world, "support")
    tokyo = await agent(world, "support", timezone="Asia/Tokyo")
    other = await agent(world, "support")
    ada = await world.customer(preferred_channel="live_chat")
    await world.log(ada, channel="live_chat", direction="inbound", type="inquiry", thread_id=f"chat-{ada['id']}",
                    agent=tokyo["handle"])  # fmt: skip
    reply = await world.one(ada, policy="response-sla")
    async with signed_in(world, tokyo) as console:
        mine = await console.get("/api/v1/followups", params={"assignee": "me", "bucket": "due_today"})
        assert mine.status_code == 200, mine.text
        assert [f["id"] for f in mine.json()["items"]] == [reply["id"]]
        assert mine.json()["counts"]["timezone"] == "Asia/Tokyo" and mine.json()["counts"]["due_today"] == 1
    async with signed_in(world, other) as console:
        theirs = await console.get("/api/v1/followups", params={"assignee": "me"})
        assert reply["id"] not in [f["id"] for f in theirs.json()["items"]]
    nobody = await world.gateway.get("/api/v1/followups", params={"assignee": "me"})
    assert nobody.status_code == 422 and nobody.json()["field"] == "assignee"


async def test_a_team_lead_gives_three_follow_ups_to_one_agent_in_one_request(world: World) -> None:
    """Policy: complaint-callback.

    Given three customers' call-backs waiting in the support queue, one of them already done by phone,
    when the team lead selects all three and assigns them to an agent in one bulk request,
    then the two open ones are the agent's (each with its own result), the done one answers 409 and stays done,
    and the agent finds the two in "Mine"."""
    await team(world, "support")
    taker = await agent(world, "support")
    customers = [await world.customer(preferred_channel="phone") for _ in range(3)]
    callbacks = [await callback_of(world, c) for c in customers]
    done = await world.gateway.post(f"/api/v1/followups/{callbacks[2]['id']}/complete", json={"outcome": "Called"})
    assert done.status_code == 200, done.text
    bulk = await world.gateway.post("/api/v1/followups/bulk", json={
        "action": "assign", "ids": [c["id"] for c in callbacks], "assignee": taker["handle"],
    })  # fmt: skip
    assert bulk.status_code == 200, bulk.text
    results = {r["id"]: r for r in bulk.json()["results"]}
    assert [results[c["id"]]["status"] for c in callbacks] == [200, 200, 409]
    assert (bulk.json()["succeeded"], bulk.json()["failed"]) == (2, 1)
    assert (await world.current(callbacks[2]))["status"] == "completed"
    async with signed_in(world, taker) as console:
        mine = await console.get("/api/v1/followups", params={"assignee": "me"})
        assert {f["id"] for f in mine.json()["items"]} == {callbacks[0]["id"], callbacks[1]["id"]}
    too_many = await world.gateway.post("/api/v1/followups/bulk", json={
        "action": "cancel", "ids": [callbacks[0]["id"]] * 501,
    })  # fmt: skip
    assert too_many.status_code == 422


async def test_the_draft_preview_differs_from_the_saved_one(world: World) -> None:
    """Policy: purchase-2-2-2.

    Given a customer who bought a dishwasher three days ago and got a thank-you text 20 hours later,
    when an admin previews a draft of purchase-2-2-2 that thanks after one day instead of two, without saving it,
    then the saved policy's preview shows the thank-you due two days after the purchase, open,
    the draft's shows it due one day after and closed by that text (inside its window, a day before it is due);
    invalid drafts are refused with their errors, and nothing of the draft is saved."""
    await team(world, "customer-success")  # the team the policy gives its work to
    bought_at = now() - timedelta(days=3)
    ada = await world.customer(preferred_channel="sms", consent={"sms": True})
    purchase = await world.log(ada, channel="in_person", direction="inbound", type="purchase", when=bought_at)
    thanks = await world.log(ada, channel="sms", direction="outbound", type="sales",
                             when=bought_at + timedelta(hours=20))  # fmt: skip
    await world.until(ada, lambda found: any(f["step"] == "thank-you" for f in found), policy="purchase-2-2-2")
    saved = (await world.gateway.get("/api/v1/policies/purchase-2-2-2")).json()
    draft = {**saved["document"]}
    draft["steps"] = [{**s, "offset": "P1D"} if s["id"] == "thank-you" else s for s in draft["steps"]]

    async def thank_you_of(path: str, **body: Any) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + SLOW
        while True:  # the follow-ups service keeps the touchpoints it replays once it has seen them
            preview = await world.gateway.post(path, params={"days": 5}, **body)
            assert preview.status_code == 200, preview.text
            found = [i for i in preview.json()["items"] if i["contact_id"] == ada["id"] and i["step"] == "thank-you"]
            if found or asyncio.get_running_loop().time() > deadline:
                assert len(found) == 1, preview.json()["items"][:5]
                return {**found[0], "draft": preview.json()["draft"]}
            await asyncio.sleep(0.2)

    as_saved = await thank_you_of("/api/v1/policies/purchase-2-2-2/preview")
    as_drafted = await thank_you_of("/api/v1/policies/preview", json=draft)
    assert as_saved["draft"] is False and as_drafted["draft"] is True
    assert as_saved["trigger"] == as_drafted["trigger"] == purchase["id"]
    assert as_saved["due_at"] != as_drafted["due_at"]
    assert as_saved["status"] == "scheduled"  # the text came before its window (a day before it is due)
    assert (as_drafted["status"], as_drafted["closed_by"]) == ("closed", thanks["id"])
    broken = await world.gateway.post("/api/v1/policies/preview", json={**draft, "steps": []})
    assert broken.status_code == 422 and broken.json()["errors"]
    nobody = {**draft, "assign": {"order": ["team"], "team": "nobody-here"}}
    unknown = await world.gateway.post("/api/v1/policies/preview", json=nobody)
    assert unknown.status_code == 422 and unknown.json()["field"] == "assign.team"
    assert (await world.gateway.get("/api/v1/policies/purchase-2-2-2")).json()["version"] == saved["version"]
