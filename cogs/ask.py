"""/ask-gpt: any member (except denied roles) asks a question, with an optional image."""

from __future__ import annotations

import math
from typing import assert_never

import nextcord
from nextcord import SlashOption
from nextcord.ext import commands
from nextcord.types.message import Attachment as AttachmentPayload

from cogs._render import (
    Deferred,
    answered_embeds,
    attachment_source,
    failure_text,
    held_command,
    invoker,
    member_facts,
    refused_while_restarting,
)
from cogs.feedback import answer_buttons, record_answer
from ibot.app import Services
from ibot.db.pending_interactions import AttachmentRef, PendingInteraction, PendingRequest
from ibot.domain import Feature
from ibot.i18n import t
from ibot.services.ask import AskOutcome
from ibot.services.attachments import AttachmentSource
from ibot.services.cooldown import Cooldowns
from ibot.services.feedback import PostedAnswer
from ibot.services.outcomes import Answered, Failed, TooLong
from ibot.services.permissions import Access


class AskCog(commands.Cog):
    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.services = services
        self.resume = services.resume_service()
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
        if await refused_while_restarting(interaction, self.services.in_flight, self.lang):
            return
        wait = self.cooldowns.try_acquire(invoker(interaction).id)
        if wait > 0:
            await interaction.response.send_message(
                t("ask.cooldown", self.lang, seconds=math.ceil(wait)), ephemeral=True
            )
            return
        await interaction.response.defer(ephemeral=private)
        pending = pending_ask(interaction, question, image, private)
        # A graceful stop lets it finish; a crash leaves it held for the next start.
        async with self.services.in_flight.track(), self.resume.held(pending):
            outcome = await self.resume.answer_ask(pending, self.attachments(pending))
            await self.deliver(Deferred.live(interaction, private=private), pending, outcome)

    def attachments(self, pending: PendingInteraction) -> list[AttachmentSource]:
        """The image option as a source to read: live, or after a restart (its URL lasts
        a day: long past the interaction token's 15 minutes)."""
        ref = pending.request.image
        if ref is None:
            return []
        data: AttachmentPayload = {
            "id": ref.id,
            "filename": ref.filename,
            "size": ref.size,
            "url": ref.url,
            "proxy_url": ref.proxy_url or ref.url,
        }
        if ref.content_type:
            data["content_type"] = ref.content_type
        return [attachment_source(nextcord.Attachment(data=data, state=self.bot._connection))]

    async def deliver(
        self, target: Deferred, pending: PendingInteraction, outcome: AskOutcome
    ) -> None:
        """The answer (or why there is none) to the member, live or after a restart."""
        private = pending.request.private
        match outcome:
            case Answered():
                messages = answered_embeds(
                    outcome,
                    title=f"❓ {pending.request.question}",
                    lang=self.lang,
                    limit_bytes=self.services.settings.attachments.max_download_bytes,
                )
                # A public answer's first message carries the feedback buttons; a
                # private one has no one else to vote, and cannot be edited with counts.
                buttons = None if private else answer_buttons(self.lang)
                first = await target.send_answer(messages, buttons=buttons)
                if first is not None:
                    await self._record(pending, outcome, first)
            case Failed():
                self.cooldowns.release(pending.user_id)
                await target.send_private(failure_text(outcome, self.lang))
            case TooLong():
                self.cooldowns.release(pending.user_id)
                await target.send_private(
                    t("ask.too_long", self.lang, tokens=outcome.tokens, limit=outcome.limit)
                )
            case _:
                assert_never(outcome)

    async def _record(
        self, pending: PendingInteraction, outcome: Answered, message_id: int
    ) -> None:
        in_thread = pending.request.parent_id is not None
        await record_answer(
            self.feedback,
            PostedAnswer(
                message_id=message_id,
                guild_id=pending.guild_id or 0,
                feature=Feature.ASK,
                answer=outcome.text,
                channel_id=pending.request.parent_id,
                thread_id=pending.channel_id if in_thread else None,
                ledger_id=outcome.ledger_id,
                asker_id=pending.user_id,
                question=pending.request.question,
            ),
        )


def pending_ask(
    interaction: nextcord.Interaction,
    question: str,
    image: nextcord.Attachment | None,
    private: bool,
) -> PendingInteraction:
    """The /ask-gpt as it is held until answered (and asked again after a crash)."""
    channel = interaction.channel
    return held_command(
        interaction,
        Feature.ASK,
        PendingRequest(
            question=question,
            private=private,
            author=invoker(interaction).display_name,
            parent_id=channel.parent_id if isinstance(channel, nextcord.Thread) else None,
            image=None
            if image is None
            else AttachmentRef(
                id=image.id,
                filename=image.filename,
                size=image.size,
                url=image.url,
                proxy_url=image.proxy_url,
                content_type=image.content_type,
            ),
        ),
    )


def setup(bot: commands.Bot, *, services: Services) -> None:
    bot.add_cog(AskCog(bot, services))
