"""ReadSessionDep and ReadConnectionDep: a reading route's statements run without a transaction around them on
PostgreSQL (no BEGIN and COMMIT round trips), and in the usual transaction on SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.db import make_engine, make_sessionmaker
from servicekit.deps import ReadConnectionDep, ReadSessionDep, SessionDep

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "services" / "contacts" / "alembic.ini"


@pytest.fixture
def database_url(database_factory: Callable[[Path], str]) -> str:
    return database_factory(ALEMBIC_INI)


async def test_a_read_session_runs_each_statement_on_its_own_on_postgres(database_url: str, db_backend: str) -> None:
    engine = make_engine(database_url)
    app = FastAPI()
    app.state.runtime = SimpleNamespace(
        engine=engine,
        sessionmaker=make_sessionmaker(engine),
        read_engine=None,
        read_sessionmaker=None,
        settings=SimpleNamespace(db_pooler="none"),
    )
    # now() is the start of the transaction: two statements in one transaction see the same instant.
    instant = sa.text("SELECT now()") if db_backend == "postgres" else sa.text("SELECT 1")

    async def two_instants(session: AsyncSession) -> bool:
        first = (await session.execute(instant)).scalar_one()
        await asyncio.sleep(0.01)
        return bool(first != (await session.execute(instant)).scalar_one())

    @app.get("/read")
    async def read(session: ReadSessionDep) -> bool:
        return await two_instants(session)

    @app.get("/read-connection")
    async def read_connection(connection: ReadConnectionDep) -> bool:
        first = (await connection.execute(instant)).scalar_one()
        await asyncio.sleep(0.01)
        return bool(first != (await connection.execute(instant)).scalar_one())

    @app.get("/write")
    async def write(session: SessionDep) -> bool:
        return await two_instants(session)

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            assert (await client.get("/read")).json() is (db_backend == "postgres")
            assert (await client.get("/read-connection")).json() is (db_backend == "postgres")
            assert (await client.get("/write")).json() is False
    finally:
        await engine.dispose()
