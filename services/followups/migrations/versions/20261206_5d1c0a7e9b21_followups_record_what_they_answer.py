"""followups record what they answer: the triggering touchpoint and its channel, later triggers, why one closed

Revision ID: 5d1c0a7e9b21
Revises: 7b8a85c67720
Create Date: 2026-12-06 12:10:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "5d1c0a7e9b21"
down_revision: str | Sequence[str] | None = "7b8a85c67720"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("followups") as batch_op:
        batch_op.add_column(sa.Column("trigger_interaction_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("trigger_channel", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True))
        batch_op.add_column(sa.Column("triggers", sa.JSON(), server_default=sa.text("'[]'"), nullable=False))
        batch_op.add_column(sa.Column("close_reason", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("followups") as batch_op:
        batch_op.drop_column("close_reason")
        batch_op.drop_column("triggers")
        batch_op.drop_column("trigger_channel")
        batch_op.drop_column("trigger_interaction_id")
