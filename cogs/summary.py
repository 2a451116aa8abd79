"""/summary: moderators get a summary of the channel, thread or forum post they are in."""

from __future__ import annotations

from typing import assert_never

import nextcord
from nextcord import SlashOption
from nextcord.ext import commands

from cogs._render import (
    Deferred,
    answer_embeds,
    cost_footer,
    failure_text,
    held_command,
    invoker,
    member_facts,
    refused_while_restarting,
)
from ibot.app import Services
from ibot.db.pending_interactions import PendingInteraction, PendingRequest
from ibot.domain import Feature
from ibot.i18n import t
from ibot.services.permissions import Access
from ibot.services.summary import (
    HistoryMessage,
    NothingToSummarize,
    Summarized,
    SummaryFailed,
    SummaryOutcome,
)

MAX_MESSAGES = 1000


class SummaryCog(commands.Cog):
    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.services = services
        self.resume = services.resume_service()
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
        if await refused_while_restarting(interaction, self.services.in_flight, self.lang):
            return
        await interaction.response.defer(ephemeral=private)
        channel = interaction.channel
        if not isinstance(channel, nextcord.abc.Messageable):  # a command always has one
            raise RuntimeError(f"interaction {interaction.id} has no readable channel")
        pending = pending_summary(interaction, channel, messages, private)
        # A graceful stop lets it finish; a crash leaves it held for the next start.
        async with self.services.in_flight.track(), self.resume.held(pending):
            history = await read_history(channel, pending.request.messages or 0, self.bot.user)
            outcome = await self.resume.answer_summary(pending, history)
            await self.deliver(Deferred.live(interaction, private=private), pending, outcome)

    async def history(self, pending: PendingInteraction) -> list[HistoryMessage]:
        """The history of a held /summary's channel, read again after a restart."""
        assert pending.channel_id is not None  # a guild command always has its channel
        channel = self.bot.get_channel(pending.channel_id) or await self.bot.fetch_channel(
            pending.channel_id
        )
        if not isinstance(channel, nextcord.abc.Messageable):
            raise RuntimeError(f"channel {pending.channel_id} cannot be read")
        return await read_history(channel, pending.request.messages or 0, self.bot.user)

    async def deliver(
        self, target: Deferred, pending: PendingInteraction, outcome: SummaryOutcome
    ) -> None:
        """The summary (or why there is none) to the moderator, live or after a restart."""
        match outcome:
            case Summarized():
                footer = cost_footer(outcome.usage, outcome.cost_micros, outcome.backend, self.lang)
                title = t(
                    "summary.title",
                    self.lang,
                    channel=pending.request.channel_name,
                    count=outcome.messages,
                )
                await target.send_answer(answer_embeds(outcome.text, title=title, footer=footer))
            case NothingToSummarize():
                await target.send_private(t("summary.too_few_messages", self.lang))
            case SummaryFailed():
                await target.send_private(failure_text(outcome, self.lang))
            case _:
                assert_never(outcome)


def pending_summary(
    interaction: nextcord.Interaction,
    channel: nextcord.abc.Messageable,
    messages: int,
    private: bool,
) -> PendingInteraction:
    """The /summary as it is held until answered (and made again after a crash)."""
    return held_command(
        interaction,
        Feature.SUMMARY,
        PendingRequest(
            private=private,
            author=invoker(interaction).display_name,
            channel_name=getattr(channel, "name", "") or "",
            parent_id=getattr(channel, "parent_id", None)
            if isinstance(channel, nextcord.Thread)
            else None,
            messages=min(messages, MAX_MESSAGES),
        ),
    )


async def read_history(
    channel: nextcord.abc.Messageable, limit: int, bot_user: nextcord.ClientUser | None
) -> list[HistoryMessage]:
    """The last `limit` messages, oldest first, read page by page (100 per request)."""
    found: list[HistoryMessage] = []
    async for message in channel.history(limit=limit):
        ours = bot_user is not None and message.author.id == bot_user.id
        if ours and (message.embeds or not message.content):
            continue  # our own answers and summaries (a resumed one has a note) are not discussion
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
