"""Per-contact transaction locks on PostgreSQL (``pg_advisory_xact_lock(namespace, key)``), released at commit.

A service takes them where rows it is about to write for a contact may not exist yet, so a row lock has
nothing to hold (a contact seen for the first time, a merge racing a new touchpoint). Keys are taken in sorted
order, so two transactions locking overlapping sets wait for each other instead of deadlocking. SQLite needs
none: its write transactions are already serialised (BEGIN IMMEDIATE)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

# The namespaces (the lock's first key): one per service's meaning of "a contact's lock".
INTERACTIONS_TOUCHPOINTS = 7202
FOLLOWUPS_TRIGGERS = 7203


def contact_key(contact_id: uuid.UUID) -> int:
    """The lock's second key: 32 bits of the id (a collision only makes two contacts wait for each other)."""
    return int.from_bytes(contact_id.bytes[-4:], "big", signed=True)


def _statement(function: str) -> sa.TextClause:
    # unnest yields the sorted keys in order, and each row's lock is taken as the row is produced.
    return sa.text(f"SELECT {function}(CAST(:namespace AS integer), k) FROM unnest(CAST(:keys AS integer[])) AS k")


# Built once: a text() is parsed for its parameters each time it is made, and a batch of touchpoints takes one.
_STATEMENTS = {True: _statement("pg_advisory_xact_lock_shared"), False: _statement("pg_advisory_xact_lock")}


async def lock_contacts(
    session: AsyncSession, contact_ids: Iterable[uuid.UUID], *, namespace: int, shared: bool = False
) -> None:
    """Hold ``namespace``'s lock of each contact until the transaction ends (shared or exclusive); PostgreSQL only."""
    keys = sorted({contact_key(c) for c in contact_ids})
    if not keys or session.get_bind().dialect.name != "postgresql":
        return
    await session.execute(_STATEMENTS[shared], {"namespace": namespace, "keys": keys})
