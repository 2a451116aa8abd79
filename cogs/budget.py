"""/budget show and /budget set for admins, and the budget alerts in the admin channel.

Thin: the caps, their audit trail and the alert logic live in
ibot.services.budgets.BudgetManager (Discord-free); this cog checks who may act, parses
the options, and renders. It also installs the manager's alert sink, which posts to the
configured admin channel and never pings anyone.
"""

from __future__ import annotations

import nextcord
import structlog
from nextcord import SlashOption
from nextcord.ext import commands

from cogs._render import (
    EMBED_COLOUR,
    NO_MENTIONS,
    budget_label,
    discord_time,
    invoker,
    member_facts,
)
from ibot.app import Services
from ibot.i18n import t
from ibot.money import format_usd
from ibot.services.budgets import CAPS, Alert, Scope, ScopeStatus, parse_cap
from ibot.services.permissions import Access

log = structlog.get_logger("ibot.cogs.budget")

# Every cap, by its name (a feature's: "feature_daily:summary"); 8 of Discord's 25.
SCOPE_CHOICES = {cap.name: cap.name for cap in CAPS}
SCOPE_CHOICES_FR = {
    "guild_daily": "serveur, par jour",
    "guild_monthly": "serveur, par mois",
    "user_daily": "par membre, par jour",
    # "quotidien des résumés"…: the name refusals and alerts use.
    **{cap.name: t(f"budget.{cap.name}", "fr") for cap in CAPS if cap.feature is not None},
}


def cap_text(cap_micros: int | None, lang: str) -> str:
    if cap_micros is None:
        return t("budget.no_cap", lang)
    return t("budget.cap", lang, amount=format_usd(cap_micros, digits=2))


def status_line(status: ScopeStatus, lang: str) -> str:
    if status.change is None:
        source = t("budget.source_config", lang)
    else:
        when = discord_time(status.change.changed_at)
        source = t("budget.source_change", lang, user=status.change.changed_by, when=when)
    key = "budget.show_user_line" if status.scope is Scope.USER_DAILY else "budget.show_line"
    return t(
        key,
        lang,
        budget=budget_label(status.budget, lang),
        cap=cap_text(status.cap_micros, lang),
        spent=format_usd(status.spent_micros),
        reserved=format_usd(status.reserved_micros),
        reset=discord_time(status.resets_at),
        source=source,
    )


def alert_text(alert: Alert, lang: str) -> str:
    """The admin channel's message: how far a guild cap is spent, that a feature's cap
    is reached, or which member reached their own cap (a mention that pings no one:
    NO_MENTIONS)."""
    digits = 2  # a guild's caps are dollars; a member's are cents: their footers' 4
    if alert.user_id is not None:
        key, digits = "budget.alert_member", 4
    else:
        key = "budget.alert_spent" if alert.threshold >= 100 else "budget.alert"
    return t(
        key,
        lang,
        user=alert.user_id,
        budget=budget_label(alert.budget, lang),
        percent=alert.threshold,
        spent=format_usd(alert.spent_micros, digits=digits),
        cap=format_usd(alert.cap_micros, digits=digits),
        reset=discord_time(alert.resets_at),
    )


class BudgetCog(commands.Cog):
    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.budgets = services.budgets
        self.policy = services.role_policy()
        self.lang = services.settings.prompts.language
        self.admin_channel_id = services.settings.discord.admin_channel_id
        self.budgets.alert_sink = self.post_alert

    def cog_unload(self) -> None:
        if self.budgets.alert_sink == self.post_alert:
            self.budgets.alert_sink = None

    async def _refuse_non_admin(self, interaction: nextcord.Interaction) -> bool:
        facts = member_facts(invoker(interaction), interaction.guild, interaction.permissions)
        if self.policy.allows(Access.ADMIN, facts):
            return False
        await interaction.response.send_message(t("budget.refused", self.lang), ephemeral=True)
        return True

    @nextcord.slash_command(
        name="budget",
        description="AI spending caps (admins).",
        description_localizations={nextcord.Locale.fr: "Plafonds de dépense IA (admins)."},
        contexts=[nextcord.InteractionContextType.guild],
    )
    async def budget(self, interaction: nextcord.Interaction) -> None:
        """The group: Discord only ever invokes its sub-commands."""

    @budget.subcommand(
        name="show",
        description="Current caps, what was spent and what is held.",
        description_localizations={
            nextcord.Locale.fr: "Plafonds actuels, dépenses et réservations en cours."
        },
    )
    async def show(self, interaction: nextcord.Interaction) -> None:
        if await self._refuse_non_admin(interaction):
            return
        assert interaction.guild_id is not None
        await interaction.response.defer(ephemeral=True)
        statuses = await self.budgets.status(interaction.guild_id, invoker(interaction).id)
        embed = nextcord.Embed(
            title=t("budget.show_title", self.lang),
            description="\n".join(status_line(s, self.lang) for s in statuses),
            colour=EMBED_COLOUR,
        )
        await interaction.followup.send(embed=embed, ephemeral=True, allowed_mentions=NO_MENTIONS)

    @budget.subcommand(
        name="set",
        description="Change a cap (stored with your name and the time).",
        description_localizations={
            nextcord.Locale.fr: "Changer un plafond (enregistré avec ton nom et l'heure)."
        },
    )
    async def set_cap(
        self,
        interaction: nextcord.Interaction,
        scope: str = SlashOption(
            description="Which cap.",
            description_localizations={nextcord.Locale.fr: "Quel plafond."},
            choices=SCOPE_CHOICES,
            choice_localizations={
                name: {nextcord.Locale.fr: label} for name, label in SCOPE_CHOICES_FR.items()
            },
        ),
        usd: str = SlashOption(
            description='Amount in USD (0 or more), or "none" to remove the cap.',
            description_localizations={
                nextcord.Locale.fr: "Montant en USD (0 ou plus), ou « none » pour aucun plafond."
            },
            max_length=32,
        ),
    ) -> None:
        if await self._refuse_non_admin(interaction):
            return
        assert interaction.guild_id is not None
        try:
            cap = parse_cap(usd)
        except ValueError:
            await interaction.response.send_message(
                t("budget.invalid_amount", self.lang, value=usd), ephemeral=True
            )
            return
        await interaction.response.defer(ephemeral=True)
        change = await self.budgets.set_cap(
            interaction.guild_id, scope, cap, changed_by=invoker(interaction).id
        )
        await interaction.followup.send(
            t(
                "budget.set_done",
                self.lang,
                budget=budget_label(scope, self.lang),
                cap=cap_text(change.cap_micros, self.lang),
                previous=cap_text(change.previous_micros, self.lang),
            ),
            ephemeral=True,
            allowed_mentions=NO_MENTIONS,
        )

    async def post_alert(self, alert: Alert) -> None:
        """The manager's alert sink: one message in the admin channel, pinging no one."""
        text = alert_text(alert, self.lang)
        if self.admin_channel_id is None:
            log.warning("budget_alert_no_channel", guild_id=alert.guild_id, text=text)
            return
        channel = self.bot.get_channel(self.admin_channel_id)
        if channel is None:
            channel = await self.bot.fetch_channel(self.admin_channel_id)
        if not isinstance(channel, nextcord.abc.Messageable):
            log.error("budget_alert_channel_unusable", channel_id=self.admin_channel_id)
            return
        await channel.send(text, allowed_mentions=NO_MENTIONS)
        log.info(
            "budget_alert_sent",
            guild_id=alert.guild_id,
            user_id=alert.user_id,
            scope=alert.budget,
            threshold=alert.threshold,
            period=alert.period_key,
        )


def setup(bot: commands.Bot, *, services: Services) -> None:
    bot.add_cog(BudgetCog(bot, services))
