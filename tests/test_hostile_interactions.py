"""Hostile input against the interactions service, with the real contacts service answering on a real port
(SQLite and PostgreSQL, real nats-server): every answer is a deliberate 2xx or a 4xx problem, never a 500; SQL and
HTML are stored as the data they are; dates at the edges of time are handled; a refused request stores nothing."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from servicekit.clock import MovableClock
from servicekit.testing.apps import running_app
from servicekit.testing.nats import NatsServer
from services.interactions.app import create_app
from services.interactions.settings import InteractionsSettings
from tests import test_interactions_api as api

PROBLEM = "application/problem+json"
LIMIT = 262_144

SQL = "Robert'); DROP TABLE interactions;-- \" OR 1=1 --"
HTML = "<script>alert('x')</script><img src=x onerror=alert(1)>&amp;"

ContactsService = api.ContactsService
contacts_db, interactions_db, contacts = api.contacts_db, api.interactions_db, api.contacts  # the fixtures


@pytest.fixture
async def interactions(
    interactions_db: str, nats_server: NatsServer, contacts: ContactsService, clock: MovableClock
) -> AsyncIterator[httpx.AsyncClient]:
    settings = InteractionsSettings(
        database_url=interactions_db,
        nats_url=nats_server.url,
        contacts_url=contacts.url,
        log_json=False,
        log_level="WARNING",
        max_body_bytes=LIMIT,
        outbox_poll_s=0.05,
        contacts_timeout_s=5,
    )
    async with running_app(create_app(settings, clock=clock)) as client:
        yield client


@pytest.fixture
async def contact_id(contacts: ContactsService) -> str:
    return str((await contacts.create())["id"])


def touchpoint(contact_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "contact_id": contact_id,
        "channel": "email",
        "direction": "inbound",
        "type": "inquiry",
        "occurred_at": "2026-01-05T08:00:00Z",
        "subject": "Where is my order?",
        "body": "Nothing has arrived yet.",
    }
    body.update(overrides)
    return body


def assert_problem(response: httpx.Response, *statuses: int) -> None:
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == PROBLEM, response.headers
    assert response.json()["status"] == response.status_code


async def stored(interactions: httpx.AsyncClient, contact_id: str) -> list[dict[str, Any]]:
    listed = await interactions.get("/v1/interactions", params={"contact_id": contact_id, "limit": 200})
    assert listed.status_code == 200, listed.text[:300]
    return list(listed.json()["items"])


async def test_a_batch_of_1001_is_refused_and_1000_is_taken(interactions: httpx.AsyncClient, contact_id: str) -> None:
    too_many = [touchpoint(contact_id, external_id=f"x{n}", source="shop", body="b") for n in range(1001)]
    assert_problem(await interactions.post("/v1/interactions/batch", json={"items": too_many}), 413, 422)
    assert await stored(interactions, contact_id) == []  # nothing of it was stored
    response = await interactions.post("/v1/interactions/batch", json={"items": too_many[:1000]})
    assert response.status_code == 200, response.text[:300]
    results = response.json()["results"]
    assert [r["index"] for r in results] == list(range(1000))
    assert {r["status"] for r in results} == {201}, {r["status"] for r in results}


async def test_a_10_kb_idempotency_key_is_a_problem(interactions: httpx.AsyncClient, contact_id: str) -> None:
    for key in ("k" * 10_240, "é" * 300, " ", "\t"):
        # Sent as raw UTF-8 bytes: the header arrives as latin-1 characters, as from a careless client.
        headers = httpx.Headers([(b"Idempotency-Key", key.encode())])
        response = await interactions.post("/v1/interactions", json=touchpoint(contact_id), headers=headers)
        assert response.status_code in (201, 400, 422), (len(key), response.status_code, response.text[:300])
        if response.status_code != 201:
            assert_problem(response, 400, 422)
    before = len(await stored(interactions, contact_id))
    refused = await interactions.post(
        "/v1/interactions", json=touchpoint(contact_id), headers={"Idempotency-Key": "k" * 10_240}
    )
    assert_problem(refused, 400, 422)
    assert len(await stored(interactions, contact_id)) == before
    fine = await interactions.post(
        "/v1/interactions", json=touchpoint(contact_id), headers={"Idempotency-Key": "k" * 255}
    )
    assert fine.status_code == 201, fine.text


async def test_bodies_over_the_limit_deep_json_and_invalid_utf8(
    interactions: httpx.AsyncClient, contact_id: str
) -> None:
    big = json.dumps(touchpoint(contact_id, body="y" * (LIMIT * 2))).encode()
    json_type = {"content-type": "application/json"}
    assert_problem(await interactions.post("/v1/interactions", content=big, headers=json_type), 413)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    # No Content-Length: the limit is counted as the body arrives.
    assert_problem(await interactions.post("/v1/interactions", content=chunks(), headers=json_type), 413)
    deep = json.dumps(touchpoint(contact_id))[:-1] + ', "attributes": ' + '{"a":' * 5000 + "1" + "}" * 5000 + "}"
    assert_problem(await interactions.post("/v1/interactions", content=deep, headers=json_type), 400, 413, 422)
    arrays = "[" * 20_000 + "]" * 20_000
    assert_problem(await interactions.post("/v1/interactions/batch", content=arrays, headers=json_type), 400, 422)
    for raw in (b'{"subject": "\xff\xfe"}', b"\xc3\x28", b"", b"null", b'{"items": '):
        for path in ("/v1/interactions", "/v1/interactions/batch"):
            assert_problem(await interactions.post(path, content=raw, headers=json_type), 400, 422)
    tags = {"tags": [f"t{n}" for n in range(10_000)]}
    assert_problem(await interactions.post("/v1/interactions", json=touchpoint(contact_id, attributes=tags)), 413, 422)
    assert await stored(interactions, contact_id) == []


async def test_sql_html_and_nul_in_every_text_field(interactions: httpx.AsyncClient, contact_id: str) -> None:
    fields = {"agent": SQL, "team": "support", "subject": HTML, "body": f"{SQL}\n{HTML}", "thread_id": f"t-{SQL}"[:100],
              "outcome": HTML[:100], "source": "shop", "external_id": SQL, "attributes": {"note": HTML, SQL: SQL}}  # fmt: skip  # noqa: E501
    made = await interactions.post("/v1/interactions", json=touchpoint(contact_id, **fields))
    assert made.status_code == 201, made.text
    stored_one = (await interactions.get(f"/v1/interactions/{made.json()['id']}")).json()
    for name, value in fields.items():
        assert stored_one[name] == value, (name, stored_one[name])
    again = await interactions.post("/v1/interactions", json=touchpoint(contact_id, **fields))
    assert again.status_code == 200 and again.json()["id"] == made.json()["id"]  # (source, external_id) once
    # PostgreSQL text cannot hold U+0000: refused on both backends the same way, never a 500.
    for name in ("agent", "team", "subject", "body", "thread_id", "outcome", "external_id"):
        value = "a\x00b"
        extra = {"source": "shop"} if name == "external_id" else {}
        response = await interactions.post("/v1/interactions", json=touchpoint(contact_id, **{name: value}, **extra))
        assert_problem(response, 422)
    assert_problem(await interactions.post("/v1/interactions", json=touchpoint(contact_id, attributes={"k": "\x00"})),
                   422)  # fmt: skip
    batch = await interactions.post("/v1/interactions/batch", json={"items": [touchpoint(contact_id, body="\x00")]})
    assert batch.status_code in (200, 422), batch.text[:300]
    if batch.status_code == 200:
        assert batch.json()["results"][0]["status"] == 422
    assert len(await stored(interactions, contact_id)) == 1


async def test_dates_and_time_zones_at_the_edges(
    interactions: httpx.AsyncClient, contact_id: str, clock: MovableClock
) -> None:
    clock.set(datetime(2040, 1, 1, tzinfo=UTC))  # every date below is in the past, except the year 9999
    fine = ["2026-03-29T02:30:00+01:00", "2024-02-29T23:59:59.999999+14:00", "2024-02-29T00:00:00-12:00",
            "1970-01-01T00:00:00Z", "2000-01-01T00:00:00+05:45", "2038-01-19T03:14:08Z"]  # fmt: skip
    for at in fine:
        response = await interactions.post("/v1/interactions", json=touchpoint(contact_id, occurred_at=at))
        assert response.status_code == 201, (at, response.text)
        assert datetime.fromisoformat(response.json()["occurred_at"]) == datetime.fromisoformat(at)
    for at in ("2026-01-05T08:00:00", "2016-12-31T23:59:60Z", "2026-02-30T00:00:00Z", "not a date", "", "1e10",
               "2026-01-05T08:00:00+25:00"):  # fmt: skip
        assert_problem(await interactions.post("/v1/interactions", json=touchpoint(contact_id, occurred_at=at)), 422)
    # The very ends of what a datetime holds: stored or refused, never a crash.
    for at in ("0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-12:00",
               "9999-12-31T23:59:59.999999Z"):  # fmt: skip
        response = await interactions.post("/v1/interactions", json=touchpoint(contact_id, occurred_at=at))
        assert response.status_code in (201, 422), (at, response.status_code, response.text[:300])
        if response.status_code == 422:
            assert_problem(response, 422)
    assert len(await stored(interactions, contact_id)) >= len(fine)
    for since, until in (("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"), ("2030-01-01T00:00:00Z", "2020-01-01T00:00:00Z"),  # noqa: E501
                         ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"), ("x", "y")):  # fmt: skip
        response = await interactions.get(
            "/v1/interactions", params={"contact_id": contact_id, "since": since, "until": until}
        )
        assert response.status_code in (200, 422), (since, until, response.status_code, response.text[:300])
        if response.status_code == 422:
            assert_problem(response, 422)


async def test_tampered_cursors_are_a_problem(interactions: httpx.AsyncClient, contact_id: str) -> None:
    for n in range(3):
        at = f"2026-01-0{n + 1}T08:00:00Z"
        made = await interactions.post("/v1/interactions", json=touchpoint(contact_id, occurred_at=at))
        assert made.status_code == 201, made.text
    page = (await interactions.get("/v1/interactions", params={"contact_id": contact_id, "limit": 1})).json()
    cursor = page["next_cursor"]
    assert cursor
    forged = [cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1], cursor + "x", cursor[::-1], "%%%",
              base64.urlsafe_b64encode(b'{"at": "9999-99-99", "id": 5}').decode(), "A" * 600, "\x00",
              base64.urlsafe_b64encode(json.dumps(["0001-01-01T00:00:00+14:00", str(uuid.uuid4())]).encode()).decode()]  # fmt: skip  # noqa: E501
    for bad in forged:
        response = await interactions.get(
            "/v1/interactions", params={"contact_id": contact_id, "limit": 1, "cursor": bad}
        )
        assert response.status_code in (200, 400, 422), (bad, response.status_code, response.text[:300])
        if response.status_code != 200:
            assert_problem(response, 400, 422)
    for before in ("garbage", "2026-01-01T00:00:00Z|not-a-uuid", "|", "0001-01-01T00:00:00+14:00|" + str(uuid.uuid4()),
                   "9999-12-31T23:59:59-12:00|" + str(uuid.uuid4()), "\x00|\x00"):  # fmt: skip
        response = await interactions.get("/v1/interactions", params={"contact_id": contact_id, "before": before})
        assert response.status_code in (200, 400, 422), (before, response.status_code, response.text[:300])
        if response.status_code != 200:
            assert_problem(response, 400, 422)
    assert len(await stored(interactions, contact_id)) == 3


async def test_patches_threads_and_stats_take_hostile_input_as_data(
    interactions: httpx.AsyncClient, contact_id: str
) -> None:
    made = await interactions.post("/v1/interactions", json=touchpoint(contact_id, thread_id="t-1"))
    assert made.status_code == 201, made.text
    path = f"/v1/interactions/{made.json()['id']}"
    patched = await interactions.patch(path, json={"outcome": HTML[:100], "attributes": {SQL: HTML}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["outcome"] == HTML[:100] and patched.json()["attributes"][SQL] == HTML
    tags = {f"t{n}": n for n in range(10_000)}
    for body in ({"outcome": "a\x00"}, {"attributes": {"k": "\x00"}}, {"attributes": tags}, {}, {"thread_status": None},
                 {"thread_status": "<script>"}):  # fmt: skip
        assert_problem(await interactions.patch(path, json=body), 413, 422)
    for raw in (b"\xff\xfe", b"", b"[" * 10_000, b'{"outcome": '):
        assert_problem(await interactions.patch(path, content=raw, headers={"content-type": "application/json"}),
                       400, 422)  # fmt: skip
    assert (await interactions.get(path)).json()["outcome"] == HTML[:100]  # the refused patches changed nothing
    for thread in (SQL, HTML, "..%2F..%2Fetc", "a" * 300, "t-1'--"):
        response = await interactions.get(f"/v1/threads/{thread}")
        assert response.status_code in (200, 404, 422), (thread, response.status_code, response.text[:300])
        if response.status_code != 200:
            assert_problem(response, 404, 422)
    assert (await interactions.get("/v1/threads/t-1")).status_code == 200
    for params in ({"since": "0001-01-01T00:00:00+14:00"}, {"until": "9999-12-31T23:59:59-12:00"},
                   {"until": "0001-01-02T00:00:00Z"}, {"team": SQL},
                   {"since": "2030-01-01T00:00:00Z", "until": "2020-01-01T00:00:00Z"},
                   {"team": "\x00"}, {"channel": HTML}):  # fmt: skip
        response = await interactions.get("/v1/interactions/stats", params=params)
        assert response.status_code in (200, 422), (params, response.status_code, response.text[:300])
        if response.status_code == 422:
            assert_problem(response, 422)


async def test_regression_a_number_is_no_occurred_at(interactions: httpx.AsyncClient, contact_id: str) -> None:
    """Found by the gateway's fuzz: pydantic's AwareDatetime read 1700000000 as a Unix time and the touchpoint
    was stored; the document says an RFC 3339 date-time (servicekit.clock.AwareInput)."""
    for number in (1_700_000_000, 1_700_000_000.5, "1700000000"):
        response = await interactions.post("/v1/interactions", json=touchpoint(contact_id, occurred_at=number))
        assert response.status_code == 422, (number, response.status_code, response.text[:300])
        assert response.headers["content-type"] == "application/problem+json"
    assert await stored(interactions, contact_id) == []


async def test_an_escaped_backslash_before_u0000_is_text(interactions: httpx.AsyncClient, contact_id: str) -> None:
    # The U+0000 guard looked for the bytes \u0000 in the body and also refused the text "\u0000" (sent as
    # \\u0000, an escaped backslash), which PostgreSQL stores fine.
    for text in ("path C:\\u0000", "\\\\\\u0000 and \\ud800 are text"):
        made = await interactions.post("/v1/interactions", json=touchpoint(contact_id, body=text, subject=text))
        assert made.status_code == 201, made.text
        assert (await interactions.get(f"/v1/interactions/{made.json()['id']}")).json()["body"] == text
    # An odd run of backslashes ends in a real escape: still refused.
    raw = b'{"contact_id": "%s", "channel": "email", "direction": "inbound", "type": "inquiry", ' % contact_id.encode()
    raw += b'"occurred_at": "2026-01-01T00:00:00Z", "body": "a\\\\\\u0000"}'
    assert_problem(
        await interactions.post("/v1/interactions", content=raw, headers={"content-type": "application/json"}), 422
    )


async def test_regression_a_boolean_is_no_score(interactions: httpx.AsyncClient, contact_id: str) -> None:
    """Lax integers take booleans: ``"csat": true`` was stored as a CSAT of 1 and moved the customer's average (the
    gateway's fuzz found the same in policy conditions)."""
    for field in ("csat", "nps", "duration_s"):
        for value in (True, False):
            response = await interactions.post("/v1/interactions", json=touchpoint(contact_id, **{field: value}))
            assert response.status_code == 422, (field, value, response.status_code, response.text[:300])
            assert response.json()["errors"][0]["loc"][-1] == field
    assert await stored(interactions, contact_id) == []
    # A whole number written with a fraction is an integer to JSON Schema, and so here (the fuzzer sent 497.0).
    whole = await interactions.post("/v1/interactions", json=touchpoint(contact_id, csat=5.0, duration_s=497.0))
    assert whole.status_code == 201, whole.text
    assert (whole.json()["csat"], whole.json()["duration_s"]) == (5, 497)
