"""staff handles, teams and time zones

Staff users get a handle (how contacts' owners, follow-ups' assignees and touchpoints' agents name them), their
teams and a time zone; a teams table holds the known teams. An existing user's handle is the local part of their
email, made unique with -2, -3 … when two would clash.

Revision ID: 7c3e5a1f9b02
Revises: 5b1e7c9d4a20
Create Date: 2026-12-06 12:10:00

"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "7c3e5a1f9b02"
down_revision: str | Sequence[str] | None = "5b1e7c9d4a20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Contracts the schema (tests/test_expand_contract.py): handle and teams end NOT NULL without a server default,
# and the gateway of the previous schema inserts staff users without them, so adding a staff user fails from this
# migration until the new gateway runs. Accepted as the one exception: no release was tagged before it; from
# 0.1.0 on a new NOT NULL column gets a server default (docs/deploy.md, "Migrations: expand, then contract").
contract = True


def _handle_of(email: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9._-]+", "-", email.split("@", 1)[0].lower()).strip("._-")[:56] or "staff"
    handle, n = base, 1
    while handle in taken:
        n += 1
        handle = f"{base}-{n}"
    taken.add(handle)
    return handle


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("timezone", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("handle", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.add_column(sa.Column("teams", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("timezone", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
    connection = op.get_bind()
    users = sa.table("staff_users", sa.column("id", sa.Uuid()), sa.column("email", sa.String()),
                     sa.column("handle", sa.String()), sa.column("teams", sa.JSON()))  # fmt: skip
    taken: set[str] = set()
    for user_id, email in connection.execute(sa.select(users.c.id, users.c.email).order_by(users.c.email)).all():
        connection.execute(
            users.update().where(users.c.id == user_id).values(handle=_handle_of(email, taken), teams=[])
        )
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.alter_column("handle", existing_type=sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False)
        batch_op.alter_column("teams", existing_type=sa.JSON(), nullable=False)
        batch_op.create_unique_constraint("uq_staff_users_handle", ["handle"])


def downgrade() -> None:
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.drop_constraint("uq_staff_users_handle", type_="unique")
        batch_op.drop_column("timezone")
        batch_op.drop_column("teams")
        batch_op.drop_column("handle")
    op.drop_table("teams")
