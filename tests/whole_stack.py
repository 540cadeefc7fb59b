"""The whole stack as real processes (nats-server, the three services, the gateway) for a cross-service test,
on SQLite or, with ``db_backend == "postgres"``, on databases of the session's PostgreSQL cluster."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from servicekit.devstack import Stack
from servicekit.testing.ports import free_port

SERVICES = ("contacts", "interactions", "followups", "gateway")


@contextmanager
def running_stack(
    *,
    admin_key: str,
    db_backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    database_prefix: str,
    log_level: str = "WARNING",
    extra: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """Start every process on free ports (events leave the outboxes every 50 ms), yield, stop them all."""
    overrides = {
        "TOUCHPOINT_ADMIN_KEY": admin_key, "GATEWAY_DEV_MODE": "true", "TOUCHPOINT_NATS_PORT": str(free_port()),
        "TOUCHPOINT_NATS_MONITOR_PORT": str(free_port()), "TOUCHPOINT_NATS_STORE": str(tmp_path / "nats"),
        **(extra or {}),
    }  # fmt: skip
    for name in SERVICES:
        overrides[f"{name.upper()}_PORT"] = str(free_port())
        overrides[f"{name.upper()}_LOG_LEVEL"] = log_level
        overrides[f"{name.upper()}_OUTBOX_POLL_S"] = "0.05"
    if db_backend == "postgres":
        cluster = request.getfixturevalue("pg_cluster")
        for name in SERVICES:
            database = f"{database_prefix}_{name}_{uuid.uuid4().hex[:8]}"
            overrides[f"{name.upper()}_DATABASE_URL"] = cluster.create_database(database)
    running = Stack.from_environment(tmp_path, overrides)
    assert set(running.services) == set(SERVICES)
    running.start()
    try:
        yield running
    finally:
        running.stop()
