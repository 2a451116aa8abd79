"""Start-up failures a deployer can fix, told in one line on stderr with exit code 2.

Why: a wrong `IBOT_DATABASE_URL`, a PostgreSQL server that is down, Discord out of
reach or a chart path in a missing folder used to end `ibot …` with a 70-200 line
traceback and exit code 1, the same as a bug. `ibot.cli.main` hands whatever escapes a
command to `describe`: a failure of a known kind becomes one line saying what failed
and what to check (as a bad setting already does, README "Configuration"); anything
else keeps its traceback, since that is what a bug report needs.

The kind is read from the exception and from where it was raised: an `OSError` raised
under SQLAlchemy or a database driver is the database's, under nextcord Discord's.
A password is never shown: URLs are printed with `redact_url`, and the line is masked
by the logging's secret filter as every log line is.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
import traceback
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

# The exit status of a failure the user can fix (a usage error, like a bad setting).
EXIT_CODE = 2
# How long `ibot config check` waits for the database to answer.
PROBE_TIMEOUT_S = 5.0

_DATABASE_MODULES = ("sqlalchemy", "asyncpg", "aiosqlite", "sqlite3", "alembic", "ibot.db")
_DISCORD_MODULES = ("nextcord",)
_URL_EXAMPLES = "sqlite+aiosqlite:///./data/ibot.db or postgresql+asyncpg://user@host/db"

# The database URL of the settings the command loaded (None: not loaded yet).
_database_url: ContextVar[str | None] = ContextVar("ibot_database_url", default=None)


class StartupError(Exception):
    """A failure already phrased for the user: `str()` is the whole line."""


def remember_database_url(url: str) -> None:
    """Note the URL the command uses, so that a database failure can name it."""
    _database_url.set(url)


def redact_url(url: str) -> str:
    """A database URL with its password hidden (postgresql://user:***@host/db)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


def describe(exc: BaseException) -> str | None:
    """The one line for a known start-up failure; None keeps the traceback."""
    from ibot.config import ConfigError

    if isinstance(exc, StartupError | ConfigError):
        return _masked(str(exc))
    area = _area(exc)
    if area == "database":
        return database_line(exc, _database_url.get())
    if area == "discord" and isinstance(exc, OSError):
        return discord_line(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        return _masked(
            f"error: {exc.filename}: {_reason(exc)} — check the path and its permissions"
        )
    return None


def database_line(exc: BaseException, url: str | None) -> str:
    """`error: cannot open the database URL: why — what to check`."""
    where = f" {redact_url(url)}" if url else ""
    reason, check = _reason(exc), "and that the server is running"
    if _is_url_problem(exc):
        check = f"(for example {_URL_EXAMPLES})"
    elif url is not None and url.startswith("sqlite"):
        check = "and that its folder exists and is writable"
    return _masked(
        f"error: cannot open the database{where}: {reason} — "
        f"check database_url (IBOT_DATABASE_URL) {check}"
    )


def discord_line(exc: OSError) -> str:
    """`error: cannot reach Discord at BASE: why — what to check`."""
    import nextcord.http

    return _masked(
        f"error: cannot reach Discord at {nextcord.http.Route.BASE}: {_reason(exc)} — "
        "check the network, and discord.api_base_url if it is set"
    )


def ensure_writable(path: Path, option: str) -> None:
    """Raise a `StartupError` now if `path` cannot be written, before any long work."""
    folder = path.parent
    if not folder.is_dir():
        problem = f"the folder {folder} does not exist"
    elif path.is_dir():
        problem = "it is a folder"
    elif not os.access(path if path.exists() else folder, os.W_OK):
        problem = "permission denied"
    else:
        return
    raise StartupError(f"error: cannot write {path}: {problem} — check {option}")


async def probe_database(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Open one connection to `url` and run `SELECT 1`; raises what opening it raises.

    The engine is the application's own (ibot/db/engine.py), so the URL is read the
    same way as at start: a SQLite file is created if missing, as the bot would.
    """
    from sqlalchemy import text

    from ibot.db.engine import create_engine

    engine = create_engine(url)
    try:
        async with asyncio.timeout(timeout_s):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


# ---- reading an exception ----------------------------------------------------------------


def _area(exc: BaseException) -> str | None:
    """Whose failure `exc` is: "database", "discord" or None (not one we can explain).

    SQLAlchemy's connection errors and a URL that names no database are the database's;
    an `OSError` (refused, unknown host, timed out) or a driver's own connection error
    is the area of the innermost frame of the database or Discord stack it came from.
    Anything else raised there is a bug in that stack, and keeps its traceback.
    """
    from sqlalchemy.exc import InterfaceError, OperationalError

    if isinstance(exc, OperationalError | InterfaceError):
        return "database"
    if _is_url_problem(exc):
        return "database" if _raised_under(exc, _DATABASE_MODULES) else None
    if not isinstance(exc, (OSError, *_driver_errors())):
        return None
    area = None
    for module in _modules(exc):
        if module.startswith(_DATABASE_MODULES):
            area = "database"
        elif module.startswith(_DISCORD_MODULES):
            area = "discord"
    return area


def _modules(exc: BaseException) -> Iterator[str]:
    """The modules of the frames `exc` went through, outermost first."""
    for frame, _line in traceback.walk_tb(exc.__traceback__):
        yield str(frame.f_globals.get("__name__", ""))


def _raised_under(exc: BaseException, modules: tuple[str, ...]) -> bool:
    return any(module.startswith(modules) for module in _modules(exc))


def _driver_errors() -> tuple[type[BaseException], ...]:
    """The database drivers' own connection errors (a wrong password, no such db)."""
    found: list[type[BaseException]] = []
    asyncpg = sys.modules.get("asyncpg")
    if asyncpg is not None:
        found.append(asyncpg.PostgresError)
        found.append(asyncpg.InterfaceError)
    return tuple(found)


def _is_url_problem(exc: BaseException) -> bool:
    """The URL names no usable database: no such dialect, not a URL, driver missing."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    return isinstance(exc, NoSuchModuleError | ArgumentError | ModuleNotFoundError)


def _reason(exc: BaseException) -> str:
    """What went wrong, in a few words, from the innermost useful exception."""
    from sqlalchemy.exc import DBAPIError, NoSuchModuleError

    if isinstance(exc, NoSuchModuleError):
        name = str(exc).rpartition(":")[2].strip()
        return f"unknown database driver {name!r}"
    if isinstance(exc, ModuleNotFoundError):
        return f"its driver is not installed ({exc.name})"
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    os_error = getattr(exc, "os_error", None)  # aiohttp wraps the socket's error
    if isinstance(os_error, OSError):
        exc = os_error
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED:
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return _first_line(exc) or type(exc).__name__


def _first_line(exc: BaseException) -> str:
    for link in _chain(exc):
        text = str(link).strip()
        if text:
            return " ".join(text.splitlines()[0].split())
    return ""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__


def _masked(line: str) -> str:
    """One line, with every secret the logging knows of masked."""
    from ibot.logging import redact_text

    return redact_text(" ".join(line.split()))
