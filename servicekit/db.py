"""Async engine and sessions on SQLite (embedded default) or PostgreSQL (production)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy.ext.asyncio
from sqlalchemy import DateTime, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator

SQLITE_BUSY_TIMEOUT_MS = 30_000

# What stands between a service and PostgreSQL (``<PREFIX>_DB_POOLER``). ``transaction``: a PgBouncer in
# transaction mode, which hands each transaction whichever server connection is free.
POOLERS = ("none", "transaction")


class UTCDateTime(TypeDecorator[datetime]):
    """``TIMESTAMP WITH TIME ZONE`` that always gives back an aware UTC datetime, on SQLite too.

    SQLite has no time zone type: SQLAlchemy stores the wall-clock digits without the offset and reads them
    back naive, so a response would carry ``2026-01-01T10:00:00`` instead of RFC 3339 with an offset, and an
    aware non-UTC value would be stored as the wrong instant. Every value is stored as UTC and read as UTC.
    The column type in the database is the plain ``DateTime(timezone=True)``: migrations do not change."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        # A naive value is taken to be UTC already (what servicekit.clock gives is aware).
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(
    url: str, *, pool_size: int = 10, echo: bool = False, read_only: bool = False, pooler: str = "none"
) -> AsyncEngine:
    """Create the engine; on SQLite: WAL, a busy timeout, and every transaction a writer.

    ``pooler="transaction"`` (PostgreSQL behind PgBouncer in transaction mode): no prepared statement
    outlives its transaction's use of a server connection. asyncpg prepares every statement under a name
    (``__asyncpg_stmt_1__`` …) counted per client connection and caches it; behind a transaction pooler the
    next transaction may run on a server connection where another client prepared that name already
    ("prepared statement ... already exists") or where the cached one was never prepared ("does not exist").
    So: no statement cache (SQLAlchemy's nor asyncpg's) and a unique name for each statement.

    ``read_only`` (PostgreSQL): an engine for single-statement reads, in autocommit and without the pool's
    ROLLBACK and isolation reset on every return. Set when the engine is made, it costs nothing per checkout;
    through ``execution_options`` each checkout set and reset the isolation level, about a third of the CPU of
    a timeline page's read.

    SQLite allows one writer. ``BEGIN IMMEDIATE`` takes the write lock at the start of a
    transaction, so two processes never deadlock upgrading a read lock (SQLITE_BUSY_SNAPSHOT
    is not retried by the busy handler); the busy timeout makes the second one wait.
    """
    if is_sqlite(url):
        # One connection per process: SQLite has one writer anyway, and waiting in the pool's
        # asyncio queue is fairer and faster than SQLite's sleeping busy handler.
        # Sessions always end their transaction, so the pool's extra ROLLBACK on return is skipped.
        engine = _create_async_engine(
            url, echo=echo, pool_size=1, max_overflow=0, pool_timeout=60, pool_reset_on_return=None
        )
        _tune_sqlite(engine)
        return engine
    if pooler not in POOLERS:
        raise ValueError(f"pooler must be one of {POOLERS}, not {pooler!r}")
    # Not behind a transaction pooler: asyncpg prepares a statement (Parse ... Sync) and runs it (Bind ... Sync)
    # in two exchanges, and outside a transaction PgBouncer may hand the second to another server connection.
    autocommit = read_only and pooler == "none"
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None} if autocommit else {}
    if pooler == "transaction":
        options["connect_args"] = {
            "prepared_statement_cache_size": 0,
            "statement_cache_size": 0,
            "prepared_statement_name_func": _unique_statement_name,
        }
    engine = _create_async_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800, **options
    )
    _ping_idle_connections(engine)
    return engine


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid.uuid4().hex}__"


# A connection idle at least this long is pinged before use. SQLAlchemy's pool_pre_ping pings every checkout,
# and with asyncpg a ping is three round trips (BEGIN, a query, ROLLBACK): under load it cost a one-query read
# more than the query did. A connection in steady use that dies (PostgreSQL restarted) fails its request as a
# 503 (servicekit.problems) and its disconnect invalidates the whole pool, so the next requests reconnect.
IDLE_PING_S = 1.0


def _ping_idle_connections(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool drops this connection and checks out a fresh one (up to three attempts).
            raise DisconnectionError("idle connection failed its ping") from exc


def _tune_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's implicit transactions defer the lock).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Deleted and overwritten content is zeroed, not left in free space: an erase must leave no copy.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def upsert(session: AsyncSession, table: Any) -> Any:
    """``INSERT`` of the session's dialect, with its ``ON CONFLICT`` clauses (PostgreSQL and SQLite share them)."""
    module: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return module.insert(table)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: rows stay readable after commit, when the response is rendered.
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def on_commit(session: AsyncSession | Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` once after this session's transaction commits (e.g. wake the outbox relay)."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    callbacks: list[Callable[[], None]] = sync.info.setdefault("after_commit", [])
    if callback not in callbacks:
        callbacks.append(callback)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    for callback in session.info.pop("after_commit", []):
        callback()


@event.listens_for(Session, "after_soft_rollback")
def _forget_after_rollback(session: Session, _previous: Any) -> None:
    session.info.pop("after_commit", None)


async def session_scope(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit when the caller finishes, roll back when it raises.

    Used as a FastAPI dependency with ``scope="function"`` so the commit happens before the
    response is sent: a failed commit becomes an error response, never a lie.
    """
    async with sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


def _create_async_engine(url: str, **options: Any) -> AsyncEngine:
    # Looked up at each call: SQLAlchemy's OpenTelemetry instrumentation (servicekit.tracing), when on, replaces the
    # module's function, and a name imported before that would make engines it never sees.
    return sqlalchemy.ext.asyncio.create_async_engine(url, **options)
