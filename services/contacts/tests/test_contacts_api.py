from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from prometheus_client import generate_latest

from services.contacts import search
from services.contacts.tests.conftest import contact_factory

PROBLEM = "application/problem+json"


async def create(client: httpx.AsyncClient, **overrides: object) -> dict:
    response = await client.post("/v1/contacts", json=contact_factory(**overrides))
    assert response.status_code == 201, response.text
    return response.json()


async def test_create_normalises_identities_and_returns_etag(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/contacts",
        json=contact_factory(
            emails=["Grace.Hopper@Navy.MIL"],
            phones=["(202) 555-0143", "+44 20 7946 0958"],
            handles={"twitter": "@Grace"},
            external_ids={"shop": "C-1001"},
            timezone="America/New_York",
            language="en-us",
            consent={"email": True, "sms": False},
            preferred_channel="email",
            tier="premium",
        ),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["emails"] == ["grace.hopper@navy.mil"]
    assert body["phones"] == ["+12025550143", "+442079460958"]
    assert body["language"] == "en-US"
    assert body["consent"] == {"email": True, "sms": False}
    assert body["version"] == 1 and body["status"] == "active"
    assert uuid.UUID(body["id"]).version == 7
    assert response.headers["etag"] == f'"{body["id"]}-v1"'


async def test_invalid_input_is_a_422_problem(client: httpx.AsyncClient) -> None:
    for bad in (
        {"name": "x", "nickname": "unknown field"},
        {"emails": ["not-an-email"]},
        {"timezone": "Mars/Olympus"},
        {"language": "not a language"},
        {"tier": "gold"},
        {"stage": "customerish"},
        {"consent": {"carrier_pigeon": True}},
        {"tags": ["x"] * 101},
        {"attributes": {"blob": "x" * 20_000}},
    ):
        response = await client.post("/v1/contacts", json=bad)
        assert response.status_code == 422, (bad, response.text)
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["status"] == 422
    response = await client.post("/v1/contacts", json={"phones": ["12"]})
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM


async def test_duplicate_identity_is_409_naming_the_holder(client: httpx.AsyncClient) -> None:
    first = await create(client, phones=["+1 202 555 0100"], handles={"twitter": "@ada"})
    for clash in ({"emails": first["emails"]}, {"phones": ["+12025550100"]}, {"handles": {"twitter": "@ADA"}}):
        response = await client.post("/v1/contacts", json=contact_factory(**clash))
        assert response.status_code == 409, response.text
        assert response.json()["contact_id"] == first["id"]


async def test_get_unknown_and_malformed_ids(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/v1/contacts/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert (await client.get("/v1/contacts/not-a-uuid")).status_code == 422


async def test_patch_is_a_merge_patch_with_etag_checks(client: httpx.AsyncClient) -> None:
    contact = await create(client, handles={"twitter": "@a", "instagram": "ada"}, consent={"sms": True})
    url = f"/v1/contacts/{contact['id']}"
    etag = (await client.get(url)).headers["etag"]
    response = await client.patch(
        url,
        json={"stage": "customer", "handles": {"instagram": None}, "consent": {"email": False}, "company": None},
        headers={"If-Match": etag},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["stage"] == "customer" and body["company"] is None
    assert body["handles"] == {"twitter": "@a"}
    assert body["consent"] == {"sms": True, "email": False}
    assert body["version"] == 2
    stale = await client.patch(url, json={"stage": "repeat"}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert stale.headers["content-type"] == PROBLEM
    assert (await client.get(url)).json()["stage"] == "customer"
    assert (await client.patch(url, json={"tier": None})).status_code == 422
    assert (await client.patch(url, json={"surname": "x"})).status_code == 422


async def test_patch_cannot_take_another_contacts_identity(client: httpx.AsyncClient) -> None:
    holder = await create(client)
    other = await create(client)
    response = await client.patch(f"/v1/contacts/{other['id']}", json={"emails": holder["emails"]})
    assert response.status_code == 409
    assert response.json()["contact_id"] == holder["id"]
    assert (await client.get(f"/v1/contacts/{other['id']}")).json()["emails"] == other["emails"]


async def test_search_by_prefix_and_filters(client: httpx.AsyncClient) -> None:
    tag = f"t{uuid.uuid4().hex[:6]}"
    grace = await create(
        client,
        name="Grace Hopper",
        company="Navy Labs",
        phones=["+12025550177"],
        tags=[tag],
        tier="premium",
        owner="sam",
    )
    await create(client, name="Alan Turing", company="Bletchley", tags=[tag])
    for q in ("grace", "HOP", "navy", grace["emails"][0][:9], "+1202555017", "1202555017"):
        found = (await client.get("/v1/contacts", params={"q": q, "tag": tag})).json()["items"]
        assert [c["id"] for c in found] == [grace["id"]], q
    assert len((await client.get("/v1/contacts", params={"tag": tag})).json()["items"]) == 2
    premium = (await client.get("/v1/contacts", params={"tag": tag, "tier": "premium", "owner": "sam"})).json()
    assert [c["id"] for c in premium["items"]] == [grace["id"]]
    assert (await client.get("/v1/contacts", params={"limit": 201})).status_code == 422
    tampered = await client.get("/v1/contacts", params={"cursor": "eyJiZWZvcmUiOiAibm9wZSJ9"})
    assert tampered.status_code == 400
    assert tampered.headers["content-type"] == PROBLEM
    numbered = await client.get("/v1/contacts", params={"cursor": "eyJiZWZvcmUiOiA1fQ"})  # {"before": 5}: was a 500
    assert numbered.status_code == 400 and numbered.json()["type"].endswith("/invalid-cursor")


async def test_pages_are_stable_while_contacts_are_added(client: httpx.AsyncClient) -> None:
    tag = f"p{uuid.uuid4().hex[:6]}"
    first = [await create(client, tags=[tag]) for _ in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"tag": tag, "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/contacts", params=params)).json()
        seen += [c["id"] for c in page["items"]]
        await create(client, tags=[tag])  # arrives while we page: never in a later page
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [c["id"] for c in reversed(first)]


@pytest.mark.parametrize("collect_limit", [1, 10_000], ids=["common-prefix-walk", "rare-prefix-collect"])
async def test_prefix_search_pages_the_same_whether_the_prefix_is_common_or_rare(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, collect_limit: int
) -> None:
    # The service picks its query plan by how many terms a prefix matches; both plans must give the same pages.
    monkeypatch.setattr(search, "COLLECT_LIMIT", collect_limit)
    word = f"zq{uuid.uuid4().hex[:6]}"
    made = [await create(client, name=f"{word.title()} Person{n}", company=f"{word}co") for n in range(7)]
    merged_away, erased = made[2], made[4]
    assert (await client.post(f"/v1/contacts/{made[0]['id']}/merge", json={"source_id": merged_away["id"]})).is_success
    assert (await client.delete(f"/v1/contacts/{erased['id']}")).status_code == 204
    live = [c["id"] for c in reversed(made) if c["id"] not in (merged_away["id"], erased["id"])]
    latecomers: list[str] = []

    async def pages(params: dict[str, str | int]) -> list[str]:
        seen: list[str] = []
        cursor = None
        while True:
            query = {**params, "cursor": cursor} if cursor else params
            page = (await client.get("/v1/contacts", params=query)).json()
            assert len(page["items"]) <= int(params["limit"])
            seen += [c["id"] for c in page["items"]]
            # Newer than the search: never in a later page, whatever its tier.
            latecomers.append((await create(client, name=f"{word} Latecomer"))["id"])
            cursor = page["next_cursor"]
            if not cursor:
                return seen

    assert await pages({"q": word[:5].upper(), "limit": 2}) == live
    earlier = list(reversed(latecomers))
    # The company matches exactly; the earlier latecomers' name "zq…" is within a typo of "zq…co", so they follow.
    assert await pages({"q": f"{word}co", "limit": 3, "tier": "standard"}) == live + earlier
    assert (await client.get("/v1/contacts", params={"q": "quixotic"})).json() == {"items": [], "next_cursor": None}


async def test_resolve_finds_or_creates(client: httpx.AsyncClient) -> None:
    existing = await create(client, phones=["+12025550188"], external_ids={"shop": "C-77"})
    for identity in (
        {"email": existing["emails"][0].upper()},
        {"phone": "202-555-0188"},
        {"external_id": {"source": "shop", "value": "C-77"}},
    ):
        response = await client.post("/v1/contacts/resolve", json=identity)
        assert response.status_code == 200, (identity, response.text)
        assert response.json()["id"] == existing["id"]
    handle = f"@new{uuid.uuid4().hex[:6]}"
    made = await client.post(
        "/v1/contacts/resolve",
        json={"handle": {"channel": "twitter", "value": handle}, "create": {"name": "New Person", "tier": "premium"}},
    )
    assert made.status_code == 201, made.text
    assert made.json()["handles"] == {"twitter": handle} and made.json()["tier"] == "premium"
    again = await client.post("/v1/contacts/resolve", json={"handle": {"channel": "twitter", "value": handle}})
    assert again.status_code == 200 and again.json()["id"] == made.json()["id"]
    assert (await client.post("/v1/contacts/resolve", json={})).status_code == 422
    both = {"email": "a@example.com", "phone": "+12025550100"}
    assert (await client.post("/v1/contacts/resolve", json=both)).status_code == 422


async def test_concurrent_resolves_of_one_new_identity_make_one_contact(client: httpx.AsyncClient) -> None:
    email = f"race.{uuid.uuid4().hex[:8]}@example.com"
    responses = await asyncio.gather(
        *(client.post("/v1/contacts/resolve", json={"email": email, "create": {"name": "Racer"}}) for _ in range(12))
    )
    assert all(r.status_code in (200, 201) for r in responses), [r.text for r in responses]
    assert sorted(r.status_code for r in responses).count(201) == 1
    assert len({r.json()["id"] for r in responses}) == 1
    found = (await client.get("/v1/contacts", params={"q": email})).json()["items"]
    assert len(found) == 1


async def test_merge_moves_identities_and_leaves_a_tombstone(client: httpx.AsyncClient) -> None:
    target = await create(client, tags=["vip"], attributes={"plan": "gold", "seat": 1}, consent={"sms": True})
    source = await create(
        client,
        name=None,
        phones=["+12025550199"],
        tags=["churn-risk"],
        attributes={"plan": "silver", "region": "eu"},
        consent={"sms": False, "email": True},
    )
    response = await client.post(f"/v1/contacts/{target['id']}/merge", json={"source_id": source["id"]})
    assert response.status_code == 200, response.text
    merged = response.json()
    assert set(merged["emails"]) == {*target["emails"], *source["emails"]}
    assert merged["phones"] == ["+12025550199"]
    assert merged["tags"] == ["vip", "churn-risk"]
    assert merged["attributes"] == {"plan": "gold", "seat": 1, "region": "eu"}
    assert merged["consent"] == {"sms": False, "email": True}  # an opt-out always survives a merge
    gone = await client.get(f"/v1/contacts/{source['id']}")
    assert gone.status_code == 308
    assert gone.headers["location"] == f"/v1/contacts/{target['id']}"
    assert gone.json()["merged_into"] == target["id"]
    resolved = await client.post("/v1/contacts/resolve", json={"phone": "+12025550199"})
    assert resolved.status_code == 200 and resolved.json()["id"] == target["id"]


async def test_merge_chains_and_cycles(client: httpx.AsyncClient) -> None:
    a, b, c = await create(client), await create(client), await create(client)
    assert (await client.post(f"/v1/contacts/{a['id']}/merge", json={"source_id": a["id"]})).status_code == 422
    assert (await client.post(f"/v1/contacts/{b['id']}/merge", json={"source_id": a["id"]})).status_code == 200
    assert (await client.post(f"/v1/contacts/{c['id']}/merge", json={"source_id": b["id"]})).status_code == 200
    # A was merged into B, B into C: A now points straight at C.
    assert (await client.get(f"/v1/contacts/{a['id']}")).headers["location"] == f"/v1/contacts/{c['id']}"
    # Merging C into A (which ends at C) would close a cycle.
    cycle = await client.post(f"/v1/contacts/{a['id']}/merge", json={"source_id": c["id"]})
    assert cycle.status_code == 422
    assert cycle.headers["content-type"] == PROBLEM
    again = await client.post(f"/v1/contacts/{c['id']}/merge", json={"source_id": a["id"]})
    assert again.status_code == 422
    final = (await client.get(f"/v1/contacts/{c['id']}")).json()
    assert set(final["emails"]) == {*a["emails"], *b["emails"], *c["emails"]}


async def test_erase_removes_personal_data_and_export_shows_what_is_left(client: httpx.AsyncClient) -> None:
    contact = await create(
        client, phones=["+12025550111"], handles={"twitter": "@erase_me"}, attributes={"note": "likes tea"}, owner="sam"
    )
    url = f"/v1/contacts/{contact['id']}"
    await client.patch(url, json={"stage": "customer"})
    before = (await client.get(f"{url}/export")).json()
    assert before["contact"]["emails"] == contact["emails"]
    assert {i["kind"] for i in before["identities"]} == {"email", "phone", "handle:twitter"}
    assert [e["type"] for e in before["events"]] == ["crm.contact.created.v1", "crm.contact.updated.v1"]
    assert (await client.delete(url)).status_code == 204
    erased = await client.get(url)
    assert erased.status_code == 410
    after = await client.get(f"{url}/export")
    assert after.status_code == 200
    text = after.text
    for secret in (contact["emails"][0], "+12025550111", "erase_me", "likes tea", contact["name"], "sam"):
        assert secret not in text, secret
    assert after.json()["contact"]["status"] == "erased"
    assert after.json()["identities"] == []
    # The identity is free again, and erasing twice is harmless.
    assert (await client.post("/v1/contacts", json={"emails": contact["emails"]})).status_code == 201
    assert (await client.delete(url)).status_code == 204
    assert (await client.get("/v1/contacts", params={"q": "+12025550111"})).json()["items"] == []


async def test_erase_covers_every_contact_merged_into_it(client: httpx.AsyncClient) -> None:
    """Issue 18.2: a duplicate merged into the erased contact (and one merged into that duplicate before) was
    the same person: its row, identities, search terms, export and outbox events lose their personal data too."""
    target = await create(client, name="Zelda Quist", phones=["+12025550171"], company="Quistco")
    duplicate = await create(client, name="Zed Dupe", phones=["+12025550172"], company="Dupeco",
                             handles={"twitter": "@zed_dupe"}, attributes={"note": "dupe notes"})  # fmt: skip
    older = await create(client, name="Zee Older", phones=["+12025550173"], company="Olderco")
    assert (
        await client.post(f"/v1/contacts/{duplicate['id']}/merge", json={"source_id": older["id"]})
    ).status_code == 200
    assert (
        await client.post(f"/v1/contacts/{target['id']}/merge", json={"source_id": duplicate["id"]})
    ).status_code == 200
    assert (await client.delete(f"/v1/contacts/{target['id']}")).status_code == 204
    personal = [
        *(c[field] for c in (target, duplicate, older) for field in ("name", "company")),
        *(c["emails"][0] for c in (target, duplicate, older)),
        "+12025550171", "+12025550172", "+12025550173", "12025550172", "zed_dupe", "dupe notes",
    ]  # fmt: skip
    for contact in (target, duplicate, older):
        export = await client.get(f"/v1/contacts/{contact['id']}/export")
        assert export.status_code == 200
        leaks = [p for p in personal if p.lower() in export.text.lower()]
        assert not leaks, (contact["id"], leaks)
        assert export.json()["identities"] == []
        assert all(e["data"].get("redacted") for e in export.json()["events"] if e["type"] != "crm.contact.erased.v1")
    # The merged-away ids still lead to the erased contact, which is gone.
    moved = await client.get(f"/v1/contacts/{older['id']}")
    assert moved.status_code == 308 and moved.headers["location"] == f"/v1/contacts/{target['id']}"
    assert (await client.get(moved.headers["location"])).status_code == 410
    for term in ("Dupe", "+12025550173", duplicate["emails"][0]):
        assert (await client.get("/v1/contacts", params={"q": term})).json()["items"] == []
    erased_event = (await client.get(f"/v1/contacts/{target['id']}/export")).json()["events"][-1]
    assert erased_event["type"] == "crm.contact.erased.v1"
    assert set(erased_event["data"]["merged_ids"]) == {duplicate["id"], older["id"]}


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/contacts", content=b'{"name": "' + b"x" * 70_000 + b'"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM


async def test_garbage_bodies_are_4xx(client: httpx.AsyncClient) -> None:
    for content in (b"{not json", b"\xff\xfe\x00", b"[]", b"null", b'"string"'):
        response = await client.post("/v1/contacts", content=content, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, (content, response.text)
        assert response.headers["content-type"] == PROBLEM


async def test_health_readiness_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "nats": "ok"}
    await client.get(f"/v1/contacts/{uuid.uuid4()}")
    # Counted in the process's registry, which the metrics listener serves; the API port has no /metrics.
    metrics = generate_latest().decode()
    assert (await client.get("/metrics")).status_code == 404
    assert 'http_requests_total{method="GET",route="/v1/contacts/{contact_id}",status="404"}' in metrics


async def test_chunked_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    async def chunks():  # no Content-Length: counted as it streams
        yield b'{"name": "'
        for _ in range(10):
            yield b"x" * 10_000
        yield b'"}'

    response = await client.post("/v1/contacts", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM


def test_next_prefix_stays_in_storable_unicode() -> None:
    from services.contacts.search import _next_prefix

    assert _next_prefix("ada") == "adb"
    assert _next_prefix("a\U0010ffff") == "b"
    assert _next_prefix("\ud7ff") == "\ue000"
    assert _next_prefix("\U0010ffff") is None


async def test_nul_characters_are_refused_not_a_crash(client: httpx.AsyncClient) -> None:
    # PostgreSQL text cannot hold U+0000: it is refused at the door, on both databases alike.
    response = await client.post("/v1/contacts", json={"name": "Nul\x00Name"})
    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    assert (await client.get("/v1/contacts", params={"q": "a\x00"})).status_code == 422
    for q in ("\U0010ffff", "a\U0010ffff", "😀", "İ"):
        assert (await client.get("/v1/contacts", params={"q": q})).status_code == 200, q


async def test_limits_hold_for_the_text_as_sent(client: httpx.AsyncClient) -> None:
    # pydantic's strip_whitespace trimmed before it checked the length: padded text over the stated
    # maxLength was taken, and Schemathesis counts that as invalid data accepted.
    padded = await client.post("/v1/contacts", json=contact_factory(name=" " * 5 + "x" * 200))
    assert padded.status_code == 422 and padded.headers["content-type"] == PROBLEM
    blank = await client.post("/v1/contacts", json=contact_factory(name="   "))
    assert blank.status_code == 422 and "white space" in blank.text
    made = await create(client, name=" " * 5 + "x" * 195, tags=["  VIP "])
    assert made["name"] == "x" * 195 and made["tags"] == ["vip"]


async def test_resolve_many_answers_each_item_as_resolve_does(client: httpx.AsyncClient, staff_change) -> None:
    existing = await create(client, phones=["+12025550177"], external_ids={"shop": "C-78"})
    await staff_change("grace")
    await staff_change("gone", active=False)
    new_email = f"new.{uuid.uuid4().hex[:8]}@example.com"
    items = [
        {"email": existing["emails"][0].upper()},  # found, whatever the case
        {"phone": "202-555-0177"},  # found, after the same normalisation
        {"email": new_email, "create": {"name": "New Person", "owner": "grace"}},  # created
        {"email": new_email.upper()},  # the same identity again: the contact just made
        {"email": "not-an-email"},  # invalid: its own 422
        {"email": "a@example.com", "phone": "+12025550100"},  # two identities: 422
        {"external_id": {"source": "shop", "value": f"X-{uuid.uuid4().hex[:6]}"}, "create": {"owner": "gone"}},
        {"handle": {"channel": "sms", "value": "x"}, "create": {"emails": existing["emails"]}},  # 409: taken
    ]
    response = await client.post("/v1/contacts/resolve-many", json={"items": items})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    assert [r["status"] for r in results] == [200, 200, 201, 200, 422, 422, 422, 409]
    assert results[0]["id"] == results[1]["id"] == existing["id"]
    assert results[2]["id"] == results[3]["id"] != existing["id"]
    assert results[6]["problem"]["field"] == "create.owner" and "disabled" in results[6]["problem"]["detail"]
    assert results[7]["problem"]["contact_id"] == existing["id"]
    assert set(results[0]) == {"index", "status", "id"}  # ids only: no profile goes back
    made = (await client.get(f"/v1/contacts/{results[2]['id']}")).json()
    assert made["emails"] == [new_email] and made["owner"] == "grace"
    # Nothing of the refused items was stored (each new contact is made in its own savepoint).
    unused = await client.post("/v1/contacts/resolve", json={"handle": {"channel": "sms", "value": "x"}})
    assert unused.status_code == 201


async def test_resolve_many_is_bounded(client: httpx.AsyncClient) -> None:
    from services.contacts.schemas import MAX_RESOLVE_MANY

    too_many = {"items": [{"email": f"n{i}@example.com"} for i in range(MAX_RESOLVE_MANY + 1)]}
    response = await client.post("/v1/contacts/resolve-many", json=too_many)
    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    assert (await client.post("/v1/contacts/resolve-many", json={"items": []})).status_code == 422
    assert (await client.post("/v1/contacts/resolve-many", json={"items": ["x"]})).status_code == 422
