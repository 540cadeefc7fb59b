"""The HTTP API: follow-ups by hand, the work queue and timeline orders, state rules, stats, policies and preview."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.followups.tests.conftest import Harness

PROBLEM = "application/problem+json"
MONDAY_10 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


async def make(harness: Harness, contact_id: str, **fields: object) -> dict:
    body = {"contact_id": contact_id, "reason": "Call about the invoice", "due_at": MONDAY_10.isoformat(), **fields}
    response = await harness.client.post("/v1/followups", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def test_work_queue_orders_by_priority_then_due_time_with_a_cursor(harness: Harness) -> None:
    harness.clock.set(MONDAY_10)
    contact = str(uuid.uuid4())
    low = await make(harness, contact, priority="low", due_at=(MONDAY_10 + timedelta(hours=1)).isoformat())
    urgent_late = await make(harness, contact, priority="urgent", due_at=(MONDAY_10 + timedelta(hours=5)).isoformat())
    urgent_soon = await make(harness, contact, priority="urgent", due_at=(MONDAY_10 + timedelta(hours=2)).isoformat())
    normal = await make(harness, contact, assignee="grace", team="billing")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"contact_id": contact, "limit": 1, **({"cursor": cursor} if cursor else {})}
        page = (await harness.client.get("/v1/followups", params=params)).json()
        seen += [f["id"] for f in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [urgent_soon["id"], urgent_late["id"], normal["id"], low["id"]]
    mine = await harness.followups(assignee="grace")
    assert [f["id"] for f in mine] == [normal["id"]]
    assert [f["id"] for f in await harness.followups(team="billing")] == [normal["id"]]
    before = await harness.followups(due_before=(MONDAY_10 + timedelta(hours=3)).isoformat(), contact_id=contact)
    assert {f["id"] for f in before} == {urgent_soon["id"], normal["id"], low["id"]}
    bad = await harness.client.get("/v1/followups", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400 and bad.headers["content-type"] == PROBLEM
    assert (await harness.client.get("/v1/followups", params={"limit": 201})).status_code == 422


async def test_timeline_order_is_newest_first_strictly_before_the_key(harness: Harness) -> None:
    harness.clock.set(MONDAY_10)
    contact = str(uuid.uuid4())
    made = [await make(harness, contact, due_at=(MONDAY_10 + timedelta(days=n)).isoformat()) for n in range(4)]
    harness.clock.advance(hours=1)
    done = await harness.client.post(f"/v1/followups/{made[3]['id']}/complete", json={"outcome": "Sorted"})
    assert done.json()["timeline_at"] == done.json()["closed_at"]  # closed: shown when it was closed (now)
    page = await harness.followups(contact_id=contact, order="timeline")
    assert [f["id"] for f in page] == [made[2]["id"], made[1]["id"], made[3]["id"], made[0]["id"]]
    key = f"{page[1]['timeline_at']}|{page[1]['id']}"
    older = await harness.followups(contact_id=contact, order="timeline", before=key)
    assert [f["id"] for f in older] == [made[3]["id"], made[0]["id"]]
    for bad in ("yesterday|x", f"2026-01-05T10:00:00|{uuid.uuid4()}"):
        response = await harness.client.get("/v1/followups", params={"order": "timeline", "before": bad})
        assert response.status_code == 422 and response.headers["content-type"] == PROBLEM


async def test_complete_snooze_cancel_assign_and_their_problems(harness: Harness) -> None:
    harness.clock.set(MONDAY_10)
    contact = str(uuid.uuid4())
    followup = await make(harness, contact, channel="phone", due_at=(MONDAY_10 + timedelta(hours=1)).isoformat())
    assert followup["status"] == "scheduled" and followup["policy"] is None and followup["channel"] == "phone"
    url = f"/v1/followups/{followup['id']}"

    past = await harness.client.post(f"{url}/snooze", json={"until": (MONDAY_10 - timedelta(minutes=1)).isoformat()})
    assert past.status_code == 422 and past.headers["content-type"] == PROBLEM
    later = MONDAY_10 + timedelta(days=1)
    snoozed = (await harness.client.post(f"{url}/snooze", json={"until": later.isoformat()})).json()
    assert datetime.fromisoformat(snoozed["due_at"]) == later and snoozed["status"] == "scheduled"
    harness.clock.advance(hours=2)
    assert await harness.scheduler.tick() == 0
    harness.clock.set(later)
    assert await harness.scheduler.tick() == 1

    assigned = (await harness.client.post(f"{url}/assign", json={"team": "billing"})).json()
    assert assigned["team"] == "billing" and assigned["status"] == "due"
    assert (await harness.client.post(f"{url}/assign", json={})).status_code == 422
    cancelled = (await harness.client.post(f"{url}/cancel", json={"reason": "superseded"})).json()
    assert cancelled["status"] == "cancelled" and cancelled["cancel_reason"] == "superseded"
    for action, body in (
        ("complete", {"outcome": "x"}),
        ("snooze", {"until": (later + timedelta(days=1)).isoformat()}),
    ):
        response = await harness.client.post(f"{url}/{action}", json=body)
        assert response.status_code == 409 and response.headers["content-type"] == PROBLEM
    assert (await harness.client.post(f"{url}/cancel", json={"reason": "whim"})).status_code == 422
    assert (await harness.client.get(f"/v1/followups/{uuid.uuid4()}")).status_code == 404
    naive = {"contact_id": contact, "reason": "x", "due_at": "2026-01-05T10:00:00"}
    assert (await harness.client.post("/v1/followups", json=naive)).status_code == 422
    unknown_field = {"contact_id": contact, "reason": "x", "due_at": MONDAY_10.isoformat(), "colour": "red"}
    assert (await harness.client.post("/v1/followups", json=unknown_field)).status_code == 422


async def test_a_manual_followup_on_an_opted_out_channel_is_refused(harness: Harness) -> None:
    contact = await harness.contact(consent={"sms": False})
    response = await harness.client.post(
        "/v1/followups", json={"contact_id": contact["id"], "reason": "Text them", "due_at": MONDAY_10.isoformat(),
                               "channel": "sms"},
    )  # fmt: skip
    assert response.status_code == 422 and "opted out" in response.json()["detail"]


async def test_stats_count_on_time_late_overdue_and_escalations(harness: Harness) -> None:
    harness.clock.set(MONDAY_10)
    contact = str(uuid.uuid4())
    on_time = await make(harness, contact, team="billing", assignee="ana")
    late = await make(harness, contact, team="billing")
    await make(harness, contact, team="billing")  # left open
    await harness.client.post(f"/v1/followups/{on_time['id']}/complete", json={})
    harness.clock.advance(days=2)
    await harness.scheduler.tick()
    await harness.client.post(f"/v1/followups/{late['id']}/complete", json={})
    stats = (await harness.client.get("/v1/followups/stats", params={"team": "billing"})).json()
    assert stats["completed_on_time"] == 1 and stats["completed_late"] == 1 and stats["open_overdue"] == 1
    assert stats["by_status"] == {"completed": 2, "due": 1} and stats["by_policy"] == {
        "manual": {"completed": 2, "due": 1}
    }
    assert stats["total"] == 3 and stats["escalations"] == 0
    anas = (await harness.client.get("/v1/followups/stats", params={"assignee": "ana"})).json()
    assert anas["assignee"] == "ana" and anas["total"] == 1 and anas["completed_on_time"] == 1
    none = (await harness.client.get("/v1/followups/stats", params={"team": "nobody"})).json()
    assert none["total"] == 0 and none["sla"]["met_rate"] is None
    assert (await harness.client.get("/v1/followups/stats", params={"channel": "fax"})).status_code == 422


async def test_policies_are_versioned_switched_and_previewed(harness: Harness) -> None:
    harness.clock.set(MONDAY_10)
    listed = (await harness.client.get("/v1/policies")).json()["items"]
    assert {p["id"] for p in listed} == {
        "purchase-2-2-2", "complaint-callback", "low-score-recovery", "response-sla", "premium-quiet",
    }  # fmt: skip
    assert {p["version"] for p in listed} == {1}

    contact = await harness.contact(preferred_channel="email")
    for day in range(3):
        harness.clock.set(MONDAY_10 + timedelta(days=day))
        await harness.applied(
            (await harness.touch(contact["id"], type="sales", direction="outbound", channel="email")).id
        )
    harness.clock.set(MONDAY_10 + timedelta(days=3))

    # A new policy, switched off, previewed before it is switched on.
    document = {
        "id": "sales-thanks", "name": "Thanks after a sales call", "enabled": False,
        "trigger": {"event": "interaction.logged", "all": {"type": ["sales"]}},
        "steps": [{"id": "thanks", "offset": "P1D", "reason": "Thank them for their time."}],
    }  # fmt: skip
    created = await harness.client.post("/v1/policies", json=document)
    assert created.status_code == 201 and created.json()["version"] == 1 and created.json()["enabled"] is False
    assert (await harness.client.post("/v1/policies", json=document)).status_code == 409
    preview = (await harness.client.post("/v1/policies/sales-thanks/preview", params={"days": 30})).json()
    assert preview["count"] == 3 and preview["considered"] == 3 and preview["by_step"] == {"thanks": 3}
    # Each day's thank-you falls due as the next day's sales call is made on its channel: that call closes it.
    assert sorted(i["status"] for i in preview["items"]) == ["closed", "closed", "scheduled"]
    short = (await harness.client.post("/v1/policies/sales-thanks/preview", params={"days": 1})).json()
    assert short["count"] == 1
    assert await harness.followups(policy="sales-thanks") == []  # a preview writes nothing

    changed = {**document, "steps": [{"id": "thanks", "offset": "P2D", "reason": "Thank them."}]}
    del changed["id"]
    replaced = (await harness.client.put("/v1/policies/sales-thanks", json=changed)).json()
    assert replaced["version"] == 2 and replaced["document"]["steps"][0]["offset"] == "P2D"
    enabled = (await harness.client.post("/v1/policies/sales-thanks/enable")).json()
    assert enabled["enabled"] is True and enabled["version"] == 2
    event = await harness.touch(contact["id"], type="sales", direction="outbound", channel="email")
    made = await harness.wait_for(1, policy="sales-thanks")
    assert made[0]["policy_version"] == 2 and made[0]["trigger_event_id"] == event.id
    disabled = (await harness.client.post("/v1/policies/sales-thanks/disable")).json()
    assert disabled["enabled"] is False
    assert (await harness.client.delete("/v1/policies/sales-thanks")).status_code == 204
    assert (await harness.client.get("/v1/policies/sales-thanks")).status_code == 404

    for bad in (
        {**document, "id": "Bad Id"},
        {**document, "id": "x", "steps": []},
        {**document, "id": "y", "steps": [{"id": "a", "offset": "soon", "reason": "r"}]},
        {**document, "id": "z", "trigger": {"event": "contact.quiet"}},
        {**document, "id": "w", "unknown": 1},
    ):
        response = await harness.client.post("/v1/policies", json=bad)
        assert response.status_code == 422 and response.headers["content-type"] == PROBLEM, bad
    assert (await harness.client.put("/v1/policies/nope", json=changed)).status_code == 404
    assert (await harness.client.post("/v1/policies/response-sla/preview", params={"days": 400})).status_code == 422


async def test_replacing_a_policy_with_duplicate_step_ids_is_a_422_not_a_500(harness: Harness) -> None:
    # Found by Schemathesis: PUT parsed the body, then PolicyDocument refused it after parsing (a 500).
    step = {"id": "again", "offset": "P1D", "reason": "Say hello."}
    body = {"name": "Twice", "trigger": {"event": "interaction.logged"}, "steps": [step, step]}
    for method, path in (("PUT", "/v1/policies/purchase-2-2-2"), ("POST", "/v1/policies")):
        sent = {**body, "id": "twice"} if method == "POST" else body
        response = await harness.client.request(method, path, json=sent)
        assert response.status_code == 422, (method, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert "step ids must be unique" in response.text
    unchanged = (await harness.client.get("/v1/policies/purchase-2-2-2")).json()
    assert unchanged["version"] == 1


async def test_what_the_document_forbids_is_refused(harness: Harness) -> None:
    # Found by Schemathesis: a number was read as Unix time in a date-time query, and a reason over 500
    # characters was taken when white space padded it (it was stripped before its length was checked).
    stats = await harness.client.get("/v1/followups/stats", params={"since": "0.9210265707619979"})
    assert stats.status_code == 422 and stats.headers["content-type"] == "application/problem+json"
    contact = await harness.contact()
    body = {"contact_id": contact["id"], "reason": " " * 10 + "x" * 495, "due_at": "2030-01-05T09:00:00Z"}
    assert (await harness.client.post("/v1/followups", json=body)).status_code == 422
    body["reason"] = " " * 5 + "x" * 495
    made = await harness.client.post("/v1/followups", json=body)
    assert made.status_code == 201, made.text
    assert made.json()["reason"] == "x" * 495
