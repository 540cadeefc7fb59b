"""staff password links and console flashes

One-time links that let a staff user set their password (an invite, or a reset), stored as a SHA-256 of the
token; and the console's one-time flashes (a new API key or link shown once after a redirect), sealed and kept
a few minutes at most. Two new tables: expand only.

Revision ID: 9a4d2c6e8f13
Revises: 7c3f9a1e5b20
Create Date: 2026-12-06 18:45:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "9a4d2c6e8f13"
down_revision: str | Sequence[str] | None = "7c3f9a1e5b20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "staff_password_links",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["staff_users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("staff_password_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_staff_password_links_user_id"), ["user_id"], unique=False)
    op.create_table(
        "console_flashes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("console_flashes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_console_flashes_session_id"), ["session_id"], unique=False)


def downgrade() -> None:
    op.drop_table("console_flashes")
    op.drop_table("staff_password_links")
