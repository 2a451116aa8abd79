"""The chat channel(s): every member message gets an answer; forum follow-ups only when
the bot is mentioned (and that option is on)."""

from __future__ import annotations

import contextlib
from typing import assert_never

import nextcord
from nextcord.ext import commands

from cogs._render import (
    NO_MENTIONS,
    answered_embeds,
    failure_text,
    member_facts,
    reply,
)
from cogs.feedback import answer_buttons, record_answer
from ibot.app import Services
from ibot.domain import CallContext, Feature
from ibot.i18n import t
from ibot.services.chat import Duplicate, Turn
from ibot.services.cooldown import Cooldowns
from ibot.services.feedback import PostedAnswer
from ibot.services.outcomes import Answered, Failed
from ibot.services.permissions import Access

FOLLOWUP_HISTORY = 30
# On a message sent within the member's cooldown: a reaction, not a reply. Only the
# author's own message shows it, so a member typing fast adds no line to the channel
# (a reply would, for everyone, on each message); there is no ephemeral reply to a message.
COOLDOWN_REACTION = "⏳"


class ChatCog(commands.Cog):
    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.services = services
        self.service = services.chat_service()
        self.feedback = services.feedback_service()
        self.policy = services.role_policy()
        settings = services.settings
        self.chat_channels = set(settings.discord.gpt_channel_ids)
        self.forum_ids = set(settings.discord.forum_channel_ids)
        self.followups = settings.discord.answer_followups_when_mentioned
        self.lang = settings.prompts.language
        self.title = settings.prompts.bot_name
        self.cooldowns = Cooldowns(settings.discord.chat_cooldown_s)

    @commands.Cog.listener()
    async def on_message(self, message: nextcord.Message) -> None:
        if message.author.bot or message.guild is None or not message.content.strip():
            return
        channel = message.channel
        in_chat = channel.id in self.chat_channels
        followup = (
            self.followups
            and isinstance(channel, nextcord.Thread)
            and channel.parent_id in self.forum_ids
            and message.id != channel.id  # the starter is the auto-reply's job
            and self.bot.user is not None
            and self.bot.user.mentioned_in(message)
            and not message.mention_everyone
        )
        if not (in_chat or followup):
            return
        if not self.policy.allows(Access.ASK, member_facts(message.author, message.guild)):
            return  # denied roles are ignored silently in a public channel
        if self.services.in_flight.draining:  # stopping: this answer could be cut off
            await reply(
                message,
                t("error.restarting", self.lang),
                allowed_mentions=NO_MENTIONS,
                mention_author=False,
            )
            return
        if self.cooldowns.try_acquire(message.author.id) > 0:
            with contextlib.suppress(nextcord.HTTPException):  # a missing reaction is no loss
                await message.add_reaction(COOLDOWN_REACTION)
            return
        async with self.services.in_flight.track():  # a graceful stop lets it finish
            await self._answer(message, followup=followup)

    async def _answer(self, message: nextcord.Message, *, followup: bool) -> None:
        channel = message.channel
        assert message.guild is not None
        history = await self._thread_history(message) if followup else None
        context = CallContext(
            feature=Feature.CHAT,
            guild_id=message.guild.id,
            channel_id=getattr(channel, "parent_id", None) or channel.id,
            thread_id=channel.id if isinstance(channel, nextcord.Thread) else None,
            user_id=message.author.id,
        )
        async with channel.typing():
            outcome = await self.service.reply(
                channel_id=channel.id,
                message_id=message.id,
                author=message.author.display_name,
                content=message.clean_content,
                context=context,
                history=history,
            )
        match outcome:
            case Answered():
                messages = answered_embeds(outcome, title=self.title, lang=self.lang, limit_bytes=0)
                for index, embeds in enumerate(messages):
                    if index == 0:
                        first = await reply(
                            message,
                            embeds=embeds,
                            view=answer_buttons(self.lang),
                            allowed_mentions=NO_MENTIONS,
                            mention_author=False,
                        )
                        await record_answer(
                            self.feedback,
                            PostedAnswer(
                                message_id=first.id,
                                guild_id=message.guild.id,
                                feature=Feature.CHAT,
                                answer=outcome.text,
                                channel_id=context.channel_id,
                                thread_id=context.thread_id,
                                ledger_id=outcome.ledger_id,
                                asker_id=message.author.id,
                                question=message.clean_content,
                            ),
                        )
                    else:
                        await channel.send(embeds=embeds, allowed_mentions=NO_MENTIONS)
            case Duplicate():  # a replayed event: the member's cooldown is not theirs to pay
                self.cooldowns.release(message.author.id)
            case Failed():
                self.cooldowns.release(message.author.id)  # nothing answered: may retry now
                await reply(
                    message,
                    failure_text(outcome, self.lang),
                    allowed_mentions=NO_MENTIONS,
                    mention_author=False,
                )
            case _:
                assert_never(outcome)

    async def _thread_history(self, message: nextcord.Message) -> list[Turn]:
        turns = []
        me = self.bot.user
        async for earlier in message.channel.history(limit=FOLLOWUP_HISTORY, before=message):
            text = earlier.content or " ".join(e.description or "" for e in earlier.embeds)
            if text.strip():
                mine = me is not None and earlier.author.id == me.id
                turns.append(Turn(earlier.author.display_name, text, mine))
        turns.reverse()
        return turns


def setup(bot: commands.Bot, *, services: Services) -> None:
    bot.add_cog(ChatCog(bot, services))
