"""A throwaway database with the tables of a test's metadata, whose sessions record every statement sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import MetaData, event

from servicekit.db import make_engine, make_sessionmaker


@asynccontextmanager
async def recording_sessions(url: str, metadata: MetaData) -> AsyncIterator[Any]:
    """A sessionmaker whose ``statements`` attribute lists the SQL text of every statement sent, in order."""
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    statements: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _record(_conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool) -> None:
        statements.append(statement)

    sessionmaker = make_sessionmaker(engine)
    sessionmaker.statements = statements  # type: ignore[attr-defined]
    try:
        yield sessionmaker
    finally:
        await engine.dispose()
