"""Rebuilds the gateway's timeline projection from the services' own lists.

    python -m gateway.rebuild_timeline [--page-size N]

The projection (``timeline_items``, ``followup_states``, ``touch_summaries``) is made from the events of the
touchpoint and follow-up streams, which keep 7 days. What those streams no longer hold (a deployment that
upgraded from a schema without the projection, a lost stream, a restore older than the streams) this command
takes from the source of truth instead: every touchpoint (``GET /v1/interactions``) and every follow-up
(``GET /v1/followups``, all statuses), page by page, each applied by the consumers' own handlers as an update of
it. Contact events, merges and erasures are the gateway's own rows since its first schema (its migrations copied
them), so a touchpoint of a merged contact is filed under the survivor and an erased contact's items stay
redacted.

Idempotent, and safe while the gateway serves and its consumers run:

- an item is written only when the service's version is newer than the stored one, so an event applied
  meanwhile is never undone and a second run writes nothing;
- a follow-up's state (the header's open and overdue counts) only when its change is newer than the stored one;
- the header's counts per contact and channel are raised to what the services hold, never lowered, so a touch
  counted by an event during the run is not lost. A touchpoint received in the last ``--settle`` seconds (10
  minutes) is left out of the counts: its event is still on its way or just applied, and counts it (counted
  here too, it would be counted twice). If the projection lacked older touchpoints of a contact and channel
  that also got a new one during the run, its count may be short by the new ones: run it again.

With ``--prune-received-before TIME`` it also removes the touchpoints and follow-ups the timeline holds and no
service lists any more, received (touchpoints) or made (follow-ups) before TIME: after a restore, what the
replayed streams brought back of the writes the restored databases no longer hold (docs/backups.md, "After a
restore"; TIME: when the services started again). Their touches leave the header's counts with them. Anything
received after TIME is kept whatever the lists said, so a write during the run is never removed.

The contacts service is not read: a contact's own events (created, changed, merged, erased) are rows of the
gateway, with the ids of their events, and an item made up from a contact's current state would be a second
copy of one of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from gateway import events, projection
from gateway.models import ContactAlias, FollowupState, TouchSummary
from gateway.settings import GatewaySettings
from gateway.upstream import ServiceClient
from servicekit.catalogue.followups import followup_type
from servicekit.catalogue.interactions import INTERACTION_UPDATED
from servicekit.clock import Clock, SystemClock, as_utc
from servicekit.db import make_engine, make_sessionmaker, upsert
from servicekit.events import CloudEvent
from servicekit.logging import configure_logging, get_logger

log = get_logger(__name__)

# The services' largest page (services/interactions/schemas.py and services/followups/queue.py MAX_PAGE).
PAGE_SIZE = 200
# A touchpoint received this recently is counted in the header by its own event, not by the rebuild.
SETTLE_S = 600.0
SOURCE = "gateway/rebuild-timeline"


@dataclass
class Rebuilt:
    touchpoints: int = 0
    followups: int = 0
    pruned: int = 0
    # Every touchpoint and follow-up the services listed (what --prune-received-before keeps).
    listed: set[uuid.UUID] = field(default_factory=set)
    # (contact, channel) -> the header's row, as the listed touchpoints make it.
    touches: dict[tuple[uuid.UUID, str], dict[str, Any]] = field(default_factory=dict)


async def pages(
    client: ServiceClient, path: str, *, page_size: int, **filters: Any
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every item of a list endpoint, a page at a time (the cursor pages never skip nor repeat one)."""
    cursor: str | None = None
    while True:
        params = {**filters, "limit": page_size, "cursor": cursor}
        page = await client.json("GET", path, caller=None, params=params)
        yield list(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return


def _as_event(type: str, doc: dict[str, Any], at: Any) -> CloudEvent:
    """A document as the consumers' handlers take it (an update of it: a touchpoint or follow-up event with no
    id of a real event, never stored in an inbox)."""
    return CloudEvent(id=str(uuid.uuid4()), source=SOURCE, type=type, subject=str(doc["contact_id"]),
                      time=as_utc(datetime.fromisoformat(str(at))), data=doc)  # fmt: skip


async def _survivors(session: AsyncSession, contact_ids: set[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    rows = await session.execute(
        select(col(ContactAlias.source_id), col(ContactAlias.target_id)).where(
            col(ContactAlias.source_id).in_(contact_ids)
        )
    )
    return {source: target for source, target in rows.all()}


async def _apply_touchpoints(
    session: AsyncSession, page: list[dict[str, Any]], rebuilt: Rebuilt, *, settled_before: datetime
) -> None:
    await events.apply(session, [_as_event(INTERACTION_UPDATED, doc, doc.get("updated_at") or doc["occurred_at"])
                                 for doc in page])  # fmt: skip
    rebuilt.listed.update(uuid.UUID(str(doc["id"])) for doc in page)
    survivors = await _survivors(session, {uuid.UUID(str(doc["contact_id"])) for doc in page})
    for doc in page:
        if as_utc(datetime.fromisoformat(str(doc["received_at"]))) >= settled_before:
            continue  # its event counts it
        contact_id = uuid.UUID(str(doc["contact_id"]))
        channel = str(doc.get("channel") or "unknown")
        at = as_utc(datetime.fromisoformat(str(doc["occurred_at"])))
        key = (survivors.get(contact_id, contact_id), channel)
        empty = {"contact_id": key[0], "channel": channel, "first_at": at, "last_at": at, "touches": 0,
                 "csat_sum": 0, "csat_count": 0}  # fmt: skip
        row = rebuilt.touches.setdefault(key, empty)
        row["first_at"], row["last_at"] = min(row["first_at"], at), max(row["last_at"], at)
        row["touches"] += 1
        if isinstance(doc.get("csat"), int):
            row["csat_sum"] += doc["csat"]
            row["csat_count"] += 1


async def _raise_touches(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """The header's rows raised to these (never lowered: an event may have counted a newer touch meanwhile)."""
    table = TouchSummary.__table__  # type: ignore[attr-defined]
    insert = upsert(session, table).values(rows)
    new = insert.excluded

    def higher(name: str) -> Any:
        return case((new[name] > table.c[name], new[name]), else_=table.c[name])

    await session.execute(
        insert.on_conflict_do_update(
            index_elements=[table.c.contact_id, table.c.channel],
            set_={
                "first_at": case((new.first_at < table.c.first_at, new.first_at), else_=table.c.first_at),
                "last_at": higher("last_at"),
                "touches": higher("touches"),
                "csat_sum": higher("csat_sum"),
                "csat_count": higher("csat_count"),
            },
        )
    )


async def _apply_followups(
    sessionmaker: async_sessionmaker[AsyncSession], page: list[dict[str, Any]], type: str
) -> None:
    """Follow-ups as the consumer applies their events (the status is the document's; an overdue event's type
    marks the state overdue, any other clears it)."""
    if not page:
        return
    async with sessionmaker() as session, session.begin():
        await events.apply(session, [_as_event(type, doc, doc["updated_at"]) for doc in page])


async def _prune(
    sessionmaker: async_sessionmaker[AsyncSession], listed: set[uuid.UUID], before: datetime, page_size: int
) -> int:
    """Removes the touchpoints and follow-ups no service listed, received or made before ``before`` (a page of
    the projection a transaction, in id order), and their touches from the header's counts."""
    table = projection.TABLE
    ranks = {projection.SORT_RANK["interaction"]: "received_at", projection.SORT_RANK["followup"]: "created_at"}
    pruned, after = 0, uuid.UUID(int=0)
    while True:
        async with sessionmaker() as session, session.begin():
            rows = (
                await session.execute(
                    select(table.c.id, table.c.contact_id, table.c.sort_rank, table.c.document)
                    .where(table.c.sort_rank.in_(list(ranks)), table.c.id > after)
                    .order_by(table.c.id)
                    .limit(page_size)
                )
            ).all()
            if not rows:
                return pruned
            after = rows[-1].id
            gone: list[uuid.UUID] = []
            untouched: list[dict[str, Any]] = []
            for row in rows:
                doc = json.loads(row.document)
                stamp = doc.get(ranks[row.sort_rank])
                if row.id in listed or stamp is None or as_utc(datetime.fromisoformat(str(stamp))) >= before:
                    continue
                gone.append(row.id)
                if row.sort_rank == projection.SORT_RANK["interaction"]:
                    csat = doc.get("csat")
                    scored = isinstance(csat, int) and not isinstance(csat, bool)
                    untouched.append({"contact_id": row.contact_id, "channel": str(doc.get("channel") or "unknown"),
                                      "csat": csat if scored else 0, "scored": int(scored)})  # fmt: skip
            if gone:
                await session.execute(delete(table).where(table.c.id.in_(gone)))
                await session.execute(delete(FollowupState).where(col(FollowupState.id).in_(gone)))
                for touch in untouched:
                    await session.execute(
                        update(TouchSummary)
                        .where(col(TouchSummary.contact_id) == touch["contact_id"],
                               col(TouchSummary.channel) == touch["channel"], col(TouchSummary.touches) > 0)
                        .values(touches=col(TouchSummary.touches) - 1,
                                csat_sum=col(TouchSummary.csat_sum) - touch["csat"],
                                csat_count=col(TouchSummary.csat_count) - touch["scored"])
                    )  # fmt: skip
                pruned += len(gone)


async def rebuild_timeline(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    interactions: ServiceClient,
    followups: ServiceClient,
    clock: Clock,
    page_size: int = PAGE_SIZE,
    settle_s: float = SETTLE_S,
    prune_received_before: datetime | None = None,
) -> Rebuilt:
    """Applies every touchpoint and follow-up the services hold to the projection (one transaction a page)."""
    rebuilt = Rebuilt()
    settled_before = clock.now() - timedelta(seconds=settle_s)
    async for page in pages(interactions, "/v1/interactions", page_size=page_size):
        async with sessionmaker() as session, session.begin():
            await _apply_touchpoints(session, page, rebuilt, settled_before=settled_before)
        rebuilt.touchpoints += len(page)
        log.info("timeline_rebuild_touchpoints", done=rebuilt.touchpoints)
    touches = list(rebuilt.touches.values())
    for start in range(0, len(touches), page_size):
        async with sessionmaker() as session, session.begin():
            await _raise_touches(session, touches[start : start + page_size])
    # The overdue ones first, as overdue (the service's own reckoning, overdue=true), then every other one.
    overdue: set[str] = set()
    async for page in pages(followups, "/v1/followups", page_size=page_size, overdue="true"):
        overdue.update(doc["id"] for doc in page)
        rebuilt.listed.update(uuid.UUID(str(doc["id"])) for doc in page)
        await _apply_followups(sessionmaker, page, followup_type("overdue"))
    async for page in pages(followups, "/v1/followups", page_size=page_size):
        await _apply_followups(sessionmaker, [doc for doc in page if doc["id"] not in overdue],
                               followup_type("scheduled"))  # fmt: skip
        rebuilt.followups += len(page)
        rebuilt.listed.update(uuid.UUID(str(doc["id"])) for doc in page)
        log.info("timeline_rebuild_followups", done=rebuilt.followups)
    if prune_received_before is not None:
        rebuilt.pruned = await _prune(sessionmaker, rebuilt.listed, as_utc(prune_received_before), page_size)
        log.info("timeline_rebuild_pruned", pruned=rebuilt.pruned)
    return rebuilt


async def _run(settings: GatewaySettings, args: argparse.Namespace) -> Rebuilt:
    engine = make_engine(settings.database_url, pool_size=2, pooler=settings.db_pooler)
    clients = {
        name: ServiceClient(
            name,
            getattr(settings, f"{name}_url"),
            timeout_s=settings.upstream_timeout_s,
            connect_timeout_s=settings.upstream_connect_timeout_s,
            read_retries=settings.upstream_read_retries,
            pool_size=2,
        )
        for name in ("interactions", "followups")
    }
    try:
        return await rebuild_timeline(
            sessionmaker=make_sessionmaker(engine),
            interactions=clients["interactions"],
            followups=clients["followups"],
            clock=SystemClock(),
            page_size=args.page_size,
            settle_s=args.settle,
            prune_received_before=args.prune_received_before,
        )
    finally:
        for client in clients.values():
            await client.close()
        await engine.dispose()


def _utc_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give the time with its offset (e.g. 2026-12-06T19:00:00Z)")
    return as_utc(moment)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.rebuild_timeline",
        description="Rebuild the timeline projection from the interactions and follow-ups services' lists "
        "(the gateway's settings: GATEWAY_DATABASE_URL, GATEWAY_INTERACTIONS_URL, GATEWAY_FOLLOWUPS_URL).",
    )
    parser.add_argument("--page-size", type=int, default=PAGE_SIZE, choices=range(1, PAGE_SIZE + 1),
                        metavar=f"1..{PAGE_SIZE}", help="items per page and per transaction")  # fmt: skip
    parser.add_argument("--settle", type=float, default=SETTLE_S, metavar="SECONDS",
                        help="touchpoints received this recently are counted by their events, not here")  # fmt: skip
    parser.add_argument("--prune-received-before", type=_utc_time, metavar="TIME",
                        help="also remove what no service lists, received before TIME (ISO 8601, offset)")  # fmt: skip
    args = parser.parse_args(argv)
    settings = GatewaySettings()
    configure_logging(service="gateway", level=settings.log_level, json=settings.log_json)
    rebuilt = asyncio.run(_run(settings, args))
    print(
        f"timeline rebuilt: {rebuilt.touchpoints} touchpoints, {rebuilt.followups} follow-ups, {rebuilt.pruned} pruned"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
