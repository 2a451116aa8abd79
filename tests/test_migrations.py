"""The schema is created and upgraded by Alembic, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from ibot.db.engine import create_engine, make_sessionmaker, normalize_url
from ibot.db.knowledge import include_name as knowledge_include_name
from ibot.db.ledger import Ledger, LedgerEntry
from ibot.db.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    upgrade,
    upgrade_engine,
    upgrade_sync,
)
from ibot.db.models import all_models_metadata

REPO = Path(__file__).resolve().parents[1]


def entry(**overrides) -> LedgerEntry:
    fields = {
        "feature": "ask",
        "backend": "openai",
        "model_requested": "gpt-4o",
        "status": "ok",
        "cost_micros": 1234,
    }
    return LedgerEntry(**{**fields, **overrides})


def _schema(connection: Connection) -> tuple[set[str], set[str]]:
    inspector = inspect(connection)
    indexes = {index["name"] for index in inspector.get_indexes("ledger")}
    return set(inspector.get_table_names()), indexes


def _differences(connection: Connection, only_table: str | None = None) -> list:
    def include(obj, name, type_, reflected, compare_to) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        return only_table is None or table == only_table

    # include_name: the engine-specific search index (FTS5 table, tsvector column and its
    # GIN index), made by migration 0006 with raw DDL and described by no ORM class.
    opts = {
        "compare_type": True,
        "compare_server_default": True,
        "include_object": include,
        "include_name": knowledge_include_name,
    }
    return compare_metadata(
        MigrationContext.configure(connection, opts=opts), all_models_metadata()
    )


async def test_upgrade_creates_the_ledger_and_stamps_head(db_url):
    assert await current_revision(db_url) is None

    await upgrade(db_url)

    assert await current_revision(db_url) == head_revision()
    engine = create_engine(db_url)
    try:
        async with engine.connect() as connection:
            tables, indexes = await connection.run_sync(_schema)
    finally:
        await engine.dispose()
    assert {"ledger", "alembic_version"} <= tables
    assert {"ix_ledger_created_at", "ix_ledger_guild_report", "ix_ledger_pending"} <= indexes
    # A prefix of ix_ledger_guild_report, dropped by 0012: writing it cost every call.
    assert "ix_ledger_guild_id_created_at" not in indexes


async def test_upgrading_twice_keeps_the_data(db_url):
    await upgrade(db_url)
    engine = create_engine(db_url)
    try:
        ledger = Ledger(make_sessionmaker(engine))
        row_id = await ledger.record(entry())

        await upgrade(db_url)

        assert [row.id for row in await ledger.rows()] == [row_id]
    finally:
        await engine.dispose()
    assert await current_revision(db_url) == head_revision()


async def _schema_differences(url: str, only_table: str | None = None) -> list:
    await upgrade(url)
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_differences, only_table)
    finally:
        await engine.dispose()


async def test_ledger_model_and_its_migration_agree(db_url):
    assert await _schema_differences(db_url, "ledger") == []


async def test_every_orm_table_matches_the_migrations(db_url):
    """A column changed in a model without a migration (or the reverse) shows up here."""
    assert await _schema_differences(db_url) == []


async def test_downgrade_to_base_then_upgrade_again(db_url):
    await upgrade(db_url)

    await asyncio.to_thread(command.downgrade, alembic_config(db_url), "base")
    assert await current_revision(db_url) is None

    await upgrade(db_url)
    assert await current_revision(db_url) == head_revision()


async def test_upgrade_to_a_named_revision_stops_there(db_url):
    await upgrade(db_url, "0001")

    assert await current_revision(db_url) == "0001"
    await upgrade(db_url)
    assert await current_revision(db_url) == head_revision()


async def test_upgrade_leaves_the_event_loop_free(tmp_path):
    """The bot upgrades at start, inside its loop: heartbeats must keep running."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'loop.db'}"
    ticks = 0
    done = asyncio.Event()

    async def heartbeat() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    beating = asyncio.create_task(heartbeat())
    await upgrade(url)
    done.set()
    await beating

    assert ticks > 1
    assert await current_revision(url) == head_revision()


async def test_blocking_upgrade_also_works_inside_a_running_loop(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'sync-in-loop.db'}"

    upgrade_sync(url)  # would raise "asyncio.run() cannot be called from a running loop"

    assert await current_revision(url) == head_revision()


def test_blocking_upgrade_without_a_loop(tmp_path):
    url = f"sqlite:///{tmp_path / 'plain.db'}"  # pasted without a driver: aiosqlite is added

    upgrade_sync(url)

    assert asyncio.run(current_revision(url)) == head_revision()


async def test_upgrade_creates_missing_sqlite_directories(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'nested' / 'ibot.db'}"

    await upgrade(url)

    assert (tmp_path / "data" / "nested" / "ibot.db").is_file()


async def test_upgrade_does_not_touch_the_logging_setup(tmp_path):
    """alembic.ini's logging config must not replace the bot's (structlog) handlers."""
    root = logging.getLogger()
    handlers_before = list(root.handlers)
    level_before = root.level
    ours = logging.getLogger("ibot.test_migrations")

    await upgrade(f"sqlite+aiosqlite:///{tmp_path / 'log.db'}")

    assert root.handlers == handlers_before
    assert root.level == level_before
    assert not ours.disabled


async def test_in_memory_sqlite_can_be_migrated_through_its_engine():
    engine = create_engine("sqlite+aiosqlite://")
    try:
        await upgrade_engine(engine)
        ledger = Ledger(make_sessionmaker(engine))
        first = await ledger.record(entry())
        second = await ledger.record(entry(cost_micros=None))

        assert [row.id for row in await ledger.rows()] == [first, second]
        assert (await ledger.totals()).unknown_cost_calls == 1
    finally:
        await engine.dispose()


async def test_sqlite_connections_use_wal_and_a_busy_timeout(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'pragmas.db'}")
    try:
        async with engine.connect() as one, engine.connect() as two:
            for connection in (one, two):
                pragmas = {
                    name: (await connection.execute(text(f"PRAGMA {name}"))).scalar_one()
                    for name in ("journal_mode", "busy_timeout", "synchronous", "foreign_keys")
                }
                assert pragmas == {
                    "journal_mode": "wal",
                    "busy_timeout": 5000,
                    "synchronous": 1,  # NORMAL
                    "foreign_keys": 1,
                }
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("pasted", "expected"),
    [
        ("postgres://u:p@db.example/ibot", "postgresql+asyncpg://u:p@db.example/ibot"),
        ("postgresql://u:p@db.example/ibot", "postgresql+asyncpg://u:p@db.example/ibot"),
        (
            "postgresql://u@db.example/ibot?sslmode=require",
            "postgresql+asyncpg://u@db.example/ibot?ssl=require",
        ),
        ("postgresql+asyncpg://u@h/ibot", "postgresql+asyncpg://u@h/ibot"),
        ("sqlite:///data/x.db", "sqlite+aiosqlite:///data/x.db"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ],
)
def test_pasted_urls_get_their_async_driver(pasted, expected):
    assert normalize_url(pasted).render_as_string(hide_password=False) == expected


async def test_alembic_command_line_reads_the_database_url_from_the_environment(tmp_path):
    target = tmp_path / "cli" / "ibot.db"
    env = {**os.environ, "IBOT_DATABASE_URL": f"sqlite+aiosqlite:///{target}"}
    alembic = Path(sys.executable).with_name("alembic")
    process = await asyncio.create_subprocess_exec(
        str(alembic), "upgrade", "head",
        cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 60)

    assert process.returncode == 0, err.decode()
    assert "Running upgrade  -> 0001" in err.decode()  # alembic.ini's logging is used here
    assert await current_revision(f"sqlite+aiosqlite:///{target}") == head_revision()


async def test_the_start_up_scan_of_pending_calls_reads_the_partial_index(db_url):
    """The scan runs at every start over a ledger of every call ever made: it must read
    the small index of the rows in flight, not the whole table."""
    await upgrade(db_url)
    engine = create_engine(db_url)
    try:
        ledger = Ledger(make_sessionmaker(engine))
        for _ in range(200):
            await ledger.record(entry())
        in_flight = await ledger.record(entry(status="pending", cost_micros=None))
        assert [row.id for row in await ledger.pending()] == [in_flight]
        sql = "SELECT id FROM ledger WHERE status = 'pending' ORDER BY id"
        async with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                plan = " ".join(
                    str(row[-1])
                    for row in await connection.execute(text(f"EXPLAIN QUERY PLAN {sql}"))
                )
            else:  # a tiny table is cheaper to scan: ask whether the index can serve it
                await connection.execute(text("SET enable_seqscan = off"))
                plan = " ".join(
                    str(row[0]) for row in await connection.execute(text(f"EXPLAIN {sql}"))
                )
    finally:
        await engine.dispose()
    assert "ix_ledger_pending" in plan
