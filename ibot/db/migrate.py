"""Run the Alembic migrations from code: the bot upgrades its schema at every start.

The Alembic configuration is built here rather than read from alembic.ini, so that no
logging configuration is loaded (the bot's structlog setup must survive) and so that the
database URL from the bot's settings is the one migrated.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from ibot.db.engine import create_engine

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


class _AlembicBoilerplate(logging.Filter):
    """Drops the two lines Alembic logs on every run ("Context impl SQLiteImpl.", "Will
    assume non-transactional DDL."): every `ibot` command and every start of the bot
    upgrades the schema, and they say nothing about it. "Running upgrade …" lines stay."""

    PREFIXES = ("Context impl ", "Will assume ")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.PREFIXES)


def _drop_alembic_boilerplate() -> None:
    migration_log = logging.getLogger("alembic.runtime.migration")
    if not any(isinstance(f, _AlembicBoilerplate) for f in migration_log.filters):
        migration_log.addFilter(_AlembicBoilerplate())


_drop_alembic_boilerplate()


def alembic_config(url: str) -> Config:
    """An Alembic Config for `url`, with no ini file (hence no logging setup)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # The ini layer interpolates '%': a URL-encoded password (p%40ss) must survive it.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    # migrations/env.py reads the URL from here, and takes its presence to mean "called
    # from code": it then leaves logging alone.
    config.attributes["ibot_url"] = url
    return config


def head_revision() -> str | None:
    """The newest revision in migrations/versions."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def upgrade_sync(url: str, revision: str = "head") -> None:
    """Upgrade the database at `url` to `revision`; blocks until done.

    migrations/env.py drives an async engine with asyncio.run, which cannot be called
    from a thread whose event loop is running: in that case the work moves to a thread
    of its own (and this call still blocks; async code should await `upgrade` instead).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        command.upgrade(alembic_config(url), revision)
        return
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ibot-migrate") as pool:
        pool.submit(command.upgrade, alembic_config(url), revision).result()


async def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the database at `url` to `revision` without blocking the running loop."""
    await asyncio.to_thread(upgrade_sync, url, revision)


async def upgrade_engine(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade through an existing engine, for databases that only live inside it.

    An in-memory SQLite database exists only on its engine's connection, so `upgrade(url)`
    (which opens its own engine) would migrate a different, throwaway database. This is
    the Alembic cookbook's connection sharing: env.py uses the connection it is given.
    """
    config = alembic_config(engine.url.render_as_string(hide_password=False))

    def run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(run)


async def current_revision(url: str) -> str | None:
    """The revision the database at `url` is at, or None if it was never migrated."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_current_revision)
    finally:
        await engine.dispose()


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()
