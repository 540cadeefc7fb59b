"""Expand, then contract (docs/deploy.md): a migration newer than the previous release runs while that release
still serves, so it drops or renames nothing unless it declares ``contract = True`` naming the release that
stopped using it, and the current models no longer use it either."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData

from gateway.models import metadata as gateway_metadata
from servicekit.expand_contract import ContractOperation, contract_operations, declared_contract
from servicekit.releases import ALEMBIC_INI, PREVIOUS_RELEASE
from services.contacts.models import metadata as contacts_metadata
from services.followups.models import metadata as followups_metadata
from services.interactions.models import metadata as interactions_metadata

METADATA: dict[str, MetaData] = {
    "contacts": contacts_metadata,
    "interactions": interactions_metadata,
    "followups": followups_metadata,
    "gateway": gateway_metadata,
}


def scripts(service: str) -> ScriptDirectory:
    config = Config(str(ALEMBIC_INI[service]))
    config.set_main_option("script_location", str(ALEMBIC_INI[service].parent / "migrations"))
    return ScriptDirectory.from_config(config)


def newer_than_previous_release(service: str) -> list[Path]:
    """The migration files after the previous release's revision, oldest first."""
    directory = scripts(service)
    newer = [
        Path(revision.path)
        for revision in directory.walk_revisions(base=PREVIOUS_RELEASE[service], head="heads")
        if revision.revision != PREVIOUS_RELEASE[service]
    ]
    return newer[::-1]


def still_used(operation: ContractOperation, metadata: MetaData) -> bool:
    table = metadata.tables.get(operation.table)
    if operation.table == "?":
        return True  # not placed in a table: a reviewer must see it, so it never passes unmarked
    if operation.column is None:
        return table is not None
    return table is not None and operation.column in table.c


def refusals(source: str, metadata: MetaData) -> list[str]:
    """Why a migration newer than the previous release may not run beside it (empty when it may)."""
    operations = contract_operations(source)
    if not operations:
        return []
    release = declared_contract(source)
    if release is None:
        return [f"{op}: contracts the schema while the previous release still runs (declare contract = True)"
                for op in operations]  # fmt: skip
    if release == "":
        return ["contract = True without a comment naming the release that stopped using it"]
    return [f"{op}: the current models still use it" for op in operations if op.removes and still_used(op, metadata)]


@pytest.mark.parametrize("service", sorted(PREVIOUS_RELEASE))
def test_the_previous_release_is_a_revision_of_the_service(service: str) -> None:
    directory = scripts(service)
    assert directory.get_revision(PREVIOUS_RELEASE[service]) is not None
    assert newer_than_previous_release(service), "the upgrade test would have nothing to upgrade"


@pytest.mark.parametrize("service", sorted(PREVIOUS_RELEASE))
def test_migrations_after_the_previous_release_only_expand(service: str) -> None:
    found = {
        path.name: problems
        for path in newer_than_previous_release(service)
        if (problems := refusals(path.read_text(), METADATA[service]))
    }
    assert found == {}, found


# ---- the check itself, on migrations written to break the rule

MODELS = MetaData()
sa.Table("contacts", MODELS, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String))


def migration(upgrade_body: str, header: str = "") -> str:
    body = "\n".join(f"    {line}" for line in upgrade_body.strip().splitlines())
    return (
        f"from alembic import op\n{header}\n\n"
        f"def upgrade() -> None:\n{body}\n\n\n"
        "def downgrade() -> None:\n    op.drop_table('contacts')\n"
    )


@pytest.mark.parametrize(
    ("upgrade_body", "expected"),
    [
        ("op.drop_column('contacts', 'fax')", "drop_column contacts.fax"),
        ("op.drop_column(table_name='contacts', column_name='fax')", "drop_column contacts.fax"),
        ("with op.batch_alter_table('contacts') as batch_op:\n    batch_op.drop_column('fax')",
         "drop_column contacts.fax"),
        ("with op.batch_alter_table('contacts') as b:\n    if True:\n        b.alter_column('fax', new_column_name='f')",  # noqa: E501
         "rename_column contacts.fax"),
        ("op.alter_column('contacts', 'fax', new_column_name='telefax')", "rename_column contacts.fax"),
        ("op.drop_table('faxes')", "drop_table faxes"),
        ("op.rename_table('faxes', 'telefaxes')", "rename_table faxes"),
        ("op.execute('ALTER TABLE contacts DROP COLUMN fax')", "SQL DROP COLUMN ?"),
        ("op.alter_column('contacts', 'fax', nullable=False)", "set_not_null contacts.fax"),
        ("with op.batch_alter_table('contacts') as batch_op:\n    batch_op.add_column(sa.Column('fax', sa.Text(), nullable=False))",  # noqa: E501
         "add_not_null_column contacts.fax"),
    ],
)  # fmt: skip
def test_a_drop_or_rename_is_refused_unless_declared(upgrade_body: str, expected: str) -> None:
    source = migration(upgrade_body)
    assert [str(op).split(": ", 1)[1] for op in contract_operations(source)] == [expected]
    assert refusals(source, MODELS), "refused without contract = True"
    declared = migration(upgrade_body, "contract = True  # 0.3.0 stopped reading contacts.fax")
    assert declared_contract(declared) == "0.3.0 stopped reading contacts.fax"
    if "?" not in expected:
        assert refusals(declared, MODELS) == [], "declared, and the models no longer use it"


def test_expanding_and_the_downgrade_are_not_contracting() -> None:
    source = migration(
        "op.create_table('faxes')\n"
        "with op.batch_alter_table('contacts') as batch_op:\n"
        "    batch_op.add_column(None)\n"
        "    batch_op.alter_column('name', nullable=True)\n"
        "    batch_op.add_column(sa.Column('fax', sa.Text(), nullable=True))\n"
        "    batch_op.add_column(sa.Column('faxes', sa.JSON(), server_default=sa.text(\"'[]'\"), nullable=False))\n"
        "    batch_op.alter_column('fax', nullable=False, server_default='')\n"
        "    batch_op.drop_index('ix_contacts_name')"
    )
    assert contract_operations(source) == []
    assert refusals(source, MODELS) == []


def test_a_contract_needs_the_release_named_and_the_models_done_with_it() -> None:
    unnamed = migration("op.drop_column('contacts', 'fax')", "contract = True  # safe")
    assert declared_contract(unnamed) == ""
    assert refusals(unnamed, MODELS) == ["contract = True without a comment naming the release that stopped using it"]
    still_read = migration("op.drop_column('contacts', 'name')", "# 0.3.0 stopped writing it\ncontract = True")
    assert declared_contract(still_read) == "0.3.0 stopped writing it"
    assert refusals(still_read, MODELS) == ["line 6: drop_column contacts.name: the current models still use it"]
    false = migration("op.drop_column('contacts', 'fax')", "contract = False  # 0.3.0")
    assert declared_contract(false) is None and refusals(false, MODELS)
