"""The cost chart and reports follow the guild's daily cap day by day, `/budget set`
changes included; and "calls" says that refused and failed calls are counted.

The chart is checked on its data, not its pixels: the numbers the PNG carries
(read_chart_data) and the cap line of its matplotlib Figure.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from cogs.cost_report import report_embed
from ibot.config import BudgetsSettings
from ibot.db.budgets import BudgetChange, BudgetStore
from ibot.db.ledger import Ledger, LedgerEntry
from ibot.periods import choose_period, period_days
from ibot.services.budgets import BudgetManager
from ibot.services.cap_history import cap_series
from ibot.services.report_render import render_json, render_table
from ibot.services.report_view import (
    CAP_LINE_ID,
    build_report_view,
    chart_data,
    chart_figure,
    read_chart_data,
    render_chart,
    render_comparison,
    render_view_json,
)

GUILD = 111_222_333_444_555_666
ADMIN = 2**60 + 9
USD = 1_000_000
PERIOD = choose_period("custom", "2025-03-01", "2025-03-08")  # 8 days
DAYS = period_days(PERIOD)


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2025, 3, day, hour, tzinfo=UTC)


def change(when: datetime, before: int | None, after: int | None, n: int = 1) -> BudgetChange:
    return BudgetChange(n, GUILD, "guild_daily", after, ADMIN, when, before)


async def budget_set(sessionmaker, *steps: tuple[datetime, int | None], configured: int) -> None:
    """`/budget set guild_daily` at each (time, cap), through the real budget service."""
    clock = {"now": steps[0][0]}
    manager = BudgetManager(
        ledger=Ledger(sessionmaker),
        store=BudgetStore(sessionmaker),
        settings=BudgetsSettings(guild_daily_usd=configured / USD),
        clock=lambda: clock["now"],
    )
    for when, cap in steps:
        clock["now"] = when
        await manager.set_cap(GUILD, "guild_daily", cap, changed_by=ADMIN)


async def spend(sessionmaker, when: datetime, cost: int, status: str = "ok") -> None:
    await Ledger(sessionmaker).record(
        LedgerEntry(
            created_at=when,
            guild_id=GUILD,
            feature="ask",
            backend="openai",
            model_requested="gpt-4o",
            status=status,
            cost_micros=cost,
        )
    )


# --- the cap of each day -------------------------------------------------------------


async def test_the_chart_draws_each_budget_change_from_its_day_on(sessionmaker):
    await spend(sessionmaker, at(2), 1_500_000)
    await budget_set(sessionmaker, (at(3, 10), 5 * USD), (at(6, 9), 1 * USD), configured=2 * USD)

    view = await build_report_view(
        sessionmaker, PERIOD, "feature", guild_id=GUILD, configured_cap_micros=2 * USD
    )
    png = render_chart(view.daily, DAYS, caps=view.caps)

    expected = (2, 2, 5, 5, 5, 1, 1, 1)  # USD, 1st to 8th of March
    data = read_chart_data(png)
    assert data is not None and data.days == tuple(DAYS)
    assert data.cap_micros == tuple(usd * USD for usd in expected)
    assert data.cost_micros["ask"][1] == 1_500_000
    [line] = [ln for ln in chart_figure(data).axes[0].get_lines() if ln.get_gid() == CAP_LINE_ID]
    assert line.get_drawstyle() == "steps-post"
    assert list(line.get_ydata()) == [*expected, expected[-1]]  # a step per day, to the end
    assert list(line.get_xdata()) == [n - 0.5 for n in range(len(DAYS) + 1)]


def test_the_last_change_of_a_day_counts_for_it_and_no_cap_ends_the_line():
    changes = [
        change(at(2, 8), 2 * USD, 3 * USD, n=1),
        change(at(2, 20), 3 * USD, 4 * USD, n=2),  # the same day: the cap at its end
        change(at(4, 23), 4 * USD, None, n=3),  # "none": no line from the 4th
        change(at(7, 0), None, 1 * USD, n=4),
    ]

    caps = cap_series(changes, DAYS, configured_micros=2 * USD)

    assert caps.caps == (2 * USD, 4 * USD, 4 * USD, None, None, None, USD, USD)
    assert caps.in_force == USD and caps.changes == tuple(changes)
    data = chart_data([], DAYS, caps=caps)
    [line] = [ln for ln in chart_figure(data).axes[0].get_lines() if ln.get_gid() == CAP_LINE_ID]
    drawn = list(line.get_ydata())
    assert [math.isnan(y) for y in drawn] == [False] * 3 + [True] * 3 + [False] * 3


def test_before_the_first_change_the_chart_shows_the_cap_it_replaced():
    """The TOML said 2 USD when the cap was first changed, and 9 USD now."""
    caps = cap_series([change(at(5), 2 * USD, 3 * USD)], DAYS, configured_micros=9 * USD)

    assert caps.caps == (2 * USD,) * 4 + (3 * USD,) * 4


def test_a_change_before_the_period_holds_from_its_first_day_and_is_not_listed():
    caps = cap_series([change(datetime(2025, 2, 1, tzinfo=UTC), None, USD)], DAYS, None)

    assert caps.caps == (USD,) * 8 and caps.changes == ()


def test_no_cap_and_no_change_draws_no_line():
    caps = cap_series([], DAYS, configured_micros=None)

    assert not caps.drawn
    data = read_chart_data(render_chart([], DAYS, caps=caps))
    assert data is not None and data.cap_micros == ()
    assert not [ln for ln in chart_figure(data).axes[0].get_lines() if ln.get_gid()]


# --- what the reports say ------------------------------------------------------------


async def test_terminal_json_and_embed_name_the_cap_in_force_and_its_changes(sessionmaker):
    await budget_set(sessionmaker, (at(3, 10), 5 * USD), (at(6, 9), 1 * USD), configured=2 * USD)
    view = await build_report_view(
        sessionmaker, PERIOD, "feature", guild_id=GUILD, configured_cap_micros=2 * USD
    )

    text = render_comparison(view)
    assert "Daily cap in force: 1.000000 USD" in text
    assert "changed with /budget on 2025-03-03 10:00 UTC: 2.000000 USD -> 5.000000 USD" in text
    assert "on 2025-03-06 09:00 UTC: 5.000000 USD -> 1.000000 USD" in text
    document = json.loads(render_view_json(view))["daily_cap"]
    assert document["in_force_micros"] == USD
    assert [day["cap_micros"] for day in document["days"]][1:4] == [2 * USD, 5 * USD, 5 * USD]
    assert [c["cap_micros"] for c in document["changes"]] == [5 * USD, USD]

    french = report_embed(view, "mars", "fr").footer.text or ""
    assert "Plafond quotidien du serveur en vigueur : 1.00 USD (ligne rouge)" in french
    assert (
        "Changé avec /budget : le 2025-03-03 (2.00 USD → 5.00 USD), "
        "le 2025-03-06 (5.00 USD → 1.00 USD)"
    ) in french
    english = report_embed(view, "March", "en").footer.text or ""
    assert "Server daily cap in force: 1.00 USD (red line)" in english
    assert "Changed with /budget: on 2025-03-03 (2.00 USD → 5.00 USD)" in english


async def test_a_cap_removed_in_the_period_is_said_so(sessionmaker):
    await budget_set(sessionmaker, (at(4), None), configured=2 * USD)
    view = await build_report_view(
        sessionmaker, PERIOD, "feature", guild_id=GUILD, configured_cap_micros=2 * USD
    )

    footer = report_embed(view, "mars", "fr").footer.text or ""

    assert "Plafond quotidien du serveur : aucun en fin de période" in footer
    assert "le 2025-03-04 (2.00 USD → pas de plafond)" in footer
    assert "Daily cap in force: no cap" in render_comparison(view)


async def test_a_report_of_every_guild_has_no_cap(sessionmaker):
    view = await build_report_view(sessionmaker, PERIOD, "feature", configured_cap_micros=USD)

    assert view.caps is None
    assert "cap" not in render_comparison(view)
    assert "daily_cap" not in json.loads(render_view_json(view))


@pytest.mark.parametrize(
    ("lang", "note"), [("fr", "refusés et en échec compris"), ("en", "refused and failed included")]
)
async def test_calls_say_that_refused_and_failed_calls_are_counted(sessionmaker, lang, note):
    for status in ("ok", "error", "refused"):
        await spend(sessionmaker, at(2), 1_000 if status == "ok" else 0, status=status)
    view = await build_report_view(sessionmaker, PERIOD, "feature", guild_id=GUILD)

    table = render_table(view.report)
    document = json.loads(render_json(view.report))
    fields = {f.name: f.value for f in report_embed(view, "mars", lang).fields}

    assert "calls: every call, refused and failed ones included" in table
    assert document["totals"]["calls"] == 3
    assert {"ok", "fallback", "error", "refused"} <= set(document["calls_counted"])
    calls = fields["Appels" if lang == "fr" else "Calls"] or ""
    assert calls.startswith("**3**") and f"*({note})*" in calls
