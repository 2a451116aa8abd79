"""The guild's daily cap in force on each day of a report: what the chart's cap line
follows, and what the report says about the cap.

Why: admins change caps at run time with `/budget set`, and each change is an audit row
(ibot.db.budgets). A chart of last month drawn against today's cap would show days
"over the cap" that were not, or hide days that were. Discord-free: /cost-report and
`ibot costs report` both get it from `build_report_view`, so it is written once.

The rule for one UTC day: the cap in force at the *end* of the day, i.e. the newest
change made before the next midnight (several changes in a day: the last one, which
governed the rest of that day and the days after). Before the guild's first change, the
cap that change replaced (its `previous_micros`: the configured value then); with no
change at all, the configured value. None is "no cap": the line stops on those days.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ibot.db.budgets import BudgetChange, BudgetStore
from ibot.services.budgets import Scope


@dataclass(frozen=True, slots=True)
class CapHistory:
    """The daily cap of each day (micro-dollars; None: no cap) and the changes made
    during those days, oldest first."""

    days: tuple[date, ...]
    caps: tuple[int | None, ...]
    changes: tuple[BudgetChange, ...]

    @property
    def in_force(self) -> int | None:
        """The cap at the end of the last day (today's cap, for a period up to now)."""
        return self.caps[-1] if self.caps else None

    @property
    def drawn(self) -> bool:
        """Whether there is any line to draw, or anything to say about the cap."""
        return bool(self.changes) or any(cap is not None for cap in self.caps)


def cap_series(
    changes: Sequence[BudgetChange], days: Sequence[date], configured_micros: int | None
) -> CapHistory:
    """The caps of `days` from the guild's changes of the scope, in the order they were
    made (BudgetStore.changes), by the module docstring's rule."""
    before_any = changes[0].previous_micros if changes else configured_micros
    caps: list[int | None] = []
    for day in days:
        end = datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)
        made = [change for change in changes if _utc(change.changed_at) < end]
        caps.append(made[-1].cap_micros if made else before_any)
    inside = set(days)
    during = tuple(change for change in changes if _utc(change.changed_at).date() in inside)
    return CapHistory(days=tuple(days), caps=tuple(caps), changes=during)


async def cap_history(
    sessionmaker: async_sessionmaker[AsyncSession],
    guild_id: int,
    days: Sequence[date],
    configured_micros: int | None,
) -> CapHistory:
    """The guild's daily cap on each of `days`, from its audited `/budget` changes."""
    # The guild's daily cap: the only one a chart of daily spending is drawn against.
    changes = await BudgetStore(sessionmaker).changes(guild_id, Scope.GUILD_DAILY.value)
    return cap_series(changes, days, configured_micros)


def _utc(moment: datetime) -> datetime:
    """The stored times are UTC; a naive one (an old SQLite row) is read as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
