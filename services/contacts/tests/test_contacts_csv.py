"""CSV import and export of the contacts service, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import tracemalloc
from collections.abc import AsyncIterator

import httpx
import pytest

from servicekit.clock import MovableClock
from servicekit.csvio import neutralise, records, restore
from servicekit.testing.apps import running_app
from services.contacts.app import create_app
from services.contacts.settings import ContactsSettings
from services.contacts.tests.conftest import contact_factory

CSV = {"Content-Type": "text/csv"}


async def create(client: httpx.AsyncClient, **overrides: object) -> dict:
    response = await client.post("/v1/contacts", json=contact_factory(**overrides))
    assert response.status_code == 201, response.text
    return response.json()


async def export(client: httpx.AsyncClient, **params: str) -> list[dict[str, str]]:
    response = await client.get("/v1/contacts/export.csv", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    return list(csv.DictReader(io.StringIO(response.text, newline="")))


async def import_csv(client: httpx.AsyncClient, text: str, *, dry_run: bool = False) -> dict:
    params = {"dry_run": "true"} if dry_run else {}
    response = await client.post("/v1/contacts/import", content=text.encode(), headers=CSV, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def count(client: httpx.AsyncClient) -> int:
    response = await client.get("/v1/contacts", params={"limit": 200})
    return len(response.json()["items"])


def test_neutralise_prefixes_formula_starts_and_restore_takes_it_off() -> None:
    for dangerous in ("=1+1", "+33612345678", "-2", "@SUM(A1)", "\tx", "\rx"):
        assert neutralise(dangerous) == "'" + dangerous
        assert restore(neutralise(dangerous)) == dangerous
    assert neutralise("Ada") == "Ada" and restore("'quoted") == "'quoted"


async def test_export_then_import_is_unchanged(client: httpx.AsyncClient) -> None:
    await create(
        client,
        name='=HYPERLINK("http://evil","x")',
        company='Quotes "and", commas',
        phones=["+44 20 7946 0958"],
        handles={"whatsapp": "+447700900123", "twitter": "@ada"},
        external_ids={"shop": "C-1"},
        consent={"email": True, "sms": False},
        attributes={"plan": "gold", "seats": 3},
        language="fr-CA",
        timezone="Europe/Paris",
        tags=["vip", "béta"],
        stage="customer",
        owner="grace",
    )
    await create(client, name="Line\nbreak", emails=[], phones=["+12025550143"])
    await create(client, name="No identity at all", emails=[])
    rows = await export(client)
    assert len(rows) == 3
    text = (await client.get("/v1/contacts/export.csv")).text
    report = await import_csv(client, text)
    assert report == {
        "created": 0, "updated": 0, "unchanged": 3, "errors": [], "error_count": 0, "rows": 3, "complete": True,
        "dry_run": False,
    }  # fmt: skip
    assert await count(client) == 3


async def test_export_neutralises_formulas_and_quotes(client: httpx.AsyncClient) -> None:
    ada = await create(client, name="=cmd|' /C calc'!A0", company="-10+20", phones=["+442079460958"])
    raw = (await client.get("/v1/contacts/export.csv")).text
    assert raw.startswith("id,name,company,emails,phones,")
    assert "\r\n" in raw  # RFC 4180 line ends
    (row,) = await export(client)
    assert row["id"] == ada["id"]
    assert row["name"] == "'=cmd|' /C calc'!A0"
    assert row["company"] == "'-10+20"
    assert row["phones"] == "'+442079460958"


async def test_import_creates_updates_and_matches_by_identity(client: httpx.AsyncClient) -> None:
    ada = await create(client, emails=["ada@example.com"], company="Old Co", tags=["a"])
    text = (
        "Email,Company,tags,phone,handle.twitter,external_id.crm,consent.sms\n"
        "ADA@example.com,New Co,b;c,,,,\n"  # matches Ada by email
        "grace@example.com,Navy,,(202) 555-0143,@Grace,G-1,yes\n"  # new
        ",,,,@GRACE,,\n"  # the same Grace through her handle (any case), nothing else
    )
    report = await import_csv(client, text)
    # The third row's handle matches Grace's whatever its case, and its spelling becomes hers: an update.
    assert (report["created"], report["updated"], report["unchanged"], report["errors"]) == (1, 2, 0, [])
    updated = (await client.get(f"/v1/contacts/{ada['id']}")).json()
    assert updated["company"] == "New Co" and updated["tags"] == ["b", "c"]
    assert updated["emails"] == ["ada@example.com"] and updated["version"] == 2
    grace = (await client.post("/v1/contacts/resolve", json={"external_id": {"source": "crm", "value": "G-1"}})).json()
    assert grace["phones"] == ["+12025550143"] and grace["consent"] == {"sms": True}
    assert grace["handles"] == {"twitter": "@GRACE"}
    again = await import_csv(client, text)
    # Ada is as the file says; Grace is spelt @Grace by row 3, then @GRACE by row 4 again.
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 2, 1)


async def test_bad_rows_are_reported_with_line_and_column_and_the_rest_imported(client: httpx.AsyncClient) -> None:
    await create(client, emails=["taken.a@example.com"])
    await create(client, emails=["taken.b@example.com"])
    text = (
        "name,email,phone,tier,company\n"
        "Good One,good1@example.com,,,\n"  # line 2
        "Bad Email,not-an-email,,,\n"  # line 3
        "Bad Phone,bad.phone@example.com,12345,,\n"  # line 4
        "Bad Tier,bad.tier@example.com,,gold,\n"  # line 5
        '"Too ' + "long" * 60 + '",too.long@example.com,,,\n'  # line 6
        "Two People,taken.a@example.com;taken.b@example.com,,,\n"  # line 7
        '"Multi\nline",good2@example.com,,premium,"A, Inc."\n'  # lines 8-9
        "Too,many,cells,in,this,row\n"  # line 10
        "Good Two,good3@example.com,,,\n"  # line 11
    )
    report = await import_csv(client, text)
    assert report["created"] == 3 and report["rows"] == 9 and report["error_count"] == 6
    by_line = {e["row"]: e for e in report["errors"]}
    assert sorted(by_line) == [3, 4, 5, 6, 7, 10]
    assert by_line[3]["field"] == "email" and "email" in by_line[3]["message"]
    assert by_line[4]["field"] == "phone" and "phone number" in by_line[4]["message"]
    assert by_line[5]["field"] == "tier" and "premium" in by_line[5]["message"]
    assert by_line[6]["field"] == "name" and "200" in by_line[6]["message"]
    assert by_line[7]["field"] is None and "merge them first" in by_line[7]["message"]
    assert by_line[10]["field"] is None
    # A row matching a contact is checked as the whole contact it would make: a channel name that is not one.
    bad_key = await import_csv(client, "email,handle.Not A Channel\ngood3@example.com,@x\n")
    assert [(e["row"], e["field"]) for e in bad_key["errors"]] == [(2, "handle.Not A Channel")]
    multi = (await client.post("/v1/contacts/resolve", json={"email": "good2@example.com"})).json()
    assert multi["name"] == "Multi\nline" and multi["company"] == "A, Inc." and multi["tier"] == "premium"


async def test_dry_run_reports_and_writes_nothing(client: httpx.AsyncClient, js: object) -> None:
    ada = await create(client, emails=["ada@example.com"], company="Old Co")
    text = "email,company\nada@example.com,New Co\nnew@example.com,Fresh\nbroken,x\n"
    report = await import_csv(client, text, dry_run=True)
    assert (report["created"], report["updated"], report["error_count"], report["dry_run"]) == (1, 1, 1, True)
    assert await count(client) == 1
    assert (await client.get(f"/v1/contacts/{ada['id']}")).json()["company"] == "Old Co"
    # The same file for real does what the dry run said.
    real = await import_csv(client, text)
    assert {k: real[k] for k in ("created", "updated", "error_count")} == {"created": 1, "updated": 1, "error_count": 1}


async def test_merged_export_as_survivor_and_erased_never(client: httpx.AsyncClient) -> None:
    survivor = await create(client, emails=["keep@example.com"])
    duplicate = await create(client, emails=["dupe@example.com"])
    erased = await create(client, emails=["gone@example.com"])
    merged = await client.post(f"/v1/contacts/{survivor['id']}/merge", json={"source_id": duplicate["id"]})
    assert merged.status_code == 200, merged.text
    assert (await client.delete(f"/v1/contacts/{erased['id']}")).status_code == 204
    rows = await export(client)
    assert [r["id"] for r in rows] == [survivor["id"]]
    assert rows[0]["emails"] == "keep@example.com;dupe@example.com"
    # An import naming the merged id updates its survivor; one naming the erased id is refused.
    text = f"id,company\n{duplicate['id']},Merged Co\n{erased['id']},Ghost Co\n"
    report = await import_csv(client, text)
    assert report["updated"] == 1 and [(e["row"], e["field"]) for e in report["errors"]] == [(3, "id")]
    assert (await client.get(f"/v1/contacts/{survivor['id']}")).json()["company"] == "Merged Co"


async def test_export_filters_like_the_list(client: httpx.AsyncClient) -> None:
    await create(client, tier="premium", tags=["gold"])
    await create(client, tier="standard", tags=["gold"])
    await create(client, tier="premium", tags=["tin"])
    assert len(await export(client, tier="premium")) == 2
    assert len(await export(client, tier="premium", tag="gold")) == 1
    assert len(await export(client)) == 3


async def test_refused_files_are_problems(client: httpx.AsyncClient) -> None:
    unknown = await client.post("/v1/contacts/import", content=b"name,emial\nx,y\n", headers=CSV)
    assert unknown.status_code == 422 and unknown.json()["columns"] == ["emial"]
    twice = await client.post("/v1/contacts/import", content=b"email,emails\n", headers=CSV)
    assert twice.status_code == 422
    json_body = await client.post("/v1/contacts/import", json={"name": "x"})
    assert json_body.status_code == 415 and json_body.headers["content-type"] == "application/problem+json"
    not_utf8 = await client.post("/v1/contacts/import", content="name\nCafé\n".encode("latin-1"), headers=CSV)
    assert not_utf8.status_code == 422 and "UTF-8" in not_utf8.json()["detail"]
    empty = await client.post("/v1/contacts/import", content=b"", headers=CSV)
    assert empty.status_code == 422
    assert await count(client) == 0


@pytest.fixture
async def small_limits_client(
    contacts_settings: ContactsSettings, clock: MovableClock
) -> AsyncIterator[httpx.AsyncClient]:
    settings = contacts_settings.model_copy(
        update={"import_max_rows": 3, "import_max_errors": 2, "import_max_bytes": 2_000, "import_chunk_rows": 2}
    )
    async with running_app(create_app(settings, clock=clock)) as client:
        yield client


async def test_limits_rows_errors_and_body_size(small_limits_client: httpx.AsyncClient) -> None:
    client = small_limits_client
    text = "email\n" + "".join(f"row{i}@example.com\n" for i in range(5))
    report = await import_csv(client, text)
    assert report["created"] == 3 and report["complete"] is False and report["error_count"] == 1
    assert report["errors"][0]["row"] == 5
    errors = await import_csv(client, "email\nbad1\nbad2\nbad3\n")
    assert errors["error_count"] == 3 and len(errors["errors"]) == 2
    big = await client.post("/v1/contacts/import", content=b"name\n" + b"x\n" * 1_500, headers=CSV)
    assert big.status_code == 413
    # The import's limit is its own: the other routes keep the service's (65536 in these tests).
    assert (await client.post("/v1/contacts", json={"name": "x" * 70_000})).status_code == 413


async def _streamed(rows: int, start: int, per_chunk: int = 100) -> AsyncIterator[bytes]:
    yield b"name,email,company,tags\n"
    for first in range(start, start + rows, per_chunk):
        yield "".join(
            f'Person {i},person{i}@example.com,"Company, {i % 97}",t{i % 5};x\n'
            for i in range(first, min(first + per_chunk, start + rows))
        ).encode()


async def _parsing_peak(rows: int) -> int:
    tracemalloc.start()
    try:
        seen = 0
        async for batch in records(_streamed(rows, 0, per_chunk=1_000), batch_chars=65_536):
            seen += len(batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == rows + 1
    return peak


async def test_parsing_100k_rows_holds_one_batch_not_the_file() -> None:
    """The parser's peak traced memory on 100,000 rows (5.6 MB) is that on 20,000 (1.1 MB): one batch of text and
    its records, whatever the size of the file."""
    small, large = await _parsing_peak(20_000), await _parsing_peak(100_000)
    assert large < small * 1.25 and large < 4_000_000, (small, large)


async def _peak_bytes(client: httpx.AsyncClient, rows: int, start: int) -> int:
    tracemalloc.start()
    try:
        response = await client.post("/v1/contacts/import", content=_streamed(rows, start), headers=CSV)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200, response.text
    assert response.json()["created"] == rows
    return peak


@pytest.fixture
async def chunked_client(contacts_settings: ContactsSettings, clock: MovableClock) -> AsyncIterator[httpx.AsyncClient]:
    settings = contacts_settings.model_copy(update={"import_chunk_rows": 50})
    async with running_app(create_app(settings, clock=clock)) as client:
        yield client


# The in-process figure is the same on both databases; PostgreSQL's round trips under tracemalloc made it 5x slower.
@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
async def test_import_memory_does_not_grow_with_the_file(chunked_client: httpx.AsyncClient) -> None:
    """Peak memory traced in-process while importing 200 rows and 800 rows (50 per transaction): within a margin
    of each other, where holding the file or its rows would make the second four times the first. The 100,000-row
    figure through a real service process (RSS): bench/csv_import.py."""
    small = await _peak_bytes(chunked_client, 200, 0)
    large = await _peak_bytes(chunked_client, 800, 10_000)
    assert large < small * 1.5, (small, large)
