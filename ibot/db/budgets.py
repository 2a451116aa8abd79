"""Budget caps changed at run time, and the budget alerts already sent.

`budget_changes` is an audit log as much as a setting: every `/budget set` adds a row
(who, when, the cap before and after), and the effective cap of a scope is the newest
row's, else the TOML value. Rows are never updated, so the history stays complete. Its
`scope` is the cap's name: "guild_daily", "guild_monthly", "user_daily", or
"feature_daily:<feature>" for one feature's daily cap (at most 24 characters).

`budget_alerts` makes "one alert per threshold and period" hold across restarts: an
alert is sent only by the process whose INSERT succeeded; a unique violation means it
was already sent. Its `scope` names the cap *and whose it is*: "guild_daily" for a
guild's cap (a feature's too: "feature_daily:summary"), "user_daily:<member id>" for
one member's own cap (`alert_scope`), so each member's cap is alerted once per period
without a column of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from ibot.db.models import Base, IdType, UTCDateTime
from ibot.domain import utcnow


class BudgetChangeRecord(Base):
    __tablename__ = "budget_changes"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    guild_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    scope: Mapped[str] = mapped_column(String(32), nullable=False)
    cap_micros: Mapped[int | None] = mapped_column(BigInteger)  # NULL: no cap
    changed_by: Mapped[int] = mapped_column(BigInteger, nullable=False)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    previous_micros: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_budget_changes_guild_id_scope", "guild_id", "scope"),)


class BudgetAlertRecord(Base):
    __tablename__ = "budget_alerts"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    guild_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # See alert_scope: "guild_daily", "feature_daily:summary", "user_daily:1234567890…".
    scope: Mapped[str] = mapped_column(String(32), nullable=False)
    period_key: Mapped[str] = mapped_column(String(16), nullable=False)  # 2026-11-21, 2026-11
    threshold: Mapped[int] = mapped_column(Integer, nullable=False)  # percent of the cap
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)

    __table_args__ = (
        UniqueConstraint(
            "guild_id", "scope", "period_key", "threshold", name="uq_budget_alerts_once"
        ),
    )


def alert_scope(scope: str, user_id: int | None = None) -> str:
    """The `budget_alerts.scope` of a cap: the scope alone for a guild cap, the scope and
    the member for a member's own cap ("user_daily:42"). A Discord id has at most 20
    digits, so the longest key (31 characters) fits the column's 32."""
    return scope if user_id is None else f"{scope}:{user_id}"


@dataclass(frozen=True, slots=True)
class BudgetChange:
    """One stored cap change (an audit row)."""

    id: int
    guild_id: int
    scope: str
    cap_micros: int | None
    changed_by: int
    changed_at: datetime
    previous_micros: int | None


def _change(record: BudgetChangeRecord) -> BudgetChange:
    return BudgetChange(
        id=record.id,
        guild_id=record.guild_id,
        scope=record.scope,
        cap_micros=record.cap_micros,
        changed_by=record.changed_by,
        changed_at=record.changed_at,
        previous_micros=record.previous_micros,
    )


class BudgetStore:
    """The two budget tables, behind plain async methods."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def add_change(
        self,
        *,
        guild_id: int,
        scope: str,
        cap_micros: int | None,
        changed_by: int,
        previous_micros: int | None,
        changed_at: datetime | None = None,
    ) -> BudgetChange:
        record = BudgetChangeRecord(
            guild_id=guild_id,
            scope=scope,
            cap_micros=cap_micros,
            changed_by=changed_by,
            changed_at=changed_at or utcnow(),
            previous_micros=previous_micros,
        )
        async with self._sessionmaker() as session:
            session.add(record)
            await session.commit()
            return _change(record)

    async def changes(self, guild_id: int, scope: str | None = None) -> list[BudgetChange]:
        """The guild's changes, oldest first (by id: the order they were made)."""
        query = select(BudgetChangeRecord).where(BudgetChangeRecord.guild_id == guild_id)
        if scope is not None:
            query = query.where(BudgetChangeRecord.scope == scope)
        async with self._sessionmaker() as session:
            records = (await session.scalars(query.order_by(BudgetChangeRecord.id))).all()
        return [_change(record) for record in records]

    async def latest_changes(self, guild_id: int) -> dict[str, BudgetChange]:
        """The newest change of each scope of the guild (the one in force)."""
        return {change.scope: change for change in await self.changes(guild_id)}

    async def claim_alert(
        self,
        *,
        guild_id: int,
        scope: str,
        period_key: str,
        threshold: int,
        sent_at: datetime | None = None,
    ) -> bool:
        """True if this alert was not sent before (and now counts as sent)."""
        async with self._sessionmaker() as session:
            session.add(
                BudgetAlertRecord(
                    guild_id=guild_id,
                    scope=scope,
                    period_key=period_key,
                    threshold=threshold,
                    sent_at=sent_at or utcnow(),
                )
            )
            try:
                await session.commit()
            except IntegrityError:
                return False
        return True
