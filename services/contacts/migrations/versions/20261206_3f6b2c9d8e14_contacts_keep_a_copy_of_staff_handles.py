"""contacts keep a copy of staff handles (from crm.staff.changed.v1) to check a CSV import's owners

Revision ID: 3f6b2c9d8e14
Revises: 721ee35f029f
Create Date: 2026-12-06 15:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "3f6b2c9d8e14"
down_revision: str | Sequence[str] | None = "721ee35f029f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "staff_handles",
        sa.Column("handle", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("handle"),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("staff_handles")
