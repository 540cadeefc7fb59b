"""The work queue: buckets in a person's time zone, filters, sorts with keyset pages, counts; bulk actions; a
disabled person's open follow-ups going back to their team (crm.staff.changed.v1)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlmodel import col

from servicekit import cursors
from servicekit.events import CloudEvent
from servicekit.ids import new_id
from services.followups.models import Followup
from services.followups.tests.conftest import Harness

# Monday 5 January 2026, 20:00 UTC: already Tuesday in Tokyo (05:00), still Monday in New York (15:00).
MONDAY_20 = datetime(2026, 1, 5, 20, 0, tzinfo=UTC)


async def make(harness: Harness, contact_id: str, due: datetime, **fields: object) -> dict:
    body = {"contact_id": contact_id, "reason": "Call back", "due_at": due.isoformat(), **fields}
    response = await harness.client.post("/v1/followups", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def page(harness: Harness, **params: str | int) -> dict:
    response = await harness.client.get("/v1/followups", params={"limit": 200, **params})
    assert response.status_code == 200, response.text
    body: dict = response.json()
    return body


async def test_buckets_split_the_open_work_by_the_callers_today(harness: Harness) -> None:
    harness.clock.set(MONDAY_20 - timedelta(days=3))
    contact = str(uuid.uuid4())
    overdue = await make(harness, contact, MONDAY_20 - timedelta(days=2), assignee="ana")
    later_tonight = await make(harness, contact, MONDAY_20 + timedelta(hours=2), assignee="ana", channel="phone")
    next_week = await make(harness, contact, MONDAY_20 + timedelta(days=7), assignee="ana", priority="high")
    done = await make(harness, contact, MONDAY_20 - timedelta(days=1), assignee="ana")
    harness.clock.set(MONDAY_20)
    await harness.client.post(f"/v1/followups/{done['id']}/complete", json={})
    # Manual follow-ups are overdue from their due time (no policy grace).
    in_new_york = await page(harness, assignee="ana", tz="America/New_York")
    assert in_new_york["counts"] == {
        "overdue": 1, "due_today": 1, "upcoming": 1, "done": 1, "timezone": "America/New_York"
    }  # fmt: skip
    in_tokyo = await page(harness, assignee="ana", tz="Asia/Tokyo", bucket="upcoming")
    # In Tokyo it is already Tuesday: 22:00 UTC Monday is 07:00 Tuesday, due today there too; next week is not.
    assert [f["id"] for f in in_tokyo["items"]] == [next_week["id"]]
    today = await page(harness, assignee="ana", tz="America/New_York", bucket="due_today")
    assert [f["id"] for f in today["items"]] == [later_tonight["id"]]
    late = await page(harness, assignee="ana", bucket="overdue")
    assert [f["id"] for f in late["items"]] == [overdue["id"]]
    # Done: what was completed or cancelled, the newest closed first (the one cancelled now above the one
    # completed before), whatever their due times.
    harness.clock.advance(seconds=5)
    await harness.client.post(f"/v1/followups/{next_week['id']}/cancel", json={})
    closed = await page(harness, assignee="ana", bucket="done", sort="-closed_at")
    assert [f["id"] for f in closed["items"]] == [next_week["id"], done["id"]]
    assert closed["counts"]["done"] == 2 and closed["counts"]["upcoming"] == 0
    by_channel = await page(harness, assignee="ana", channel="phone")
    assert [f["id"] for f in by_channel["items"]] == [later_tonight["id"]]
    assert by_channel["counts"]["due_today"] == 1 and by_channel["counts"]["overdue"] == 0
    high = await page(harness, assignee="ana", priority="high")
    assert [f["id"] for f in high["items"]] == [next_week["id"]]
    bad_zone = await harness.client.get("/v1/followups", params={"tz": "Mars/Olympus"})
    assert bad_zone.status_code == 422 and bad_zone.json()["field"] == "tz"


async def test_every_sort_pages_through_everything_once_with_its_own_cursor(harness: Harness) -> None:
    harness.clock.set(MONDAY_20)
    contact = str(uuid.uuid4())
    made = []
    for n in range(7):
        made.append(await make(harness, contact, MONDAY_20 + timedelta(hours=(n * 5) % 7 + 1)))
        harness.clock.advance(seconds=1)
    by_due = sorted(made, key=lambda f: (f["due_at"], f["id"]))
    expected = {
        "due_at": [f["id"] for f in by_due],
        "-due_at": [f["id"] for f in reversed(by_due)],
        "-created_at": [f["id"] for f in reversed(made)],
        "-closed_at": [f["id"] for f in reversed(by_due)],  # none closed: by due time, latest first
    }
    for sort, order in expected.items():
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, str | int] = {"contact_id": contact, "sort": sort, "limit": 2}
            if cursor:
                params["cursor"] = cursor
            body = (await harness.client.get("/v1/followups", params=params)).json()
            assert (body["counts"] is None) == (cursor is not None)
            seen += [f["id"] for f in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == order, sort
    first = (await harness.client.get("/v1/followups", params={"sort": "due_at", "limit": 1})).json()
    crossed = await harness.client.get("/v1/followups", params={"sort": "-created_at", "cursor": first["next_cursor"]})
    assert crossed.status_code == 400
    numbered = cursors.encode(["due_at", "2026-01-01T00:00:00+00:00", 5])  # uuid.UUID(5): was a 500
    refused = await harness.client.get("/v1/followups", params={"sort": "due_at", "cursor": numbered})
    assert refused.status_code == 400 and refused.json()["detail"].endswith("(with this sort).")


async def test_bulk_gives_a_result_per_id_and_stops_at_the_limit(harness: Harness) -> None:
    harness.clock.set(MONDAY_20)
    contact = str(uuid.uuid4())
    open_ones = [await make(harness, contact, MONDAY_20 + timedelta(hours=1)) for _ in range(3)]
    closed = await make(harness, contact, MONDAY_20 + timedelta(hours=1))
    await harness.client.post(f"/v1/followups/{closed['id']}/cancel", json={})
    missing = str(uuid.uuid4())
    ids = [f["id"] for f in open_ones] + [closed["id"], missing]
    response = await harness.client.post("/v1/followups/bulk", json={"action": "assign", "ids": ids, "assignee": "bo"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["succeeded"], body["failed"]) == (3, 2)
    status = {r["id"]: r["status"] for r in body["results"]}
    assert status == {**{f["id"]: 200 for f in open_ones}, closed["id"]: 409, missing: 404}
    assert {f["id"] for f in (await page(harness, assignee="bo"))["items"]} == {f["id"] for f in open_ones}
    until = (MONDAY_20 + timedelta(days=2)).isoformat()
    snoozed = await harness.client.post("/v1/followups/bulk", json={"action": "snooze", "ids": ids[:2], "until": until})
    assert [r["followup"]["due_at"] for r in snoozed.json()["results"]] == [until.replace("+00:00", "Z")] * 2
    too_many = [str(uuid.uuid4()) for _ in range(501)]
    over = await harness.client.post("/v1/followups/bulk", json={"action": "cancel", "ids": too_many})
    assert over.status_code == 422
    stray = await harness.client.post("/v1/followups/bulk", json={"action": "cancel", "ids": ids, "until": until})
    assert stray.status_code == 422
    assert (await harness.client.post("/v1/followups/bulk", json={"action": "assign", "ids": ids})).status_code == 422


async def test_a_disabled_person_s_open_work_goes_back_to_their_team(harness: Harness) -> None:
    harness.clock.set(MONDAY_20)
    contact = str(uuid.uuid4())
    tap = await harness.tap(contact)
    no_team = await make(harness, contact, MONDAY_20 + timedelta(hours=1), assignee="leaver")
    with_team = await make(harness, contact, MONDAY_20 + timedelta(hours=1), assignee="leaver", team="billing")
    others = await make(harness, contact, MONDAY_20 + timedelta(hours=1), assignee="stayer")
    finished = await make(harness, contact, MONDAY_20 + timedelta(hours=1), assignee="leaver")
    await harness.client.post(f"/v1/followups/{finished['id']}/complete", json={})
    event = CloudEvent(
        id=str(new_id()), source="touchpoint/gateway", type="crm.staff.changed.v1", subject="leaver", time=MONDAY_20,
        data={"id": str(uuid.uuid4()), "handle": "leaver", "name": "Lee", "role": "agent", "teams": ["support"],
              "timezone": None, "active": False},
    )  # fmt: skip
    await harness.publish(event, f"crm.staff.changed.{event.data['id']}")
    await harness.applied(event.id)
    assert (await page(harness, assignee="leaver", status="scheduled"))["items"] == []
    rows = {f["id"]: f for f in (await page(harness, contact_id=contact))["items"]}
    assert (rows[no_team["id"]]["assignee"], rows[no_team["id"]]["team"]) == (None, "support")
    assert (rows[with_team["id"]]["assignee"], rows[with_team["id"]]["team"]) == (None, "billing")
    assert rows[others["id"]]["assignee"] == "stayer"
    assert rows[finished["id"]]["assignee"] == "leaver"  # closed work keeps who did it
    # Four made, one completed, then the two returned are announced (a reassignment is a scheduled event).
    announced = await tap.take(7)
    returned = [e for e in announced[5:] if e.type == "crm.followup.scheduled.v1" and e.data["assignee"] is None]
    assert {e.data["id"] for e in returned} == {no_team["id"], with_team["id"]}
    await tap.assert_no_more()


async def test_open_work_without_an_overdue_time_is_not_overdue(harness: Harness) -> None:
    """Follow-ups made by the previous release have no overdue time. ``overdue=false`` used to leave them out too:
    NOT (open AND NULL <= now) is NULL in SQL, which no row satisfies."""
    harness.clock.set(MONDAY_20)
    made = await make(harness, str(uuid.uuid4()), MONDAY_20 + timedelta(days=1), assignee="bea")
    async with harness.app.state.runtime.sessionmaker() as session, session.begin():
        await session.execute(update(Followup).where(col(Followup.id) == uuid.UUID(made["id"])).values(overdue_at=None))
    not_overdue = await page(harness, assignee="bea", overdue="false")
    assert [f["id"] for f in not_overdue["items"]] == [made["id"]]
    assert (await page(harness, assignee="bea", overdue="true"))["items"] == []
