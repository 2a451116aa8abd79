"""The cost report's queries: ledger sums per group and per UTC day, done by the database.

Why a module of its own: a report over a million calls stays fast only if the database
does the aggregation (GROUP BY), never Python over loaded rows, and that SQL, with its
per-dialect details (what a UTC day is on SQLite and on PostgreSQL), belongs next to the
ledger table rather than in a service. The services (ibot.services.reports and
report_view) read the ledger's sums through here and nothing else.

Amounts are integer micro-dollars; PostgreSQL's NUMERIC sums are turned back into exact
ints.

Members' feedback (`feedback_sums`) is summed here too, from the `answers` and
`answer_feedback` tables joined to the ledger on the answer's ledger row: an answer
belongs to the group of the call that wrote it (its feature, model, user, channel…),
except by day, where it is the answer's own UTC day. Its period is the answer's
creation time, not the call's, so "answers in the period" are the answers *posted* in
[start, end), and one guild's report counts only the answers posted in that guild.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from fractions import Fraction
from typing import Any, assert_never

from sqlalchemy import ColumnElement, Date, case, cast, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import QueryableAttribute

from ibot.db.feedback import AnswerRecord, VoteRecord
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
    # Members' feedback on the bot's answers posted in the period (see feedback_sums).
    answers: int = 0  # answers posted with the feedback buttons
    helpful_votes: int = 0  # 👍 on those answers
    unhelpful_votes: int = 0  # 👎 on those answers
    solved: int = 0  # those answers marked solved (✅, /solved, a solved tag)

    @property
    def votes(self) -> int:
        return self.helpful_votes + self.unhelpful_votes

    @property
    def helpful_rate(self) -> Fraction | None:
        """👍 / (👍 + 👎), exact; None when nobody voted (shown as "—", never 0 %)."""
        return Fraction(self.helpful_votes, self.votes) if self.votes else None

    @property
    def cost_per_solved_micros(self) -> int | None:
        """The group's known cost in the period divided by its solved answers, rounded
        to the nearest micro-dollar (halves up); None when nothing was solved."""
        if not self.solved:
            return None
        return (2 * self.cost_micros + self.solved) // (2 * self.solved)


@dataclass(frozen=True, slots=True)
class FeedbackSums:
    """The feedback figures of one group, before they join its ledger sums."""

    answers: int = 0
    helpful_votes: int = 0
    unhelpful_votes: int = 0
    solved: int = 0


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


async def feedback_sums(
    sessionmaker: async_sessionmaker[AsyncSession],
    group_by: GroupBy,
    *,
    start: datetime,
    end: datetime,
    guild_id: int | None = None,
) -> dict[str, FeedbackSums]:
    """Answers, 👍, 👎 and solved answers per group, of the answers posted in
    [start, end) (in `guild_id` only, when given); groups without answers are absent.

    One GROUP BY over answers, LEFT JOINed to their ledger row (primary key) and to
    their votes (the unique (message_id, member_id) index): an answer with several votes
    appears once per vote, hence the DISTINCT counts. An answer whose ledger row is gone
    is filed under its own feature, or NO_KEY for the other groupings.
    """
    async with sessionmaker() as session:
        key = _answer_key(group_by, _dialect(session)).label("key")
        answer = AnswerRecord.message_id
        query = (
            select(
                key,
                func.count(func.distinct(answer)),
                func.coalesce(func.sum(case((VoteRecord.vote > 0, 1), else_=0)), 0),
                func.coalesce(func.sum(case((VoteRecord.vote < 0, 1), else_=0)), 0),
                func.count(func.distinct(case((AnswerRecord.solved_at.is_not(None), answer)))),
            )
            .select_from(AnswerRecord)
            .outerjoin(LedgerRecord, LedgerRecord.id == AnswerRecord.ledger_id)
            .outerjoin(VoteRecord, VoteRecord.message_id == answer)
            .where(AnswerRecord.created_at >= start, AnswerRecord.created_at < end)
        )
        if guild_id is not None:
            query = query.where(AnswerRecord.guild_id == guild_id)
        result = (await session.execute(query.group_by(key))).all()
    return {
        _key_text(group): FeedbackSums(int(answers), int(up), int(down), int(solved))
        for group, answers, up, down, solved in result
    }


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


def _answer_key(group_by: GroupBy, dialect: str) -> ColumnElement[Any] | QueryableAttribute[Any]:
    """The group of an answer: its call's (the ledger row joined), but by day the day
    the answer was posted, and by feature its own feature when the row is missing."""
    if group_by is GroupBy.day:
        return _utc_day(dialect, AnswerRecord.created_at)
    if group_by is GroupBy.feature:
        return func.coalesce(LedgerRecord.feature, AnswerRecord.feature)
    return _group_key(group_by, dialect)


def _utc_day(
    dialect: str, column: QueryableAttribute[datetime] = LedgerRecord.created_at
) -> ColumnElement[Any]:
    """The UTC calendar day of `column` (the ledger's created_at), computed by the database."""
    if dialect == "sqlite":
        # Stored as naive UTC text ('2025-01-31 23:59:00.000000'): date() cuts it.
        return func.date(column)
    if dialect == "postgresql":
        # timestamptz -> UTC wall clock first: a bare cast would use the session's zone.
        # A literal, not a bound parameter: PostgreSQL must see the SELECT and GROUP BY
        # expressions as identical, and $1 and $2 are not.
        utc: ColumnElement[str] = literal_column("'UTC'")
        return cast(func.timezone(utc, column), Date)
    return cast(column, Date)


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
