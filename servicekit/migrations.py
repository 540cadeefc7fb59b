"""Alembic glue: each service's ``migrations/env.py`` calls ``run_migrations`` with its own metadata."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine


def on_dialect(dialect: str) -> Callable[..., bool]:
    """Alembic's ``include_object`` for a database of ``dialect``: leaves out what a model made for other databases
    only (``.ddl_if(dialect=...)``, e.g. a PostgreSQL GIN index), which ``create_all`` skips there but autogenerate
    would otherwise ask to add."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        ddl_if = getattr(obj, "_ddl_if", None)  # set by SchemaItem.ddl_if(); SQLAlchemy's DDL reads it the same way
        if ddl_if is None or ddl_if.dialect is None:
            return True
        wanted = (ddl_if.dialect,) if isinstance(ddl_if.dialect, str) else tuple(ddl_if.dialect)
        return dialect in wanted

    return include


def run_migrations(target_metadata: MetaData, default_url: str) -> None:
    """Body of a service's env.py. The URL comes from the Alembic config when a caller set one,
    otherwise from the service's settings (its ``<PREFIX>_DATABASE_URL``)."""
    config = context.config
    url = config.attributes.get("database_url") or default_url
    if context.is_offline_mode():
        context.configure(
            url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=url.startswith("sqlite")
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_online(url, target_metadata))


def _do_run(connection: Connection, target_metadata: MetaData) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=on_dialect(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: str, target_metadata: MetaData) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_do_run, target_metadata)
        await connection.commit()
    await engine.dispose()


def upgrade(alembic_ini: str | Path, database_url: str, revision: str = "head") -> None:
    """Apply migrations (blocking: call with ``asyncio.to_thread`` from async code)."""
    config = Config(str(alembic_ini))
    config.attributes["database_url"] = database_url
    command.upgrade(config, revision)
