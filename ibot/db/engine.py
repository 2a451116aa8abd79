"""Async engines for SQLite (the default) and PostgreSQL, from one URL.

Everything that touches the database (the bot, the CLI, the Alembic migrations) builds its
engine here, so the SQLite settings that make concurrent ledger writes safe (WAL and a
busy timeout) apply to every connection, migrations included.

Every SQLite connection also gets the **sqlite-vec** extension (the `vec0` virtual
tables of the knowledge base's vector index, ibot/db/knowledge_vectors.py), loaded the
documented way (`enable_load_extension` + `load_extension`) where Python's sqlite3
allows it. Some CPython builds leave that method out (pyenv's and many source builds,
configured without `--enable-loadable-sqlite-extensions`; this project's machines are
such); there the extension is registered once per process with SQLite's own
`sqlite3_auto_extension`, through ctypes, on the very libsqlite3 the sqlite3 module
uses, so that each connection opened afterwards has it (SQLite's documented way to
add a statically known extension to every connection; no pointer into Python's
objects is read). When neither works, `sqlite_vec_problem()` says why and the vector
index is off (lexical search only), nothing fails.
"""

from __future__ import annotations

import ctypes
import importlib
import sqlite3
import threading
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
    _prepare_sqlite_vec()  # before the first connection: an auto extension needs it
    engine = _create_async_engine(url, **kwargs)
    event.listen(engine.sync_engine, "connect", _set_sqlite_pragmas)
    event.listen(engine.sync_engine, "connect", _load_sqlite_vec)
    return engine


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


# ---- sqlite-vec (see the module docstring) --------------------------------------------

_LOADABLE = "loadable"  # loaded on each connection with load_extension
_AUTO = "auto"  # registered once with sqlite3_auto_extension
_vec_lock = threading.Lock()
_vec_mode: str | None = None  # None: not tried yet
_vec_problem: str | None = None
_vec_path: str | None = None
_vec_library: ctypes.CDLL | None = None  # kept loaded for the process's lifetime


def sqlite_vec_problem() -> str | None:
    """Why SQLite connections lack sqlite-vec (None: they have it, or nothing tried)."""
    return _vec_problem


def _prepare_sqlite_vec() -> None:
    """Decide once per process how sqlite-vec reaches the connections."""
    global _vec_mode, _vec_problem, _vec_path
    with _vec_lock:
        if _vec_mode is not None:
            return
        try:
            import sqlite_vec
        except ImportError:
            _vec_mode, _vec_problem = "none", "the sqlite-vec package is not installed"
            return
        _vec_path = sqlite_vec.loadable_path()
        if hasattr(sqlite3.Connection, "enable_load_extension"):
            _vec_mode = _LOADABLE
            return
        try:
            _register_auto_extension(_vec_path)
        except (OSError, AttributeError, StopIteration, RuntimeError) as exc:
            _vec_mode = "none"
            _vec_problem = (
                "this Python's sqlite3 cannot load extensions, and registering sqlite-vec "
                f"with sqlite3_auto_extension failed: {exc}"
            )
            return
        _vec_mode = _AUTO


def _register_auto_extension(path: str) -> None:
    global _vec_library
    module = importlib.import_module("_sqlite3").__file__
    if module is None:
        raise RuntimeError("the _sqlite3 module has no file")
    # The symbols resolve in _sqlite3's own libsqlite3 (dlsym searches its dependencies).
    sqlite = ctypes.CDLL(module)
    candidates = (path + suffix for suffix in (".so", ".dylib", ".dll"))
    library = ctypes.CDLL(next(p for p in candidates if Path(p).is_file()))
    register = sqlite.sqlite3_auto_extension
    register.argtypes = [ctypes.c_void_p]
    register.restype = ctypes.c_int
    code = register(ctypes.cast(library.sqlite3_vec_init, ctypes.c_void_p))
    if code != 0:
        raise RuntimeError(f"sqlite3_auto_extension returned {code}")
    _vec_library = library


def _load_sqlite_vec(_dbapi_connection: Any, record: Any) -> None:
    """Load sqlite-vec into a new connection, where sqlite3 can load extensions."""
    global _vec_problem
    if _vec_mode != _LOADABLE or _vec_path is None:
        return
    driver = record.driver_connection  # the aiosqlite connection: runs in its thread
    try:
        _await(driver.enable_load_extension(True))
        try:
            _await(driver.load_extension(_vec_path))
        finally:
            _await(driver.enable_load_extension(False))
    except Exception as exc:  # a broken extension must not break the database
        _vec_problem = f"loading sqlite-vec failed: {exc}"


def _await(awaitable: Any) -> Any:
    from sqlalchemy.util import await_only

    return await_only(awaitable)


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
