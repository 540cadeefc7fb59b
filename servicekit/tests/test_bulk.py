"""servicekit.bulk: many rows in one statement store and change exactly what a row-by-row statement would."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import JSON, Boolean, Column, Integer, MetaData, String, Table, Uuid, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from servicekit.bulk import among, insert_new, insert_rows, update_rows, write_rows
from servicekit.db import UTCDateTime
from servicekit.tests.recording import recording_sessions

metadata = MetaData()
items = Table(
    "items",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("name", String(10), nullable=False),
    Column("n", Integer, nullable=True),
    Column("flag", Boolean, nullable=False),
    Column("at", UTCDateTime(), nullable=True),
    Column("doc", JSON, nullable=False),
)
notes = Table("notes", metadata, Column("id", Integer, primary_key=True), Column("text", String(20), nullable=False),
              Column("at", UTCDateTime(), nullable=False))  # fmt: skip
T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


@pytest.fixture
async def sessions(empty_database_url: str) -> AsyncIterator[Any]:
    async with recording_sessions(empty_database_url, metadata) as sessionmaker:
        yield sessionmaker


def row(n: int, **changes: Any) -> dict[str, Any]:
    return {"id": uuid.UUID(int=n + 1), "name": f"item {n}", "n": n if n % 2 else None, "flag": n % 3 == 0,
            "at": T0 + timedelta(minutes=n) if n % 4 else None, "doc": {"n": n, "tags": ["a", "é"]},
            **changes}  # fmt: skip


async def stored(sessions: async_sessionmaker[Any]) -> dict[uuid.UUID, dict[str, Any]]:
    async with sessions() as session:
        return {r.id: dict(r._mapping) for r in (await session.execute(select(items))).all()}


async def test_inserted_rows_read_back_as_given_in_one_statement(sessions: Any, db_backend: str) -> None:
    rows = [row(n) for n in range(25)]
    # An aware time in another zone is stored as the same instant (as UTCDateTime does row by row).
    rows[1]["at"] = datetime(2026, 1, 5, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    async with sessions() as session, session.begin():
        sessions.statements.clear()
        await insert_rows(session, items, rows)
        inserts = [s for s in sessions.statements if s.lstrip().upper().startswith("INSERT")]
    if db_backend == "postgres":
        assert len(inserts) == 1 and "unnest" in inserts[0]
    got = await stored(sessions)
    assert len(got) == 25
    for given in rows:
        back = got[given["id"]]
        assert {k: v for k, v in back.items() if k != "at"} == {k: v for k, v in given.items() if k != "at"}
        assert back["at"] == given["at"]  # the same instant
        assert back["at"] is None or back["at"].utcoffset() == timedelta(0)
    assert got[rows[1]["id"]]["at"] == datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


async def test_nothing_to_insert_or_update_runs_no_statement(sessions: Any) -> None:
    async with sessions() as session, session.begin():
        sessions.statements.clear()
        await insert_rows(session, items, [])
        await update_rows(session, items, [], key="id")
        assert sessions.statements == []


async def test_a_value_too_long_is_refused_not_truncated(sessions: Any, db_backend: str) -> None:
    long = row(1, name="x" * 11)
    if db_backend == "postgres":
        with pytest.raises(DBAPIError):
            async with sessions() as session, session.begin():
                await insert_rows(session, items, [long])
        assert await stored(sessions) == {}
    else:  # SQLite does not enforce lengths, row by row either: stored whole, never cut
        async with sessions() as session, session.begin():
            await insert_rows(session, items, [long])
        assert (await stored(sessions))[long["id"]]["name"] == "x" * 11


async def test_a_duplicate_key_fails_the_whole_insert(sessions: Any) -> None:
    async with sessions() as session, session.begin():
        await insert_rows(session, items, [row(1)])
    with pytest.raises(IntegrityError):
        async with sessions() as session, session.begin():
            await insert_rows(session, items, [row(2), row(1)])
    assert list(await stored(sessions)) == [row(1)["id"]]


async def test_insert_new_skips_stored_and_repeated_keys_and_returns_those_it_inserted(
    sessions: Any, db_backend: str
) -> None:
    async with sessions() as session, session.begin():
        await insert_rows(session, items, [row(1), row(2)])
    # 2 is stored (its new name is not written), 3 comes twice (the first one is kept), 4 is new.
    batch = [row(2, name="again"), row(3), row(4), row(3, name="repeat")]
    async with sessions() as session, session.begin():
        sessions.statements.clear()
        inserted = await insert_new(session, items, batch, key="id")
        statements = list(sessions.statements)
    assert inserted == {row(3)["id"], row(4)["id"]}
    if db_backend == "postgres":
        assert len(statements) == 1 and "ON CONFLICT" in statements[0] and "unnest" in statements[0]
    got = await stored(sessions)
    assert sorted(got) == sorted(row(n)["id"] for n in (1, 2, 3, 4))
    assert got[row(2)["id"]] == row(2) and got[row(3)["id"]] == row(3) and got[row(4)["id"]] == row(4)
    # Rolled back with its transaction, like any insert.
    with pytest.raises(RuntimeError):
        async with sessions() as session, session.begin():
            assert await insert_new(session, items, [row(5)], key="id") == {row(5)["id"]}
            raise RuntimeError("the batch fails")
    assert row(5)["id"] not in await stored(sessions)
    async with sessions() as session, session.begin():
        sessions.statements.clear()
        assert await insert_new(session, items, [], key="id") == set()
        assert sessions.statements == []


async def test_write_rows_inserts_and_updates_several_tables_in_one_statement(sessions: Any, db_backend: str) -> None:
    async with sessions() as session, session.begin():
        await insert_rows(session, items, [row(n, at=T0) for n in range(3)])
    later = T0 + timedelta(hours=1)
    async with sessions() as session, session.begin():
        sessions.statements.clear()
        await write_rows(
            session,
            inserts=[(notes, [{"id": 1, "text": "é", "at": T0}, {"id": 2, "text": "b", "at": later}])],
            updates=[(items, [{"id": row(0)["id"], "at": later}, {"id": row(1)["id"], "at": T0 - timedelta(hours=1)}],
                      "id", "at")],
        )  # fmt: skip
        statements = list(sessions.statements)
    if db_backend == "postgres":
        assert len(statements) == 1 and statements[0].startswith("WITH")
    got = await stored(sessions)
    assert got[row(0)["id"]]["at"] == later  # only_later: a later time is set, an earlier one is not
    assert got[row(1)["id"]]["at"] == T0 and got[row(2)["id"]] == row(2, at=T0)
    async with sessions() as session:
        assert (await session.execute(select(notes).order_by(notes.c.id))).all() == [(1, "é", T0), (2, "b", later)]
    # A failing write fails them all (one statement on PostgreSQL, one transaction everywhere).
    with pytest.raises(IntegrityError):
        async with sessions() as session, session.begin():
            await write_rows(session, inserts=[(items, [row(5)]), (notes, [{"id": 2, "text": "again", "at": T0}])])
    assert row(5)["id"] not in await stored(sessions)
    async with sessions() as session, session.begin():
        sessions.statements.clear()
        await write_rows(session, inserts=[(items, []), (notes, [])], updates=[(items, [], "id", None)])
        assert sessions.statements == []


async def test_update_sets_the_values_of_each_keyed_row_only(sessions: Any, db_backend: str) -> None:
    async with sessions() as session, session.begin():
        await insert_rows(session, items, [row(n) for n in range(6)])
    changes = [{"id": row(n)["id"], "name": f"new {n}", "doc": {"changed": n}} for n in (1, 3)]
    async with sessions() as session, session.begin():
        sessions.statements.clear()
        await update_rows(session, items, changes, key="id")
        updates = [s for s in sessions.statements if s.lstrip().upper().startswith("UPDATE")]
    if db_backend == "postgres":
        assert len(updates) == 1 and "unnest" in updates[0]
    got = await stored(sessions)
    for n in range(6):
        expected = {**row(n), "name": f"new {n}", "doc": {"changed": n}} if n in (1, 3) else row(n)
        assert got[row(n)["id"]] == expected


async def test_only_later_keeps_a_stored_value_that_is_later(sessions: Any) -> None:
    # Stored: 0 has no time, 1 has T0+1min, 2 has T0+2min, 3 has T0+3min (see row()), 4 none.
    async with sessions() as session, session.begin():
        await insert_rows(session, items, [row(n, at=None if n in (0, 4) else T0 + timedelta(minutes=n))
                                            for n in range(5)])  # fmt: skip
    new_at = T0 + timedelta(minutes=2)
    changes = [{"id": row(n)["id"], "at": new_at} for n in (0, 1, 2, 3)]
    async with sessions() as session, session.begin():
        await update_rows(session, items, changes, key="id", only_later="at")
    got = await stored(sessions)
    assert got[row(0)["id"]]["at"] == new_at  # none stored: set
    assert got[row(1)["id"]]["at"] == new_at  # earlier stored: set
    assert got[row(2)["id"]]["at"] == new_at  # the same: unchanged
    assert got[row(3)["id"]]["at"] == T0 + timedelta(minutes=3)  # later stored: kept
    assert got[row(4)["id"]]["at"] is None  # not named: untouched


async def test_among_finds_the_rows_whose_column_is_one_of_the_values(sessions: Any, db_backend: str) -> None:
    async with sessions() as session, session.begin():
        await insert_rows(session, items, [row(n) for n in range(10)])
    async with sessions() as session:
        sessions.statements.clear()
        for wanted in ([1, 3, 5], [2], [4, 6, 8, 9], []):
            ids = [row(n)["id"] for n in wanted]
            found = (await session.scalars(select(items.c.id).where(among(session, items.c.id, ids)))).all()
            assert sorted(found) == sorted(ids)
    if db_backend == "postgres":  # one statement text whatever the number of values
        assert len(set(sessions.statements)) == 1
