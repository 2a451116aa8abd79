"""A `/budget set` shows in the cost chart's data: through the real /cost-report on the
fake Discord, and through `ibot costs report --chart --guild` (typer's CliRunner)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_budget_e2e import invoke_subcommand
from typer.testing import CliRunner

from ibot.cli import app
from ibot.config import BudgetsSettings
from ibot.db.budgets import BudgetStore
from ibot.db.engine import create_engine, make_sessionmaker
from ibot.db.ledger import Ledger
from ibot.db.migrate import upgrade
from ibot.services.budgets import BudgetManager
from ibot.services.report_view import read_chart_data
from ibot.testing.harness import Harness

pytestmark = pytest.mark.slow

USD = 1_000_000
GUILD = 111_222_333_444_555_666


async def test_a_budget_set_moves_the_cap_line_of_the_cost_report_from_today(tmp_path: Path):
    async with Harness(tmp_path, settings={"budgets": {"guild_daily_usd": "2"}}) as harness:
        world = harness.world
        change = await invoke_subcommand(
            harness, world.admin, world.text, "budget", "set", {"scope": "guild_daily", "usd": "5"}
        )
        await change.wait_answer(timeout=10)

        handle = await harness.discord.invoke_slash(
            world.guild, world.admin, world.text, "cost-report", {"period": "7d"}
        )
        answer = await handle.wait_answer(timeout=20)

    data = read_chart_data(answer.file_bytes("costs.png"))
    assert data is not None and data.days[-1] == datetime.now(UTC).date()
    assert data.cap_micros == (2 * USD,) * (len(data.days) - 1) + (5 * USD,)
    footer = answer.embeds[0]["footer"]["text"]
    assert "Plafond quotidien du serveur en vigueur : 5.00 USD" in footer
    assert f"le {data.days[-1]:%Y-%m-%d} (2.00 USD → 5.00 USD)" in footer


def test_the_command_line_chart_draws_the_audited_changes(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)

    async def set_caps() -> None:
        await upgrade(url)
        engine = create_engine(url)
        sessionmaker = make_sessionmaker(engine)
        when = {"now": today - timedelta(days=3) + timedelta(hours=9)}
        manager = BudgetManager(
            ledger=Ledger(sessionmaker),
            store=BudgetStore(sessionmaker),
            settings=BudgetsSettings(guild_daily_usd=2),
            clock=lambda: when["now"],
        )
        try:
            await manager.set_cap(GUILD, "guild_daily", 5 * USD, changed_by=1)
            when["now"] = today - timedelta(days=1) + timedelta(hours=22)
            await manager.set_cap(GUILD, "guild_daily", None, changed_by=1)
        finally:
            await engine.dispose()

    asyncio.run(set_caps())
    chart = tmp_path / "costs.png"

    result = CliRunner().invoke(
        app,
        ["costs", "report", "--period", "7d", "--guild", str(GUILD), "--chart", str(chart)],
        env={"IBOT_DATABASE_URL": url, "IBOT_BUDGETS__GUILD_DAILY_USD": "2"},
    )

    assert result.exit_code == 0, result.output
    data = read_chart_data(chart.read_bytes())
    assert data is not None
    # 7 days touch 8: four at the configured 2 USD, two at 5 USD, then no cap (no line).
    assert data.cap_micros == (2 * USD,) * 4 + (5 * USD,) * 2 + (None,) * 2
    assert "Daily cap in force: no cap" in result.output
    assert "-> 5.000000 USD" in result.output
