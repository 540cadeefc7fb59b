"""make_engine behind a transaction pooler (the real PgBouncer runs in tests/test_pgbouncer.py)."""

import pytest

from servicekit.db import make_engine

URL = "postgresql+asyncpg://u@127.0.0.1:1/d"


def test_an_unknown_pooler_is_refused() -> None:
    with pytest.raises(ValueError, match="pooler"):
        make_engine(URL, pooler="session")
