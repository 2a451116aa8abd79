"""The cost ledger: one row per model call, written by the gateway, read by reports.

The gateway is the only writer (see ibot/llm/gateway.py), so the ledger is complete by
construction. Money is integer micro-dollars; a call whose model has no known price is
stored with cost_micros NULL and counted apart, never as free.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Select,
    case,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ibot.db.models import LedgerRecord
from ibot.domain import (
    NOTE_MAX,
    TOKEN_COLUMNS,
    CallStatus,
    ErrorKind,
    Feature,
    LedgerEntry,
    LedgerRow,
    UsageSource,
    column_values,
    fit_note,
)

__all__ = ["NOTE_MAX", "TOKEN_COLUMNS", "Ledger", "LedgerEntry", "LedgerRow", "Totals"]


@dataclass(frozen=True, slots=True)
class Totals:
    calls: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    image_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int = 0  # sum of the known costs only
    unknown_cost_calls: int = 0  # calls whose cost is unknown, left out of cost_micros


def unknown_cost_count() -> ColumnElement[Any]:
    """SQL for 'how many rows have no known price' (shared with the reports)."""
    return func.coalesce(func.sum(case((LedgerRecord.cost_micros.is_(None), 1), else_=0)), 0)


def known_cost_sum() -> ColumnElement[Any]:
    return func.coalesce(func.sum(LedgerRecord.cost_micros), 0)


def token_sum(column: Any) -> ColumnElement[Any]:
    return func.coalesce(func.sum(column), 0)


def where_period(
    query: Select[Any],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    guild_id: int | None = None,
) -> Select[Any]:
    """Restrict to start <= created_at < end (either bound optional) and one guild."""
    if start is not None:
        query = query.where(LedgerRecord.created_at >= start)
    if end is not None:
        query = query.where(LedgerRecord.created_at < end)
    if guild_id is not None:
        query = query.where(LedgerRecord.guild_id == guild_id)
    return query


class Ledger:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def record(self, entry: LedgerEntry) -> int:
        """Insert one row and commit it; returns its id.

        Safe under many concurrent calls on SQLite: the engine sets WAL and a 5 s busy
        timeout, and each write is one statement committed on its own (see
        `make_sessionmaker`), so the write lock is never held across event-loop turns.
        """
        record = _to_record(entry)
        async with self._sessionmaker() as session:
            session.add(record)
            await session.commit()
            return record.id

    async def complete(self, row_id: int, entry: LedgerEntry) -> bool:
        """Replace the pending row `row_id` by the call's outcome, in one UPDATE.

        The row keeps its id and creation time (when the call was sent). False when no
        pending row has that id (already closed as interrupted by a newer process): the
        caller then records the outcome as a row of its own.
        """
        values = column_values(entry)
        del values["created_at"]
        async with self._sessionmaker() as session:
            result = await session.execute(
                update(LedgerRecord)
                .where(LedgerRecord.id == row_id, LedgerRecord.status == str(CallStatus.PENDING))
                .values(**values)
            )
            await session.commit()
            return bool(cast(CursorResult[Any], result).rowcount)

    async def pending(self) -> list[LedgerRow]:
        """Rows still pending: calls in flight, or calls of a process that died."""
        # The status as an inline literal, the very predicate of the partial index
        # ix_ledger_pending (migration 0012): a bound parameter would leave PostgreSQL's
        # generic plans free to ignore that index and scan the whole ledger.
        query = (
            select(LedgerRecord)
            .where(LedgerRecord.status == literal_column(f"'{CallStatus.PENDING}'"))
            .order_by(LedgerRecord.id)
        )
        async with self._sessionmaker() as session:
            records = (await session.scalars(query)).all()
        return [LedgerRow.from_record(record) for record in records]

    async def close_interrupted(self, row_id: int, *, cost_micros: int | None, note: str) -> bool:
        """Close a pending row as an interrupted call (its tokens stay the estimates)."""
        async with self._sessionmaker() as session:
            result = await session.execute(
                update(LedgerRecord)
                .where(LedgerRecord.id == row_id, LedgerRecord.status == str(CallStatus.PENDING))
                .values(
                    status=str(CallStatus.ERROR),
                    error_kind=str(ErrorKind.INTERRUPTED),
                    usage_source=str(UsageSource.ESTIMATED),
                    cost_micros=cost_micros,
                    note=fit_note(note),
                )
            )
            await session.commit()
            return bool(cast(CursorResult[Any], result).rowcount)

    async def rows(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        guild_id: int | None = None,
        feature: Feature | str | None = None,
        user_id: int | None = None,
        limit: int | None = None,
    ) -> list[LedgerRow]:
        """Rows with start <= created_at < end, in the order they were written."""
        query = where_period(select(LedgerRecord), start=start, end=end, guild_id=guild_id)
        if feature is not None:
            query = query.where(LedgerRecord.feature == str(feature))
        if user_id is not None:
            query = query.where(LedgerRecord.user_id == user_id)
        query = query.order_by(LedgerRecord.id)
        if limit is not None:
            query = query.limit(limit)
        async with self._sessionmaker() as session:
            records = (await session.scalars(query)).all()
        return [LedgerRow.from_record(record) for record in records]

    async def totals(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        guild_id: int | None = None,
    ) -> Totals:
        """Calls, tokens and known cost over a period, summed by the database."""
        query = where_period(
            select(
                func.count(),
                token_sum(LedgerRecord.prompt_tokens),
                token_sum(LedgerRecord.cached_tokens),
                token_sum(LedgerRecord.image_tokens),
                token_sum(LedgerRecord.completion_tokens),
                known_cost_sum(),
                unknown_cost_count(),
            ),
            start=start,
            end=end,
            guild_id=guild_id,
        )
        async with self._sessionmaker() as session:
            row = (await session.execute(query)).one()
        # PostgreSQL sums BIGINT as NUMERIC (a Decimal here): back to exact ints.
        return Totals(*(int(value) for value in row))

    async def spent_micros(
        self,
        *,
        start: datetime,
        end: datetime,
        guild_id: int | None = None,
        user_id: int | None = None,
        features: Iterable[Feature | str] | None = None,
    ) -> int:
        """Known cost of the calls in [start, end), optionally for one guild, user or
        set of features; unknown costs count as 0 here (they are not spent money we can
        name, and refusing every call because of them would lock users out)."""
        query = where_period(select(known_cost_sum()), start=start, end=end, guild_id=guild_id)
        if user_id is not None:
            query = query.where(LedgerRecord.user_id == user_id)
        if features is not None:
            wanted: Sequence[str] = sorted({str(f) for f in features})
            if not wanted:
                return 0
            query = query.where(LedgerRecord.feature.in_(wanted))
        async with self._sessionmaker() as session:
            return int((await session.execute(query)).scalar_one())


def _to_record(entry: LedgerEntry) -> LedgerRecord:
    return LedgerRecord(**column_values(entry))
