"""staff handle and teams get server defaults

7c3e5a1f9b02 made ``staff_users.handle`` and ``teams`` NOT NULL without a default, so the previous release's
gateway, which inserts staff users without them, failed to add a staff user from that migration until the new
gateway had replaced it (docs/operations.md, "Upgrades"). Both columns get a server default, which makes that
insert go in again:

- ``teams``: ``[]``, what the new gateway writes for a user of no team.
- ``handle``: ``staff-`` and 12 random hex digits, drawn by the database per row, because the column is unique
  and a default cannot read the email the new gateway derives a handle from. Only a user the previous release
  adds mid-upgrade gets one; the new gateway always writes its own.

Revision ID: 9d41b7e2c6a3
Revises: 9a4d2c6e8f13
Create Date: 2026-12-06 18:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "9d41b7e2c6a3"
down_revision: str | Sequence[str] | None = "9a4d2c6e8f13"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A random per-row value in each dialect's own SQL (48 bits: a clash among a handful of users added during one
# rollout is as good as impossible, and the unique constraint would refuse it rather than merge two people).
RANDOM_HANDLE = {
    "postgresql": "'staff-' || substr(md5(random()::text || clock_timestamp()::text), 1, 12)",
    "sqlite": "('staff-' || lower(hex(randomblob(6))))",
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.alter_column(
            "handle",
            existing_type=sqlmodel.sql.sqltypes.AutoString(length=64),
            existing_nullable=False,
            server_default=sa.text(RANDOM_HANDLE[dialect]),
        )
        batch_op.alter_column("teams", existing_type=sa.JSON(), existing_nullable=False, server_default=sa.text("'[]'"))


def downgrade() -> None:
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.alter_column("teams", existing_type=sa.JSON(), existing_nullable=False, server_default=None)
        batch_op.alter_column(
            "handle",
            existing_type=sqlmodel.sql.sqltypes.AutoString(length=64),
            existing_nullable=False,
            server_default=None,
        )
