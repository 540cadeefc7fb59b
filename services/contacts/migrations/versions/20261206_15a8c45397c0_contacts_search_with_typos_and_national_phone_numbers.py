"""contacts search with typos and national phone numbers: name terms, pg_trgm GIN index, SQLite trigram table

Adds the ``name`` search terms (the words of name and company, for the typo search) and each phone's national
part as a ``national`` term to every live contact: fields of their own, because the previous release, serving on
while this runs, reads ``q`` and ``tag`` terms only, so its searches answer as before. On PostgreSQL the pg_trgm
extension and a GIN trigram index over the name terms, on SQLite the ``search_trigrams`` vocabulary (filled from
the name terms).

Revision ID: 15a8c45397c0
Revises: 3f6b2c9d8e14
Create Date: 2026-12-06 18:45:00

"""

import re
from collections.abc import Sequence

import phonenumbers
import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql, sqlite

# revision identifiers, used by Alembic.
revision: str = "15a8c45397c0"
down_revision: str | Sequence[str] | None = "3f6b2c9d8e14"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WORD = re.compile(r"[^\W_]+")
_BATCH = 2000


def _name_words(*texts: str | None) -> set[str]:
    # As services/contacts/search.py cut them when this revision was written.
    return {word[:200] for text in texts if text for word in text.lower().replace(",", " ").split()}


def _national(phone: str) -> str | None:
    try:
        return str(phonenumbers.national_significant_number(phonenumbers.parse(phone)))
    except phonenumbers.NumberParseException:
        return None


def _trigrams(term: str) -> set[str]:
    grams: set[str] = set()
    for word in _WORD.findall(term.lower()):
        padded = f"  {word} "
        grams |= {padded[i : i + 3] for i in range(len(padded) - 2)}
    return grams


def upgrade() -> None:
    """Upgrade schema."""
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    op.create_table(
        "search_trigrams",
        sa.Column("trigram", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("term", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("grams", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("trigram", "term"),
    )
    with op.batch_alter_table("search_trigrams", schema=None) as batch_op:
        batch_op.create_index("ix_search_trigrams_term", ["term"], unique=False)

    contacts = sa.table(
        "contacts", sa.column("id", sa.Uuid()), sa.column("name", sa.String()), sa.column("company", sa.String()),
        sa.column("phones", sa.JSON()), sa.column("status", sa.String()),
    )  # fmt: skip
    terms = sa.table("search_terms", sa.column("contact_id", sa.Uuid()), sa.column("field", sa.String()),
                     sa.column("term", sa.String()))  # fmt: skip
    insert = (postgresql.insert if postgres else sqlite.insert)(terms)
    last = None
    while True:
        query = sa.select(contacts).where(contacts.c.status == "active").order_by(contacts.c.id).limit(_BATCH)
        if last is not None:
            query = query.where(contacts.c.id > last)
        rows = bind.execute(query).all()
        if not rows:
            break
        last = rows[-1].id
        new = []
        for row in rows:
            new += [{"contact_id": row.id, "field": "name", "term": t} for t in _name_words(row.name, row.company)]
            national = {_national(phone) for phone in row.phones or []} - {None}
            new += [{"contact_id": row.id, "field": "national", "term": t} for t in national]
        if new:
            bind.execute(insert.on_conflict_do_nothing(), new)

    if postgres:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(
            "CREATE INDEX ix_search_terms_name_trgm ON search_terms USING gin (term gin_trgm_ops) WHERE field = 'name'"
        )
        return
    words = bind.execute(sa.select(terms.c.term).where(terms.c.field == "name").distinct()).scalars().all()
    trigrams = sa.table("search_trigrams", sa.column("trigram"), sa.column("term"), sa.column("grams", sa.Integer()))
    batch: list[dict[str, object]] = []
    for word in words:
        grams = _trigrams(word)
        batch += [{"trigram": g, "term": word, "grams": len(grams)} for g in grams]
        if len(batch) >= _BATCH:
            bind.execute(trigrams.insert(), batch)
            batch = []
    if batch:
        bind.execute(trigrams.insert(), batch)


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_search_terms_name_trgm")
    # The previous release knows no other fields than q and tag, and searches none else.
    op.execute("DELETE FROM search_terms WHERE field IN ('name', 'national')")
    with op.batch_alter_table("search_trigrams", schema=None) as batch_op:
        batch_op.drop_index("ix_search_trigrams_term")
    op.drop_table("search_trigrams")
