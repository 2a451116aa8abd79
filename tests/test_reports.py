"""Cost reports add up to exactly what the ledger holds, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ibot.db.ledger import Ledger, LedgerEntry, LedgerRow
from ibot.db.reports import NO_KEY, GroupBy, ReportRow
from ibot.domain import Backend, CallStatus, Feature, UsageSource
from ibot.money import exact_usd as format_usd
from ibot.periods import Period, parse_period
from ibot.services.report_render import render_csv, render_json, render_rows_csv, render_table
from ibot.services.reports import CostReport, cost_report, ledger_rows

NOW = datetime(2025, 3, 15, 14, 30, 15, tzinfo=UTC)
GUILD = 111_222_333_444_555_666
PERIOD = Period(datetime(2025, 3, 10, tzinfo=UTC), datetime(2025, 3, 16, tzinfo=UTC), "test")


def random_entries(count: int, seed: int = 7) -> list[LedgerEntry]:
    """A varied ledger: several days, guilds, users (some none), unpriced and failed calls."""
    rng = random.Random(seed)
    entries = []
    for _ in range(count):
        status = rng.choice(list(CallStatus))
        answered = status in (CallStatus.OK, CallStatus.FALLBACK)
        requested = rng.choice(["gpt-4o", "gpt-4o-mini"])
        entries.append(
            LedgerEntry(
                created_at=PERIOD.start + timedelta(minutes=rng.randrange(-600, 7 * 24 * 60)),
                guild_id=rng.choice([GUILD, GUILD + 1, None]),
                channel_id=rng.choice([10**18 + 1, 10**18 + 2, None]),
                user_id=rng.choice([2**60 + 5, 2**60 + 6, 42, None]),
                feature=rng.choice(list(Feature)),
                backend=rng.choice(list(Backend)),
                model_requested=requested,
                model=rng.choice([requested + "-2024-08-06", "qwen2.5"]) if answered else None,
                status=status,
                prompt_tokens=rng.randrange(0, 5000),
                cached_tokens=rng.randrange(0, 1000),
                completion_tokens=rng.randrange(0, 800),
                cost_micros=rng.choice([None, rng.randrange(0, 50_000), rng.randrange(0, 10**9)]),
                usage_source=rng.choice(list(UsageSource)),
            )
        )
    return entries


def expected_key(entry: LedgerEntry, group_by: GroupBy) -> str:
    value = {
        GroupBy.feature: entry.feature,
        GroupBy.user: entry.user_id,
        GroupBy.model: entry.model or entry.model_requested,
        GroupBy.channel: entry.channel_id,
        GroupBy.day: entry.created_at.astimezone(UTC).date().isoformat(),
        GroupBy.backend: entry.backend,
        GroupBy.status: entry.status,
    }[group_by]
    return NO_KEY if value is None else str(value)


def expected_groups(
    entries: list[LedgerEntry], group_by: GroupBy, period: Period, guild_id: int | None = None
) -> dict[str, ReportRow]:
    sums: dict[str, list[int]] = defaultdict(lambda: [0] * 6)
    for e in entries:
        if not period.start <= e.created_at < period.end:
            continue
        if guild_id is not None and e.guild_id != guild_id:
            continue
        s = sums[expected_key(e, group_by)]
        s[0] += 1
        s[1] += e.prompt_tokens
        s[2] += e.cached_tokens
        s[3] += e.completion_tokens
        s[4] += e.cost_micros or 0
        s[5] += e.cost_micros is None
    return {key: ReportRow(key, *values) for key, values in sums.items()}


async def record_all(sessionmaker, entries: list[LedgerEntry]) -> None:
    ledger = Ledger(sessionmaker)
    for e in entries:
        await ledger.record(e)


@pytest.mark.parametrize("group_by", list(GroupBy))
async def test_report_equals_sums_of_the_rows(sessionmaker, group_by):
    entries = random_entries(120)
    await record_all(sessionmaker, entries)

    report = await cost_report(sessionmaker, PERIOD, group_by)
    for_guild = await cost_report(sessionmaker, PERIOD, group_by, guild_id=GUILD)

    for got, guild in ((report, None), (for_guild, GUILD)):
        expected = expected_groups(entries, group_by, PERIOD, guild)
        assert {row.key: row for row in got.rows} == expected
        assert len(got.rows) == len(expected)  # no key was split or merged
        assert got.totals.calls == sum(row.calls for row in expected.values())
        assert got.totals.cost_micros == sum(row.cost_micros for row in expected.values())
        assert got.totals.unknown_cost_calls == sum(
            row.unknown_cost_calls for row in expected.values()
        )
    in_period = [e for e in entries if PERIOD.start <= e.created_at < PERIOD.end]
    assert 0 < report.totals.calls == len(in_period) < len(entries)
    if group_by is GroupBy.day:
        keys = [row.key for row in report.rows]
        assert keys == sorted(keys)
    else:
        costs = [row.cost_micros for row in report.rows]
        assert costs == sorted(costs, reverse=True)


async def test_top_keeps_the_most_expensive_groups_and_the_full_totals(sessionmaker):
    entries = random_entries(80)
    await record_all(sessionmaker, entries)

    full = await cost_report(sessionmaker, PERIOD, GroupBy.user)
    top = await cost_report(sessionmaker, PERIOD, GroupBy.user, top=2)

    assert top.rows == full.rows[:2]
    assert top.other_groups == len(full.rows) - 2 > 0
    assert top.totals == full.totals
    assert f"and {top.other_groups} more user group(s)" in render_table(top)


async def test_model_groups_use_the_answering_model_else_the_requested_one(sessionmaker):
    base = {"feature": Feature.ASK, "backend": Backend.OPENAI, "created_at": PERIOD.start}
    await record_all(
        sessionmaker,
        [
            LedgerEntry(**base, model_requested="gpt-4o", model="gpt-4o-2024-08-06",
                        status=CallStatus.OK, cost_micros=500),
            LedgerEntry(**base, model_requested="gpt-4o", model=None,
                        status=CallStatus.ERROR, cost_micros=0),
            LedgerEntry(**base, model_requested="gpt-4o", model="mystery-model",
                        status=CallStatus.OK, cost_micros=None),
        ],
    )  # fmt: skip

    report = await cost_report(sessionmaker, PERIOD, GroupBy.model)

    assert [(r.key, r.calls, r.cost_micros, r.unknown_cost_calls) for r in report.rows] == [
        ("gpt-4o-2024-08-06", 1, 500, 0),
        ("gpt-4o", 1, 0, 0),
        ("mystery-model", 1, 0, 1),
    ]


async def test_day_buckets_are_utc_days(sessionmaker):
    """23:59 and 00:01 UTC are different days, whatever the server's time zone (the test
    PostgreSQL runs at UTC+9, where both would fall on the same day)."""
    base = {"feature": Feature.CHAT, "backend": Backend.OPENAI, "model_requested": "gpt-4o"}
    late = datetime(2025, 3, 11, 23, 59, tzinfo=UTC)
    await record_all(
        sessionmaker,
        [
            LedgerEntry(**base, status=CallStatus.OK, created_at=late, cost_micros=1),
            LedgerEntry(
                **base, status=CallStatus.OK, created_at=late + timedelta(minutes=2), cost_micros=2
            ),
        ],
    )

    report = await cost_report(sessionmaker, PERIOD, GroupBy.day)

    assert [(r.key, r.cost_micros) for r in report.rows] == [("2025-03-11", 1), ("2025-03-12", 2)]


async def test_empty_period_gives_an_empty_report(sessionmaker):
    await record_all(sessionmaker, random_entries(10))
    nothing = Period(datetime(2000, 1, 1, tzinfo=UTC), datetime(2000, 1, 2, tzinfo=UTC), "y2k")

    report = await cost_report(sessionmaker, nothing, "feature")

    assert report.rows == [] and report.totals == ReportRow("TOTAL")
    assert "(no calls in this period)" in render_table(report)
    assert render_csv(report).splitlines() == [
        "key,calls,prompt_tokens,cached_tokens,completion_tokens,cost_usd,cost_micros,"
        "unknown_cost_calls,answers,helpful_votes,unhelpful_votes,helpful_rate,solved,"
        "cost_per_solved_usd,cost_per_solved_micros"
    ]


async def test_ledger_rows_export_every_call_of_the_period(sessionmaker):
    entries = random_entries(60)
    await record_all(sessionmaker, entries)

    rows = await ledger_rows(sessionmaker, PERIOD, guild_id=GUILD)
    parsed = list(csv.DictReader(io.StringIO(render_rows_csv(rows))))

    expected = [
        e for e in entries if PERIOD.start <= e.created_at < PERIOD.end and e.guild_id == GUILD
    ]
    assert len(parsed) == len(rows) == len(expected) > 0
    assert sum(int(r["cost_micros"] or 0) for r in parsed) == sum(
        e.cost_micros or 0 for e in expected
    )
    assert all(r["guild_id"] == str(GUILD) for r in parsed)  # 64-bit ids kept whole
    unpriced = [r for r in parsed if r["cost_micros"] == ""]
    assert unpriced and all(r["cost_usd"] == "" for r in unpriced)


# --- periods -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("today", datetime(2025, 3, 15, tzinfo=UTC), datetime(2025, 3, 16, tzinfo=UTC)),
        (" Today ", datetime(2025, 3, 15, tzinfo=UTC), datetime(2025, 3, 16, tzinfo=UTC)),
        ("7d", NOW - timedelta(days=7), NOW),
        ("30d", NOW - timedelta(days=30), NOW),
        ("1d", NOW - timedelta(days=1), NOW),
        ("24h", NOW - timedelta(hours=24), NOW),
        ("3h", NOW - timedelta(hours=3), NOW),
        ("month", datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC)),
        (
            "2025-01-01..2025-01-31",
            datetime(2025, 1, 1, tzinfo=UTC),
            datetime(2025, 2, 1, tzinfo=UTC),
        ),
        ("2024-02-29", datetime(2024, 2, 29, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)),
    ],
)
def test_period_forms(spec, start, end):
    period = parse_period(spec, now=NOW)
    assert (period.start, period.end) == (start, end)
    assert period.label


def test_month_in_december_ends_next_year():
    period = parse_period("month", now=datetime(2024, 12, 31, 23, 59, tzinfo=UTC))
    assert (period.start, period.end) == (
        datetime(2024, 12, 1, tzinfo=UTC),
        datetime(2025, 1, 1, tzinfo=UTC),
    )


def test_now_in_another_zone_is_read_as_utc():
    tokyo_morning = datetime(2025, 3, 16, 5, 0, tzinfo=timezone(timedelta(hours=9)))
    period = parse_period("today", now=tokyo_morning)  # still the 15th in UTC
    assert period.start == datetime(2025, 3, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    "spec",
    ["", "yesterday", "7", "7x", "0d", "-7d", "7 d", "2025-02-30", "2025-13-01",
     "2025-02-10..2025-02-01", "2025-01-01..", "999999d"],
)  # fmt: skip
def test_bad_periods_say_what_is_accepted(spec):
    with pytest.raises(ValueError, match=r"period|today") as caught:
        parse_period(spec, now=NOW)
    assert repr(spec) in str(caught.value)


def test_unknown_period_lists_the_forms():
    with pytest.raises(ValueError) as caught:
        parse_period("last week", now=NOW)
    message = str(caught.value)
    for form in ("today", "month", "7d", "24h", "YYYY-MM-DD..YYYY-MM-DD"):
        assert form in message


def test_group_by_rejects_unknown_names():
    assert GroupBy("day") is GroupBy.day
    with pytest.raises(ValueError):
        GroupBy("guild")


# --- rendering -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("micros", "usd"),
    [
        (0, "0.000000"),
        (1, "0.000001"),
        (7250, "0.007250"),
        (1_000_000, "1.000000"),
        (1_234_567, "1.234567"),
        (12_345_678_901, "12345.678901"),
        (-2_500, "-0.002500"),
        (None, ""),
    ],
)
def test_usd_strings_are_exact(micros, usd):
    assert format_usd(micros) == usd


def sample_report() -> CostReport:
    rows = [
        ReportRow("gpt-4o-2024-08-06", 3, 4200, 1024, 900, 7250, 0),
        ReportRow("mystery, model", 1, 10, 0, 5, 0, 1),  # a comma: CSV must quote it
    ]
    totals = ReportRow("TOTAL", 4, 4210, 1024, 905, 7250, 1)
    return CostReport(PERIOD, GroupBy.model, rows, totals)


def test_csv_report_has_the_header_and_exact_costs():
    text = render_csv(sample_report())

    lines = text.splitlines()
    assert lines[0] == (  # the feedback columns are appended: the first ones keep their place
        "key,calls,prompt_tokens,cached_tokens,completion_tokens,cost_usd,cost_micros,"
        "unknown_cost_calls,answers,helpful_votes,unhelpful_votes,helpful_rate,solved,"
        "cost_per_solved_usd,cost_per_solved_micros"
    )
    assert lines[1] == "gpt-4o-2024-08-06,3,4200,1024,900,0.007250,7250,0,0,0,0,,0,,"
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert [row["key"] for row in parsed] == ["gpt-4o-2024-08-06", "mystery, model"]
    assert parsed[1]["unknown_cost_calls"] == "1"


def test_json_report_parses_with_integer_micros():
    document = json.loads(render_json(sample_report()))

    assert document["group_by"] == "model"
    assert document["period"]["start"] == "2025-03-10T00:00:00+00:00"
    first = document["rows"][0]
    assert (first["key"], first["cost_micros"], first["cost_usd"]) == (
        "gpt-4o-2024-08-06",
        7250,
        "0.007250",
    )
    assert document["totals"]["calls"] == 4
    assert document["totals"]["unknown_cost_calls"] == 1


def test_table_is_aligned_with_a_total_line():
    text = render_table(sample_report())
    lines = text.splitlines()

    header = next(line for line in lines if line.startswith("model"))
    body = [line for line in lines if line.startswith(("gpt-4o", "mystery", "TOTAL"))]
    assert len(body) == 3 and body[-1].startswith("TOTAL")
    # Right-aligned numbers: every data line ends where the header ends.
    assert {len(line) for line in body} == {len(header)}
    assert "0.007250" in body[0] and "0.007250" in body[-1]
    assert "1 call(s) used a model with no known price" in text


def test_rows_csv_header_and_values():
    row_time = datetime(2025, 3, 11, 23, 59, 30, tzinfo=UTC)
    row = LedgerRow(
        id=7, created_at=row_time, guild_id=GUILD, channel_id=None, thread_id=None,
        user_id=2**60 + 5, feature="ask", backend="openai", model_requested="gpt-4o",
        model="gpt-4o-2024-08-06", request_id="req_1", prompt_tokens=10, cached_tokens=0,
        image_tokens=765, completion_tokens=3, cost_micros=7250, latency_ms=900,
        status="ok", error_kind=None, usage_source="measured", attempts=1, note=None,
        call_id="4f1c",
    )  # fmt: skip

    lines = render_rows_csv([row]).splitlines()

    assert lines[0] == (
        "id,created_at,guild_id,channel_id,thread_id,user_id,feature,backend,model_requested,"
        "model,request_id,prompt_tokens,cached_tokens,image_tokens,completion_tokens,"
        "cost_micros,cost_usd,latency_ms,status,error_kind,usage_source,call_id"
    )
    assert lines[1] == (
        f"7,2025-03-11T23:59:30+00:00,{GUILD},,,{2**60 + 5},ask,openai,gpt-4o,"
        "gpt-4o-2024-08-06,req_1,10,0,765,3,7250,0.007250,900,ok,,measured,4f1c"
    )
