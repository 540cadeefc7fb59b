"""Typed dependencies every service's routes share (Annotated aliases, as in full-stack-fastapi-template)."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from servicekit.db import make_sessionmaker, session_scope
from servicekit.runtime import Runtime


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async for session in session_scope(request.app.state.runtime.sessionmaker):
        yield session


def _reading_engine(runtime: Runtime) -> AsyncEngine:
    """The engine of reading routes: autocommit on PostgreSQL (no BEGIN and COMMIT around one statement, each
    statement sees the latest committed rows); on SQLite the engine itself, whose transactions are kept
    (servicekit's begin hook is what takes its lock). Behind a transaction pooler (``<PREFIX>_DB_POOLER``) the
    engine itself too: outside a transaction PgBouncer may bind a statement on another server connection than
    the one that parsed it."""
    reader = runtime.read_engine
    if reader is None:
        engine = runtime.engine
        autocommit = engine.dialect.name == "postgresql" and runtime.settings.db_pooler == "none"
        reader = engine.execution_options(isolation_level="AUTOCOMMIT") if autocommit else engine
        runtime.read_engine = reader
    return reader


async def _read_session(request: Request) -> AsyncIterator[AsyncSession]:
    runtime: Runtime = request.app.state.runtime
    reader = runtime.read_sessionmaker
    if reader is None:
        engine = _reading_engine(runtime)
        reader = runtime.sessionmaker if engine is runtime.engine else make_sessionmaker(engine)
        runtime.read_sessionmaker = reader
    async for session in session_scope(reader):
        yield session


async def read_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """The connection of ReadConnectionDep (a route serving its own parameters opens it the same way)."""
    async with _reading_engine(request.app.state.runtime).connect() as connection:
        yield connection


# async: a plain ``def`` dependency runs in the threadpool, a thread hop on every request for a getattr.
async def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


# scope="function": the transaction commits before the response is sent, so a failed commit is an error
# response, never a success that did not happen.
SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]
RuntimeDep = Annotated[Runtime, Depends(_runtime)]
# For a route that only reads (a list page): on PostgreSQL its statements run in autocommit, without the BEGIN
# and COMMIT round trips around them (each statement sees the latest committed rows; not behind a transaction
# pooler). Never for a write.
ReadSessionDep = Annotated[AsyncSession, Depends(_read_session, scope="function")]
# The same read as one connection, without an ORM session around it (its set-up, transaction bookkeeping and
# commit were a tenth of the CPU of the interactions contact page): for a route whose statements need no ORM.
ReadConnectionDep = Annotated[AsyncConnection, Depends(read_connection, scope="function")]
