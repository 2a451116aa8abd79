"""Cost reports from the ledger: who and what spent how much, over a period.

Discord-free on purpose: `ibot costs report` and the /cost-report command both build on
it. This is the service level: it asks ibot.db.reports for the sums (the database does
the GROUP BY, so a report over a million calls stays fast), adds the totals over every
group and keeps the `top` ones. Periods come from ibot.periods; the text, CSV and JSON
forms are ibot.services.report_render. Amounts are integer micro-dollars end to end.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ibot.db import reports as queries
from ibot.db.ledger import Ledger, LedgerRow
from ibot.db.reports import DailyCost, GroupBy, ReportRow
from ibot.periods import Period


@dataclass(frozen=True, slots=True)
class CostReport:
    period: Period
    group_by: GroupBy
    rows: list[ReportRow]
    totals: ReportRow  # over every group, including those cut by `top`
    guild_id: int | None = None
    other_groups: int = 0  # groups left out by `top`


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
    rows = await queries.grouped_sums(
        sessionmaker, group_by, start=period.start, end=period.end, guild_id=guild_id
    )
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


async def daily_cost_by_feature(
    sessionmaker: async_sessionmaker[AsyncSession],
    period: Period,
    *,
    guild_id: int | None = None,
) -> list[DailyCost]:
    """Known cost per UTC day and feature over `period`, summed by the database, in
    day order; days and features without calls are simply absent."""
    return await queries.daily_costs(
        sessionmaker, start=period.start, end=period.end, guild_id=guild_id
    )


async def ledger_rows(
    sessionmaker: async_sessionmaker[AsyncSession],
    period: Period,
    *,
    guild_id: int | None = None,
) -> list[LedgerRow]:
    """Every call of the period, in the order they were made (for CSV export)."""
    return await Ledger(sessionmaker).rows(start=period.start, end=period.end, guild_id=guild_id)
