"""What an admin sees of the spending: totals, top entries, the change, a chart, a CSV.

Discord-free, like reports.py underneath it: /cost-report and `ibot costs report` both
build on `build_report_view`, and the chart is plain PNG bytes. Every figure is summed
by the database; only the previous-period comparison is arithmetic here, on integers.
The periods themselves (choose_period, previous_period, period_days) are ibot.periods.
For one guild the view also carries its daily cap of each day (ibot.services.cap_history),
so that the chart's cap line, the embed and the terminal follow the `/budget` changes.

matplotlib is imported inside `chart_figure` only: it takes about a second to import,
and the bot must not pay that at start for a command an admin runs now and then.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from fractions import Fraction
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ibot.db.ledger import Ledger
from ibot.db.reports import DailyCost, GroupBy
from ibot.money import MICROS_PER_USD, exact_usd
from ibot.periods import Period, period_days, previous_period
from ibot.services.cap_history import CapHistory, cap_history
from ibot.services.report_render import render_json, render_rows_csv
from ibot.services.reports import CostReport, cost_report, daily_cost_by_feature, ledger_rows

if TYPE_CHECKING:  # matplotlib is imported lazily (see the module docstring)
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

GROUPINGS = (GroupBy.feature, GroupBy.user, GroupBy.model, GroupBy.channel, GroupBy.day)
TOP = 10
CHART_SIZE = (1000, 500)  # pixels: what Discord shows without scaling much
_CHART_DPI = 100
# Fixed colours per feature, so that "ask" is the same colour in every report.
_FEATURE_COLOURS = {
    "auto_reply": "#5865F2",
    "ask": "#57F287",
    "chat": "#FEE75C",
    "summary": "#EB459E",
}
_OTHER_COLOURS = ("#9B59B6", "#1ABC9C", "#E67E22", "#95A5A6", "#34495E")
CAP_COLOUR = "#ED4245"  # used by nothing else, so that the cap line stands out
CAP_LINE_ID = "daily-cap"  # the gid of the cap's Line2D in chart_figure's Figure


# --- the report ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """A figure now and in the previous period; `percent` is None when there was none
    before (a change from 0 has no percentage)."""

    current: int
    previous: int

    @property
    def delta(self) -> int:
        return self.current - self.previous

    @property
    def percent_tenths(self) -> int | None:
        """The change in tenths of a percent, rounded half away from zero (125 = 12.5 %)."""
        if self.previous == 0:
            return None
        tenths = Fraction(self.delta * 1000, self.previous)
        return int(tenths + Fraction(1, 2)) if tenths >= 0 else -int(-tenths + Fraction(1, 2))

    def percent_text(self, decimal_mark: str = ".") -> str | None:
        """'+12.5 %', '-3.0 %', '+0.0 %'; None when there is nothing to compare with."""
        tenths = self.percent_tenths
        if tenths is None:
            return None
        sign = "-" if tenths < 0 else "+"
        whole, tenth = divmod(abs(tenths), 10)
        return f"{sign}{whole}{decimal_mark}{tenth} %"


@dataclass(frozen=True, slots=True)
class ReportView:
    report: CostReport  # the period, grouped, top entries only (totals over all)
    previous: Period
    calls: Change
    tokens: Change  # prompt + completion tokens (cached and image tokens are prompt tokens)
    cost: Change  # known costs, micro-dollars
    daily: list[DailyCost]  # for the chart
    caps: CapHistory | None = None  # the guild's daily cap per day; None: not one guild

    @property
    def period(self) -> Period:
        return self.report.period


async def build_report_view(
    sessionmaker: async_sessionmaker[AsyncSession],
    period: Period,
    group_by: GroupBy | str,
    *,
    guild_id: int | None = None,
    top: int | None = TOP,
    now: datetime | None = None,
    configured_cap_micros: int | None = None,
) -> ReportView:
    """The report of `period` grouped by `group_by` (the first `top` groups; None: all),
    the change against the previous period of the same length, the daily cost by
    feature, and for one guild its daily cap of each day (`configured_cap_micros`, the
    TOML's, until a `/budget set` changed it)."""
    report = await cost_report(sessionmaker, period, group_by, guild_id=guild_id, top=top)
    before = previous_period(period, now=now)
    old = await Ledger(sessionmaker).totals(start=before.start, end=before.end, guild_id=guild_id)
    daily = await daily_cost_by_feature(sessionmaker, period, guild_id=guild_id)
    caps = None
    if guild_id is not None:
        caps = await cap_history(sessionmaker, guild_id, period_days(period), configured_cap_micros)
    totals = report.totals
    return ReportView(
        report=report,
        previous=before,
        calls=Change(totals.calls, old.calls),
        tokens=Change(
            totals.prompt_tokens + totals.completion_tokens,
            old.prompt_tokens + old.completion_tokens,
        ),
        cost=Change(totals.cost_micros, old.cost_micros),
        daily=daily,
        caps=caps,
    )


async def export_rows_csv(
    sessionmaker: async_sessionmaker[AsyncSession],
    period: Period,
    *,
    guild_id: int | None = None,
) -> str:
    """Every ledger row of the period as CSV (one line per call, after the header)."""
    return render_rows_csv(await ledger_rows(sessionmaker, period, guild_id=guild_id))


def render_comparison(view: ReportView) -> str:
    """Lines for the terminal, under the table: the previous period, the change, and for
    one guild its daily cap (and the `/budget` changes of the period)."""
    previous = (
        f"Previous period ({view.previous.label}): {view.calls.previous} calls, "
        f"{view.tokens.previous} tokens, {exact_usd(view.cost.previous)} USD"
    )
    changes = ", ".join(
        f"{name} {_signed(change.delta, show)} ({change.percent_text() or 'none before'})"
        for name, change, show in (
            ("calls", view.calls, str),
            ("tokens", view.tokens, str),
            ("cost", view.cost, lambda micros: f"{exact_usd(micros)} USD"),
        )
    )
    return f"{previous}\nChange: {changes}\n" + _cap_lines(view.caps)


def _cap_lines(caps: CapHistory | None) -> str:
    if caps is None or not caps.drawn:
        return ""
    lines = [f"Daily cap in force: {_cap_usd(caps.in_force)}"]
    lines.extend(
        f"  changed with /budget on {change.changed_at:%Y-%m-%d %H:%M} UTC: "
        f"{_cap_usd(change.previous_micros)} -> {_cap_usd(change.cap_micros)}"
        for change in caps.changes
    )
    return "\n".join(lines) + "\n"


def _cap_usd(micros: int | None) -> str:
    return "no cap" if micros is None else f"{exact_usd(micros)} USD"


def render_view_json(view: ReportView) -> str:
    """render_json's document plus the previous period and the change of each total."""
    document = json.loads(render_json(view.report))
    document["previous"] = {
        "label": view.previous.label,
        "start": view.previous.start.isoformat(),
        "end": view.previous.end.isoformat(),
        "calls": view.calls.previous,
        "tokens": view.tokens.previous,
        "cost_micros": view.cost.previous,
        "cost_usd": exact_usd(view.cost.previous),
    }
    document["change"] = {
        name: {
            "current": change.current,
            "previous": change.previous,
            "delta": change.delta,
            # tenths of a percent are exact in JSON; null: nothing to compare with
            "percent": None if change.percent_tenths is None else change.percent_tenths / 10,
        }
        for name, change in (
            ("calls", view.calls),
            ("tokens", view.tokens),
            ("cost_micros", view.cost),
        )
    }
    if view.caps is not None:
        document["daily_cap"] = _caps_json(view.caps)
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _caps_json(caps: CapHistory) -> dict[str, object]:
    """The cap at the end of the period, each day's (null: no cap) and the changes."""
    return {
        "in_force_micros": caps.in_force,
        "days": [
            {"day": day.isoformat(), "cap_micros": cap}
            for day, cap in zip(caps.days, caps.caps, strict=True)
        ],
        "changes": [
            {
                "changed_at": change.changed_at.isoformat(),
                "changed_by": change.changed_by,
                "previous_micros": change.previous_micros,
                "cap_micros": change.cap_micros,
            }
            for change in caps.changes
        ],
    }


def _signed(number: int, show: Callable[[int], str]) -> str:
    return ("-" if number < 0 else "+") + show(abs(number))


# --- the chart -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChartText:
    """The words on the chart, so that the caller can translate them."""

    title: str = "Daily spend by feature"
    x_label: str = "Day (UTC)"
    y_label: str = "Cost (USD)"
    cap_label: str = "Daily cap"
    empty: str = "No spending in this period"


@dataclass(frozen=True, slots=True)
class ChartData:
    """What the chart plots, in integers, day by day: the bars of each feature and the
    daily cap in force (None: no cap that day, so no line).

    Written into the PNG as a text chunk (CHART_DATA_KEY), so that what was drawn can be
    checked, and reused, from the file alone: a test reads the cap line back from the
    attachment the admin got, not from pixels.
    """

    days: tuple[date, ...]
    cost_micros: dict[str, tuple[int, ...]]  # feature -> one sum per day
    cap_micros: tuple[int | None, ...]  # one per day; empty: no cap line at all

    def to_json(self) -> str:
        return json.dumps(
            {
                "days": [day.isoformat() for day in self.days],
                "cost_micros": {name: list(values) for name, values in self.cost_micros.items()},
                "cap_micros": list(self.cap_micros),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> ChartData:
        document = json.loads(text)
        return cls(
            days=tuple(date.fromisoformat(day) for day in document["days"]),
            cost_micros={name: tuple(v) for name, v in document["cost_micros"].items()},
            cap_micros=tuple(document["cap_micros"]),
        )


CHART_DATA_KEY = "ibot-chart-data"  # the PNG text chunk that holds ChartData.to_json()


def chart_data(
    daily: Sequence[DailyCost],
    days: Sequence[date],
    *,
    caps: CapHistory | None = None,
) -> ChartData:
    """The chart's numbers: every DailyCost summed into its feature and day (days
    outside `days` are left out), and the cap of each day from `caps` (the history of
    the guild's cap; None: no cap line)."""
    days = list(days) or sorted({item.day for item in daily})
    index = {day: n for n, day in enumerate(days)}
    features = sorted({item.feature for item in daily}, key=_feature_order)
    sums = {feature: [0] * len(days) for feature in features}
    for item in daily:
        if item.day in index:
            sums[item.feature][index[item.day]] += item.cost_micros
    cap_micros: tuple[int | None, ...] = ()
    if caps is not None and caps.drawn:
        by_day = dict(zip(caps.days, caps.caps, strict=True))
        cap_micros = tuple(by_day.get(day, caps.in_force) for day in days)
    return ChartData(
        days=tuple(days),
        cost_micros={feature: tuple(values) for feature, values in sums.items()},
        cap_micros=cap_micros,
    )


def read_chart_data(png: bytes) -> ChartData | None:
    """The ChartData a PNG of `render_chart` carries; None for any other image."""
    from PIL import Image  # a dependency of matplotlib; lazy for the same reason

    with Image.open(io.BytesIO(png)) as image:
        text = image.info.get(CHART_DATA_KEY)
    return ChartData.from_json(text) if isinstance(text, str) else None


def render_chart(
    daily: Sequence[DailyCost],
    days: Sequence[date],
    *,
    caps: CapHistory | None = None,
    text: ChartText | None = None,
) -> bytes:
    """A PNG (CHART_SIZE pixels) of the daily spend as bars stacked by feature, with the
    daily cap in force as a step line (`caps`: it follows the `/budget` changes), and the
    plotted numbers as ChartData inside the file.

    Blocking (tens of milliseconds, a second on first import): call it through
    `render_chart_async` from async code.
    """
    data = chart_data(daily, days, caps=caps)
    return _png(chart_figure(data, text), {CHART_DATA_KEY: data.to_json()})


def chart_figure(data: ChartData, text: ChartText | None = None) -> Figure:
    """The matplotlib Figure of `data`. Uses matplotlib's object API, not pyplot, so that
    charts drawn in parallel threads share no global figure state."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    text = text or ChartText()
    days = data.days
    width, height = CHART_SIZE
    figure = Figure(figsize=(width / _CHART_DPI, height / _CHART_DPI), dpi=_CHART_DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = list(range(len(days)))
    bottom = [0.0] * len(days)
    for n, (feature, micros) in enumerate(data.cost_micros.items()):
        values = [m / MICROS_PER_USD for m in micros]  # floats for drawing only
        axes.bar(positions, values, bottom=bottom, label=feature, color=_colour(feature, n))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    caps = [c / MICROS_PER_USD for c in data.cap_micros if c is not None]
    if data.cap_micros:
        _cap_line(axes, data.cap_micros, text.cap_label)
    if not data.cost_micros:
        axes.text(0.5, 0.5, text.empty, transform=axes.transAxes, ha="center", va="center")
    axes.set_title(text.title)
    axes.set_xlabel(text.x_label)
    axes.set_ylabel(text.y_label)
    axes.yaxis.set_major_formatter(FuncFormatter(_usd_tick))
    highest = max([*bottom, *caps, 0.0])
    axes.set_ylim(0, highest * 1.12 if highest > 0 else 1)  # room above the cap line
    _day_ticks(axes, days)
    axes.grid(axis="y", alpha=0.3)
    if data.cost_micros or caps:
        axes.legend(loc="upper left", fontsize="small")
    figure.subplots_adjust(left=0.09, right=0.98, top=0.91, bottom=0.16)
    return figure


def _cap_line(axes: Axes, cap_micros: Sequence[int | None], label: str) -> None:
    """The cap as steps over the bars (day n spans n - 0.5 to n + 0.5), broken on the
    days without a cap, each new value written above its first day."""
    nan = float("nan")
    dollars = [nan if c is None else c / MICROS_PER_USD for c in cap_micros]
    edges = [n - 0.5 for n in range(len(dollars) + 1)]
    axes.plot(
        edges,
        [*dollars, dollars[-1]],
        drawstyle="steps-post",
        color=CAP_COLOUR,
        linestyle="--",
        linewidth=2,
        label=label,
        gid=CAP_LINE_ID,
    )
    previous: int | None = None
    for n, cap in enumerate(cap_micros):
        if cap is not None and cap != previous:
            axes.annotate(
                _usd_tick(cap / MICROS_PER_USD, None),
                (n - 0.45, cap / MICROS_PER_USD),
                textcoords="offset points",
                xytext=(0, 3),
                color=CAP_COLOUR,
                fontsize="small",
            )
        previous = cap


async def render_chart_async(
    daily: Sequence[DailyCost],
    days: Sequence[date],
    *,
    caps: CapHistory | None = None,
    text: ChartText | None = None,
) -> bytes:
    """`render_chart` in a worker thread: drawing must not stall the bot's heartbeats."""
    return await asyncio.to_thread(
        render_chart,
        list(daily),
        list(days),
        caps=caps,
        text=text,
    )


def _feature_order(feature: str) -> tuple[int, str]:
    known = list(_FEATURE_COLOURS)
    return (known.index(feature) if feature in known else len(known), feature)


def _colour(feature: str, n: int) -> str:
    return _FEATURE_COLOURS.get(feature, _OTHER_COLOURS[n % len(_OTHER_COLOURS)])


def _usd_tick(value: float, _position: object) -> str:
    if value == 0 or abs(value) >= 0.1:
        return f"${value:,.2f}"
    return f"${value:.4f}".rstrip("0")


def _day_ticks(axes: Axes, days: Sequence[date]) -> None:
    """At most ~15 labelled days, so that a 90-day chart stays readable."""
    step = max(1, -(-len(days) // 15))
    ticks = list(range(0, len(days), step))
    axes.set_xticks(ticks)
    axes.set_xticklabels([days[n].strftime("%m-%d") for n in ticks], rotation=45, ha="right")
    axes.set_xlim(-0.6, max(len(days), 1) - 0.4)


def _png(figure: Figure, metadata: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_CHART_DPI, metadata=metadata)
    return buffer.getvalue()
