"""The cost report as text: an aligned table, CSV (per group or per call) and JSON.

Why a module of its own: the report is computed once (ibot.services.reports) and shown
in several forms, by `ibot costs report`, the demo and /cost-report's exports; keeping
the formats apart from the queries lets each change without touching the other. Pure
functions of their input: no database, no Discord.

Costs are written with every micro-dollar (`exact_usd`, "0.007250"), as strings even in
JSON, so that the columns add up exactly to the ledger; an unknown cost is a blank cell.

The members' feedback comes after the existing columns, so that a consumer reading them
by position keeps working: answers, 👍 and 👎, the helpful rate (👍 / (👍 + 👎)), the
solved answers, and the cost per solved thread (ibot.services.reports says what each
counts). A figure that has no value (a rate without votes, a cost per solved thread
with nothing solved) is "—" in the table, a blank cell in CSV and null in JSON: never a
division by zero, never a misleading 0. Rates are rounded half up: to 0.1 % in the
table, to 4 decimals in CSV and JSON, beside the exact vote counts.

"calls" counts every ledger row, whatever its status: answered (ok, fallback), failed
(error) and refused by a budget. The table says so under the TOTAL line and the JSON
lists the statuses counted (CALLS_COUNTED), so that nobody reads it as answers given;
grouping by status splits them.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

from ibot.db.reports import ReportRow
from ibot.domain import CallStatus, LedgerRow
from ibot.money import exact_usd
from ibot.services.reports import CostReport

_TABLE_COLUMNS = (
    ("calls", "calls"),
    ("prompt", "prompt_tokens"),
    ("cached", "cached_tokens"),
    ("completion", "completion_tokens"),
    ("cost_usd", None),
    ("unpriced", "unknown_cost_calls"),
    ("answers", "answers"),
    ("helpful", None),
    ("solved", "solved"),
    ("usd_per_solved", None),
)
NONE_SHOWN = "—"  # a rate without votes, a cost per solved thread with nothing solved
RATE_DIGITS = 4  # decimals of the helpful rate in CSV and JSON
CALLS_COUNTED = tuple(status.value for status in CallStatus)  # every row: see the docstring
CALLS_LEGEND = "calls: every call, refused and failed ones included (group by status to split them)"


def rate_decimal(rate: Fraction | None, digits: int = RATE_DIGITS) -> str:
    """2/3 -> "0.6667" (half up, integers only); None -> ""."""
    if rate is None:
        return ""
    scale = 10**digits
    units = (2 * rate.numerator * scale + rate.denominator) // (2 * rate.denominator)
    whole, fraction = divmod(units, scale)
    return f"{whole}.{fraction:0{digits}d}"


def rate_percent(rate: Fraction | None, decimal_mark: str = ".") -> str:
    """2/3 -> "66.7 %" (tenths, half up); None -> "—"."""
    if rate is None:
        return NONE_SHOWN
    tenths = (2000 * rate.numerator + rate.denominator) // (2 * rate.denominator)
    whole, tenth = divmod(tenths, 10)
    return f"{whole}{decimal_mark}{tenth} %"


def render_table(report: CostReport) -> str:
    """An aligned text table, one line per group, then a TOTAL line; the feedback
    columns last (helpful: the rate, usd_per_solved: the cost per solved thread)."""
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
    out.append(CALLS_LEGEND)
    if report.totals.unknown_cost_calls:
        out.append(
            f"{report.totals.unknown_cost_calls} call(s) used a model with no known price: "
            "their cost is not included."
        )
    return "\n".join(out) + "\n"


def _table_cells(row: ReportRow) -> list[str]:
    cells = [row.key]
    for title, attribute in _TABLE_COLUMNS:
        if attribute is not None:
            cells.append(str(getattr(row, attribute)))
        elif title == "helpful":
            cells.append(rate_percent(row.helpful_rate).replace(" ", ""))  # one word: "66.7%"
        elif title == "usd_per_solved":
            cells.append(exact_usd(row.cost_per_solved_micros) or NONE_SHOWN)
        else:
            cells.append(exact_usd(row.cost_micros))
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
    # appended, so that the columns above keep their positions
    "answers",
    "helpful_votes",
    "unhelpful_votes",
    "helpful_rate",
    "solved",
    "cost_per_solved_usd",
    "cost_per_solved_micros",
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
                exact_usd(row.cost_micros),
                row.cost_micros,
                row.unknown_cost_calls,
                row.answers,
                row.helpful_votes,
                row.unhelpful_votes,
                rate_decimal(row.helpful_rate),
                row.solved,
                exact_usd(row.cost_per_solved_micros),
                _blank_if_none(row.cost_per_solved_micros),
            ]
        )
    return buffer.getvalue()


def _blank_if_none(value: int | None) -> int | str:
    return "" if value is None else value


def _row_json(row: ReportRow) -> dict[str, Any]:
    rate, per_solved = row.helpful_rate, row.cost_per_solved_micros
    return {
        "key": row.key,
        "calls": row.calls,
        "prompt_tokens": row.prompt_tokens,
        "cached_tokens": row.cached_tokens,
        "completion_tokens": row.completion_tokens,
        "cost_micros": row.cost_micros,
        "cost_usd": exact_usd(row.cost_micros),  # a string: a JSON float would round
        "unknown_cost_calls": row.unknown_cost_calls,
        "answers": row.answers,
        "helpful_votes": row.helpful_votes,
        "unhelpful_votes": row.unhelpful_votes,
        # null without votes; 4 decimals, half up (the counts above are exact)
        "helpful_rate": None if rate is None else float(rate_decimal(rate)),
        "solved": row.solved,
        "cost_per_solved_micros": row.cost_per_solved_micros,  # null: nothing solved
        "cost_per_solved_usd": None if per_solved is None else exact_usd(per_solved),
    }


def render_json(report: CostReport) -> str:
    """The whole report as one JSON document, integer micro-dollars beside the strings."""
    document = {
        "period": {
            "label": report.period.label,
            "start": report.period.start.isoformat(),
            "end": report.period.end.isoformat(),
        },
        "group_by": str(report.group_by),
        "guild_id": report.guild_id,
        "calls_counted": list(CALLS_COUNTED),  # the statuses "calls" includes: all of them
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
        return exact_usd(row.cost_micros)
    if name == "created_at":
        return row.created_at.isoformat()
    value = getattr(row, name)
    return "" if value is None else value
