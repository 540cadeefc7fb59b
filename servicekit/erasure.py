"""What every service does the same way when a person is erased (GDPR Art. 17).

An erase rewrites rows in place; on SQLite the old pages stay in the write-ahead log until a checkpoint
copies the new ones back, so the erase asks for one (TRUNCATE: the log file is emptied too) once its
transaction has committed. Deleted content inside the database file is zeroed by ``secure_delete``
(set on every connection by ``servicekit.db``)."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from servicekit.db import on_commit
from servicekit.logging import get_logger

log = get_logger(__name__)

# Written where a person's free text was, so a reader sees that something was there and why it is gone.
ERASED_TEXT = "(erased)"

_checkpoints: set[asyncio.Task[bool]] = set()


def checkpoint_after_commit(session: AsyncSession) -> None:
    """Once this session's transaction commits, checkpoint the SQLite write-ahead log (nothing on PostgreSQL)."""
    engine = session.bind
    if not isinstance(engine, AsyncEngine) or engine.dialect.name != "sqlite":
        return

    def start() -> None:
        task = asyncio.get_running_loop().create_task(checkpoint_wal(engine))
        _checkpoints.add(task)
        task.add_done_callback(_checkpoints.discard)

    on_commit(session, start)


async def checkpoint_wal(engine: AsyncEngine) -> bool:
    """``PRAGMA wal_checkpoint(TRUNCATE)`` on a connection of its own (outside any transaction, which would
    hold a snapshot and keep the log). Returns whether every frame was checkpointed; one still in use by a
    reader stays until the next checkpoint (SQLite's own, every 1,000 pages, or the next erase's)."""
    try:
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            cursor = await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            busy, _log_frames, _done = await cursor.fetchone()
            await cursor.close()
    except Exception as exc:
        log.warning("erase_checkpoint_failed", error=repr(exc))
        return False
    return busy == 0
