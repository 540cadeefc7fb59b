"""The work queue: listing follow-ups (filters, buckets, sort, keyset pages, counts) and bulk actions.

Buckets split the open follow-ups (scheduled or due) in three, by one person's or team's "today":
``overdue`` (past its overdue time, as ``overdue=true``), ``due_today`` (not overdue, due before the end of
today) and ``upcoming`` (due after today). Every open follow-up is in exactly one. A fourth, ``done``, holds the
work closed by someone or something (completed or cancelled); skipped ones were never work and are in none.

Pages are keyset pages (no offset, no cap on how far one can page): the cursor holds the last row's sort key.
"""

from __future__ import annotations

import uuid
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import and_, case, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from servicekit import cursors
from servicekit.clock import as_utc
from servicekit.problems import ProblemError, Unprocessable
from services.followups.models import OPEN, PRIORITY_RANK, Followup
from services.followups.schemas import BucketCounts, BulkItemResult, FollowupBulk, FollowupBulkResult, FollowupRead
from services.followups.service import FollowupService

DONE = ("completed", "cancelled")

MAX_PAGE = 200


# sort name -> (columns, descending)
SORTS: dict[str, tuple[tuple[Any, ...], bool]] = {
    "priority": ((col(Followup.priority_rank), col(Followup.due_at), col(Followup.id)), False),
    "due_at": ((col(Followup.due_at), col(Followup.id)), False),
    "-due_at": ((col(Followup.due_at), col(Followup.id)), True),
    "-created_at": ((col(Followup.created_at), col(Followup.id)), True),
    # timeline_at is closed_at once closed (never null, unlike closed_at): the newest done work first, and open
    # work (which has no closed_at) by its due time.
    "-closed_at": ((col(Followup.timeline_at), col(Followup.id)), True),
}


def _cursor_of(row: Followup, sort: str) -> str:
    if sort == "priority":  # the shape cursors had before there were other sorts: those given out still work
        return cursors.encode([row.priority_rank, as_utc(row.due_at).isoformat(), str(row.id)])
    at = {"-created_at": row.created_at, "-closed_at": row.timeline_at}.get(sort, row.due_at)
    return cursors.encode([sort, as_utc(at).isoformat(), str(row.id)])


def _decode_cursor(cursor: str, sort: str) -> tuple[Any, ...]:
    def read(payload: Any) -> tuple[Any, ...]:
        if sort == "priority":
            rank, due, ident = payload
            if rank not in PRIORITY_RANK.values() or isinstance(rank, bool):
                raise ValueError("not a priority rank")
            return int(rank), as_utc(datetime.fromisoformat(due)), uuid.UUID(ident)
        given_sort, at, ident = payload
        if given_sort != sort:
            raise ValueError("a cursor of another sort")
        return as_utc(datetime.fromisoformat(at)), uuid.UUID(ident)

    return cursors.decode(cursor, read, detail="The cursor is not one this API gave out (with this sort).")


def parse_before(value: str) -> tuple[datetime, uuid.UUID]:
    """``<ISO time>|<uuid>``: the timeline key items must come strictly before."""
    try:
        at, ident = value.rsplit("|", 1)
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None:
            raise ValueError("naive")
        return as_utc(moment), uuid.UUID(ident)
    except (ValueError, OverflowError):  # OverflowError: a time UTC cannot hold (year 1 at +14:00)
        raise Unprocessable(
            "before must be <ISO 8601 time with offset>|<uuid>, e.g. 2026-01-05T09:00:00+00:00|<id>.", field="before"
        ) from None


def end_of_today(now: datetime, timezone: str) -> datetime:
    """Midnight after ``now`` where ``timezone`` is, in UTC."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise Unprocessable(f"{timezone!r} is not an IANA time zone.", field="tz") from None
    local = now.astimezone(zone)
    return as_utc(datetime.combine(local.date() + timedelta(days=1), time(), tzinfo=zone))


def _bucket_of(bucket: str, *, now: datetime, today_ends: datetime) -> ColumnElement[bool]:
    if bucket == "done":
        return col(Followup.status).in_(DONE)
    is_open = col(Followup.status).in_(OPEN)
    overdue = and_(col(Followup.overdue_at).is_not(None), col(Followup.overdue_at) <= now)
    if bucket == "overdue":
        return and_(is_open, overdue)
    if bucket == "due_today":
        return and_(is_open, ~overdue, col(Followup.due_at) < today_ends)
    return and_(is_open, ~overdue, col(Followup.due_at) >= today_ends)


async def list_followups(
    *,
    session: AsyncSession,
    now: datetime,
    timezone: str,
    contact_id: uuid.UUID | None = None,
    status: str | None = None,
    policy: str | None = None,
    assignee: str | None = None,
    team: str | None = None,
    channel: str | None = None,
    priority: str | None = None,
    due_before: datetime | None = None,
    overdue: bool | None = None,
    bucket: str | None = None,
    sort: str = "priority",
    order: str = "queue",
    before: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Followup], str | None, BucketCounts | None]:
    """The work queue (``sort``, keyset ``cursor``; the counts per bucket on a first page) or a contact's timeline
    (``order=timeline``: newest ``timeline_at`` first, keyset ``before``)."""
    today_ends = end_of_today(now, timezone)
    filters: list[ColumnElement[bool]] = []
    if contact_id is not None:
        filters.append(col(Followup.contact_id) == contact_id)
    if status is not None:
        filters.append(col(Followup.status) == status)
    if policy is not None:
        filters.append(col(Followup.policy) == policy)
    if assignee is not None:
        filters.append(col(Followup.assignee) == assignee)
    if team is not None:
        filters.append(col(Followup.team) == team)
    if channel is not None:
        filters.append(col(Followup.channel) == channel)
    if priority is not None:
        filters.append(col(Followup.priority) == priority)
    if due_before is not None:
        filters.append(col(Followup.due_at) < as_utc(due_before))
    # No overdue time (follow-ups of the previous release) is never overdue; without the IS NOT NULL,
    # NOT (open AND NULL <= now) would be NULL and ``overdue=false`` would leave such rows out too.
    is_overdue = and_(
        col(Followup.status).in_(OPEN), col(Followup.overdue_at).is_not(None), col(Followup.overdue_at) <= now
    )
    if overdue is True:
        filters.append(is_overdue)
    elif overdue is False:
        filters.append(~is_overdue)
    query = select(Followup).where(*filters)
    if bucket is not None:
        query = query.where(_bucket_of(bucket, now=now, today_ends=today_ends))
    if order == "timeline":
        if before is not None:
            at, ident = parse_before(before)
            query = query.where(tuple_(col(Followup.timeline_at), col(Followup.id)) < tuple_(at, ident))
        query = query.order_by(col(Followup.timeline_at).desc(), col(Followup.id).desc()).limit(limit)
        return list((await session.scalars(query)).all()), None, None
    columns, descending = SORTS[sort]
    if cursor:
        key = tuple_(*columns)
        after = tuple_(*_decode_cursor(cursor, sort))
        query = query.where(key < after if descending else key > after)
    query = query.order_by(*(c.desc() if descending else c for c in columns)).limit(limit + 1)
    rows = list((await session.scalars(query)).all())
    next_cursor = _cursor_of(rows[limit - 1], sort) if len(rows) > limit else None
    counts = None if cursor else await _counts(session, filters, now=now, today_ends=today_ends, timezone=timezone)
    return rows[:limit], next_cursor, counts


async def _counts(
    session: AsyncSession, filters: list[ColumnElement[bool]], *, now: datetime, today_ends: datetime, timezone: str
) -> BucketCounts:
    def count_of(bucket: str) -> Any:
        return func.coalesce(func.sum(case((_bucket_of(bucket, now=now, today_ends=today_ends), 1), else_=0)), 0)

    row = (
        await session.execute(
            select(count_of("overdue"), count_of("due_today"), count_of("upcoming"), count_of("done")).where(
                *filters, col(Followup.status).in_((*OPEN, *DONE))
            )
        )
    ).one()
    overdue, due_today, upcoming, done = (int(n) for n in row)
    return BucketCounts(overdue=overdue, due_today=due_today, upcoming=upcoming, done=done, timezone=timezone)


async def apply_bulk(*, session: AsyncSession, followups: FollowupService, request: FollowupBulk) -> FollowupBulkResult:
    """Each id as the single action would treat it; a refusal (404, 409, 422) is that id's result and changes
    nothing of it (the actions check before they change anything), the others go on. One transaction: the
    caller's session commits them all, with their events, at once."""
    results: list[BulkItemResult] = []
    for followup_id in dict.fromkeys(request.ids):  # an id sent twice is acted on once
        try:
            if request.action == "assign":
                row = await followups.assign(
                    session=session, followup_id=followup_id, assignee=request.assignee, team=request.team
                )
            elif request.action == "complete":
                row = await followups.complete(
                    session=session, followup_id=followup_id, outcome=request.outcome, interaction_id=None
                )
            elif request.action == "snooze":
                assert request.until is not None  # the request's validator says so
                row = await followups.snooze(session=session, followup_id=followup_id, until=request.until)
            else:
                row = await followups.cancel(session=session, followup_id=followup_id, reason=request.reason)
        except ProblemError as refused:
            results.append(
                BulkItemResult(id=followup_id, status=refused.status, title=refused.title, detail=refused.detail)
            )
            continue
        results.append(BulkItemResult(id=followup_id, status=200, followup=FollowupRead.model_validate(row)))
    succeeded = sum(1 for r in results if r.status == 200)
    return FollowupBulkResult(
        action=request.action, succeeded=succeeded, failed=len(results) - succeeded, results=results
    )
