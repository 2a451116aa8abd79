"""Async engines for SQLite (the default) and PostgreSQL, from one URL.

Everything that touches the database (the bot, the CLI, the Alembic migrations) builds its
engine here, so the SQLite settings that make concurrent ledger writes safe (WAL and a
busy timeout) apply to every connection, migrations included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.pool import StaticPool

# Order matters: the busy timeout comes first, so that switching to WAL (which needs a
# moment of exclusive access) waits for another connection instead of failing at once.
SQLITE_PRAGMAS = (
    "PRAGMA busy_timeout=5000",
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)

_DRIVERLESS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


def normalize_url(url: str | URL) -> URL:
    """The async-driver form of a URL as users paste it.

    `postgres://…` (Heroku style), `postgresql://…` and `sqlite:///x.db` name no async
    driver; they get asyncpg and aiosqlite. asyncpg does not know libpq's `sslmode`
    parameter but takes the same values as `ssl`, so it is renamed rather than rejected.
    """
    parsed = make_url(url) if isinstance(url, str) else url
    driver = _DRIVERLESS.get(parsed.drivername)
    if driver is not None:
        parsed = parsed.set(drivername=driver)
    if parsed.drivername == "postgresql+asyncpg" and "sslmode" in parsed.query:
        query = dict(parsed.query)
        sslmode = query.pop("sslmode")
        query.setdefault("ssl", sslmode)
        parsed = parsed.set(query=query)
    return parsed


def is_memory_sqlite(url: URL) -> bool:
    database = url.database or ""
    return url.get_backend_name() == "sqlite" and database in ("", ":memory:")


def create_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """An AsyncEngine for `url`; extra keyword arguments go to create_async_engine."""
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, **kwargs)
    if backend == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
    return _create_async_engine(parsed, **kwargs)


def _sqlite_engine(url: URL, **kwargs: Any) -> AsyncEngine:
    if is_memory_sqlite(url):
        # One shared connection: each new connection to :memory: would be a new, empty
        # database, so the schema created by the test would vanish.
        kwargs.setdefault("poolclass", StaticPool)
        kwargs.setdefault("connect_args", {"check_same_thread": False})
    elif url.database and not url.database.startswith("file:"):
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = _create_async_engine(url, **kwargs)
    event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
    return engine


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay readable after commit (no lazy reload on a closed loop).

    On SQLite every statement commits on its own (AUTOCOMMIT), inside the driver's
    thread. Each write of the application is one statement, so nothing is lost in
    atomicity, and SQLite's write lock is held for the statement only. In a transaction
    it would be held from the first write until the COMMIT, which is sent one trip
    through the event loop later: under a burst (thousands of tasks ready to run) that
    trip took seconds, and the other writers gave up with "database is locked" after
    their busy timeout (in a stress of 300 answers' four writes each on a busy loop:
    30 writes failed so, and 0 with this, done in 31 s instead of 74).
    Migrations build their own engine and stay transactional.
    """
    bind = engine
    if engine.dialect.name == "sqlite":
        bind = engine.execution_options(isolation_level="AUTOCOMMIT")
    return async_sessionmaker(bind, expire_on_commit=False)
