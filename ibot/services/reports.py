"""Cost reports from the ledger: who and what spent how much, over a period.

Discord-free on purpose: `ibot costs report` and the /cost-report command both build on
it. Aggregation happens in SQL (GROUP BY), never by loading rows into Python, so that a
report over a million calls stays fast. Amounts are integer micro-dollars end to end and
are turned into dollar strings by integer arithmetic only.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Date, cast, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ibot.db.ledger import (
    Ledger,
    LedgerRow,
    known_cost_sum,
    token_sum,
    unknown_cost_count,
    where_period,
)
from ibot.db.models import LedgerRecord

MICROS_PER_USD = 1_000_000
NO_KEY = "(none)"  # the group of rows whose key column is NULL (a call outside a guild…)
PERIOD_FORMS = "today, month, Nd (e.g. 7d), Nh (e.g. 24h), YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD"
_MAX_DAYS = 100 * 366  # beyond this, datetime arithmetic overflows and nobody means it


@dataclass(frozen=True, slots=True)
class Period:
    """The half-open interval start <= created_at < end, in UTC."""

    start: datetime
    end: datetime
    label: str


class GroupBy(StrEnum):
    feature = "feature"
    user = "user"
    model = "model"
    channel = "channel"
    day = "day"
    backend = "backend"
    status = "status"


@dataclass(frozen=True, slots=True)
class ReportRow:
    key: str
    calls: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int = 0  # sum of the known costs
    unknown_cost_calls: int = 0  # calls with no known price, not in cost_micros


@dataclass(frozen=True, slots=True)
class CostReport:
    period: Period
    group_by: GroupBy
    rows: list[ReportRow]
    totals: ReportRow  # over every group, including those cut by `top`
    guild_id: int | None = None
    other_groups: int = 0  # groups left out by `top`


# --- periods -------------------------------------------------------------------------

_RELATIVE = re.compile(r"(\d{1,6})([dh])")
_DATE = r"\d{4}-\d{2}-\d{2}"
_RANGE = re.compile(rf"({_DATE})(?:\.\.({_DATE}))?")


def parse_period(spec: str, *, now: datetime | None = None) -> Period:
    """Turn what a user types (`7d`, `today`, `2025-01-01..2025-01-31`…) into a Period.

    Every form is in UTC, like the ledger. Ranges of dates are inclusive of both days.
    """
    now = _aware_utc(now or datetime.now(UTC))
    text = spec.strip().lower()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if text == "today":
        return Period(midnight, midnight + timedelta(days=1), f"today ({midnight:%Y-%m-%d} UTC)")
    if text == "month":
        start = midnight.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        return Period(start, end, f"month {start:%Y-%m} (UTC)")
    if match := _RELATIVE.fullmatch(text):
        return _relative(int(match[1]), match[2], now, spec)
    if match := _RANGE.fullmatch(text):
        return _date_range(match[1], match[2] or match[1], spec)
    raise ValueError(f"unknown period {spec!r}: use {PERIOD_FORMS}")


def _relative(count: int, unit: str, now: datetime, spec: str) -> Period:
    if count <= 0:
        raise ValueError(f"period {spec!r} must cover at least 1 {unit}: use {PERIOD_FORMS}")
    delta = timedelta(days=count) if unit == "d" else timedelta(hours=count)
    if delta > timedelta(days=_MAX_DAYS):
        raise ValueError(f"period {spec!r} is too long (at most {_MAX_DAYS} days)")
    word = "day" if unit == "d" else "hour"
    plural = "" if count == 1 else "s"
    return Period(now - delta, now, f"last {count} {word}{plural}")


def _date_range(first_text: str, last_text: str, spec: str) -> Period:
    try:
        first = date.fromisoformat(first_text)
        last = date.fromisoformat(last_text)
    except ValueError:
        raise ValueError(f"period {spec!r} has an impossible date: use {PERIOD_FORMS}") from None
    if last < first:
        raise ValueError(f"period {spec!r} ends before it starts")
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    try:
        end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    except OverflowError:
        raise ValueError(f"period {spec!r} ends too late") from None
    label = f"{first.isoformat()}" if first == last else f"{first}..{last}"
    return Period(start, end, f"{label} (UTC)")


def _aware_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# --- queries -------------------------------------------------------------------------


def _group_key(group_by: GroupBy, dialect: str) -> ColumnElement[Any]:
    record = LedgerRecord
    match group_by:
        case GroupBy.feature:
            return record.feature
        case GroupBy.user:
            return record.user_id
        case GroupBy.channel:
            return record.channel_id
        case GroupBy.backend:
            return record.backend
        case GroupBy.status:
            return record.status
        case GroupBy.model:
            # Priced by the model that answered; a call that never got an answer has
            # none, so it is filed under the model that was asked for.
            return func.coalesce(record.model, record.model_requested)
        case GroupBy.day:
            return _utc_day(dialect)
    raise ValueError(f"unknown grouping {group_by!r}")


def _utc_day(dialect: str) -> ColumnElement[Any]:
    """The UTC calendar day of created_at, computed by the database."""
    if dialect == "sqlite":
        # Stored as naive UTC text ('2025-01-31 23:59:00.000000'): date() cuts it.
        return func.date(LedgerRecord.created_at)
    if dialect == "postgresql":
        # timestamptz -> UTC wall clock first: a bare cast would use the session's zone.
        # A literal, not a bound parameter: PostgreSQL must see the SELECT and GROUP BY
        # expressions as identical, and $1 and $2 are not.
        utc = literal_column("'UTC'")
        return cast(func.timezone(utc, LedgerRecord.created_at), Date)
    return cast(LedgerRecord.created_at, Date)


async def cost_report(
    sessionmaker: async_sessionmaker[AsyncSession],
    period: Period,
    group_by: GroupBy | str,
    *,
    guild_id: int | None = None,
    top: int | None = None,
) -> CostReport:
    """Calls, tokens and cost per group over `period`, most expensive first (days in
    order), with totals over all groups; `top` keeps only the first groups."""
    group_by = GroupBy(group_by)
    async with sessionmaker() as session:
        key = _group_key(group_by, session.bind.dialect.name).label("key")
        cost = known_cost_sum().label("total_cost")
        calls = func.count().label("n_calls")
        query = select(
            key,
            calls,
            token_sum(LedgerRecord.prompt_tokens),
            token_sum(LedgerRecord.cached_tokens),
            token_sum(LedgerRecord.completion_tokens),
            cost,
            unknown_cost_count(),
        )
        query = where_period(query, start=period.start, end=period.end, guild_id=guild_id)
        query = query.group_by(key)
        if group_by is GroupBy.day:
            query = query.order_by(key)
        else:
            query = query.order_by(cost.desc(), calls.desc(), key)
        result = (await session.execute(query)).all()
    rows = [_report_row(record) for record in result]
    totals = _sum_rows(rows)
    shown = rows if top is None else rows[: max(top, 0)]
    return CostReport(
        period=period,
        group_by=group_by,
        rows=shown,
        totals=totals,
        guild_id=guild_id,
        other_groups=len(rows) - len(shown),
    )


def _report_row(record: Sequence[Any]) -> ReportRow:
    key, *numbers = record
    # PostgreSQL sums as NUMERIC (Decimal): int() keeps them exact.
    return ReportRow(_key_text(key), *(int(n) for n in numbers))


def _key_text(key: Any) -> str:
    if key is None:
        return NO_KEY
    if isinstance(key, date):
        return key.isoformat()
    return str(key)


def _sum_rows(rows: Iterable[ReportRow]) -> ReportRow:
    total = ReportRow("TOTAL")
    for row in rows:
        total = ReportRow(
            "TOTAL",
            total.calls + row.calls,
            total.prompt_tokens + row.prompt_tokens,
            total.cached_tokens + row.cached_tokens,
            total.completion_tokens + row.completion_tokens,
            total.cost_micros + row.cost_micros,
            total.unknown_cost_calls + row.unknown_cost_calls,
        )
    return total


@dataclass(frozen=True, slots=True)
class DailyCost:
    """Known cost of one UTC day for one feature (a bar segment of the cost chart)."""

    day: date
    feature: str
    cost_micros: int


async def daily_cost_by_feature(
    sessionmaker: async_sessionmaker[AsyncSession],
    period: Period,
    *,
    guild_id: int | None = None,
) -> list[DailyCost]:
    """Known cost per UTC day and feature over `period`, summed by the database, in
    day order; days and features without calls are simply absent."""
    async with sessionmaker() as session:
        day = _utc_day(session.bind.dialect.name).label("day")
        query = select(day, LedgerRecord.feature, known_cost_sum())
        query = where_period(query, start=period.start, end=period.end, guild_id=guild_id)
        query = query.group_by(day, LedgerRecord.feature).order_by(day, LedgerRecord.feature)
        result = (await session.execute(query)).all()
    return [DailyCost(_as_date(key), feature, int(cost)) for key, feature, cost in result]


def _as_date(value: Any) -> date:
    # SQLite's date() returns text, PostgreSQL a date.
    return value if isinstance(value, date) else date.fromisoformat(str(value))


async def ledger_rows(
    sessionmaker: async_sessionmaker[AsyncSession],
    period: Period,
    *,
    guild_id: int | None = None,
) -> list[LedgerRow]:
    """Every call of the period, in the order they were made (for CSV export)."""
    return await Ledger(sessionmaker).rows(start=period.start, end=period.end, guild_id=guild_id)


# --- rendering -----------------------------------------------------------------------


def format_usd(micros: int | None) -> str:
    """Micro-dollars as a dollar string with 6 decimals, exactly: 7250 -> '0.007250'."""
    if micros is None:
        return ""
    sign = "-" if micros < 0 else ""
    dollars, rest = divmod(abs(micros), MICROS_PER_USD)
    return f"{sign}{dollars}.{rest:06d}"


_TABLE_COLUMNS = (
    ("calls", "calls"),
    ("prompt", "prompt_tokens"),
    ("cached", "cached_tokens"),
    ("completion", "completion_tokens"),
    ("cost_usd", None),
    ("unpriced", "unknown_cost_calls"),
)


def render_table(report: CostReport) -> str:
    """An aligned text table, one line per group, then a TOTAL line."""
    header = [str(report.group_by), *(title for title, _ in _TABLE_COLUMNS)]
    body = [_table_cells(row) for row in report.rows]
    total = _table_cells(report.totals)
    widths = [max(len(line[i]) for line in [header, *body, total]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    scope = f", guild {report.guild_id}" if report.guild_id is not None else ""
    out = [
        f"Costs by {report.group_by}, {report.period.label}{scope}: "
        f"{report.period.start:%Y-%m-%d %H:%M} to {report.period.end:%Y-%m-%d %H:%M} UTC",
        line(header),
        "-" * (sum(widths) + 2 * (len(widths) - 1)),
    ]
    out.extend(line(cells) for cells in body)
    if not body:
        out.append("(no calls in this period)")
    if report.other_groups:
        out.append(f"… and {report.other_groups} more {report.group_by} group(s)")
    out.append(line(total))
    if report.totals.unknown_cost_calls:
        out.append(
            f"{report.totals.unknown_cost_calls} call(s) used a model with no known price: "
            "their cost is not included."
        )
    return "\n".join(out) + "\n"


def _table_cells(row: ReportRow) -> list[str]:
    cells = [row.key]
    for _, attribute in _TABLE_COLUMNS:
        cells.append(
            format_usd(row.cost_micros) if attribute is None else str(getattr(row, attribute))
        )
    return cells


REPORT_CSV_HEADER = (
    "key",
    "calls",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "cost_usd",
    "cost_micros",
    "unknown_cost_calls",
)


def render_csv(report: CostReport) -> str:
    """One CSV line per group (no TOTAL line: a spreadsheet sums the columns itself)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REPORT_CSV_HEADER)
    for row in report.rows:
        writer.writerow(
            [
                row.key,
                row.calls,
                row.prompt_tokens,
                row.cached_tokens,
                row.completion_tokens,
                format_usd(row.cost_micros),
                row.cost_micros,
                row.unknown_cost_calls,
            ]
        )
    return buffer.getvalue()


def _row_json(row: ReportRow) -> dict[str, Any]:
    return {
        "key": row.key,
        "calls": row.calls,
        "prompt_tokens": row.prompt_tokens,
        "cached_tokens": row.cached_tokens,
        "completion_tokens": row.completion_tokens,
        "cost_micros": row.cost_micros,
        "cost_usd": format_usd(row.cost_micros),  # a string: a JSON float would round
        "unknown_cost_calls": row.unknown_cost_calls,
    }


def render_json(report: CostReport) -> str:
    document = {
        "period": {
            "label": report.period.label,
            "start": report.period.start.isoformat(),
            "end": report.period.end.isoformat(),
        },
        "group_by": str(report.group_by),
        "guild_id": report.guild_id,
        "rows": [_row_json(row) for row in report.rows],
        "other_groups": report.other_groups,
        "totals": _row_json(report.totals),
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


ROWS_CSV_HEADER = (
    "id",
    "created_at",
    "guild_id",
    "channel_id",
    "thread_id",
    "user_id",
    "feature",
    "backend",
    "model_requested",
    "model",
    "request_id",
    "prompt_tokens",
    "cached_tokens",
    "image_tokens",
    "completion_tokens",
    "cost_micros",
    "cost_usd",
    "latency_ms",
    "status",
    "error_kind",
    "usage_source",
    "call_id",  # our id of the call, also sent to OpenAI as X-Client-Request-Id
)


def render_rows_csv(rows: Iterable[LedgerRow]) -> str:
    """Every call on its own line; empty cells for NULLs (an unknown cost is blank, not 0)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(ROWS_CSV_HEADER)
    for row in rows:
        writer.writerow([_rows_csv_cell(row, name) for name in ROWS_CSV_HEADER])
    return buffer.getvalue()


def _rows_csv_cell(row: LedgerRow, name: str) -> Any:
    if name == "cost_usd":
        return format_usd(row.cost_micros)
    if name == "created_at":
        return row.created_at.isoformat()
    value = getattr(row, name)
    return "" if value is None else value
