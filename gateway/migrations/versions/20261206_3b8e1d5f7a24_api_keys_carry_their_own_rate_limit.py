"""api keys carry their own rate limit

Each API key gets its own rate limit, set when it is made (issue 21): requests per minute and the burst it may
send at once. Both nullable, with no default: a key made before this migration (or by the previous release during
a rollout) has none and keeps the gateway's GATEWAY_RATE_LIMIT_PER_MINUTE / _BURST, as it had. Expand only.

Revision ID: 3b8e1d5f7a24
Revises: 9d41b7e2c6a3
Create Date: 2026-12-06 19:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3b8e1d5f7a24"
down_revision: str | Sequence[str] | None = "9d41b7e2c6a3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rate_limit_per_minute", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rate_limit_burst", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("rate_limit_burst")
        batch_op.drop_column("rate_limit_per_minute")
