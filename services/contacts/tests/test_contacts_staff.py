"""The contacts service's copy of the staff handles (from crm.staff.changed.v1) and the owner check of a CSV import
that reads it, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from servicekit.bus import PermanentError
from servicekit.db import make_engine, make_sessionmaker
from servicekit.events import make_event
from services.contacts.models import StaffHandle
from services.contacts.staff import STAFF_CHANGED, staff_handlers
from services.contacts.tests.conftest import StaffChange

CSV = {"Content-Type": "text/csv"}
MONDAY = datetime(2026, 3, 2, 9, tzinfo=UTC)


async def copy_of(contacts_db: str) -> dict[str, bool]:
    engine = make_engine(contacts_db)
    try:
        async with make_sessionmaker(engine)() as session:
            rows = (await session.execute(StaffHandle.__table__.select())).all()  # type: ignore[attr-defined]
    finally:
        await engine.dispose()
    return {row.handle: row.active for row in rows}


async def test_a_newer_change_wins_and_an_older_one_delivered_late_changes_nothing(
    contacts_db: str, staff_change: StaffChange
) -> None:
    await staff_change("ana", at=MONDAY)
    await staff_change("leaver", at=MONDAY)
    assert await copy_of(contacts_db) == {"ana": True, "leaver": True}
    await staff_change("leaver", active=False, at=MONDAY + timedelta(hours=1))  # disabled
    assert await copy_of(contacts_db) == {"ana": True, "leaver": False}
    # The change before the disable, delivered again after it (a redelivery): the disable stands.
    await staff_change("leaver", active=True, at=MONDAY + timedelta(minutes=30))
    assert await copy_of(contacts_db) == {"ana": True, "leaver": False}
    await staff_change("ana", active=False, at=MONDAY - timedelta(days=1))
    assert await copy_of(contacts_db) == {"ana": True, "leaver": False}
    await staff_change("leaver", active=True, at=MONDAY + timedelta(days=1))  # enabled again later
    assert await copy_of(contacts_db) == {"ana": True, "leaver": True}


@pytest.mark.parametrize("data", [{"active": True}, {"handle": "", "active": True}, {"handle": "ana", "active": "no"},
                                  {"handle": "x" * 65, "active": True}])  # fmt: skip
async def test_a_change_without_a_usable_handle_or_active_is_permanent(contacts_db: str, data: dict) -> None:
    event = make_event(type=STAFF_CHANGED, source="touchpoint/gateway", subject=None, data=data, time=MONDAY)
    engine = make_engine(contacts_db)
    try:
        async with make_sessionmaker(engine)() as session:
            with pytest.raises(PermanentError):
                await staff_handlers()[STAFF_CHANGED](session, event)
    finally:
        await engine.dispose()


async def test_import_reports_an_owner_who_is_not_an_active_staff_handle_and_imports_the_rest(
    client: httpx.AsyncClient, staff_change: StaffChange
) -> None:
    await staff_change("ana", at=MONDAY)
    await staff_change("leaver", at=MONDAY)
    await staff_change("leaver", active=False, at=MONDAY + timedelta(hours=1))
    text = (
        "name,email,Owner\n"
        "Ada,ada@example.com,ana\n"  # line 2
        "Bob,bob@example.com,nobody.here\n"  # line 3
        "Cy,cy@example.com,leaver\n"  # line 4
        "Di,di@example.com,\n"  # line 5: no owner, nothing to check
        "Ed,ed@example.com,me\n"  # line 6: a file has no caller to stand for
    )
    for dry_run in (True, False):
        response = await client.post("/v1/contacts/import", content=text.encode(), headers=CSV,
                                     params={"dry_run": str(dry_run).lower()})  # fmt: skip
        assert response.status_code == 200, response.text
        report = response.json()
        assert (report["created"], report["error_count"], report["dry_run"]) == (2, 3, dry_run)
        by_line = {e["row"]: e for e in report["errors"]}
        assert sorted(by_line) == [3, 4, 6]
        assert all(e["field"] == "Owner" for e in report["errors"])  # the column as the header names it
        assert by_line[3]["message"] == "owner 'nobody.here' is not a staff handle."
        assert "'leaver' is disabled" in by_line[4]["message"]
        assert "'me' is not a staff handle" in by_line[6]["message"]
    items = (await client.get("/v1/contacts", params={"limit": 200})).json()["items"]
    assert sorted((c["name"], c["owner"]) for c in items) == [("Ada", "ana"), ("Di", None)]
    # An update is checked as a create is: Ada cannot be given to the leaver.
    update = await client.post("/v1/contacts/import", content=b"email,owner\nada@example.com,leaver\n", headers=CSV)
    assert update.json()["error_count"] == 1 and update.json()["errors"][0]["field"] == "owner"
    ada = (await client.post("/v1/contacts/resolve", json={"email": "ada@example.com"})).json()
    assert ada["owner"] == "ana"


async def test_an_owner_the_contact_has_already_is_not_a_change_so_an_export_imports_unchanged(
    client: httpx.AsyncClient, staff_change: StaffChange
) -> None:
    await staff_change("leaver", at=MONDAY)
    kept = await client.post("/v1/contacts", json={"name": "Kept", "emails": ["kept@example.com"], "owner": "leaver"})
    assert kept.status_code == 201, kept.text
    await staff_change("leaver", active=False, at=MONDAY + timedelta(hours=1))
    export = (await client.get("/v1/contacts/export.csv")).content
    report = (await client.post("/v1/contacts/import", content=export, headers=CSV)).json()
    assert (report["unchanged"], report["errors"]) == (1, [])
    # Giving the same contact to the leaver again from someone else is a change, and refused.
    await client.patch(f"/v1/contacts/{kept.json()['id']}", json={"owner": None})
    again = (await client.post("/v1/contacts/import", content=export, headers=CSV)).json()
    assert again["error_count"] == 1 and "'leaver' is disabled" in again["errors"][0]["message"]
