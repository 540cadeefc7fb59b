"""UTCDateTime: every timestamp column gives back an aware UTC datetime on SQLite as on PostgreSQL, and the
models that use it still agree with the frozen migrations (Alembic autogenerate finds nothing to do)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from importlib import import_module
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import TypeAdapter, ValidationError

from servicekit.clock import InUtc
from servicekit.db import UTCDateTime, make_engine
from servicekit.migrations import on_dialect

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {
    "contacts": ("services/contacts/alembic.ini", "services.contacts.models"),
    "interactions": ("services/interactions/alembic.ini", "services.interactions.models"),
    "followups": ("services/followups/alembic.ini", "services.followups.models"),
    "gateway": ("gateway/alembic.ini", "gateway.models"),
}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_models_agree_with_their_migrations(service: str, database_factory: Callable[[Path], str]) -> None:
    alembic_ini, models = SERVICES[service]
    url = database_factory(ROOT / alembic_ini)
    metadata = import_module(models).metadata
    engine = make_engine(url)

    def diff(connection: sa.Connection) -> list[object]:
        # As the migrations' env.py compares: an object the model makes on another database only is left out.
        opts = {"compare_type": True, "include_object": on_dialect(connection.dialect.name)}
        context = MigrationContext.configure(connection, opts=opts)
        return list(compare_metadata(context, metadata))

    async def compare() -> list[object]:
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(diff)
        finally:
            await engine.dispose()

    differences = asyncio.run(compare())
    assert differences == [], differences


def test_timestamps_come_back_aware_utc(database_factory: Callable[[Path], str]) -> None:
    # Any migrated database will do: the table is made here.
    url = database_factory(ROOT / SERVICES["contacts"][0])
    table = sa.Table(
        "utc_probe", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("at", UTCDateTime())
    )
    paris_summer = timezone(timedelta(hours=2))
    written = {
        1: datetime(2026, 7, 1, 12, 0, tzinfo=paris_summer),
        2: datetime(2026, 7, 1, 10, 0, 0, 123456),  # naive: taken as UTC
        3: datetime(2026, 7, 1, 10, 0, tzinfo=UTC),
    }
    just_after = datetime(2026, 7, 1, 10, 0, 0, 1, tzinfo=UTC)

    async def write_and_read() -> tuple[dict[int, datetime], list[int]]:
        engine = make_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(table.metadata.create_all)
                await conn.execute(table.insert(), [{"id": k, "at": v} for k, v in written.items()])
            async with engine.connect() as conn:
                rows = dict((await conn.execute(sa.select(table.c.id, table.c.at))).tuples().all())
                # Stored as UTC, so a comparison in SQL (text order on SQLite) sees the right instant.
                later = (await conn.execute(sa.select(table.c.id).where(table.c.at > just_after))).scalars().all()
            return rows, list(later)
        finally:
            await engine.dispose()

    rows, later = asyncio.run(write_and_read())
    for value in rows.values():
        assert value.tzinfo is not None and value.utcoffset() == timedelta(0), value
    assert rows[1] == datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
    assert rows[2] == datetime(2026, 7, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert rows[3] == datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
    assert rows[1].isoformat() == "2026-07-01T10:00:00+00:00"
    assert later == [2]


@pytest.mark.parametrize("sent", ["0.92", "2.220446049250313e-16", "1700000000", 1700000000, 0.5])
def test_a_number_is_not_a_time(sent: object) -> None:
    # Found by Schemathesis: pydantic reads a number as Unix time where the document says date-time.
    with pytest.raises(ValidationError, match="not a number"):
        TypeAdapter(InUtc).validate_python(sent)
    assert TypeAdapter(InUtc).validate_python("2026-01-05T10:00:00+01:00") == datetime(2026, 1, 5, 9, tzinfo=UTC)
