"""/summary: moderators get a summary of the channel, thread or forum post they are in."""

from __future__ import annotations

from typing import assert_never

import nextcord
from nextcord import SlashOption
from nextcord.ext import commands

from cogs._render import (
    NO_MENTIONS,
    answer_embeds,
    cost_footer,
    failure_text,
    invoker,
    member_facts,
    send_private_after_defer,
)
from ibot.app import Services
from ibot.domain import CallContext, Feature
from ibot.i18n import t
from ibot.services.permissions import Access
from ibot.services.summary import (
    HistoryMessage,
    NothingToSummarize,
    Summarized,
    SummaryFailed,
)

MAX_MESSAGES = 1000


class SummaryCog(commands.Cog):
    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.services = services
        self.service = services.summary_service()
        self.policy = services.role_policy()
        self.lang = services.settings.prompts.language

    @nextcord.slash_command(
        name="summary",
        description="Summarise the recent messages of this channel or thread.",
        description_localizations={
            nextcord.Locale.fr: "Résume les derniers messages de ce salon ou fil."
        },
        contexts=[nextcord.InteractionContextType.guild],
    )
    async def summary(
        self,
        interaction: nextcord.Interaction,
        messages: int = SlashOption(
            description="How many recent messages (up to 1000).",
            description_localizations={nextcord.Locale.fr: "Combien de messages (1000 max)."},
            min_value=1,
            max_value=MAX_MESSAGES,
            required=False,
            default=100,
        ),
        private: bool = SlashOption(
            description="Only you see the summary.",
            description_localizations={nextcord.Locale.fr: "Toi seul vois le résumé."},
            required=False,
            default=False,
        ),
    ) -> None:
        facts = member_facts(invoker(interaction), interaction.guild, interaction.permissions)
        if not self.policy.allows(Access.SUMMARY, facts):
            await interaction.response.send_message(t("summary.refused", self.lang), ephemeral=True)
            return
        if self.services.in_flight.draining:  # stopping: this answer could be cut off
            await interaction.response.send_message(
                t("error.restarting", self.lang), ephemeral=True
            )
            return
        await interaction.response.defer(ephemeral=private)
        async with self.services.in_flight.track():  # a graceful stop lets it finish
            await self._summarize(interaction, messages, private)

    async def _summarize(
        self, interaction: nextcord.Interaction, messages: int, private: bool
    ) -> None:
        channel = interaction.channel
        if not isinstance(channel, nextcord.abc.Messageable):  # a command always has one
            raise RuntimeError(f"interaction {interaction.id} has no readable channel")
        history = await read_history(channel, min(messages, MAX_MESSAGES), self.bot.user)
        context = CallContext(
            feature=Feature.SUMMARY,
            guild_id=interaction.guild_id,
            channel_id=getattr(channel, "parent_id", None) or interaction.channel_id,
            thread_id=interaction.channel_id if isinstance(channel, nextcord.Thread) else None,
            user_id=invoker(interaction).id,
        )
        name = getattr(channel, "name", "") or ""
        outcome = await self.service.summarize(history, channel=name, context=context)
        followup = interaction.followup
        match outcome:
            case Summarized():
                footer = cost_footer(outcome.usage, outcome.cost_micros, outcome.backend, self.lang)
                title = t("summary.title", self.lang, channel=name, count=outcome.messages)
                for embeds in answer_embeds(outcome.text, title=title, footer=footer):
                    await followup.send(
                        embeds=embeds, ephemeral=private, allowed_mentions=NO_MENTIONS
                    )
            case NothingToSummarize():
                await send_private_after_defer(
                    interaction, t("summary.too_few_messages", self.lang), deferred_private=private
                )
            case SummaryFailed():
                await send_private_after_defer(
                    interaction, failure_text(outcome, self.lang), deferred_private=private
                )
            case _:
                assert_never(outcome)


async def read_history(
    channel: nextcord.abc.Messageable, limit: int, bot_user: nextcord.ClientUser | None
) -> list[HistoryMessage]:
    """The last `limit` messages, oldest first, read page by page (100 per request)."""
    found: list[HistoryMessage] = []
    async for message in channel.history(limit=limit):
        if bot_user is not None and message.author.id == bot_user.id and not message.content:
            continue  # our own embeds (answers, summaries) are not discussion
        found.append(
            HistoryMessage(
                author=message.author.display_name,
                content=message.content,
                created_at=message.created_at,
                attachments=tuple(a.filename for a in message.attachments),
            )
        )
    found.reverse()
    return found


def setup(bot: commands.Bot, *, services: Services) -> None:
    bot.add_cog(SummaryCog(bot, services))
