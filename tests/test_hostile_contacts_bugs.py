"""Hostile input that once made the contacts service answer 500 (U+10FFFF in a search, U+0000 on PostgreSQL):
these tests keep it fixed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from tests import test_hostile_contacts as hostile

assert_problem = hostile.assert_problem
contacts_url, contacts = hostile.contacts_url, hostile.contacts  # the fixtures


async def test_search_with_edge_characters_is_not_a_crash(contacts: httpx.AsyncClient) -> None:
    for q in (" ", "\t", "\U0010ffff", "a\U0010ffff", "\ud7ff", "😀", "ß", "İ", "\u0301"):
        response = await contacts.get("/v1/contacts", params={"q": q})
        assert response.status_code in (200, 422), (repr(q), response.status_code, response.text[:300])
        if response.status_code == 422:
            assert_problem(response, 422)


async def test_nul_characters_in_text_are_refused_or_stored_never_a_500(contacts: httpx.AsyncClient) -> None:
    """PostgreSQL's text cannot hold U+0000; SQLite can. Either way the caller gets an answer, not a crash."""
    bodies = [
        {"name": "Nul\x00Name"},
        {"name": "ok", "company": "\x00"},
        {"name": "ok", "tags": ["a\x00b"]},
        {"name": "ok", "attributes": {"k": "v\x00"}},
        {"name": "ok", "owner": "\x00agent"},
    ]
    for body in bodies:
        response = await contacts.post("/v1/contacts", json=body)
        assert response.status_code in (201, 422), (body, response.status_code, response.text[:300])
    search = await contacts.get("/v1/contacts", params={"q": "a\x00"})
    assert search.status_code in (200, 422), search.text[:300]
    resolve = await contacts.post("/v1/contacts/resolve", json={"external_id": {"source": "shop", "value": "\x00"}})
    assert resolve.status_code in (200, 201, 422), resolve.text[:300]


async def test_unpaired_surrogate_escapes_are_a_422_and_pairs_are_text(contacts: httpx.AsyncClient) -> None:
    """A lone ``\\ud800`` in JSON decodes into a str no UTF-8 encoder can write: in ``attributes`` it once made
    the event serialiser fail (500), and through the gateway httpx (500, or a dropped connection)."""
    json_type = {"content-type": "application/json"}
    for body in (b'{"name": "x", "tags": ["a\\ud800b"]}', b'{"name": "x", "attributes": {"a\\ud800b": 1}}',
                 b'{"name": "x", "attributes": {"k": "a\\udfffb"}}', b'{"name": "x\\ud83d"}',
                 b'{"name": "x\\ude00\\ud83d"}'):  # fmt: skip
        response = await contacts.post("/v1/contacts", content=body, headers=json_type)
        assert_problem(response, 422)
        assert "surrogate" in response.json()["detail"] or response.json().get("errors"), response.text
    paired = b'{"name": "Smile \\ud83d\\ude00", "attributes": {"raw": "\\\\ud800"}}'

    async def split_in_the_pair() -> AsyncIterator[bytes]:
        cut = paired.index(b"\\ude00") + 2  # the low surrogate's escape arrives in two chunks
        yield paired[:cut]
        yield paired[cut:]

    for content in (paired, split_in_the_pair()):
        made = await contacts.post("/v1/contacts", content=content, headers=json_type)
        assert made.status_code == 201, made.text
        assert made.json()["name"] == "Smile \U0001f600" and made.json()["attributes"] == {"raw": "\\ud800"}
