"""Hostile input against the follow-ups service (SQLite and PostgreSQL, real nats-server): every answer is a
deliberate 2xx or a 4xx problem, never a 500; SQL and HTML are stored as data; dates, durations and time zones at
the edges are refused or handled; a refused request stores nothing."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from servicekit.clock import MovableClock
from servicekit.testing.apps import running_app
from services.followups.app import create_app
from services.followups.settings import FollowupsSettings
from services.followups.tests import conftest as followups

PROBLEM = "application/problem+json"
LIMIT = 65_536

SQL = "Robert'); DROP TABLE followups;-- \" OR 1=1 --"
HTML = "<script>alert('x')</script><img src=x onerror=alert(1)>&amp;"

followups_db, nats_private, js = followups.followups_db, followups.nats_private, followups.js  # the fixtures
JSON = {"content-type": "application/json"}


@pytest.fixture
async def client(
    followups_settings: FollowupsSettings, clock: MovableClock, js: Any
) -> AsyncIterator[httpx.AsyncClient]:
    settings = followups_settings.model_copy(update={"max_body_bytes": LIMIT, "log_level": "WARNING"})
    async with running_app(create_app(settings, clock=clock)) as client:
        yield client


followups_settings = followups.followups_settings


def followup(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"contact_id": str(uuid.uuid4()), "reason": "Call back", "due_at": "2026-01-06T09:00:00Z"}
    body.update(overrides)
    return body


def policy(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"p-{uuid.uuid4().hex[:8]}",
        "name": "Thank you",
        "trigger": {"event": "interaction.logged", "all": {"type": ["purchase"]}},
        "steps": [{"id": "thanks", "reason": "Say thank you", "offset": "P2D"}],
    }
    body.update(overrides)
    return body


def assert_problem(response: httpx.Response, *statuses: int) -> None:
    assert response.status_code in statuses, (response.request.url, response.status_code, response.text[:500])
    assert response.headers["content-type"] == PROBLEM, response.headers
    assert response.json()["status"] == response.status_code


def made_or_refused(response: httpx.Response, ok: int = 201) -> bool:
    """A deliberate answer either way: ``ok``, or a 4xx problem. True when it was made."""
    assert response.status_code in (ok, 400, 409, 413, 422), (
        response.request.url, response.status_code, response.text[:300],
    )  # fmt: skip
    if response.status_code != ok:
        assert_problem(response, 400, 409, 413, 422)
    return response.status_code == ok


async def count(client: httpx.AsyncClient, contact_id: str | None = None) -> int:
    params: dict[str, Any] = {"limit": 200} | ({"contact_id": contact_id} if contact_id else {})
    listed = await client.get("/v1/followups", params=params)
    assert listed.status_code == 200, listed.text[:300]
    return len(listed.json()["items"])


async def test_huge_deep_and_broken_bodies_are_problems(client: httpx.AsyncClient) -> None:
    big = json.dumps(followup(reason="y" * (LIMIT * 2))).encode()
    assert_problem(await client.post("/v1/followups", content=big, headers=JSON), 413)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    assert_problem(await client.post("/v1/followups", content=chunks(), headers=JSON), 413)
    deep = '{"a":' * 5000 + "1" + "}" * 5000
    for path in ("/v1/followups", "/v1/policies", f"/v1/followups/{uuid.uuid4()}/complete"):
        assert_problem(await client.post(path, content=deep, headers=JSON), 400, 404, 413, 422)
        assert_problem(await client.post(path, content="[" * 20_000 + "]" * 20_000, headers=JSON), 400, 404, 422)
        for raw in (b'{"reason": "\xff\xfe"}', b"\xc3\x28", b"", b"null", b'{"reason": '):
            assert_problem(await client.post(path, content=raw, headers=JSON), 400, 404, 422)
    # 10,000 tags in a policy's match; 10,000 steps.
    tags = policy(trigger={"event": "interaction.logged", "all": {"tags_any": [f"t{n}" for n in range(10_000)]}})
    assert_problem(await client.post("/v1/policies", json=tags), 413, 422)
    steps = policy(steps=[{"id": f"s{n}", "reason": "r"} for n in range(1_001)])
    assert_problem(await client.post("/v1/policies", json=steps), 413, 422)
    assert await count(client) == 0


async def test_sql_html_and_nul_in_every_text_field(client: httpx.AsyncClient) -> None:
    fields = {"reason": f"{SQL} {HTML}", "assignee": SQL, "team": HTML, "thread_id": f"t-{SQL}"}
    made = await client.post("/v1/followups", json=followup(**fields))
    assert made.status_code == 201, made.text
    ident = made.json()["id"]
    read = (await client.get(f"/v1/followups/{ident}")).json()
    assert {name: read[name] for name in fields} == fields
    assert [f["id"] for f in (await client.get("/v1/followups", params={"assignee": SQL})).json()["items"]] == [ident]
    assert [f["id"] for f in (await client.get("/v1/followups", params={"team": HTML})).json()["items"]] == [ident]
    done = await client.post(f"/v1/followups/{ident}/complete", json={"outcome": HTML})
    assert done.status_code == 200 and done.json()["outcome"] == HTML, done.text
    text = policy(name=HTML, description=SQL, steps=[{"id": "s", "reason": HTML}])
    stored = await client.post("/v1/policies", json=text)
    assert stored.status_code == 201, stored.text
    document = (await client.get(f"/v1/policies/{text['id']}")).json()["document"]
    assert (document["name"], document["description"], document["steps"][0]["reason"]) == (HTML, SQL, HTML)
    for bad_id in (SQL, HTML, "a" * 101, "A", "..", "a/b"):
        assert_problem(await client.post("/v1/policies", json=policy(id=bad_id)), 422)
    for path_id in ("'%20OR%201=1", "%3Cscript%3E", "a" * 200):
        assert_problem(await client.get(f"/v1/policies/{path_id}"), 404, 422)
    # PostgreSQL text cannot hold U+0000: refused on both backends the same way.
    for name in ("reason", "assignee", "team", "thread_id"):
        assert_problem(await client.post("/v1/followups", json=followup(**{name: "a\x00b"})), 422)
    open_one = await client.post("/v1/followups", json=followup())
    assert open_one.status_code == 201
    other = open_one.json()["id"]
    assert_problem(await client.post(f"/v1/followups/{other}/complete", json={"outcome": "\x00"}), 422)
    assert_problem(await client.post(f"/v1/followups/{other}/assign", json={"assignee": "\x00"}), 422)
    assert_problem(await client.post("/v1/policies", json=policy(name="a\x00b")), 422)
    for params in ({"assignee": "\x00"}, {"team": "a\x00"}, {"policy": "\x00"}):
        assert_problem(await client.get("/v1/followups", params=params), 422)
    assert await count(client) == 2
    assert (await client.get(f"/v1/followups/{other}")).json()["status"] == "scheduled"


async def test_dates_at_the_edges_of_time(client: httpx.AsyncClient) -> None:
    contact = str(uuid.uuid4())
    for due in ("2026-03-29T02:30:00+01:00", "2024-02-29T23:59:59.999999+14:00", "2024-02-29T00:00:00-12:00",
                "2026-03-08T02:30:00-05:00", "2000-01-01T00:00:00+05:45"):  # fmt: skip
        response = await client.post("/v1/followups", json=followup(contact_id=contact, due_at=due))
        assert response.status_code == 201, (due, response.text)
    edges = ("0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-12:00",
             "9999-12-31T23:59:59.999999Z", "9999-12-30T00:00:00Z")  # fmt: skip
    for due in edges:
        made_or_refused(await client.post("/v1/followups", json=followup(contact_id=contact, due_at=due)))
    for bad in ("2026-01-06T09:00:00", "2026-02-30T00:00:00Z", "2016-12-31T23:59:60Z", "+14:00", "", "1e10"):
        assert_problem(await client.post("/v1/followups", json=followup(due_at=bad)), 422)
    snoozable = (await client.post("/v1/followups", json=followup(contact_id=contact))).json()["id"]
    for until in edges:
        made_or_refused(await client.post(f"/v1/followups/{snoozable}/snooze", json={"until": until}), ok=200)
    for params in ({"due_before": edge} for edge in edges):
        made_or_refused(await client.get("/v1/followups", params=params), ok=200)
    for since, until in ((edges[0], edges[2]), (edges[2], edges[0]), (edges[1], edges[3]), ("x", "y")):
        made_or_refused(await client.get("/v1/followups/stats", params={"since": since, "until": until}), ok=200)
    assert await count(client, contact) >= 6


async def test_durations_hours_and_zones_at_the_edges_in_policies(client: httpx.AsyncClient) -> None:
    for offset in ("P9999Y", "P999999999D", "P9999999999D", "PT99999999999999H", "P1000000000000W", "-P1D", "P",
                   "PT0S", "P0D", "P1Y2M3DT4H5M6.7S", "x" * 41):  # fmt: skip
        made_or_refused(
            await client.post("/v1/policies", json=policy(steps=[{"id": "s", "reason": "r", "offset": offset}]))
        )
    for after in ("P9999999999D", "PT99999999999999H", "P1M"):
        escalation = {"overdue_after": after, "levels": [{"after": after, "team": "leads"}]}
        made_or_refused(await client.post("/v1/policies", json=policy(escalation=escalation)))
    hours: dict[str, Any]
    for hours in (
        {"start": "00:00", "end": "00:00"},
        {"start": "23:59:59", "end": "00:00"},
        {"start": "24:00", "end": "25:00"},
        {"days": []},
        {"days": ["mon"] * 8},
        {"start": "09:00+14:00"},
    ):
        made_or_refused(await client.post("/v1/policies", json=policy(business_hours=hours)))
    for quiet in ({"start": "00:00", "end": "00:00"}, {"start": "08:00", "end": "08:00:00.000001"}):
        made_or_refused(await client.post("/v1/policies", json=policy(quiet_hours=quiet)))
    for days in ("0", "366", "x", "1"):
        response = await client.post("/v1/policies/complaint-callback/preview", params={"days": days})
        made_or_refused(response, ok=200)


async def test_tampered_cursors_are_problems(client: httpx.AsyncClient) -> None:
    contact = str(uuid.uuid4())
    for n in range(3):
        made = await client.post(
            "/v1/followups", json=followup(contact_id=contact, due_at=f"2026-01-0{n + 6}T09:00:00Z")
        )
        assert made.status_code == 201, made.text
    page = (await client.get("/v1/followups", params={"limit": 1})).json()
    cursor = page["next_cursor"]
    assert cursor

    def b64(value: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    forged = [
        cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1],
        cursor + "x",
        cursor[::-1],
        "%%%",
        "A" * 512,
        "\x00",
        b64({"a": 1, "b": 2, "c": 3}),
        b64([1, "9999-99-99", "x"]),
        b64(None),
        b64(1),
        b64([1, "0001-01-01T00:00:00+14:00", str(uuid.uuid4())]),
        b64([1, "9999-12-31T23:59:59-12:00", str(uuid.uuid4())]),
        b64([10**30, "2026-01-01T00:00:00Z", str(uuid.uuid4())]),
        b64([[1], {}, []]),
        b64([1, 2, 3, 4]),
    ]
    for bad in forged:
        made_or_refused(await client.get("/v1/followups", params={"limit": 1, "cursor": bad}), ok=200)
    assert_problem(await client.get("/v1/followups", params={"cursor": "A" * 513}), 422)
    for before in ("garbage", "2026-01-01T00:00:00Z|not-a-uuid", "|", "2026-01-01T00:00:00|" + str(uuid.uuid4()),
                   "0001-01-01T00:00:00+14:00|" + str(uuid.uuid4()), "9999-12-31T23:59:59-12:00|" + str(uuid.uuid4()),
                   "\x00|\x00"):  # fmt: skip
        params = {"contact_id": contact, "order": "timeline", "before": before}
        made_or_refused(await client.get("/v1/followups", params=params), ok=200)
    assert await count(client, contact) == 3


async def test_idempotency_key_and_request_id_of_10_kb(client: httpx.AsyncClient) -> None:
    """Follow-ups has no Idempotency-Key of its own: a huge one is ignored, not a crash, and is not echoed."""
    made = await client.post("/v1/followups", json=followup(), headers={"Idempotency-Key": "k" * 10_240,
                                                                       "X-Request-ID": "r" * 10_240})  # fmt: skip
    assert made.status_code == 201, made.text
    assert len(made.headers["x-request-id"]) <= 128


async def test_regressions_times_and_durations_past_the_range_of_dates_were_500s(client: httpx.AsyncClient) -> None:
    """Each of these once raised OverflowError (500): a due time or cursor time UTC cannot hold, a due time with no
    room for its overdue time, a duration isodate cannot build, and a policy duration no date can carry."""
    for due in ("9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00", "9999-12-31T00:00:00Z"):
        assert_problem(await client.post("/v1/followups", json=followup(due_at=due)), 422)
    made = (await client.post("/v1/followups", json=followup())).json()["id"]
    assert_problem(await client.post(f"/v1/followups/{made}/snooze", json={"until": "9999-12-31T23:59:59Z"}), 422)
    assert (await client.get(f"/v1/followups/{made}")).json()["due_at"] == "2026-01-06T09:00:00Z"
    assert_problem(await client.get("/v1/followups", params={"due_before": "0001-01-01T00:00:00+14:00"}), 422)
    assert_problem(await client.get("/v1/followups/stats", params={"until": "9999-12-31T23:59:59-12:00"}), 422)
    edge = base64.urlsafe_b64encode(json.dumps([1, "0001-01-01T00:00:00+14:00", str(uuid.uuid4())]).encode())
    assert_problem(await client.get("/v1/followups", params={"cursor": edge.decode()}), 400)
    rank = base64.urlsafe_b64encode(json.dumps([10**30, "2026-01-01T00:00:00Z", str(uuid.uuid4())]).encode())
    assert_problem(await client.get("/v1/followups", params={"cursor": rank.decode()}), 400)
    before = {"order": "timeline", "before": f"0001-01-01T00:00:00+14:00|{uuid.uuid4()}"}
    assert_problem(await client.get("/v1/followups", params=before), 422)
    for offset in ("P9999999999D", "P11Y", "P3654D", "P9999Y"):
        step = {"id": "s", "reason": "r", "offset": offset}
        assert_problem(await client.post("/v1/policies", json=policy(steps=[step])), 422)
    assert (
        await client.post("/v1/policies", json=policy(steps=[{"id": "s", "reason": "r", "offset": "P10Y"}]))
    ).status_code == 201
    assert_problem(await client.post("/v1/policies", json=policy(escalation={"overdue_after": "P9999999999D"})), 422)


async def test_regression_hours_with_an_offset_are_refused(client: httpx.AsyncClient) -> None:
    """Found by the gateway's fuzz: ``09:00+14:00`` was stored, then every touchpoint the policy matched failed in
    the consumer ("can't compare offset-naive and offset-aware times") and was retried. Hours are wall-clock
    times in the contact's zone: an offset, or a number of seconds, is a 422 and no policy is made."""
    refused: list[dict[str, Any]] = [
        {"business_hours": {"start": "09:00+14:00"}},
        {"business_hours": {"end": "17:00:00Z"}},
        {"quiet_hours": {"start": "21:00:00-05:00", "end": "08:00"}},
        {"quiet_hours": {"start": 3600, "end": "08:00"}},
    ]
    for fields in refused:
        body = policy(**fields)
        assert_problem(await client.post("/v1/policies", json=body), 422)
        assert (await client.get(f"/v1/policies/{body['id']}")).status_code == 404
    made = policy(business_hours={"start": "08:30", "end": "17:00:00"}, quiet_hours={"start": "22:00", "end": "07:00"})
    created = await client.post("/v1/policies", json=made)
    assert created.status_code == 201, created.text
    assert created.json()["document"]["business_hours"]["start"] == "08:30:00"


async def test_regression_a_number_is_no_due_time(client: httpx.AsyncClient) -> None:
    """Found by the gateway's fuzz: a number for ``due_at`` or a snooze's ``until`` was read as a Unix time."""
    before = await count(client)
    for number in (4_102_444_800, "4102444800"):
        assert_problem(await client.post("/v1/followups", json=followup(due_at=number)), 422)
    assert await count(client) == before
    made = await client.post("/v1/followups", json=followup(due_at="2030-01-06T09:00:00Z"))
    assert made.status_code == 201, made.text
    snooze = await client.post(f"/v1/followups/{made.json()['id']}/snooze", json={"until": 4_102_444_800})
    assert_problem(snooze, 422)


async def test_regression_a_boolean_is_no_score_in_a_policy_condition(client: httpx.AsyncClient) -> None:
    """Found by the gateway's fuzz: ``"csat_max": true`` made a policy for scores of at most 1."""
    for field in ("csat_max", "nps_max"):
        trigger = {"event": "interaction.logged", "any": [{field: True}]}
        response = await client.post("/v1/policies", json=policy(trigger=trigger))
        assert_problem(response, 422)
        assert field in response.text
