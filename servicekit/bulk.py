"""Many rows in one statement: ``INSERT … SELECT FROM unnest(…)`` and ``UPDATE … FROM unnest(…)`` on PostgreSQL.

SQLAlchemy's executemany runs a Python loop over every parameter of every row (bind processors, JSON dumps,
one Bind/Execute message per row); with one array per column asyncpg encodes each column in C and the server
gets a single statement whose text does not depend on the number of rows, so it is prepared once. SQLite gets
the plain executemany (its driver is in-process: no round trips to save).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import JSON, ColumnElement, Table, TextClause, any_, bindparam, literal, or_, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import TypeDecorator

_PG = postgresql.dialect()


def unsized_type(table: Table, name: str) -> str:
    """The PostgreSQL type of a column without its size, to cast a parameter to: a cast to VARCHAR(n) would
    truncate silently, while the assignment to the column still refuses a value too long, as a row-by-row
    INSERT does."""
    column_type = table.c[name].type
    if isinstance(column_type, TypeDecorator):
        column_type = column_type.impl_instance
    return str(column_type.compile(dialect=_PG).split("(")[0])


def _array_type(table: Table, name: str) -> str:
    return f"{unsized_type(table, name)}[]"


def _cast(table: Table, names: Sequence[str], prefix: str = "") -> str:
    return ", ".join(f"CAST(:{prefix}{name} AS {_array_type(table, name)})" for name in names)


def _insert_sql(table: Table, names: tuple[str, ...], prefix: str = "") -> str:
    return f"INSERT INTO {table.name} ({', '.join(names)}) SELECT * FROM unnest({_cast(table, names, prefix)})"


def _update_sql(table: Table, key: str, names: tuple[str, ...], only_later: str | None, prefix: str = "") -> str:
    columns = (key, *names)
    assign = ", ".join(f"{name} = v.{name}" for name in names)
    condition = f"t.{key} = v.{key}"
    if only_later is not None:
        condition += f" AND (t.{only_later} IS NULL OR t.{only_later} < v.{only_later})"
    return (
        f"UPDATE {table.name} AS t SET {assign} FROM unnest({_cast(table, columns, prefix)}) "
        f"AS v({', '.join(columns)}) WHERE {condition}"
    )


@lru_cache(maxsize=64)
def _insert_statement(table: Table, names: tuple[str, ...]) -> TextClause:
    return text(_insert_sql(table, names))


@lru_cache(maxsize=64)
def _insert_new_statement(table: Table, names: tuple[str, ...], key: str) -> TextClause:
    return text(f"{_insert_sql(table, names)} ON CONFLICT ({key}) DO NOTHING RETURNING {key}")


@lru_cache(maxsize=64)
def _update_statement(table: Table, key: str, names: tuple[str, ...], only_later: str | None) -> TextClause:
    return text(_update_sql(table, key, names, only_later))


# One write of ``write_rows``: (table, its column names, and for an update its key and only_later column).
_Write = tuple[Table, tuple[str, ...], str | None, str | None]


@lru_cache(maxsize=64)
def _writes_statement(writes: tuple[_Write, ...]) -> TextClause:
    # Data-modifying CTEs: each runs once, to completion, whether or not the main query reads it; they see one
    # snapshot, so they must not touch the same rows (each write here is to its own table).
    parts = []
    for n, (table, names, key, only_later) in enumerate(writes):
        prefix = f"w{n}_"
        sql = _insert_sql(table, names, prefix) if key is None else _update_sql(table, key, names, only_later, prefix)
        parts.append(f"w{n} AS ({sql})")
    return text(f"WITH {', '.join(parts)} SELECT 1")


def _converts(column_type: Any) -> bool:
    """A TypeDecorator with its own ``process_bind_param`` (``servicekit.db.UTCDateTime``)."""
    return isinstance(column_type, TypeDecorator) and (
        type(column_type).process_bind_param is not TypeDecorator.process_bind_param
    )


def _columns(table: Table, rows: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, list[Any]]:
    params: dict[str, list[Any]] = {}
    for name in names:
        column_type = table.c[name].type
        values = [row[name] for row in rows]
        if isinstance(column_type, JSON):
            values = [json.dumps(value) for value in values]  # None too: SQLAlchemy's JSON stores it as 'null'
        elif _converts(column_type):
            values = [column_type.process_bind_param(value, _PG) for value in values]  # type: ignore[attr-defined]
        params[name] = values
    return params


def among(session: AsyncSession, column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(array)``: one statement text whatever the number of
    values, so it is prepared once, not once per distinct count (an expanding IN renders one parameter each)."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(literal(list(values), type_=postgresql.ARRAY(column.type)))  # type: ignore[no-any-return]
    return column.in_(list(values))  # type: ignore[no-any-return]


async def insert_rows(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (each with the same keys, a value for every column named) in the session's transaction."""
    if not rows:
        return
    if session.get_bind().dialect.name != "postgresql":
        await session.execute(table.insert(), list(rows))
        return
    names = tuple(rows[0])
    await session.execute(_insert_statement(table, names), _columns(table, rows, names))


async def insert_new(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]], *, key: str) -> set[Any]:
    """Insert the ``rows`` whose unique ``key`` is not stored yet (nor repeated earlier in ``rows``); returns the
    keys inserted. One statement that checks through the key's unique index: unlike a ``SELECT … = ANY`` first,
    it has no plan to go stale (PostgreSQL's generic plan for that SELECT, made while the table was nearly
    empty, scanned the whole table: 260 ms a batch after 30 s at 1,000 events/s). A key another transaction
    is inserting waits for that transaction, then counts as stored if it committed."""
    if not rows:
        return set()
    if session.get_bind().dialect.name != "postgresql":
        statement = sqlite_insert(table).on_conflict_do_nothing(index_elements=[key]).returning(table.c[key])
        return set((await session.scalars(statement, list(rows))).all())
    names = tuple(rows[0])
    result = await session.execute(_insert_new_statement(table, names, key), _columns(table, rows, names))
    return set(result.scalars().all())


async def write_rows(
    session: AsyncSession,
    *,
    inserts: Sequence[tuple[Table, Sequence[dict[str, Any]]]] = (),
    updates: Sequence[tuple[Table, Sequence[dict[str, Any]], str, str | None]] = (),
) -> None:
    """``insert_rows`` of each (table, rows) and ``update_rows`` of each (table, rows, key, only_later), on
    PostgreSQL in one statement (one round trip where each write would cost one: a consumer's batch writes
    four tables). The writes must be to different tables; those without rows are left out."""
    inserts = [(table, rows) for table, rows in inserts if rows]
    updates = [(table, rows, key, later) for table, rows, key, later in updates if rows]
    if session.get_bind().dialect.name != "postgresql" or len(inserts) + len(updates) < 2:
        for table, rows in inserts:
            await insert_rows(session, table, rows)
        for table, rows, key, later in updates:
            await update_rows(session, table, rows, key=key, only_later=later)
        return
    writes: list[_Write] = []
    params: dict[str, list[Any]] = {}
    for table, rows in inserts:
        names = tuple(rows[0])
        params.update({f"w{len(writes)}_{name}": v for name, v in _columns(table, rows, names).items()})
        writes.append((table, names, None, None))
    for table, rows, key, later in updates:
        names = tuple(name for name in rows[0] if name != key)
        params.update({f"w{len(writes)}_{name}": v for name, v in _columns(table, rows, (key, *names)).items()})
        writes.append((table, names, key, later))
    assert len({table for table, *_ in writes}) == len(writes), "one write per table"
    await session.execute(_writes_statement(tuple(writes)), params)


async def update_rows(
    session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]], *, key: str, only_later: str | None = None
) -> None:
    """On each stored row whose ``key`` equals a row's ``key``, set that row's other values (each row with the
    same keys; one row per key). ``only_later`` names a column: a stored row is changed only where that column
    is null or earlier than the new value (a concurrent writer may have stored a later one)."""
    if not rows:
        return
    names = tuple(name for name in rows[0] if name != key)
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(_update_statement(table, key, names, only_later), _columns(table, rows, (key, *names)))
        return
    statement = (
        update(table)
        .where(table.c[key] == bindparam(f"new_{key}", type_=table.c[key].type))
        .values({name: bindparam(f"new_{name}", type_=table.c[name].type) for name in names})
    )
    if only_later is not None:
        later = bindparam(f"new_{only_later}", type_=table.c[only_later].type)
        statement = statement.where(or_(table.c[only_later].is_(None), table.c[only_later] < later))
    await session.execute(statement, [{f"new_{name}": value for name, value in row.items()} for row in rows])
