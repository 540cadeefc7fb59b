"""Two follow-ups service processes on one PostgreSQL database claim 10,000 due follow-ups: every one is
announced exactly once (SELECT … FOR UPDATE SKIP LOCKED), and both processes take part."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from sqlalchemy import func, insert, select
from sqlmodel import col

from servicekit.db import make_engine
from servicekit.devstack import SERVICES, ServiceProcess, start_together
from servicekit.ids import new_id
from servicekit.migrations import upgrade
from servicekit.testing.nats import NatsServer
from servicekit.testing.ports import free_port
from servicekit.testing.postgres import PostgresCluster
from services.followups.models import PRIORITY_RANK, Followup, outbox_table
from services.followups.rules import manual_plan

pytestmark = [pytest.mark.postgres, pytest.mark.stack]

COUNT = 10_000
ALEMBIC_INI = Path(__file__).resolve().parents[1] / "services/followups/alembic.ini"


@pytest.fixture
def followups_pg(pg_cluster: PostgresCluster) -> str:
    url = pg_cluster.create_database(f"fu_{uuid.uuid4().hex[:12]}")
    upgrade(ALEMBIC_INI, url)
    return url


@pytest.fixture
def nats_private(nats_factory: Callable[[], NatsServer]) -> NatsServer:
    return nats_factory()


@pytest.fixture
def two_replicas(followups_pg: str, nats_private: NatsServer, tmp_path: Path) -> Iterator[list[ServiceProcess]]:
    spec = next(s for s in SERVICES if s.name == "followups")
    processes = []
    for name in ("replica-a", "replica-b"):
        env = {
            **os.environ, "FOLLOWUPS_DATABASE_URL": followups_pg, "FOLLOWUPS_NATS_URL": nats_private.url,
            "FOLLOWUPS_PORT": str(free_port()), "FOLLOWUPS_REPLICA": name, "FOLLOWUPS_LOG_LEVEL": "WARNING",
            "FOLLOWUPS_SCHEDULER_BATCH": "100", "FOLLOWUPS_SCHEDULER_INTERVAL_S": "0.05",
            "FOLLOWUPS_CONTACTS_URL": "http://127.0.0.1:9",
        }  # fmt: skip
        processes.append(ServiceProcess(spec, env, tmp_path / f"{name}.log"))
    try:
        start_together(processes)
        yield processes
    finally:
        for process in processes:
            process.stop()


async def seed_due(url: str, count: int, due_at: datetime) -> list[uuid.UUID]:
    """``count`` follow-ups made by hand, all due at ``due_at`` (never overdue during the test)."""
    engine = make_engine(url)
    ids = [new_id() for _ in range(count)]
    rows = [
        {
            "id": ident,
            "contact_id": new_id(),
            "reason": "Call back",
            "channel": "phone",
            "due_at": due_at,
            "status": "scheduled",
            "priority": "normal",
            "priority_rank": PRIORITY_RANK["normal"],
            "escalation_level": 0,
            "timeline_at": due_at,
            "anchor_at": due_at,
            "plan": manual_plan("phone"),
            "overdue_at": due_at + timedelta(days=1),
            "overdue": False,
            "next_action_at": due_at,
            "created_at": due_at,
            "updated_at": due_at,
            "version": 1,
        }
        for ident in ids
    ]
    async with engine.begin() as conn:
        for start in range(0, count, 2000):
            await conn.execute(insert(Followup), rows[start : start + 2000])
    await engine.dispose()
    return ids


async def test_two_scheduler_processes_fire_10000_due_followups_each_exactly_once(
    followups_pg: str, two_replicas: list[ServiceProcess], nats_private: NatsServer
) -> None:
    ids = await seed_due(followups_pg, COUNT, datetime.now(UTC) - timedelta(seconds=1))
    engine = make_engine(followups_pg)

    async def settled() -> tuple[int, int]:
        async with engine.connect() as conn:
            due = await conn.scalar(select(func.count()).select_from(Followup).where(col(Followup.status) == "due"))
            unsent = await conn.scalar(
                select(func.count()).select_from(outbox_table).where(outbox_table.c.published_at.is_(None))
            )
        return int(due or 0), int(unsent or 0)

    deadline = asyncio.get_running_loop().time() + 180
    while await settled() != (COUNT, 0):
        assert asyncio.get_running_loop().time() < deadline, f"not settled: {await settled()}"
        await asyncio.sleep(0.5)

    async with engine.connect() as conn:
        fired_by = col(Followup.fired_by)
        by_replica: dict[str | None, int] = {
            row[0]: int(row[1]) for row in (await conn.execute(select(fired_by, func.count()).group_by(fired_by))).all()
        }
        due_rows = (
            await conn.execute(select(outbox_table.c.payload).where(outbox_table.c.type == "crm.followup.due.v1"))
        ).all()
    await engine.dispose()
    # In the database: one due event written per follow-up, and both processes did part of the work.
    written = Counter(json.loads(row.payload)["data"]["id"] for row in due_rows)
    assert len(written) == COUNT and set(written.values()) == {1}
    assert set(by_replica) == {"replica-a", "replica-b"}, by_replica
    assert sum(by_replica.values()) == COUNT

    # On the bus: each follow-up's due event arrived once (distinct event ids, so a double fire would show).
    nc = await nats.connect(nats_private.url)
    js = nc.jetstream()
    sub = await js.pull_subscribe("crm.followups.due.>", durable=f"check{uuid.uuid4().hex[:8]}", stream="CRM_FOLLOWUPS")
    seen: Counter[str] = Counter()
    while sum(seen.values()) < COUNT:
        for msg in await sub.fetch(1000, timeout=10):
            seen[json.loads(msg.data)["data"]["id"]] += 1
            await msg.ack()
    with pytest.raises(nats.errors.TimeoutError):
        await sub.fetch(1, timeout=1)
    await nc.close()
    assert set(seen) == {str(i) for i in ids} and set(seen.values()) == {1}
