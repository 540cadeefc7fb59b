"""The engine pings a pooled PostgreSQL connection only after it sat idle: one that the server dropped
meanwhile is replaced before a request meets it, and one in steady use costs no extra round trips."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from servicekit import db
from servicekit.testing.postgres import PostgresCluster

pytestmark = pytest.mark.postgres


async def test_an_idle_connection_the_server_dropped_is_replaced(
    pg_cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = db.make_engine(pg_cluster.url(), pool_size=1)
    try:
        async with engine.connect() as conn:
            first = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
        pg_cluster.psql(f"SELECT pg_terminate_backend({first})")
        monkeypatch.setattr(db, "IDLE_PING_S", 0.0)  # as if it had been idle for a while
        async with engine.connect() as conn:
            second = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
        assert second != first
    finally:
        await engine.dispose()


async def test_a_connection_in_steady_use_is_not_pinged(pg_cluster: PostgresCluster) -> None:
    engine = db.make_engine(pg_cluster.url(), pool_size=1)
    statements: list[str] = []
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        sa.event.listen(engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        pings = 0
        original = engine.dialect.do_ping

        def counting_ping(dbapi_connection: Any) -> bool:
            nonlocal pings
            pings += 1
            return original(dbapi_connection)

        engine.dialect.do_ping = counting_ping  # type: ignore[method-assign]
        for _ in range(5):
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        assert pings == 0
        assert statements == ["SELECT 1"] * 5
    finally:
        await engine.dispose()
