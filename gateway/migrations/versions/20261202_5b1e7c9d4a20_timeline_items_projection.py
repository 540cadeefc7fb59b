"""timeline items projection

The timeline reads every item from this table instead of calling the interactions and follow-ups services per
page. The contact events already held are copied in; touchpoints and follow-ups arrive with their events
(see the README: an existing deployment fills them by replaying the streams).

Revision ID: 5b1e7c9d4a20
Revises: 0d55fc2efc42
Create Date: 2026-12-02 06:20:00

"""

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "5b1e7c9d4a20"
down_revision: str | Sequence[str] | None = "0d55fc2efc42"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def upgrade() -> None:
    items = op.create_table(
        "timeline_items",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("contact_id", sa.Uuid(), nullable=False),
        sa.Column("original_contact_id", sa.Uuid(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sort_rank", sa.SmallInteger(), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=30), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("redacted", sa.Boolean(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("timeline_items", schema=None) as batch_op:
        batch_op.create_index("ix_timeline_items_page", ["contact_id", "at", "sort_rank", "id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_timeline_items_original_contact_id"), ["original_contact_id"], unique=False
        )
    events = sa.table(
        "contact_events",
        sa.column("id", sa.Uuid()),
        sa.column("contact_id", sa.Uuid()),
        sa.column("original_contact_id", sa.Uuid()),
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("type", sa.String()),
        sa.column("title", sa.String()),
        sa.column("summary", sa.String()),
        sa.column("detail", sa.JSON()),
    )
    rows = []
    for event in op.get_bind().execute(sa.select(events)).all():
        at = _utc(event.at)
        # The item as gateway.projection.contact_event_item makes it (a test compares the two).
        item = {
            "id": str(event.id), "kind": "contact_event", "at": at.isoformat(), "channel": None,
            "type": event.type, "title": event.title, "summary": event.summary, "contact_id": str(event.contact_id),
            "original_contact_id": str(event.original_contact_id), "detail": event.detail,
        }  # fmt: skip
        rows.append({
            "id": event.id, "contact_id": event.contact_id, "original_contact_id": event.original_contact_id,
            "at": at, "sort_rank": 0, "channel": None, "type": event.type, "version": 1, "redacted": False,
            "document": json.dumps(item),
        })  # fmt: skip
    if rows:
        op.bulk_insert(items, rows)


def downgrade() -> None:
    with op.batch_alter_table("timeline_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_timeline_items_original_contact_id"))
        batch_op.drop_index("ix_timeline_items_page")
    op.drop_table("timeline_items")
