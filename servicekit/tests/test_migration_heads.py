"""Each service's migrations form one line: two branches that each add a migration after the same revision merge
cleanly in git but leave Alembic with two heads, and `alembic upgrade head` then refuses to run."""

from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

ROOT = Path(__file__).resolve().parents[2]
ALEMBIC_INIS = [*sorted(ROOT.glob("services/*/alembic.ini")), ROOT / "gateway" / "alembic.ini"]


@pytest.mark.parametrize("alembic_ini", ALEMBIC_INIS, ids=lambda path: path.parent.name)
def test_one_head(alembic_ini: Path) -> None:
    config = Config(str(alembic_ini))
    config.set_main_option("script_location", str(alembic_ini.parent / "migrations"))
    heads = ScriptDirectory.from_config(config).get_heads()
    assert len(heads) == 1, f"{alembic_ini.parent.name} has heads {heads}: chain the newer migration after the other"
