"""Hostile input through the gateway's /api/v1 with real keys, on the real stack (nats-server, the services and the
gateway as processes): every answer is a deliberate 2xx or a 4xx problem, never a 5xx; SQL and HTML are stored as
data, returned unchanged, and escaped in the console's pages; nothing already stored is lost."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from servicekit.devstack import Stack
from servicekit.testing.plugin import eventually
from tests.test_security_gateway import gateway_stack

pytestmark = pytest.mark.stack

PROBLEM = "application/problem+json"
JSON = {"content-type": "application/json"}
SQL = "Robert'); DROP TABLE contacts;-- \" OR 1=1 --"
HTML = "<script>alert('x')</script><img src=x onerror=alert(1)>&amp;"
EDGES = ("0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-12:00", "9999-12-31T23:59:59Z")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # Hundreds of probes from one key: the rate limit is not what is tested here.
    limits = {"GATEWAY_RATE_LIMIT_PER_MINUTE": "1000000", "GATEWAY_RATE_LIMIT_BURST": "100000"}
    yield from gateway_stack("touchpoint-hostile-", limits)


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.services["gateway"].url + "/api/v1", timeout=60) as client:
        yield client


@pytest.fixture
async def keys(http: httpx.AsyncClient, stack: Stack) -> dict[str, dict[str, str]]:
    admin = {"Authorization": f"Bearer {stack.env['TOUCHPOINT_ADMIN_KEY']}"}
    found = {"admin": admin}
    for role in ("agent", "ingest"):
        made = await http.post("/api-keys", json={"name": f"hostile-{role}", "role": role}, headers=admin)
        assert made.status_code == 201, made.text
        found[role] = {"Authorization": f"Bearer {made.json()['key']}"}
    return found


def assert_problem(response: httpx.Response, *statuses: int) -> None:
    assert response.status_code in statuses, (str(response.request.url)[:200], response.status_code,
                                              response.text[:400])  # fmt: skip
    assert response.headers["content-type"] == PROBLEM, response.headers
    assert response.json()["status"] == response.status_code


def answered(response: httpx.Response, *ok: int) -> bool:
    """A deliberate answer: one of ``ok``, or a 4xx problem (never a 5xx). True when it was one of ``ok``."""
    if response.status_code in ok:
        return True
    assert_problem(response, 400, 404, 409, 410, 413, 415, 422)
    return False


async def new_contact(http: httpx.AsyncClient, agent: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"name": "Hostile Probe", "emails": [f"probe.{uuid.uuid4().hex[:10]}@example.com"], **fields}
    made = await http.post("/contacts", json=body, headers=agent)
    assert made.status_code == 201, made.text
    return dict(made.json())


def touchpoint(contact_id: str, **fields: Any) -> dict[str, Any]:
    at = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    return {"contact_id": contact_id, "channel": "email", "direction": "inbound", "type": "inquiry",
            "occurred_at": at, "subject": "Where is my order?", "body": "Nothing yet.", **fields}  # fmt: skip


async def timeline_items(http: httpx.AsyncClient, agent: dict[str, str], contact_id: str) -> list[dict[str, Any]]:
    """The contact's touchpoints and follow-ups on the timeline (not its own change events)."""
    params: dict[str, str | int] = {"limit": 100, "kinds": "interaction,followup"}
    page = await http.get(f"/contacts/{contact_id}/timeline", params=params, headers=agent)
    assert page.status_code == 200, page.text[:300]
    return list(page.json()["items"])


async def test_huge_deep_and_broken_bodies_are_problems(http: httpx.AsyncClient, keys: dict[str, dict[str, str]],
                                                        stack: Stack) -> None:  # fmt: skip
    agent, ingest = keys["agent"], keys["ingest"]
    limit = int(stack.env.get("GATEWAY_MAX_BODY_BYTES", 1_048_576))
    keep = await new_contact(http, agent)
    big = json.dumps({"name": "Big", "attributes": {"blob": "y" * (limit + 1)}}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 65_536):
            yield big[start : start + 65_536]

    writes = [("POST", "/contacts", agent), ("POST", "/contacts/resolve", ingest), ("POST", "/interactions", ingest),
              ("POST", "/interactions/batch", ingest), ("POST", "/followups", agent),
              ("POST", "/policies", keys["admin"]), ("PATCH", f"/contacts/{keep['id']}", agent)]  # fmt: skip
    deep = '{"a":' * 5000 + "1" + "}" * 5000
    for method, path, who in writes:
        for body in (big, chunks()):
            # Over the limit, declared or counted as it arrives: the rest is read and dropped (up to 4 times the
            # limit), so a client that sends all before it reads gets the 413, not a reset.
            assert_problem(await http.request(method, path, content=body, headers={**who, **JSON}), 413)
        assert_problem(await http.request(method, path, content=deep, headers={**who, **JSON}), 400, 413, 422)
        arrays = "[" * 20_000 + "]" * 20_000
        assert_problem(await http.request(method, path, content=arrays, headers={**who, **JSON}), 400, 422)
        for raw in (b'{"name": "\xff\xfe\xfa"}', b"\xc3\x28", b"", b"null", b'{"name": '):
            assert_problem(await http.request(method, path, content=raw, headers={**who, **JSON}), 400, 422)
    tags = [f"tag-{n}" for n in range(10_000)]
    assert_problem(await http.post("/contacts", json={"name": "Tagged", "tags": tags}, headers=agent), 413, 422)
    assert_problem(await http.patch(f"/contacts/{keep['id']}", json={"tags": tags}, headers=agent), 413, 422)
    attributes = {"tags": tags}
    assert_problem(await http.post("/interactions", json=touchpoint(keep["id"], attributes=attributes),
                                   headers=ingest), 413, 422)  # fmt: skip
    # A batch of 1,001: refused whole, nothing of it stored; 1,000 are taken.
    items = [touchpoint(keep["id"], body="b", source="hostile", external_id=f"b{n}") for n in range(1001)]
    assert_problem(await http.post("/interactions/batch", json={"items": items}, headers=ingest), 413, 422)
    assert await timeline_items(http, agent, keep["id"]) == []
    taken = await http.post("/interactions/batch", json={"items": items[:1000]}, headers=ingest)
    assert taken.status_code == 200, taken.text[:300]
    assert {r["status"] for r in taken.json()["results"]} == {201}
    read = await http.get(f"/contacts/{keep['id']}", headers=agent)
    assert read.status_code == 200 and read.json()["tags"] == [] and read.json()["name"] == "Hostile Probe"


async def test_sql_html_and_nul_are_data_and_escaped_in_the_console(
    http: httpx.AsyncClient, keys: dict[str, dict[str, str]], stack: Stack
) -> None:
    agent, ingest = keys["agent"], keys["ingest"]
    contact = await new_contact(http, agent, name=f"{HTML} {SQL}", company=HTML, tags=[HTML[:64]],
                                attributes={"note": HTML, SQL: SQL})  # fmt: skip
    # An owner or an assignee is a staff handle and a team a known team: anything else is refused, by name.
    owned = await http.post("/contacts", json={"name": "Probe", "owner": SQL}, headers=agent)
    assert_problem(owned, 422)
    assert owned.json()["field"] == "owner"
    assert (await http.get(f"/contacts/{contact['id']}", headers=agent)).json()["company"] == HTML
    fields = {"subject": HTML, "body": f"{SQL}\n{HTML}", "agent": SQL, "team": HTML[:100], "source": "shop",
              "external_id": SQL,
              "outcome": HTML[:100], "attributes": {"note": HTML}}  # fmt: skip
    logged = await http.post("/interactions", json=touchpoint(contact["id"], **fields), headers=ingest)
    assert logged.status_code == 201, logged.text
    stored = (await http.get(f"/interactions/{logged.json()['id']}", headers=agent)).json()
    assert {name: stored[name] for name in fields} == fields
    due = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    for name, value in (("assignee", SQL), ("team", HTML[:200])):
        refused = await http.post("/followups", json={"contact_id": contact["id"], "reason": HTML, name: value,
                                                      "due_at": due}, headers=agent)  # fmt: skip
        assert_problem(refused, 422)
        assert refused.json()["field"] == name
    followup = await http.post("/followups", json={"contact_id": contact["id"], "reason": HTML, "due_at": due},
                               headers=agent)  # fmt: skip
    assert followup.status_code == 201, followup.text
    assert (await http.get(f"/followups/{followup.json()['id']}", headers=agent)).json()["reason"] == HTML

    async def shown_as_sent() -> bool:  # the touchpoint reaches the timeline from its event, within a moment
        return any(i.get("subject") == HTML for i in await timeline_items(http, agent, contact["id"]))

    await eventually(shown_as_sent)
    found = await http.get("/contacts", params={"q": "Robert');"}, headers=agent)
    assert found.status_code == 200 and contact["id"] in [c["id"] for c in found.json()["items"]]
    # U+0000 anywhere: one clear 422, on every service behind the gateway.
    for method, path, body, who in (
        ("POST", "/contacts", {"name": "a\x00b"}, agent),
        ("POST", "/interactions", touchpoint(contact["id"], subject="\x00"), ingest),
        ("POST", "/followups", {"contact_id": contact["id"], "reason": "\x00", "due_at": due}, agent),
        ("PATCH", f"/contacts/{contact['id']}", {"company": "\x00"}, agent),
    ):
        assert_problem(await http.request(method, path, json=body, headers=who), 422)
        # An unpaired surrogate escape in the same place (once a 500, or a dropped connection, when it reached
        # httpx or the event serialiser in a free-form field).
        lone = json.dumps(body).replace("\\u0000", "\\ud800").encode()
        assert b"\\ud800" in lone
        assert_problem(await http.request(method, path, content=lone, headers={**who, **JSON}), 422)
    for attributes in ('{"a\\ud800b": 1}', '{"k": "\\udfff"}'):
        raw = json.dumps(touchpoint(contact["id"]))[:-1] + f', "attributes": {attributes}}}'
        assert_problem(await http.post("/interactions", content=raw, headers={**ingest, **JSON}), 422)
        raw = f'{{"name": "Lone", "attributes": {attributes}}}'
        assert_problem(await http.post("/contacts", content=raw, headers={**agent, **JSON}), 422)
    for path, params in (("/contacts", {"q": "a\x00"}), ("/followups", {"assignee": "\x00"}),
                         ("/interactions", {"contact_id": contact["id"], "channel": "\x00"}),
                         (f"/contacts/{contact['id']}/timeline", {"channel": "\x00"})):  # fmt: skip
        answered(await http.get(path, params=params, headers=agent), 200)
    assert (await http.get(f"/contacts/{contact['id']}", headers=agent)).json()["company"] == HTML

    # The console shows it all as text: the staff member's browser never meets a live tag.
    email, password = f"html.{uuid.uuid4().hex[:8]}@example.com", "correct horse battery staple"
    made = await http.post("/users", json={"email": email, "password": password, "role": "agent"},
                           headers=keys["admin"])  # fmt: skip
    assert made.status_code == 201, made.text
    login = await http.post("/auth/login", json={"email": email, "password": password})
    assert login.status_code == 200, login.text
    base = stack.services["gateway"].url
    async with httpx.AsyncClient(base_url=base, timeout=60, cookies={"tp_session": login.cookies["tp_session"]}) as web:
        message = f"/customers/{contact['id']}/touchpoints/{logged.json()['id']}"
        pages = [f"/customers/{contact['id']}", f"/customers/{contact['id']}/timeline", message, message + "/message",
                 "/search?q=" + "Robert", "/queue?" + urlencode({"view": "team", "team": HTML})]  # fmt: skip
        for path in pages:
            page = await web.get(path)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), (
                path,
                page.text[:300],
            )
            html = page.text
            assert "<script>alert" not in html and "onerror=alert(1)>" not in html, path
            assert "<img src=x" not in html, path
        customer = (await web.get(f"/customers/{contact['id']}")).text
        assert "&lt;script&gt;alert(" in customer
        assert "Robert&#39;); DROP TABLE contacts;--" in customer or "Robert&#x27;); DROP TABLE" in customer
        # The touchpoint's own page has the body, as text with its line break.
        read = (await web.get(message)).text
        assert "Robert&#39;); DROP TABLE contacts;-- &#34; OR 1=1 --\n&lt;script&gt;alert(&#39;x&#39;)" in read
        queue = (await web.get("/queue", params={"view": "team", "team": HTML})).text
        assert "&lt;script&gt;alert(" in queue
        # What the staff member typed comes back escaped too (no reflected script), and nonsense in a page's
        # query is a page that says so, never a 5xx.
        reflected = await web.get("/search", params={"q": HTML[:200]})
        assert reflected.status_code == 200 and "<script>alert" not in reflected.text
        assert "&lt;script&gt;alert(" in reflected.text
        customer = f"/customers/{contact['id']}"
        for path, params in ((customer, {"cursor": "A" * 1024}), (customer, {"cursor": "\x00"}),
                             (customer, {"since": "0001-01-01", "until": "9999-12-31"}), (customer, {"since": "x"}),
                             (f"{customer}/timeline", {"cursor": "forged"}), (customer, {"channel": HTML[:20]}),
                             ("/queue", {"view": HTML[:10], "team": "\x00"}), ("/search", {"q": "\x00"}),
                             ("/dashboard", {"since": "9999-99-99"}), ("/dashboard", {"until": "9999-12-31"}),
                             ("/dashboard", {"since": "0001-01-01", "until": "0001-01-02"}),
                             ("/dashboard", {"team": HTML[:200], "agent": HTML[:200], "channel": HTML[:20]}),
                             ("/login", {"next": "javascript:alert(1)"})):  # fmt: skip
            page = await web.get(path, params=params)
            assert page.status_code < 500, (path, params, page.status_code, page.text[:300])
            assert "<script>alert" not in page.text and "javascript:alert" not in page.text, (path, params)


async def test_dates_zones_and_limits_at_the_edges(http: httpx.AsyncClient, keys: dict[str, dict[str, str]]) -> None:
    agent, ingest = keys["agent"], keys["ingest"]
    contact = await new_contact(http, agent)
    for zone in ("Pacific/Kiritimati", "Etc/GMT+12", "America/St_Johns", "Asia/Kathmandu"):
        made = await http.patch(f"/contacts/{contact['id']}", json={"timezone": zone}, headers=agent)
        assert made.status_code == 200 and made.json()["timezone"] == zone, made.text
    for zone in ("Mars/Olympus", "+14:00", "../../etc/passwd", "", "Europe/Paris\x00"):
        assert_problem(await http.patch(f"/contacts/{contact['id']}", json={"timezone": zone}, headers=agent), 422)
    for at in ("2026-03-29T02:30:00+01:00", "2026-03-08T02:30:00-05:00", "2024-02-29T23:59:59.999999+14:00",
               "2024-02-29T00:00:00-12:00", *EDGES, "2026-01-05T08:00:00", "2026-02-30T00:00:00Z"):  # fmt: skip
        answered(await http.post("/interactions", json=touchpoint(contact["id"], occurred_at=at), headers=ingest), 201)
        body = {"contact_id": contact["id"], "reason": "Edge", "due_at": at}
        answered(await http.post("/followups", json=body, headers=agent), 201)
    for since, until in ((EDGES[0], EDGES[2]), (EDGES[2], EDGES[0]), (EDGES[1], EDGES[3]), ("x", "y")):
        for path in (f"/contacts/{contact['id']}/timeline", "/interactions", "/audit", "/followups/stats",
                     "/interactions/stats"):  # fmt: skip
            who = keys["admin"] if path == "/audit" else agent
            params = {"since": since, "until": until, "contact_id": contact["id"]}
            answered(await http.get(path, params=params, headers=who), 200)
    for at in EDGES:
        made = await http.post(
            "/api-keys", json={"name": "edge", "role": "agent", "expires_at": at}, headers=keys["admin"]
        )
        answered(made, 201)
    for limit in ("0", "-1", "100000", "x", "1e3"):
        for path in ("/contacts", "/followups", f"/contacts/{contact['id']}/timeline", "/audit"):
            who = keys["admin"] if path == "/audit" else agent
            answered(await http.get(path, params={"limit": limit}, headers=who), 200)
    assert (await http.get(f"/contacts/{contact['id']}/timeline", headers=agent)).status_code == 200


def _b64(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _tampered(cursor: str) -> list[str]:
    flipped = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    return [flipped, cursor + "x", cursor[::-1], cursor[: len(cursor) // 2], "%%%", "A" * 1024, "\x00", ".", "..",
            _b64([1, EDGES[0], str(uuid.uuid4())]), _b64({"at": EDGES[2], "id": 5}), _b64(None), "null"]  # fmt: skip


async def test_tampered_cursors_on_every_list_are_problems(
    http: httpx.AsyncClient, keys: dict[str, dict[str, str]], stack: Stack
) -> None:
    agent, ingest, admin = keys["agent"], keys["ingest"], keys["admin"]
    contact = await new_contact(http, agent, tags=["paged-hostile"])
    other = await new_contact(http, agent)
    for n in range(3):
        await new_contact(http, agent, tags=["paged-hostile"])
        at = f"2026-01-0{n + 1}T08:00:00Z"
        logged = await http.post("/interactions", json=touchpoint(contact["id"], occurred_at=at), headers=ingest)
        assert logged.status_code == 201, logged.text
        due = f"2026-0{n + 2}-01T09:00:00Z"
        assert (await http.post("/followups", json={"contact_id": contact["id"], "reason": "Page", "due_at": due},
                                headers=agent)).status_code == 201  # fmt: skip
    lists = [("/contacts", {"tag": "paged-hostile"}, agent), ("/interactions", {"contact_id": contact["id"]}, agent),
             ("/followups", {}, agent), ("/audit", {}, admin),
             (f"/contacts/{contact['id']}/timeline", {}, agent)]  # fmt: skip
    for path, params, who in lists:
        first = await http.get(path, params={**params, "limit": 1}, headers=who)
        assert first.status_code == 200, (path, first.text[:300])
        cursor = first.json()["next_cursor"]
        assert cursor, path
        for bad in _tampered(cursor):
            answered(await http.get(path, params={**params, "limit": 1, "cursor": bad}, headers=who), 200)
    # The timeline's cursor is signed and bound to its contact and filters: any change is a 400, never a position.
    timeline = f"/contacts/{contact['id']}/timeline"
    cursor = (await http.get(timeline, params={"limit": 1}, headers=agent)).json()["next_cursor"]
    for bad in _tampered(cursor):
        assert_problem(await http.get(timeline, params={"limit": 1, "cursor": bad}, headers=agent), 400, 422)
    assert_problem(await http.get(f"/contacts/{other['id']}/timeline", params={"cursor": cursor}, headers=agent), 400)
    assert_problem(await http.get(timeline, params={"cursor": cursor, "channel": "email"}, headers=agent), 400)
    for before in ("garbage", "|", f"{EDGES[0]}|{uuid.uuid4()}", f"{EDGES[2]}|{uuid.uuid4()}", "\x00|\x00"):
        answered(
            await http.get("/interactions", params={"contact_id": contact["id"], "before": before}, headers=agent), 200
        )
    # A stream resumed from a tampered Last-Event-ID starts from now: it answers, it does not crash.
    for bad in _tampered(cursor)[:4]:
        async with http.stream("GET", f"{timeline}/stream", headers={**agent, "Last-Event-ID": bad}) as stream:
            assert stream.status_code == 200
            async for line in stream.aiter_lines():
                if line.startswith("event: ready"):
                    break

    async def all_there() -> bool:  # the touchpoints reach the timeline from their events, within a moment
        items = await timeline_items(http, agent, contact["id"])
        return len([i for i in items if i["kind"] == "interaction"]) == 3 and len(items) >= 6

    await eventually(all_there)


async def test_idempotency_key_and_headers_of_10_kb(http: httpx.AsyncClient, keys: dict[str, dict[str, str]]) -> None:
    agent, ingest = keys["agent"], keys["ingest"]
    contact = await new_contact(http, agent)
    huge = {**ingest, "Idempotency-Key": "k" * 10_240}
    assert_problem(await http.post("/interactions", json=touchpoint(contact["id"]), headers=huge), 400, 422)
    assert_problem(await http.post("/interactions/batch", json={"items": [touchpoint(contact["id"])]}, headers=huge),
                   400, 422)  # fmt: skip
    assert await timeline_items(http, agent, contact["id"]) == []
    key = {**ingest, "Idempotency-Key": "k" * 255}
    first = await http.post("/interactions", json=touchpoint(contact["id"]), headers=key)
    again = await http.post("/interactions", json=touchpoint(contact["id"]), headers=key)
    assert first.status_code == 201, first.text
    assert again.status_code in (200, 201, 422), again.text  # a replay, or the same key with another body
    answered(await http.get("/contacts", headers={**agent, "X-Request-ID": "r" * 10_240}), 200)
    answered(await http.patch(f"/contacts/{contact['id']}", json={"company": "X"},
                              headers={**agent, "If-Match": "x" * 10_240}), 200, 412)  # fmt: skip


async def test_regressions_times_utc_cannot_hold_were_500s(
    http: httpx.AsyncClient, keys: dict[str, dict[str, str]]
) -> None:
    """Each of these once answered 500 (OverflowError converting to UTC in the gateway)."""
    contact = await new_contact(http, keys["agent"])
    for edge in (EDGES[0], EDGES[2]):
        for name in ("since", "until"):
            response = await http.get(f"/contacts/{contact['id']}/timeline", params={name: edge}, headers=keys["agent"])
            assert_problem(response, 422)
        assert_problem(await http.get("/audit", params={"since": edge}, headers=keys["admin"]), 422)
        key = {"name": "edge", "role": "agent", "expires_at": edge}
        assert_problem(await http.post("/api-keys", json=key, headers=keys["admin"]), 422)
        due = {"contact_id": contact["id"], "reason": "Edge", "due_at": edge}
        assert_problem(await http.post("/followups", json=due, headers=keys["agent"]), 422)


async def test_no_process_answered_a_5xx_to_any_of_these_probes(stack: Stack) -> None:
    """Runs last in this module: every request line every process logged during the probes above has a status
    below 500 (a 5xx the gateway turned into a problem would otherwise go unseen)."""
    logged = 0
    crashes = []
    for name, service in stack.services.items():
        for line in service.log_path.read_text(errors="replace").splitlines():
            if '"event": "request"' not in line:
                continue
            logged += 1
            if json.loads(line).get("status", 0) >= 500:
                crashes.append(f"{name}: {line[:300]}")
    assert logged > 20, logged  # the probes were logged, so an empty search is not mistaken for no 5xx
    assert not crashes, "\n".join(crashes)
