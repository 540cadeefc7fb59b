"""Hostile input against the contacts service, on SQLite and PostgreSQL: every answer is a deliberate 2xx or a
4xx problem, never a 500; SQL and HTML are stored as the data they are."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from servicekit.testing.apps import running_app
from servicekit.testing.nats import NatsServer

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = "application/problem+json"
LIMIT = 65_536

SQL = "Robert'); DROP TABLE contacts;-- \" OR 1=1 --"
HTML = "<script>alert('x')</script><img src=x onerror=alert(1)>&amp;"


@pytest.fixture
def contacts_url(database_factory: Callable[[Path], str]) -> str:
    return database_factory(ROOT / "services/contacts/alembic.ini")


@pytest.fixture
async def contacts(contacts_url: str, nats_server: NatsServer) -> AsyncIterator[httpx.AsyncClient]:
    from services.contacts.app import create_app
    from services.contacts.settings import ContactsSettings

    url = contacts_url
    settings = ContactsSettings(
        database_url=url, nats_url=nats_server.url, log_json=False, log_level="WARNING", max_body_bytes=LIMIT
    )
    async with running_app(create_app(settings)) as client:
        yield client


def assert_problem(response: httpx.Response, *statuses: int) -> None:
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == PROBLEM, response.headers
    assert response.json()["status"] == response.status_code


async def test_a_body_over_the_limit_is_a_413_declared_or_streamed(contacts: httpx.AsyncClient) -> None:
    big = json.dumps({"name": "x", "attributes": {"blob": "y" * (LIMIT * 2)}}).encode()
    assert_problem(await contacts.post("/v1/contacts", content=big, headers={"content-type": "application/json"}), 413)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    # No Content-Length: the limit is counted as the body arrives.
    streamed = await contacts.post("/v1/contacts", content=chunks(), headers={"content-type": "application/json"})
    assert_problem(streamed, 413)


async def test_deeply_nested_json_is_refused_not_a_crash(contacts: httpx.AsyncClient) -> None:
    for depth in (200, 5_000):
        nested = '{"a":' * depth + "1" + "}" * depth
        body = '{"name": "Deep", "attributes": ' + nested + "}"
        response = await contacts.post("/v1/contacts", content=body, headers={"content-type": "application/json"})
        assert response.status_code in (201, 400, 413, 422), (depth, response.status_code, response.text[:300])
        if response.status_code != 201:
            assert_problem(response, 400, 413, 422)
    arrays = "[" * 20_000 + "]" * 20_000
    response = await contacts.post("/v1/contacts/resolve", content=arrays, headers={"content-type": "application/json"})
    assert_problem(response, 400, 413, 422)


async def test_ten_thousand_tags_are_refused(contacts: httpx.AsyncClient) -> None:
    tags = [f"tag-{n}" for n in range(10_000)]
    assert_problem(await contacts.post("/v1/contacts", json={"name": "Tagged", "tags": tags}), 413, 422)
    made = await contacts.post("/v1/contacts", json={"name": "Tagged", "tags": ["a"]})
    assert made.status_code == 201
    patch = await contacts.patch(f"/v1/contacts/{made.json()['id']}", json={"tags": tags})
    assert_problem(patch, 413, 422)


async def test_invalid_utf8_and_not_json_are_problems(contacts: httpx.AsyncClient) -> None:
    for raw in (b'{"name": "\xff\xfe\xfa"}', b"\xc3\x28", b'{"name": "ok"', b"", b"null", b"[]", b'"text"'):
        for path in ("/v1/contacts", "/v1/contacts/resolve"):
            response = await contacts.post(path, content=raw, headers={"content-type": "application/json"})
            assert_problem(response, 400, 422)
    form = await contacts.post("/v1/contacts", content=b"name=x", headers={"content-type": "text/plain"})
    assert_problem(form, 400, 415, 422)


async def test_sql_and_html_in_every_text_field_are_stored_as_data(contacts: httpx.AsyncClient) -> None:
    n = uuid.uuid4().hex[:8]
    body = {
        "name": f"{SQL} {HTML}",
        "company": HTML,
        "emails": [f"o'brien+{n}@example.com"],
        "handles": {"twitter": f"@{SQL}"[:200]},
        "external_ids": {"shop": HTML},
        "tags": [SQL[:64], HTML[:64]],
        "owner": SQL,
        "attributes": {"note": HTML, SQL: SQL},
    }
    made = await contacts.post("/v1/contacts", json=body)
    assert made.status_code == 201, made.text
    stored = (await contacts.get(f"/v1/contacts/{made.json()['id']}")).json()
    assert stored["name"] == f"{SQL} {HTML}"
    assert stored["company"] == HTML
    assert stored["handles"] == {"twitter": f"@{SQL}"}
    assert stored["external_ids"] == {"shop": HTML}
    assert set(stored["tags"]) == {SQL[:64].lower(), HTML[:64].lower()} or set(stored["tags"]) == {SQL[:64], HTML[:64]}
    assert stored["owner"] == SQL
    assert stored["attributes"] == {"note": HTML, SQL: SQL}
    # The injection did nothing: the table is there, and a search for the quote finds this one contact.
    found = await contacts.get("/v1/contacts", params={"q": "Robert');"})
    assert found.status_code == 200
    assert [c["id"] for c in found.json()["items"]] == [made.json()["id"]]
    resolved = await contacts.post("/v1/contacts/resolve", json={"external_id": {"source": "shop", "value": HTML}})
    assert resolved.status_code == 200 and resolved.json()["id"] == made.json()["id"]


async def test_search_wildcards_are_literal(contacts: httpx.AsyncClient) -> None:
    made = await contacts.post("/v1/contacts", json={"name": f"Zed {uuid.uuid4().hex[:6]}"})
    assert made.status_code == 201
    for q in ("%", "_", "*", ".*", "\\", "' OR ''='"):
        response = await contacts.get("/v1/contacts", params={"q": q})
        assert response.status_code == 200, (q, response.text)
        assert made.json()["id"] not in [c["id"] for c in response.json()["items"]], q


async def test_tampered_cursors_are_a_400_problem(contacts: httpx.AsyncClient) -> None:
    for n in range(3):
        assert (await contacts.post("/v1/contacts", json={"name": f"Page {n}", "tags": ["paged"]})).status_code == 201
    page = (await contacts.get("/v1/contacts", params={"tag": "paged", "limit": 1})).json()
    cursor = page["next_cursor"]
    assert cursor
    flipped = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    forged = [
        flipped,
        cursor + "x",
        cursor[::-1],
        "not-a-cursor",
        "%%%%",
        base64.urlsafe_b64encode(b'{"id": 1, "at": []}').decode(),
        base64.urlsafe_b64encode(b"\x00" * 16).decode(),
        "A" * 512,
    ]
    for bad in forged:
        response = await contacts.get("/v1/contacts", params={"tag": "paged", "limit": 1, "cursor": bad})
        # A cursor that still decodes to some id is a valid position (200); anything else is refused.
        assert response.status_code in (200, 400, 422), (bad, response.status_code, response.text[:300])
        if response.status_code != 200:
            assert_problem(response, 400, 422)
    assert_problem(await contacts.get("/v1/contacts", params={"cursor": "A" * 513}), 422)


async def test_time_zones_and_languages_at_the_edges(contacts: httpx.AsyncClient) -> None:
    for zone in ("Pacific/Kiritimati", "Etc/GMT+12", "Etc/GMT-14", "UTC", "America/St_Johns", "Asia/Kathmandu"):
        response = await contacts.post("/v1/contacts", json={"name": "Zone", "timezone": zone})
        assert response.status_code == 201, (zone, response.text)
        assert response.json()["timezone"] == zone
    for bad in ("", "+14:00", "Mars/Olympus", "../../etc/passwd", "Europe/Paris\x00", "x" * 65):
        assert_problem(await contacts.post("/v1/contacts", json={"name": "Zone", "timezone": bad}), 422)


async def test_huge_headers_are_refused_or_ignored(contacts: httpx.AsyncClient) -> None:
    made = await contacts.post("/v1/contacts", json={"name": "Header"})
    assert made.status_code == 201
    contact_id = made.json()["id"]
    response = await contacts.patch(
        f"/v1/contacts/{contact_id}", json={"company": "X"}, headers={"If-Match": "x" * 10_240}
    )
    assert_problem(response, 412, 422)
    echoed = await contacts.get(f"/v1/contacts/{contact_id}", headers={"X-Request-ID": "r" * 10_240})
    assert echoed.status_code == 200
    # An over-long request id is not echoed back (nor logged): a fresh one is made.
    assert len(echoed.headers["x-request-id"]) <= 128
