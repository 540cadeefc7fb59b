"""touchpoints name the follow-up they fulfil (interactions.followup_id)

Revision ID: 3f6e2b8c4a10
Revises: 7cebc03481fd
Create Date: 2026-12-06 12:20:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "3f6e2b8c4a10"
down_revision: str | Sequence[str] | None = "7cebc03481fd"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("interactions") as batch_op:
        batch_op.add_column(sa.Column("followup_id", sa.Uuid(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("interactions") as batch_op:
        batch_op.drop_column("followup_id")
