"""/cost-report: where the money goes, for admins, as an embed with a chart (and a CSV).

Thin on purpose: the numbers come from ibot.services.report_view (Discord-free, tested
against the ledger directly); this cog checks who asks, turns the view into an embed and
attaches the files. Members are shown as <@id> mentions, which never ping (no mentions
allowed), and the answer is private to the admin unless asked otherwise. The members'
feedback on the bot's answers (answers, helpful rate, solved, cost per solved thread)
is a field of its own for the period and a second line under each top entry.

The chart's cap line and the footer follow the guild's daily cap day by day, `/budget`
changes included (ibot.services.cap_history: the same history `ibot costs report`
draws). "Calls" says that refused and failed calls are counted too.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import timedelta

import nextcord
from nextcord import SlashOption
from nextcord.ext import commands

from cogs._render import EMBED_COLOUR, NO_MENTIONS, invoker, member_facts
from cogs.budget import cap_text
from ibot.app import Services
from ibot.db.reports import NO_KEY, GroupBy, ReportRow
from ibot.i18n import t
from ibot.money import format_usd  # 4 decimals, as in every footer
from ibot.periods import (
    MAX_CUSTOM_DAYS,
    PERIOD_CHOICES,
    Period,
    PeriodError,
    choose_period,
    period_days,
)
from ibot.services.cap_history import CapHistory
from ibot.services.permissions import Access
from ibot.services.report_render import NONE_SHOWN, rate_percent
from ibot.services.report_view import (
    Change,
    ChartText,
    ReportView,
    build_report_view,
    export_rows_csv,
    render_chart_async,
)

CHART_FILE = "costs.png"
CSV_FILE = "ledger.csv"
GROUP_CHOICES = ("feature", "user", "model", "channel", "day")
CAP_CHANGES_SHOWN = 5  # the newest /budget changes named in the footer (2048 characters)


class CostReportCog(commands.Cog):
    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.services = services
        self.policy = services.role_policy()
        self.lang = services.settings.prompts.language

    @nextcord.slash_command(
        name="cost-report",
        description="AI spending: totals, top entries, change and chart (admins).",
        description_localizations={
            nextcord.Locale.fr: "Dépenses IA : totaux, top, évolution et graphique (admins)."
        },
        contexts=[nextcord.InteractionContextType.guild],
    )
    async def cost_report(
        self,
        interaction: nextcord.Interaction,
        period: str = SlashOption(
            description="Which period (custom: give from/to).",
            description_localizations={
                nextcord.Locale.fr: "Quelle période (custom : donne from/to)."
            },
            choices={choice: choice for choice in PERIOD_CHOICES},
            required=False,
            default="7d",
        ),
        group_by: str = SlashOption(
            description="Group the top entries by.",
            description_localizations={nextcord.Locale.fr: "Regrouper le top par."},
            choices={choice: choice for choice in GROUP_CHOICES},
            required=False,
            default="feature",
        ),
        first: str | None = SlashOption(
            name="from",
            description="First day, YYYY-MM-DD (UTC).",
            description_localizations={nextcord.Locale.fr: "Premier jour, AAAA-MM-JJ (UTC)."},
            required=False,
            default=None,
            max_length=10,
        ),
        last: str | None = SlashOption(
            name="to",
            description="Last day included, YYYY-MM-DD (default: today).",
            description_localizations={
                nextcord.Locale.fr: "Dernier jour inclus, AAAA-MM-JJ (défaut : aujourd'hui)."
            },
            required=False,
            default=None,
            max_length=10,
        ),
        export: bool = SlashOption(
            description="Attach every call of the period as CSV.",
            description_localizations={
                nextcord.Locale.fr: "Joindre chaque appel de la période en CSV."
            },
            required=False,
            default=False,
        ),
        private: bool = SlashOption(
            description="Only you see the report (default: yes).",
            description_localizations={
                nextcord.Locale.fr: "Toi seul vois le rapport (par défaut : oui)."
            },
            required=False,
            default=True,
        ),
    ) -> None:
        facts = member_facts(invoker(interaction), interaction.guild, interaction.permissions)
        if not self.policy.allows(Access.ADMIN, facts):
            await interaction.response.send_message(
                t("cost_report.refused", self.lang), ephemeral=True
            )
            return
        try:
            chosen = choose_period(period, first, last)
        except PeriodError as err:
            await interaction.response.send_message(
                t(f"cost_report.period.{err.code}", self.lang, days=MAX_CUSTOM_DAYS),
                ephemeral=True,
            )
            return
        await interaction.response.defer(ephemeral=private)
        guild_id = interaction.guild_id
        sessionmaker = self.services.sessionmaker
        view = await build_report_view(
            sessionmaker,
            chosen,
            group_by,
            guild_id=guild_id,
            configured_cap_micros=self.services.settings.budgets.guild_daily_micros,
        )
        chart = await render_chart_async(
            view.daily, period_days(chosen), caps=view.caps, text=self._chart_text()
        )
        files = [nextcord.File(io.BytesIO(chart), filename=CHART_FILE)]
        if export:
            rows = await export_rows_csv(sessionmaker, chosen, guild_id=guild_id)
            files.append(nextcord.File(io.BytesIO(rows.encode()), filename=CSV_FILE))
        name = _period_name(period, first, last, chosen, self.lang)
        embed = report_embed(view, name, self.lang)
        await interaction.followup.send(
            embed=embed, files=files, ephemeral=private, allowed_mentions=NO_MENTIONS
        )

    def _chart_text(self) -> ChartText:
        return ChartText(
            title=t("cost_report.chart.title", self.lang),
            x_label=t("cost_report.chart.x", self.lang),
            y_label=t("cost_report.chart.y", self.lang),
            cap_label=t("cost_report.chart.cap", self.lang),
            empty=t("cost_report.chart.empty", self.lang),
        )


def report_embed(view: ReportView, period_name: str, lang: str) -> nextcord.Embed:
    """Totals with their change, the top entries and the chart, in one embed; the
    footer names the daily cap in force and its `/budget` changes in the period."""
    report = view.report
    embed = nextcord.Embed(
        title=t("cost_report.title", lang, period=period_name),
        description=_top_text(view, lang),
        colour=EMBED_COLOUR,
    )
    embed.add_field(
        name=t("cost_report.calls", lang),
        value=f"{_figure(view.calls, _count, lang)}\n*({t('cost_report.calls_note', lang)})*",
        inline=True,
    )
    embed.add_field(
        name=t("cost_report.tokens", lang), value=_figure(view.tokens, _count, lang), inline=True
    )
    embed.add_field(
        name=t("cost_report.cost", lang), value=_figure(view.cost, _usd, lang), inline=True
    )
    embed.add_field(
        name=t("cost_report.feedback", lang),
        value=_feedback_text(report.totals, lang),
        inline=False,
    )
    notes = [_range_text(report.period, view.previous, lang)]
    if view.caps is not None and view.caps.drawn:
        notes.extend(_cap_notes(view.caps, lang))
    if report.totals.unknown_cost_calls:
        notes.append(t("cost_report.unpriced", lang, count=report.totals.unknown_cost_calls))
    embed.set_footer(text="\n".join(notes))
    embed.set_image(url=f"attachment://{CHART_FILE}")
    return embed


def _cap_notes(caps: CapHistory, lang: str) -> list[str]:
    """The cap at the end of the period, then the newest changes made in it."""
    if caps.in_force is None:
        notes = [t("cost_report.daily_cap_none", lang)]
    else:
        notes = [t("cost_report.daily_cap", lang, cap=cap_text(caps.in_force, lang))]
    if caps.changes:
        shown = [
            t(
                "cost_report.cap_change",
                lang,
                day=f"{change.changed_at:%Y-%m-%d}",
                before=cap_text(change.previous_micros, lang),
                after=cap_text(change.cap_micros, lang),
            )
            for change in caps.changes[-CAP_CHANGES_SHOWN:]
        ]
        if len(caps.changes) > CAP_CHANGES_SHOWN:
            shown.insert(0, "…")
        notes.append(t("cost_report.cap_changes", lang, changes=", ".join(shown)))
    return notes


def _top_text(view: ReportView, lang: str) -> str:
    report = view.report
    if not report.rows:
        return t("cost_report.no_calls", lang)
    grouping = t(f"cost_report.group.{report.group_by}", lang)
    lines = [f"**{t('cost_report.top_title', lang, grouping=grouping)}**"]
    for rank, row in enumerate(report.rows, start=1):
        lines.append(
            t(
                "cost_report.top_line",
                lang,
                rank=rank,
                name=_key_text(row, report.group_by, lang),
                cost=format_usd(row.cost_micros),
                calls=_count(row.calls, lang),
                tokens=_count(row.prompt_tokens + row.completion_tokens, lang),
            )
        )
        if row.answers:
            lines.append(t("cost_report.top_feedback", lang, **_feedback_params(row, lang)))
    if report.other_groups:
        lines.append(t("cost_report.more", lang, count=report.other_groups))
    return "\n".join(lines)


def _feedback_text(totals: ReportRow, lang: str) -> str:
    """The members' feedback over the whole period, or why there is none."""
    if not totals.answers:
        return t("cost_report.feedback_none", lang)
    return t("cost_report.feedback_value", lang, **_feedback_params(totals, lang))


def _feedback_params(row: ReportRow, lang: str) -> dict[str, str]:
    """Answers, helpful rate ("—" without votes), solved, cost per solved thread ("—"
    when none was solved), as the embed writes numbers in `lang`."""
    per_solved = row.cost_per_solved_micros
    return {
        "answers": _count(row.answers, lang),
        "helpful": rate_percent(row.helpful_rate, "," if lang == "fr" else "."),
        "up": _count(row.helpful_votes, lang),
        "down": _count(row.unhelpful_votes, lang),
        "solved": _count(row.solved, lang),
        "per_solved": NONE_SHOWN if per_solved is None else _usd(per_solved, lang),
    }


def _key_text(row: ReportRow, group_by: GroupBy, lang: str) -> str:
    if row.key == NO_KEY:
        return t("cost_report.none_key", lang)
    if group_by is GroupBy.user:
        return f"<@{row.key}>"
    if group_by is GroupBy.channel:
        return f"<#{row.key}>"
    if group_by is GroupBy.day:
        return row.key
    return f"`{row.key}`"


def _figure(change: Change, show: Callable[[int, str], str], lang: str) -> str:
    """'**1 234**' then the change: '+12 (+3.5 %) vs previous period'."""
    sign = "+" if change.delta >= 0 else "-"
    delta = sign + show(abs(change.delta), lang)
    percent = change.percent_text("," if lang == "fr" else ".")
    if percent is None:
        line = t("cost_report.change_from_zero", lang, delta=delta)
    else:
        line = t("cost_report.change", lang, delta=delta, percent=percent)
    return f"**{show(change.current, lang)}**\n{line}"


def _count(number: int, lang: str) -> str:
    text = f"{number:,}"
    return text.replace(",", "\u202f") if lang == "fr" else text


def _usd(micros: int, lang: str) -> str:
    return f"{format_usd(micros)} USD"


def _range_text(period: Period, previous: Period, lang: str) -> str:
    fmt = "%Y-%m-%d %H:%M"
    return t(
        "cost_report.range",
        lang,
        start=period.start.strftime(fmt),
        end=period.end.strftime(fmt),
        previous_start=previous.start.strftime(fmt),
        previous_end=previous.end.strftime(fmt),
    )


def _period_name(
    choice: str, first: str | None, last: str | None, period: Period, lang: str
) -> str:
    if first or last or choice == "custom":
        last_day = (period.end - timedelta(microseconds=1)).date()
        return t(
            "cost_report.period_name.custom",
            lang,
            first=period.start.date().isoformat(),
            last=last_day.isoformat(),
        )
    return t(f"cost_report.period_name.{choice}", lang)


def setup(bot: commands.Bot, *, services: Services) -> None:
    bot.add_cog(CostReportCog(bot, services))
