"""The cost report's queries: ledger sums per group and per UTC day, done by the database.

Why a module of its own: a report over a million calls stays fast only if the database
does the aggregation (GROUP BY), never Python over loaded rows, and that SQL, with its
per-dialect details (what a UTC day is on SQLite and on PostgreSQL), belongs next to the
ledger table rather than in a service. The services (ibot.services.reports and
report_view) read the ledger's sums through here and nothing else.

Amounts are integer micro-dollars; PostgreSQL's NUMERIC sums are turned back into exact
ints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any, assert_never

from sqlalchemy import ColumnElement, Date, cast, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import QueryableAttribute

from ibot.db.ledger import known_cost_sum, token_sum, unknown_cost_count, where_period
from ibot.db.models import LedgerRecord

NO_KEY = "(none)"  # the group of rows whose key column is NULL (a call outside a guild…)


class GroupBy(StrEnum):
    """The ledger column (or computed UTC day) a report groups by."""

    feature = "feature"
    user = "user"
    model = "model"
    channel = "channel"
    day = "day"
    backend = "backend"
    status = "status"


@dataclass(frozen=True, slots=True)
class ReportRow:
    """The sums of one group (or of all of them: the TOTAL row)."""

    key: str
    calls: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int = 0  # sum of the known costs
    unknown_cost_calls: int = 0  # calls with no known price, not in cost_micros


@dataclass(frozen=True, slots=True)
class DailyCost:
    """Known cost of one UTC day for one feature (a bar segment of the cost chart)."""

    day: date
    feature: str
    cost_micros: int


async def grouped_sums(
    sessionmaker: async_sessionmaker[AsyncSession],
    group_by: GroupBy,
    *,
    start: datetime,
    end: datetime,
    guild_id: int | None = None,
) -> list[ReportRow]:
    """Calls, tokens and cost per group of the calls in [start, end), most expensive
    first (ties: most calls, then key), or in day order when grouped by day."""
    async with sessionmaker() as session:
        key = _group_key(group_by, _dialect(session)).label("key")
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
        query = where_period(query, start=start, end=end, guild_id=guild_id)
        query = query.group_by(key)
        if group_by is GroupBy.day:
            query = query.order_by(key)
        else:
            query = query.order_by(cost.desc(), calls.desc(), key)
        result = (await session.execute(query)).all()
    return [_report_row(record) for record in result]


async def daily_costs(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    start: datetime,
    end: datetime,
    guild_id: int | None = None,
) -> list[DailyCost]:
    """Known cost per UTC day and feature of the calls in [start, end), in day order;
    days and features without calls are simply absent."""
    async with sessionmaker() as session:
        day = _utc_day(_dialect(session)).label("day")
        query = select(day, LedgerRecord.feature, known_cost_sum())
        query = where_period(query, start=start, end=end, guild_id=guild_id)
        query = query.group_by(day, LedgerRecord.feature).order_by(day, LedgerRecord.feature)
        result = (await session.execute(query)).all()
    return [DailyCost(_as_date(key), feature, int(cost)) for key, feature, cost in result]


def _dialect(session: AsyncSession) -> str:
    bind = session.bind
    if bind is None:  # make_sessionmaker always binds its engine
        raise RuntimeError("the report session is not bound to an engine")
    return bind.dialect.name


def _group_key(group_by: GroupBy, dialect: str) -> ColumnElement[Any] | QueryableAttribute[Any]:
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
        case _:
            assert_never(group_by)


def _utc_day(dialect: str) -> ColumnElement[Any]:
    """The UTC calendar day of created_at, computed by the database."""
    if dialect == "sqlite":
        # Stored as naive UTC text ('2025-01-31 23:59:00.000000'): date() cuts it.
        return func.date(LedgerRecord.created_at)
    if dialect == "postgresql":
        # timestamptz -> UTC wall clock first: a bare cast would use the session's zone.
        # A literal, not a bound parameter: PostgreSQL must see the SELECT and GROUP BY
        # expressions as identical, and $1 and $2 are not.
        utc: ColumnElement[str] = literal_column("'UTC'")
        return cast(func.timezone(utc, LedgerRecord.created_at), Date)
    return cast(LedgerRecord.created_at, Date)


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


def _as_date(value: Any) -> date:
    # SQLite's date() returns text, PostgreSQL a date.
    return value if isinstance(value, date) else date.fromisoformat(str(value))
