"""idempotency keys remember their touchpoint

A stored response names a touchpoint (its subject and body included); the column lets an erase find the
responses about the erased contact and replace them, without reading every stored response.

Revision ID: 3e5a0c1d9b47
Revises: 7cebc03481fd
Create Date: 2026-12-06 12:20:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3e5a0c1d9b47"
down_revision: str | Sequence[str] | None = "7cebc03481fd"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("touchpoint_id", sa.Uuid(), nullable=True))
        batch_op.create_index(batch_op.f("ix_idempotency_keys_touchpoint_id"), ["touchpoint_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_touchpoint_id"))
        batch_op.drop_column("touchpoint_id")
