"""Unit test of the one HTTP client of this service (the contacts service answers through MockTransport)."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from servicekit.problems import ContactsUnavailable
from services.interactions.directory import (
    ContactDirectory,
    ContactErased,
    ContactRejected,
    UnknownContact,
)
from services.interactions.schemas import ContactByIdentity

LIVE, MERGED, ERASED, MISSING = (uuid.uuid4() for _ in range(4))


def contacts_service(calls: list[httpx.Request]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        path = request.url.path
        if path == "/v1/contacts/resolve-many":
            items = json.loads(request.read())["items"]
            bad = {"status": 422, "problem": {"detail": "not a valid email address", "errors": [{"loc": ["email"]}]}}
            created = {"status": 201, "id": str(LIVE)}
            results = [{"index": n, **(bad if "bad" in json.dumps(item) else created)} for n, item in enumerate(items)]
            return httpx.Response(200, json={"results": results})
        contact_id = uuid.UUID(path.rsplit("/", 1)[1])
        if contact_id == LIVE:
            return httpx.Response(200, json={"id": str(LIVE), "status": "active"})
        if contact_id == MERGED:
            return httpx.Response(308, json={"merged_into": str(LIVE)}, headers={"Location": f"/v1/contacts/{LIVE}"})
        if contact_id == ERASED:
            return httpx.Response(410, json={"status": 410})
        return httpx.Response(404, json={"status": 404})

    return httpx.MockTransport(answer)


def directory(transport: httpx.AsyncBaseTransport) -> ContactDirectory:
    return ContactDirectory(
        base_url="http://contacts", timeout_s=1, concurrency=4, cache_size=2, retry_after_s=9, transport=transport
    )


async def test_live_contacts_are_remembered_and_merges_followed() -> None:
    calls: list[httpx.Request] = []
    contacts = directory(contacts_service(calls))
    assert (await contacts.link_by_id(LIVE)).contact_id == LIVE
    assert (await contacts.link_by_id(LIVE)).contact_id == LIVE
    assert len(calls) == 1  # the second time from memory
    link = await contacts.link_by_id(MERGED)
    assert (link.contact_id, link.original) == (LIVE, MERGED)
    contacts.forget(LIVE)
    assert not contacts.knows_live(LIVE)
    await contacts.link_by_id(LIVE)
    assert len(calls) == 4
    await contacts.close()


async def test_erased_unknown_and_refused_contacts_are_permanent_problems() -> None:
    contacts = directory(contacts_service([]))
    with pytest.raises(ContactErased):
        await contacts.link_by_id(ERASED)
    with pytest.raises(UnknownContact):
        await contacts.link_by_id(MISSING)
    refused, created = await contacts.resolve_many(
        [ContactByIdentity(email="bad@"), ContactByIdentity.model_validate({"email": "a@b.io", "name": "A"})]
    )
    assert isinstance(refused, ContactRejected)
    assert refused.status == 422 and refused.extensions["errors"] == [{"loc": ["email"]}]
    assert created == LIVE
    await contacts.close()


async def test_resolve_many_sends_at_most_500_identities_a_call() -> None:
    calls: list[httpx.Request] = []
    contacts = directory(contacts_service(calls))
    found = await contacts.resolve_many([ContactByIdentity(email=f"n{n}@example.com") for n in range(1001)])
    assert found == [LIVE] * 1001
    assert [len(json.loads(call.read())["items"]) for call in calls] == [500, 500, 1]
    await contacts.close()


async def test_a_resolve_many_answer_that_does_not_match_is_a_passing_cause() -> None:
    short = httpx.MockTransport(lambda request: httpx.Response(200, json={"results": []}))
    contacts = directory(short)
    with pytest.raises(ContactsUnavailable):
        await contacts.resolve_many([ContactByIdentity(email="a@example.com")])
    await contacts.close()


async def test_an_unreachable_contacts_service_is_503_and_fails_fast() -> None:
    calls: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("connection refused", request=request)

    contacts = directory(httpx.MockTransport(refuse))
    for _ in range(3):
        with pytest.raises(ContactsUnavailable) as down:
            await contacts.link_by_id(LIVE)
        assert down.value.status == 503 and down.value.headers["Retry-After"] == "9"
    assert len(calls) == 1  # the next calls did not wait for their own timeout
    await contacts.close()


async def test_one_slow_answer_does_not_fail_the_next_calls_but_a_run_of_them_does() -> None:
    # The load run on 2 saturated cores: one contacts call timed out, and every call failed for a second after.
    calls: list[httpx.Request] = []
    slow = [True, False, True, True, True, False]

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if slow.pop(0):
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(200, json={"id": str(LIVE)})

    contacts = directory(httpx.MockTransport(answer))
    with pytest.raises(ContactsUnavailable):
        await contacts.link_by_id(LIVE)
    assert (await contacts.link_by_id(LIVE)).contact_id == LIVE  # tried, not failed at once
    contacts.forget(LIVE)
    for _ in range(3):
        with pytest.raises(ContactsUnavailable):
            await contacts.link_by_id(LIVE)
    with pytest.raises(ContactsUnavailable, match="a moment ago"):
        await contacts.link_by_id(LIVE)  # three in a row: down, fails at once
    assert len(calls) == 5
    await contacts.close()


async def test_a_failing_contacts_service_is_a_passing_cause() -> None:
    contacts = directory(httpx.MockTransport(lambda request: httpx.Response(502)))
    with pytest.raises(ContactsUnavailable):
        await contacts.link_by_id(LIVE)
    await contacts.close()


def test_identity_becomes_the_resolve_request() -> None:
    contact = ContactByIdentity.model_validate({"handle": {"channel": "twitter", "value": "@ada"}, "name": "Ada"})
    assert contact.resolve_request() == {"handle": {"channel": "twitter", "value": "@ada"}, "create": {"name": "Ada"}}
    assert ContactByIdentity(phone="+12025550100").resolve_request() == {"phone": "+12025550100"}
    for bad in ({}, {"email": "a@b.io", "phone": "+12025550100"}):
        with pytest.raises(ValueError):
            ContactByIdentity.model_validate(bad)
