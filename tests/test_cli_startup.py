"""`ibot` at start-up (issue 13): a light `ibot --help`, and a failure the deployer can
fix (database, Discord, a path) told in one line on stderr with exit code 2, never a
traceback. Each command runs as its own process, as a deployer runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ibot.testing.bot_process import free_port

SECRET = "s3cret-pw"
UNREACHABLE_PG = f"postgresql+asyncpg://u:{SECRET}@127.0.0.1:{free_port()}/db"


def ibot(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m ibot ARGS` in `cwd` (no config file or .env of the checkout), offline."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("IBOT_", "OPENAI_"))}
    clean.pop("BOT_TOKEN", None)
    clean.pop("DISCORD_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "ibot", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def the_one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The failure's line: stderr is that line alone, and the exit code is 2."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_importing_the_cli_loads_no_heavy_library():
    heavy = ("aiohttp", "matplotlib", "torch", "nextcord", "openai", "sqlalchemy", "alembic")
    code = f"import sys, ibot.cli; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_help_still_lists_every_command_and_their_options(tmp_path):
    listed = ibot("--help", cwd=tmp_path).stdout
    for command in ("ask", "run", "demo", "serve-local", "costs", "config", "kb", "finetune"):
        assert f"  {command} " in listed
    serve = ibot("serve-local", "--help", cwd=tmp_path).stdout
    assert "--model" in serve and "--api-key" in serve


def test_a_database_url_naming_no_driver_is_one_line(tmp_path):
    line = the_one_line(ibot("ask", "hi", cwd=tmp_path, IBOT_DATABASE_URL="nonsense://x"))

    assert line.startswith("error: cannot open the database nonsense://x: ")
    assert "unknown database driver 'nonsense'" in line and "IBOT_DATABASE_URL" in line


def test_an_unreachable_postgresql_is_one_line_without_the_password(tmp_path):
    line = the_one_line(ibot("ask", "hi", cwd=tmp_path, IBOT_DATABASE_URL=UNREACHABLE_PG))

    assert line.startswith("error: cannot open the database postgresql+asyncpg://u:")
    assert "127.0.0.1" in line and "connection refused" in line
    assert "check database_url (IBOT_DATABASE_URL) and that the server is running" in line
    assert SECRET not in line


def test_the_bot_with_discord_unreachable_is_one_line(tmp_path):
    base = f"http://127.0.0.1:{free_port()}/api/v10"  # nothing listens there

    result = ibot(
        "run",
        cwd=tmp_path,
        BOT_TOKEN="x",
        IBOT_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}",
        IBOT_DISCORD__API_BASE_URL=base,
        IBOT_LOGGING__LEVEL="ERROR",  # the bot's own log: only errors, none expected
    )

    line = the_one_line(result)
    assert line.startswith(f"error: cannot reach Discord at {base}: connection refused — ")


def test_a_chart_in_a_missing_folder_is_one_line_before_any_work(tmp_path):
    database = tmp_path / "ledger.db"
    chart = tmp_path / "no-such-folder" / "x.png"

    result = ibot(
        "costs",
        "report",
        "--chart",
        str(chart),
        cwd=tmp_path,
        IBOT_DATABASE_URL=f"sqlite+aiosqlite:///{database}",
    )

    line = the_one_line(result)
    assert line == (
        f"error: cannot write {chart}: the folder {chart.parent} does not exist — check --chart"
    )
    assert result.stdout == ""  # no report printed, and nothing written
    assert not database.exists()


def test_config_check_opens_the_database(tmp_path):
    good = ibot(
        "config", "check", cwd=tmp_path, IBOT_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/a.db"
    )
    assert good.returncode == 0, good.stderr
    assert f"database: OK (sqlite+aiosqlite:///{tmp_path}/a.db)" in good.stdout

    nonsense = the_one_line(ibot("config", "check", cwd=tmp_path, IBOT_DATABASE_URL="nonsense://x"))
    assert nonsense.startswith("error: cannot open the database nonsense://x: unknown database")

    down = the_one_line(ibot("config", "check", cwd=tmp_path, IBOT_DATABASE_URL=UNREACHABLE_PG))
    assert "connection refused" in down and SECRET not in down


def test_an_unexpected_failure_keeps_its_traceback(monkeypatch, tmp_path):
    """A bug is not a start-up problem: the traceback is what its report needs."""
    from ibot import cli
    from ibot.db import migrate

    async def broken(url: str, revision: str = "head") -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(migrate, "upgrade", broken)
    monkeypatch.setenv("IBOT_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setattr(sys, "argv", ["ibot", "db", "upgrade"])

    with pytest.raises(KeyError, match="a bug"):
        cli.main()
