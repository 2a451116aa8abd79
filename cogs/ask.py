"""/ask-gpt: any member (except denied roles) asks a question, with an optional image."""

from __future__ import annotations

import math
from typing import assert_never

import nextcord
from nextcord import SlashOption
from nextcord.ext import commands

from cogs._render import (
    NO_MENTIONS,
    answered_embeds,
    attachment_source,
    failure_text,
    invoker,
    member_facts,
    send_private_after_defer,
)
from cogs.feedback import answer_buttons, record_answer
from ibot.app import Services
from ibot.domain import CallContext, Feature
from ibot.i18n import t
from ibot.services.ask import AskOutcome
from ibot.services.cooldown import Cooldowns
from ibot.services.feedback import PostedAnswer
from ibot.services.outcomes import Answered, Failed, TooLong
from ibot.services.permissions import Access


class AskCog(commands.Cog):
    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.services = services
        self.service = services.ask_service()
        self.feedback = services.feedback_service()
        self.policy = services.role_policy()
        self.lang = services.settings.prompts.language
        self.cooldowns = Cooldowns(services.settings.discord.ask_cooldown_s)

    @nextcord.slash_command(
        name="ask-gpt",
        description="Ask the assistant a question.",
        description_localizations={nextcord.Locale.fr: "Pose une question à l'assistant."},
        contexts=[nextcord.InteractionContextType.guild],
    )
    async def ask_gpt(
        self,
        interaction: nextcord.Interaction,
        question: str = SlashOption(
            description="Your question.",
            description_localizations={nextcord.Locale.fr: "Ta question."},
            max_length=4000,
        ),
        image: nextcord.Attachment | None = SlashOption(
            description="A screenshot or a file.",
            description_localizations={nextcord.Locale.fr: "Une capture ou un fichier."},
            required=False,
            default=None,
        ),
        private: bool = SlashOption(
            description="Only you see the answer.",
            description_localizations={nextcord.Locale.fr: "Toi seul vois la réponse."},
            required=False,
            default=False,
        ),
    ) -> None:
        facts = member_facts(invoker(interaction), interaction.guild, interaction.permissions)
        if not self.policy.allows(Access.ASK, facts):
            await interaction.response.send_message(
                t("ask.refused_role", self.lang), ephemeral=True
            )
            return
        if self.services.in_flight.draining:  # stopping: this answer could be cut off
            await interaction.response.send_message(
                t("error.restarting", self.lang), ephemeral=True
            )
            return
        wait = self.cooldowns.try_acquire(invoker(interaction).id)
        if wait > 0:
            await interaction.response.send_message(
                t("ask.cooldown", self.lang, seconds=math.ceil(wait)), ephemeral=True
            )
            return
        await interaction.response.defer(ephemeral=private)
        async with self.services.in_flight.track():  # a graceful stop lets it finish
            context = CallContext(
                feature=Feature.ASK,
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
                user_id=invoker(interaction).id,
            )
            outcome = await self.service.ask(
                question,
                author=invoker(interaction).display_name,
                context=context,
                attachments=[attachment_source(image)] if image else [],
            )
            await self._reply(interaction, question, outcome, private)

    async def _reply(
        self,
        interaction: nextcord.Interaction,
        question: str,
        outcome: AskOutcome,
        private: bool,
    ) -> None:
        followup = interaction.followup
        match outcome:
            case Answered():
                messages = answered_embeds(
                    outcome,
                    title=f"❓ {question}",
                    lang=self.lang,
                    limit_bytes=self.services.settings.attachments.max_download_bytes,
                )
                # A public answer's first message carries the feedback buttons; a
                # private one has no one else to vote, and cannot be edited with counts.
                for index, embeds in enumerate(messages):
                    if index == 0 and not private:
                        first = await followup.send(
                            embeds=embeds,
                            view=answer_buttons(self.lang),
                            allowed_mentions=NO_MENTIONS,
                            wait=True,
                        )
                        await self._record(interaction, question, outcome, first.id)
                    else:
                        await followup.send(
                            embeds=embeds, ephemeral=private, allowed_mentions=NO_MENTIONS
                        )
            case Failed():
                self.cooldowns.release(invoker(interaction).id)
                await send_private_after_defer(
                    interaction, failure_text(outcome, self.lang), deferred_private=private
                )
            case TooLong():
                self.cooldowns.release(invoker(interaction).id)
                await send_private_after_defer(
                    interaction,
                    t("ask.too_long", self.lang, tokens=outcome.tokens, limit=outcome.limit),
                    deferred_private=private,
                )
            case _:
                assert_never(outcome)

    async def _record(
        self, interaction: nextcord.Interaction, question: str, outcome: Answered, message_id: int
    ) -> None:
        channel = interaction.channel
        in_thread = isinstance(channel, nextcord.Thread)
        await record_answer(
            self.feedback,
            PostedAnswer(
                message_id=message_id,
                guild_id=interaction.guild_id or 0,
                feature=Feature.ASK,
                answer=outcome.text,
                channel_id=channel.parent_id if isinstance(channel, nextcord.Thread) else None,
                thread_id=interaction.channel_id if in_thread else None,
                ledger_id=outcome.ledger_id,
                asker_id=invoker(interaction).id,
                question=question,
            ),
        )


def setup(bot: commands.Bot, *, services: Services) -> None:
    bot.add_cog(AskCog(bot, services))
