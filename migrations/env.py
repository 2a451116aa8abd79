"""Alembic environment for iBot's database (SQLite or PostgreSQL, both async).

Two ways in:
- programmatically, from ibot.db.migrate (the bot at start, `ibot db upgrade`): the URL
  comes in `config.attributes["ibot_url"]`, and logging is left exactly as the bot set it
  up (no fileConfig: it would replace the structlog handlers);
- by hand, `alembic upgrade head` in the repository root: the URL is `-x url=...`, else
  IBOT_DATABASE_URL, else alembic.ini's sqlalchemy.url, and alembic.ini's logging applies.

Engines come from ibot.db.engine.create_engine, so migrations run with the same SQLite
pragmas (WAL, busy timeout) and URL rewriting as the bot.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from ibot.db.engine import create_engine
from ibot.db.models import Base, all_models_metadata

DEFAULT_URL = "sqlite+aiosqlite:///./data/ibot.db"

config = context.config
programmatic = "ibot_url" in config.attributes  # called by ibot.db.migrate, not by hand

if config.config_file_name is not None and not programmatic:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# Upgrades need no metadata; `alembic revision --autogenerate` (by hand) needs every table.
# The bot's own upgrade does not import the other ibot.db modules: a broken one of those
# must not stop the schema upgrade at start.
target_metadata = Base.metadata if programmatic else all_models_metadata()


def database_url() -> str:
    """The URL to migrate, from the most explicit source that names one."""
    if programmatic:
        return config.attributes["ibot_url"]
    from_cli = context.get_x_argument(as_dictionary=True).get("url")
    if from_cli:
        return from_cli
    return (
        os.environ.get("IBOT_DATABASE_URL")
        or config.get_main_option("sqlalchemy.url")
        or DEFAULT_URL
    )


def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    """Autogenerate leaves out the engine-only search index (FTS5 table, tsvector column)
    that migration 0006 makes with raw DDL; imported here, so upgrades never import it."""
    from ibot.db.knowledge import include_name as knowledge_include_name

    return knowledge_include_name(name, type_, parent_names)


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=True,
        include_name=include_name,
        **kwargs,
    )


def run_migrations_offline() -> None:
    """`alembic upgrade head --sql`: print the SQL instead of running it."""
    from ibot.db.engine import normalize_url

    _configure(
        url=normalize_url(database_url()),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    # Batch mode lets later migrations alter columns on SQLite (which cannot ALTER much)
    # by copying the table; on PostgreSQL it is a no-op wrapper.
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_engine(database_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    # A caller that already holds a connection (ibot.db.migrate.upgrade_engine, the
    # Alembic cookbook's connection sharing) passes it in; otherwise open our own, on a
    # fresh event loop: ibot.db.migrate runs this in a worker thread when a loop is busy.
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
