"""Cost reports from the ledger: who and what spent how much, over a period.

Discord-free on purpose: `ibot costs report` and the /cost-report command both build on
it. This is the service level: it asks ibot.db.reports for the sums (the database does
the GROUP BY, so a report over a million calls stays fast), adds the totals over every
group and keeps the `top` ones. Periods come from ibot.periods; the text, CSV and JSON
forms are ibot.services.report_render. Amounts are integer micro-dollars end to end.

Each group also carries the members' feedback on the bot's answers (answers, 👍, 👎,
solved; ibot.db.reports.feedback_sums says how an answer finds its group). The period
semantics differ on purpose: costs are those of the *calls* made in the period, feedback
that of the *answers posted* in it (their votes and solved marks as they stand now,
whenever they were given). Cost per solved thread is the group's known cost in the
period divided by its solved answers (ReportRow.cost_per_solved_micros: rounded to the
nearest micro-dollar, halves up; None when none was solved).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ibot.db import reports as queries
from ibot.db.ledger import Ledger, LedgerRow
from ibot.db.reports import DailyCost, FeedbackSums, GroupBy, ReportRow
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
    """Calls, tokens, cost and feedback per group over `period`, most expensive first
    (days in order), with totals over all groups; `top` keeps only the first groups.

    A group with answers but no call in the period (an answer posted just after
    midnight for a call made just before, an answer whose ledger row is gone) is kept,
    with zero calls, after the others (in its place by day)."""
    group_by = GroupBy(group_by)
    start, end = period.start, period.end
    costs = await queries.grouped_sums(
        sessionmaker, group_by, start=start, end=end, guild_id=guild_id
    )
    feedback = await queries.feedback_sums(
        sessionmaker, group_by, start=start, end=end, guild_id=guild_id
    )
    rows = _with_feedback(costs, feedback, by_day=group_by is GroupBy.day)
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


def _with_feedback(
    rows: list[ReportRow], feedback: Mapping[str, FeedbackSums], *, by_day: bool
) -> list[ReportRow]:
    """The ledger's rows with their group's feedback, plus the groups with answers only."""
    merged = [_joined(row, feedback[row.key]) if row.key in feedback else row for row in rows]
    known = {row.key for row in rows}
    extra = [
        _joined(ReportRow(key), sums) for key, sums in sorted(feedback.items()) if key not in known
    ]
    if by_day and extra:
        return sorted([*merged, *extra], key=lambda row: row.key)  # ISO days sort as text
    return merged + extra


def _joined(row: ReportRow, sums: FeedbackSums) -> ReportRow:
    return replace(
        row,
        answers=sums.answers,
        helpful_votes=sums.helpful_votes,
        unhelpful_votes=sums.unhelpful_votes,
        solved=sums.solved,
    )


def _sum_rows(rows: Iterable[ReportRow]) -> ReportRow:
    """The TOTAL row: every count and amount of ReportRow summed over the groups."""
    names = [field.name for field in fields(ReportRow) if field.name != "key"]
    sums = dict.fromkeys(names, 0)
    for row in rows:
        for name in names:
            sums[name] += getattr(row, name)
    return ReportRow("TOTAL", **sums)


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
