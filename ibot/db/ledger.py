"""The cost ledger: one row per model call, written by the gateway, read by reports.

The gateway is the only writer (see ibot/llm/gateway.py), so the ledger is complete by
construction. Money is integer micro-dollars; a call whose model has no known price is
stored with cost_micros NULL and counted apart, never as free.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Select, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ibot.db.models import LedgerRecord, utcnow
from ibot.llm.types import Backend, CallStatus, ErrorKind, Feature, UsageSource

NOTE_MAX = 255  # the column's length: PostgreSQL rejects a longer value outright

# The token columns, named as the fields of ibot.llm.types.Usage are, in the order the
# reports and metrics list them.
TOKEN_COLUMNS = ("prompt_tokens", "cached_tokens", "image_tokens", "completion_tokens")


@dataclass(frozen=True, kw_only=True, slots=True)
class LedgerEntry:
    """One model call as the gateway describes it, before it gets an id.

    With `LedgerRecord` (the table) this is the one place the row is spelled out: every
    field is a column of the same name, and what is derived from the row (the stored
    values, `LedgerRow`, the log line, the metrics) is derived from these fields, so that
    a column added here and in the table (and its migration) reaches all of them.
    """

    feature: Feature | str
    backend: Backend | str
    model_requested: str
    status: CallStatus | str
    model: str | None = None  # the model that answered, which is what gets priced
    guild_id: int | None = None
    channel_id: int | None = None
    thread_id: int | None = None
    user_id: int | None = None
    request_id: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    image_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int | None = None  # None: no known price (not zero)
    latency_ms: int = 0
    error_kind: ErrorKind | str | None = None
    usage_source: UsageSource | str = UsageSource.MEASURED
    attempts: int = 1
    note: str | None = None
    call_id: str | None = None
    created_at: datetime = field(default_factory=utcnow)

    def __post_init__(self) -> None:
        # A float cost would be stored as REAL by SQLite and summed with rounding errors.
        cost = self.cost_micros
        if cost is not None and (isinstance(cost, bool) or not isinstance(cost, int)):
            raise TypeError(f"cost_micros must be an int or None, not {type(cost).__name__}")

    @property
    def model_label(self) -> str:
        """The model the call is reported and priced under: the one that answered, else
        (no answer came) the one asked for."""
        return self.model or self.model_requested


@dataclass(frozen=True, kw_only=True, slots=True)
class LedgerRow(LedgerEntry):
    """A stored ledger row: the entry as written, with its id.

    Enum-like columns come back as the stored strings (StrEnums compare equal to them),
    so rows written by a newer version with values this one does not know still load.
    """

    id: int

    @classmethod
    def from_record(cls, record: LedgerRecord) -> LedgerRow:
        return cls(**{f.name: getattr(record, f.name) for f in fields(cls)})


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
        query = (
            select(LedgerRecord)
            .where(LedgerRecord.status == str(CallStatus.PENDING))
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
                    note=_note(note),
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


def _note(note: str | None) -> str | None:
    if note is not None and len(note) > NOTE_MAX:
        return note[: NOTE_MAX - 1] + "…"
    return note


def _to_record(entry: LedgerEntry) -> LedgerRecord:
    return LedgerRecord(**column_values(entry))


def column_values(entry: LedgerEntry) -> dict[str, Any]:
    """The entry as the values of its row, by column name (every field is a column).

    Enums go in as their values, the strings a `LedgerRow` reads back; the note is cut
    to fit its column.
    """
    values = {f.name: _stored(getattr(entry, f.name)) for f in fields(LedgerEntry)}
    values["note"] = _note(entry.note)
    return values


def _stored(value: Any) -> Any:
    return str(value) if isinstance(value, StrEnum) else value
