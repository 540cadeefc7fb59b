"""The previous release's schema, per service: what the version still running during an upgrade reads.

Migrations newer than these revisions run while that version serves, so they may only expand the schema (new
tables, new nullable or defaulted columns, indexes, backfills); a drop or a rename waits for a later release
(docs/deploy.md, "Migrations: expand, then contract"). ``tests/test_expand_contract.py`` enforces it and
``tests/test_upgrade.py`` upgrades a database holding data at these revisions while a reader keeps reading.

Moving the marker, at each release: once the tag ``v<version>`` is cut, set ``PREVIOUS_RELEASE_VERSION`` to it
and each revision below to that service's head at the tag (``alembic -c <service>/alembic.ini heads``); then
teach ``tests/test_upgrade.py`` the tables and columns that release wrote.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# No version is tagged yet (CHANGELOG.md: 0.1.0 is unreleased); the first deployments ran the schema of the
# create migrations of 2026-11-23, so that is the schema an upgrade starts from.
PREVIOUS_RELEASE_VERSION = "the 2026-11-23 schema (before 0.1.0)"

PREVIOUS_RELEASE: dict[str, str] = {
    "contacts": "721ee35f029f",
    "interactions": "7cebc03481fd",
    "followups": "7b8a85c67720",
    "gateway": "0d55fc2efc42",
}

ALEMBIC_INI: dict[str, Path] = {
    "contacts": ROOT / "services" / "contacts" / "alembic.ini",
    "interactions": ROOT / "services" / "interactions" / "alembic.ini",
    "followups": ROOT / "services" / "followups" / "alembic.ini",
    "gateway": ROOT / "gateway" / "alembic.ini",
}
