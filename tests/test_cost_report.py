"""The admin's cost report: its numbers equal sums over the ledger rows, its chart is a
real PNG of the promised size, its CSV has every call, its periods are what was typed."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import random
import subprocess
import sys
import threading
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from ibot.db.engine import create_engine, make_sessionmaker
from ibot.db.ledger import Ledger, LedgerEntry
from ibot.db.migrate import upgrade
from ibot.db.reports import DailyCost, GroupBy
from ibot.money import exact_usd as format_usd
from ibot.periods import Period, PeriodError, choose_period, period_days, previous_period
from ibot.services import report_view
from ibot.services.cap_history import cap_series
from ibot.services.report_view import (
    CAP_COLOUR,
    CHART_SIZE,
    Change,
    build_report_view,
    export_rows_csv,
    render_chart,
    render_chart_async,
    render_comparison,
    render_view_json,
)
from ibot.services.reports import daily_cost_by_feature

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2025, 3, 15, 14, 30, tzinfo=UTC)
GUILD = 111_222_333_444_555_666
OTHER_GUILD = GUILD + 1
USERS = [2**60 + 5, 2**60 + 6, 42, 7, None]


def random_entries(count: int, seed: int = 3) -> list[LedgerEntry]:
    """Calls over the last 20 days (so in both the 7-day period and the one before it),
    in two guilds, some without a user, some unpriced."""
    rng = random.Random(seed)
    return [
        LedgerEntry(
            created_at=NOW - timedelta(minutes=rng.randrange(1, 20 * 24 * 60)),
            guild_id=rng.choice([GUILD, GUILD, OTHER_GUILD]),
            channel_id=rng.choice([10**18 + 1, 10**18 + 2]),
            user_id=rng.choice(USERS),
            feature=rng.choice(["ask", "chat", "auto_reply", "summary"]),
            backend="openai",
            model_requested="gpt-4o",
            model="gpt-4o-2024-08-06",
            status="ok",
            prompt_tokens=rng.randrange(0, 5000),
            cached_tokens=rng.randrange(0, 500),
            completion_tokens=rng.randrange(0, 800),
            cost_micros=rng.choice([None, rng.randrange(0, 90_000)]),
        )
        for _ in range(count)
    ]


async def record_all(sessionmaker, entries: list[LedgerEntry]) -> None:
    ledger = Ledger(sessionmaker)
    for entry in entries:
        await ledger.record(entry)


def in_period(entry: LedgerEntry, period: Period, guild: int | None = GUILD) -> bool:
    inside = period.start <= entry.created_at < period.end
    return inside and (guild is None or entry.guild_id == guild)


def sums(entries: list[LedgerEntry]) -> tuple[int, int, int]:
    calls = len(entries)
    tokens = sum(e.prompt_tokens + e.completion_tokens for e in entries)
    cost = sum(e.cost_micros or 0 for e in entries)
    return calls, tokens, cost


# --- the numbers ---------------------------------------------------------------------


async def test_totals_top_entries_and_change_equal_sums_over_the_rows(sessionmaker):
    entries = random_entries(300)
    await record_all(sessionmaker, entries)
    period = choose_period("7d", now=NOW)

    view = await build_report_view(
        sessionmaker, period, GroupBy.user, guild_id=GUILD, top=3, now=NOW
    )

    now_rows = [e for e in entries if in_period(e, period)]
    before = Period(NOW - timedelta(days=14), NOW - timedelta(days=7), "")
    old_rows = [e for e in entries if in_period(e, before)]
    assert now_rows and old_rows  # the test data covers both periods
    calls, tokens, cost = sums(now_rows)
    old_calls, old_tokens, old_cost = sums(old_rows)
    assert (view.calls.current, view.tokens.current, view.cost.current) == (calls, tokens, cost)
    assert (view.calls.previous, view.tokens.previous, view.cost.previous) == (
        old_calls,
        old_tokens,
        old_cost,
    )
    assert view.report.totals.unknown_cost_calls == sum(e.cost_micros is None for e in now_rows)

    by_user: dict[str, int] = defaultdict(int)
    for entry in now_rows:
        by_user["(none)" if entry.user_id is None else str(entry.user_id)] += entry.cost_micros or 0
    expected_top = sorted(by_user.items(), key=lambda kv: -kv[1])[:3]
    assert [(row.key, row.cost_micros) for row in view.report.rows] == expected_top
    assert view.report.other_groups == len(by_user) - 3


async def test_daily_cost_by_feature_equals_the_rows_per_utc_day(sessionmaker):
    entries = random_entries(200, seed=9)
    # Just before and after midnight UTC: on PostgreSQL the server runs at UTC+9, so a
    # day taken in the server's zone would put both on the same day.
    entries += [
        LedgerEntry(
            created_at=datetime(2025, 3, 10, 23, 59, tzinfo=UTC),
            guild_id=GUILD,
            feature="ask",
            backend="openai",
            model_requested="gpt-4o",
            status="ok",
            cost_micros=1_000,
        ),
        LedgerEntry(
            created_at=datetime(2025, 3, 11, 0, 1, tzinfo=UTC),
            guild_id=GUILD,
            feature="ask",
            backend="openai",
            model_requested="gpt-4o",
            status="ok",
            cost_micros=2_000,
        ),
    ]
    await record_all(sessionmaker, entries)
    period = choose_period("7d", now=NOW)

    daily = await daily_cost_by_feature(sessionmaker, period, guild_id=GUILD)

    expected: dict[tuple[date, str], int] = defaultdict(int)
    for entry in entries:
        if in_period(entry, period):
            expected[(entry.created_at.date(), str(entry.feature))] += entry.cost_micros or 0
    assert {(d.day, d.feature): d.cost_micros for d in daily} == dict(expected)
    assert [d.day for d in daily] == sorted(d.day for d in daily)


async def test_a_previous_period_without_calls_has_no_percentage(sessionmaker):
    await record_all(
        sessionmaker, [e for e in random_entries(50) if e.created_at > NOW - timedelta(days=6)]
    )
    period = choose_period("7d", now=NOW)

    view = await build_report_view(sessionmaker, period, "feature", guild_id=GUILD, now=NOW)

    assert view.cost.previous == 0 and view.cost.current > 0
    assert view.cost.percent_tenths is None and view.cost.percent_text() is None
    assert "none before" in render_comparison(view)


async def test_an_empty_ledger_gives_a_report_of_zeros_and_a_chart(sessionmaker):
    period = choose_period("today", now=NOW)

    view = await build_report_view(sessionmaker, period, "user", guild_id=GUILD, now=NOW)
    png = render_chart(view.daily, period_days(period))

    assert (view.calls.current, view.cost.current, view.report.rows) == (0, 0, [])
    assert Image.open(io.BytesIO(png)).size == CHART_SIZE


@pytest.mark.parametrize(
    ("current", "previous", "text"),
    [
        (9, 8, "+12.5 %"),
        (7, 8, "-12.5 %"),
        (8, 8, "+0.0 %"),
        (0, 3, "-100.0 %"),
        (2, 3, "-33.3 %"),
        (1, 3, "-66.7 %"),
        (5, 0, None),
        (0, 0, None),
    ],
)
def test_change_percentages_are_rounded_to_a_tenth(current, previous, text):
    change = Change(current, previous)

    assert change.percent_text() == text
    assert change.delta == current - previous


def test_french_percentages_use_a_decimal_comma():
    assert Change(9, 8).percent_text(",") == "+12,5 %"


# --- periods -------------------------------------------------------------------------


def test_custom_period_includes_both_days():
    period = choose_period("custom", "2025-02-01", "2025-02-28", now=NOW)

    assert period.start == datetime(2025, 2, 1, tzinfo=UTC)
    assert period.end == datetime(2025, 3, 1, tzinfo=UTC)
    assert len(period_days(period)) == 28


def test_dates_win_over_the_choice_and_from_alone_runs_to_today():
    period = choose_period("7d", "2025-03-01", None, now=NOW)

    assert period.start == datetime(2025, 3, 1, tzinfo=UTC)
    assert period.end == datetime(2025, 3, 16, tzinfo=UTC)  # today included


@pytest.mark.parametrize(
    ("choice", "first", "last", "code"),
    [
        ("custom", None, None, "needs_from"),
        ("7d", None, "2025-03-01", "needs_from"),
        ("custom", "2025-03-10", "2025-03-01", "bad_dates"),
        ("custom", "2025-02-30", None, "bad_dates"),
        ("custom", "01/03/2025", None, "bad_dates"),
        ("custom", "2023-01-01", "2025-01-01", "too_long"),
        ("yesterday", None, None, "unknown"),
    ],
)
def test_periods_an_admin_cannot_have_meant_are_refused_with_a_reason(choice, first, last, code):
    with pytest.raises(PeriodError) as caught:
        choose_period(choice, first, last, now=NOW)

    assert caught.value.code == code


@pytest.mark.parametrize(
    ("choice", "start", "end"),
    [
        ("today", datetime(2025, 3, 15, tzinfo=UTC), datetime(2025, 3, 16, tzinfo=UTC)),
        ("7d", NOW - timedelta(days=7), NOW),
        ("30d", NOW - timedelta(days=30), NOW),
        ("month", datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC)),
    ],
)
def test_the_period_choices(choice, start, end):
    period = choose_period(choice, now=NOW)

    assert (period.start, period.end) == (start, end)


def test_an_ongoing_period_is_compared_with_as_long_just_before():
    today = choose_period("today", now=NOW)  # 14 h 30 elapsed

    before = previous_period(today, now=NOW)

    assert before.end == today.start
    assert before.start == today.start - timedelta(hours=14, minutes=30)


def test_a_finished_period_is_compared_with_the_same_length_before():
    february = choose_period("custom", "2025-02-01", "2025-02-28", now=NOW)

    before = previous_period(february, now=NOW)

    assert (before.start, before.end) == (datetime(2025, 1, 4, tzinfo=UTC), february.start)


# --- chart ---------------------------------------------------------------------------


def sample_daily(period: Period) -> list[DailyCost]:
    rng = random.Random(5)
    return [
        DailyCost(day, feature, rng.randrange(0, 2_000_000))
        for day in period_days(period)
        for feature in ("auto_reply", "ask", "chat")
    ]


def red_pixels(png: bytes) -> int:
    """Pixels of the cap line's colour (no bar uses it)."""
    target = tuple(int(CAP_COLOUR[i : i + 2], 16) for i in (1, 3, 5))
    raw = Image.open(io.BytesIO(png)).convert("RGB").tobytes()
    pixels = zip(raw[0::3], raw[1::3], raw[2::3], strict=True)
    return sum(
        1 for pixel in pixels if all(abs(a - b) <= 12 for a, b in zip(pixel, target, strict=True))
    )


def test_chart_is_a_png_of_the_promised_size():
    period = choose_period("30d", now=NOW)

    png = render_chart(sample_daily(period), period_days(period))

    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    assert image.size == CHART_SIZE == (1000, 500)


def test_the_budget_line_is_drawn_only_when_a_cap_is_given():
    period = choose_period("30d", now=NOW)
    daily = sample_daily(period)

    without = render_chart(daily, period_days(period))
    days = period_days(period)
    with_cap = render_chart(daily, days, caps=cap_series([], days, configured_micros=3_000_000))

    assert without != with_cap
    assert red_pixels(without) == 0
    assert red_pixels(with_cap) > 500  # a dashed line across the plot, and its legend


def test_a_day_without_spending_still_gets_a_chart_with_its_cap_line():
    period = choose_period("today", now=NOW)

    days = period_days(period)
    png = render_chart([], days, caps=cap_series([], days, configured_micros=1_000_000))

    assert Image.open(io.BytesIO(png)).size == CHART_SIZE
    assert red_pixels(png) > 0


async def test_chart_is_drawn_off_the_event_loop(monkeypatch):
    threads = []
    original = report_view.render_chart

    def spy(*args, **kwargs):
        threads.append(threading.current_thread())
        return original(*args, **kwargs)

    monkeypatch.setattr(report_view, "render_chart", spy)
    period = choose_period("7d", now=NOW)

    png = await render_chart_async(sample_daily(period), period_days(period))

    assert threads and threads[0] is not threading.current_thread()
    assert Image.open(io.BytesIO(png)).size == CHART_SIZE


def test_matplotlib_is_not_imported_when_the_bot_loads_the_report():
    code = (
        "import sys, cogs.cost_report, ibot.services.report_view, ibot.bot; "
        "print('matplotlib' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


# --- CSV export ----------------------------------------------------------------------


async def test_csv_export_has_one_line_per_call_of_the_period_and_guild(sessionmaker):
    entries = random_entries(120, seed=11)
    await record_all(sessionmaker, entries)
    period = choose_period("7d", now=NOW)

    text = await export_rows_csv(sessionmaker, period, guild_id=GUILD)

    lines = list(csv.DictReader(io.StringIO(text)))
    expected = [e for e in entries if in_period(e, period)]
    assert len(lines) == len(expected) > 0
    assert {int(line["guild_id"]) for line in lines} == {GUILD}
    assert sum(int(line["cost_micros"] or 0) for line in lines) == sums(expected)[2]


# --- the terminal --------------------------------------------------------------------


async def test_json_and_table_carry_the_comparison(sessionmaker):
    entries = random_entries(100, seed=4)
    await record_all(sessionmaker, entries)
    period = choose_period("7d", now=NOW)
    view = await build_report_view(sessionmaker, period, "feature", top=None, now=NOW)

    document = json.loads(render_view_json(view))
    table = render_comparison(view)

    before = Period(NOW - timedelta(days=14), NOW - timedelta(days=7), "")
    old_calls, _, old_cost = sums([e for e in entries if in_period(e, before, guild=None)])
    assert document["previous"]["calls"] == old_calls
    assert document["previous"]["cost_micros"] == old_cost
    assert document["change"]["cost_micros"]["delta"] == view.cost.current - old_cost
    assert document["totals"]["cost_micros"] == view.cost.current
    assert f"{format_usd(old_cost)} USD" in table and f"{old_calls} calls" in table


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    ibot = Path(sys.executable).with_name("ibot")
    process = await asyncio.create_subprocess_exec(
        str(ibot), *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


@pytest.mark.slow
async def test_cli_writes_the_chart_and_prints_the_comparison(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    await upgrade(url)
    engine = create_engine(url)
    now = datetime.now(UTC)
    try:
        ledger = Ledger(make_sessionmaker(engine))
        for days_ago, cost in ((1, 40_000), (2, 60_000), (9, 80_000)):
            await ledger.record(
                LedgerEntry(
                    created_at=now - timedelta(days=days_ago),
                    guild_id=GUILD,
                    feature="ask",
                    backend="openai",
                    model_requested="gpt-4o",
                    status="ok",
                    cost_micros=cost,
                )
            )
    finally:
        await engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IBOT_", "OPENAI_"))}
    env |= {"IBOT_DATABASE_URL": url, "IBOT_BUDGETS__GUILD_DAILY_USD": "0.05"}
    chart = tmp_path / "out" / "costs.png"
    chart.parent.mkdir()

    code, out, err = await run_cli(
        "costs", "report", "--period", "7d", "--guild", str(GUILD), "--format", "json",
        "--chart", str(chart), env=env,
    )  # fmt: skip

    assert code == 0, err
    document = json.loads(out)
    assert document["totals"]["cost_micros"] == 100_000
    assert document["previous"]["cost_micros"] == 80_000
    assert document["change"]["cost_micros"]["percent"] == 25.0
    assert Image.open(chart).size == CHART_SIZE
    assert red_pixels(chart.read_bytes()) > 0  # the configured daily cap, for this guild

    code, out, err = await run_cli("costs", "report", "--period", "7d", env=env)
    assert code == 0, err
    assert "Change: calls +1 (+100.0 %)" in out and "cost +0.020000 USD (+25.0 %)" in out
