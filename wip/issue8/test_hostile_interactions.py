"""Hostile input against the interactions service, on SQLite and PostgreSQL: every answer is a deliberate 2xx or a
4xx problem, never a 500; SQL and HTML are stored as the data they are; dates at the edges of time are handled."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from servicekit.testing.apps import running_app
from servicekit.testing.nats import NatsServer

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = "application/problem+json"
LIMIT = 262_144

SQL = "Robert'); DROP TABLE interactions;-- \" OR 1=1 --"
HTML = "<script>alert('x')</script><img src=x onerror=alert(1)>&amp;"


@pytest.fixture
def interactions_url(database_factory: Callable[[Path], str]) -> str:
    return database_factory(ROOT / "services/interactions/alembic.ini")


@pytest.fixture
async def interactions(interactions_url: str, nats_server: NatsServer) -> AsyncIterator[httpx.AsyncClient]:
    from services.interactions.app import create_app
    from services.interactions.settings import InteractionsSettings

    settings = InteractionsSettings(
        database_url=interactions_url,
        nats_url=nats_server.url,
        log_json=False,
        log_level="WARNING",
        max_body_bytes=LIMIT,
        contacts_url="http://127.0.0.1:9",  # by contact id only: these tests never need the contacts service
        contacts_timeout_s=0.5,
    )
    async with running_app(create_app(settings)) as client:
        yield client


def touchpoint(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "contact_id": str(uuid.uuid4()),
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


async def test_a_batch_of_1001_is_refused_and_1000_is_taken(interactions: httpx.AsyncClient) -> None:
    contact = str(uuid.uuid4())
    too_many = [touchpoint(contact_id=contact, external_id=f"x{n}", source="shop") for n in range(1001)]
    assert_problem(await interactions.post("/v1/interactions/batch", json={"items": too_many}), 413, 422)
    listed = await interactions.get("/v1/interactions", params={"contact_id": contact})
    assert listed.status_code == 200 and listed.json()["items"] == []  # nothing of it was stored
    response = await interactions.post("/v1/interactions/batch", json={"items": too_many[:1000]})
    assert response.status_code == 200, response.text[:300]
    results = response.json()["results"]
    # Contacts is not running here: each item is answered on its own (503 per item), the batch itself is taken.
    assert len(results) == 1000 and {r["status"] for r in results} <= {201, 503}
    assert [r["index"] for r in results] == list(range(1000))


async def test_a_10_kb_idempotency_key_is_a_problem(interactions: httpx.AsyncClient) -> None:
    for key in ("k" * 10_240, "é" * 300, " ", "\t"):
        response = await interactions.post("/v1/interactions", json=touchpoint(),
                                           headers={"Idempotency-Key": key.encode().decode("latin-1")})  # fmt: skip
        assert response.status_code in (201, 400, 422), (len(key), response.status_code, response.text[:300])
        if response.status_code != 201:
            assert_problem(response, 400, 422)
    assert_problem(
        await interactions.post("/v1/interactions", json=touchpoint(), headers={"Idempotency-Key": "k" * 10_240}),
        400,
        422,
    )
    fine = await interactions.post("/v1/interactions", json=touchpoint(), headers={"Idempotency-Key": "k" * 255})
    assert fine.status_code == 201, fine.text


async def test_bodies_over_the_limit_deep_json_and_invalid_utf8(interactions: httpx.AsyncClient) -> None:
    big = json.dumps(touchpoint(body="y" * (LIMIT * 2))).encode()
    assert_problem(
        await interactions.post("/v1/interactions", content=big, headers={"content-type": "application/json"}), 413
    )
    deep = json.dumps(touchpoint())[:-1] + ', "attributes": ' + '{"a":' * 5000 + "1" + "}" * 5000 + "}"
    assert_problem(
        await interactions.post("/v1/interactions", content=deep, headers={"content-type": "application/json"}),
        400, 413, 422,
    )  # fmt: skip
    for raw in (b'{"subject": "\xff\xfe"}', b"\xc3\x28", b"", b"null", b'{"items": '):
        for path in ("/v1/interactions", "/v1/interactions/batch"):
            response = await interactions.post(path, content=raw, headers={"content-type": "application/json"})
            assert_problem(response, 400, 422)
    tags = {"tags": [f"t{n}" for n in range(10_000)]}
    assert_problem(await interactions.post("/v1/interactions", json=touchpoint(attributes=tags)), 413, 422)


async def test_sql_and_html_in_every_text_field_are_stored_as_data(interactions: httpx.AsyncClient) -> None:
    fields = {"agent": SQL, "team": "support", "subject": HTML, "body": f"{SQL}\n{HTML}", "thread_id": f"t-{SQL}"[:100],
              "outcome": HTML[:100], "source": "shop", "external_id": SQL, "attributes": {"note": HTML, SQL: SQL}}  # fmt: skip  # noqa: E501
    made = await interactions.post("/v1/interactions", json=touchpoint(**fields))
    assert made.status_code == 201, made.text
    stored = (await interactions.get(f"/v1/interactions/{made.json()['id']}")).json()
    for name, value in fields.items():
        assert stored[name] == value, (name, stored[name])
    again = await interactions.post("/v1/interactions", json=touchpoint(**fields))
    assert again.status_code == 200 and again.json()["id"] == made.json()["id"]  # (source, external_id) once


async def test_dates_and_time_zones_at_the_edges(interactions: httpx.AsyncClient) -> None:
    contact = str(uuid.uuid4())
    fine = ["2026-03-29T02:30:00+01:00", "2024-02-29T23:59:59.999999+14:00", "2024-02-29T00:00:00-12:00",
            "1970-01-01T00:00:00Z", "2000-01-01T00:00:00+05:45", "2038-01-19T03:14:08Z"]  # fmt: skip
    for at in fine:
        response = await interactions.post("/v1/interactions", json=touchpoint(contact_id=contact, occurred_at=at))
        assert response.status_code == 201, (at, response.text)
        assert datetime.fromisoformat(response.json()["occurred_at"]) == datetime.fromisoformat(at)
    for at in ("2026-01-05T08:00:00", "2016-12-31T23:59:60Z", "2026-02-30T00:00:00Z", "not a date", "", "1e10",
               "2026-01-05T08:00:00+25:00"):  # fmt: skip
        assert_problem(await interactions.post("/v1/interactions", json=touchpoint(occurred_at=at)), 422)
    # The very ends of what a datetime holds: stored, refused, but never a crash.
    for at in ("0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-12:00",
               "9999-12-31T23:59:59.999999Z"):  # fmt: skip
        response = await interactions.post("/v1/interactions", json=touchpoint(contact_id=contact, occurred_at=at))
        assert response.status_code in (201, 422), (at, response.status_code, response.text[:300])
    page = await interactions.get("/v1/interactions", params={"contact_id": contact, "limit": 200})
    assert page.status_code == 200, page.text[:300]
    for since, until in (("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"), ("2030-01-01T00:00:00Z", "2020-01-01T00:00:00Z"),  # noqa: E501
                         ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00")):  # fmt: skip
        response = await interactions.get(
            "/v1/interactions", params={"contact_id": contact, "since": since, "until": until}
        )
        assert response.status_code in (200, 422), (since, until, response.status_code, response.text[:300])


async def test_tampered_cursors_are_a_problem(interactions: httpx.AsyncClient) -> None:
    contact = str(uuid.uuid4())
    for n in range(3):
        at = f"2026-01-0{n + 1}T08:00:00Z"
        assert (
            await interactions.post("/v1/interactions", json=touchpoint(contact_id=contact, occurred_at=at))
        ).status_code == 201
    page = (await interactions.get("/v1/interactions", params={"contact_id": contact, "limit": 1})).json()
    cursor = page["next_cursor"]
    assert cursor
    forged = [cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1], cursor + "x", cursor[::-1], "%%%",
              base64.urlsafe_b64encode(b'{"at": "9999-99-99", "id": 5}').decode(), "A" * 600,
              base64.urlsafe_b64encode(json.dumps(["0001-01-01T00:00:00+14:00", str(uuid.uuid4())]).encode()).decode()]  # fmt: skip  # noqa: E501
    for bad in forged:
        response = await interactions.get("/v1/interactions", params={"contact_id": contact, "limit": 1, "cursor": bad})
        assert response.status_code in (200, 400, 422), (bad, response.status_code, response.text[:300])
        if response.status_code != 200:
            assert_problem(response, 400, 422)
    for before in ("garbage", "2026-01-01T00:00:00Z|not-a-uuid", "|", "0001-01-01T00:00:00+14:00|" + str(uuid.uuid4())):
        response = await interactions.get("/v1/interactions", params={"contact_id": contact, "before": before})
        assert response.status_code in (200, 400, 422), (before, response.status_code, response.text[:300])
