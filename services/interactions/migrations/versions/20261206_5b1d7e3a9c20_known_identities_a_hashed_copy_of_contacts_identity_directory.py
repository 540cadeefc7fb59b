"""known_identities: a hashed copy of the contacts service's identity directory

Revision ID: 5b1d7e3a9c20
Revises: 3f6e2b8c4a10
Create Date: 2026-12-06 18:35:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "5b1d7e3a9c20"
down_revision: str | Sequence[str] | None = "3f6e2b8c4a10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "known_identities",
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("contact_id", sa.Uuid(), nullable=False),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )
    op.create_index(op.f("ix_known_identities_contact_id"), "known_identities", ["contact_id"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(op.f("ix_known_identities_contact_id"), table_name="known_identities")
    op.drop_table("known_identities")
