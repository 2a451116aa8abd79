"""Feedback under the bot's answers: 👍 / 👎 (anyone), ✅ (the asker or a moderator),
and `/solved [message]` in a forum thread; a solved tag applied to a forum thread
(THREAD_UPDATE) solves it too, a deleted thread (THREAD_DELETE) leaves the knowledge
base, and with knowledge.close_solved a solved thread gets the tag and is archived.

One persistent view with fixed custom ids is registered at start, so buttons pressed on
an answer posted by an earlier process still work: the answer is found by the clicked
message's id. The other cogs put the buttons under an answer with `answer_buttons` and
record it with `record_answer`. Each click gets a private reply; a vote also updates
the counts shown on the buttons (the embed is left as it is).
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any, assert_never

import nextcord
import structlog
from nextcord import SlashOption
from nextcord.ext import commands

from cogs._render import invoker, member_facts
from ibot.app import Services
from ibot.i18n import t
from ibot.services.feedback import (
    FeedbackService,
    NotAnAnswer,
    PostedAnswer,
    Voted,
    VoteUnchanged,
)
from ibot.services.solved import (
    AlreadySolved,
    ForumTag,
    ForumThread,
    NoAnswerFound,
    NotAllowed,
    Reply,
    Solved,
    SolvedOutcome,
    UnknownAnswer,
    close_thread,
    is_solved_tag_added,
)

if TYPE_CHECKING:
    type Click = nextcord.Interaction[Any]
    type Press = nextcord.ui.Button[FeedbackView]

log = structlog.get_logger("ibot.feedback")

VOTE_UP = "ibot:vote:up"
VOTE_DOWN = "ibot:vote:down"
SOLVED = "ibot:solved"
COG_NAME = "Feedback"
_SNOWFLAKE = re.compile(r"(\d{15,21})\s*/?\s*$")


class FeedbackView(nextcord.ui.View):
    """👍 n / 👎 n / ✅: the same custom ids on every answer; a click asks the cog."""

    def __init__(self, lang: str, up: int = 0, down: int = 0) -> None:
        super().__init__(timeout=None)
        labels = {
            VOTE_UP: f"👍 {up}",
            VOTE_DOWN: f"👎 {down}",
            SOLVED: t("feedback.solved_button", lang),
        }
        for item in self.children:
            if isinstance(item, nextcord.ui.Button) and item.custom_id in labels:
                item.label = labels[item.custom_id]

    @nextcord.ui.button(label="👍 0", custom_id=VOTE_UP, style=nextcord.ButtonStyle.secondary)
    async def vote_up(self, button: Press, interaction: Click) -> None:
        await _cog(interaction).vote(interaction, up=True)

    @nextcord.ui.button(label="👎 0", custom_id=VOTE_DOWN, style=nextcord.ButtonStyle.secondary)
    async def vote_down(self, button: Press, interaction: Click) -> None:
        await _cog(interaction).vote(interaction, up=False)

    @nextcord.ui.button(label="✅", custom_id=SOLVED, style=nextcord.ButtonStyle.success)
    async def solved(self, button: Press, interaction: Click) -> None:
        await _cog(interaction).mark_solved(interaction)


def _cog(interaction: Click) -> FeedbackCog:
    cog = interaction.client.get_cog(COG_NAME)
    if not isinstance(cog, FeedbackCog):
        raise RuntimeError("the feedback cog is not loaded")
    return cog


def answer_buttons(lang: str, up: int = 0, down: int = 0) -> FeedbackView:
    """The buttons to send under an answer (or to edit it with). Stopped: clicks go to
    the one view registered at start, never to a copy kept per message."""
    view = FeedbackView(lang, up, down)
    view.stop()
    return view


async def record_answer(feedback: FeedbackService, posted: PostedAnswer) -> None:
    """Record an answer posted with the buttons; a failure is logged, never raised: the
    answer is out, only its votes would be lost."""
    try:
        await feedback.record(posted)
    except Exception:
        log.exception("feedback_record_failed", message_id=posted.message_id)


class FeedbackCog(commands.Cog, name=COG_NAME):
    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.feedback = services.feedback_service()
        self.solved_service = services.solved_service()
        self.lang = services.settings.prompts.language
        self.forum_ids = set(services.settings.discord.forum_channel_ids)
        self.solved_tags = tuple(services.settings.knowledge.solved_tags)
        self.close_solved = services.settings.knowledge.close_solved

    async def vote(self, interaction: Click, *, up: bool) -> None:
        message = interaction.message
        if message is None:
            return
        outcome = await self.feedback.vote(
            message.id, invoker(interaction).id, up=up, sent_at=message.created_at
        )
        match outcome:
            case Voted():
                key = "feedback.voted_up" if up else "feedback.voted_down"
                await interaction.response.send_message(t(key, self.lang), ephemeral=True)
                view = answer_buttons(self.lang, outcome.up, outcome.down)
                try:
                    await message.edit(view=view)
                except nextcord.HTTPException:
                    log.warning("feedback_counts_not_shown", message_id=message.id, exc_info=True)
            case VoteUnchanged():
                await interaction.response.send_message(
                    t("feedback.unchanged", self.lang), ephemeral=True
                )
            case NotAnAnswer():
                await interaction.response.send_message(
                    t("feedback.not_an_answer", self.lang), ephemeral=True
                )
            case _:
                assert_never(outcome)

    async def mark_solved(self, interaction: Click) -> None:
        message = interaction.message
        if message is None:
            return
        member = invoker(interaction)
        outcome = await self.solved_service.mark_answer(
            message.id,
            member_id=member.id,
            facts=member_facts(member, interaction.guild, interaction.permissions),
            thread=await self._forum_thread(interaction.channel),
            sent_at=message.created_at,
        )
        await self._say_solved(interaction, outcome)
        if isinstance(outcome, Solved):
            await self._close(interaction.channel)

    @nextcord.slash_command(
        name="solved",
        description="Mark this forum thread solved (the asker or a moderator).",
        description_localizations={
            nextcord.Locale.fr: "Marque ce fil du forum comme résolu (l'auteur ou un modo)."
        },
        contexts=[nextcord.InteractionContextType.guild],
    )
    async def solved(
        self,
        interaction: nextcord.Interaction,
        message: str | None = SlashOption(
            description="The message that solved it (a link or an id); default: the bot's.",
            description_localizations={
                nextcord.Locale.fr: "Le message qui a résolu (lien ou id) ; sinon celui du bot."
            },
            required=False,
            default=None,
            max_length=200,
        ),
    ) -> None:
        thread = await self._forum_thread(interaction.channel)
        if thread is None or not isinstance(interaction.channel, nextcord.Thread):
            await interaction.response.send_message(
                t("solved.not_in_forum", self.lang), ephemeral=True
            )
            return
        answer: str | None = None
        kind = "bot"
        message_id: int | None = None
        if message:
            found = _SNOWFLAKE.search(message.strip())
            chosen = None
            if found:
                try:
                    chosen = await interaction.channel.fetch_message(int(found.group(1)))
                except nextcord.HTTPException:
                    chosen = None
            if chosen is None:
                await interaction.response.send_message(
                    t("solved.bad_message", self.lang), ephemeral=True
                )
                return
            message_id = chosen.id
            if self.bot.user is None or chosen.author.id != self.bot.user.id:
                answer = chosen.content
                kind = await self._author_kind(chosen, interaction.guild)
        member = invoker(interaction)
        outcome = await self.solved_service.mark_thread(
            thread,
            member_id=member.id,
            facts=member_facts(member, interaction.guild, interaction.permissions),
            answer=answer,
            answer_kind=kind,
            answer_message_id=message_id,
        )
        await self._say_solved(interaction, outcome)
        if isinstance(outcome, Solved):
            await self._close(interaction.channel)

    @commands.Cog.listener()
    async def on_thread_update(self, before: nextcord.Thread, after: nextcord.Thread) -> None:
        """A solved tag applied to a forum thread: solved as by ✅ (who applied it, the
        event does not say, so anyone with the right to tag may)."""
        if after.parent_id not in self.forum_ids:
            return
        if not is_solved_tag_added(_tag_names(before), _tag_names(after), self.solved_tags):
            return
        thread = await self._forum_thread(after)
        if thread is None:
            return
        reply = await self._last_reply(after, thread.owner_id)
        outcome = await self.solved_service.solved_by_tag(thread, reply=reply)
        match outcome:
            case Solved():
                log.info("solved_by_tag", thread_id=after.id, indexed=outcome.indexed)
                await self._close(after)
            case AlreadySolved():
                log.info("solved_tag_already_indexed", thread_id=after.id)
            case NoAnswerFound():
                log.info("solved_tag_without_answer", thread_id=after.id)
            case _:
                assert_never(outcome)

    @commands.Cog.listener()
    async def on_thread_delete(self, thread: nextcord.Thread) -> None:
        """A deleted forum thread leaves the knowledge base. nextcord 3.2 dispatches this
        only for a thread it has cached (there is no raw thread delete event)."""
        if thread.parent_id not in self.forum_ids:
            return
        if await self.solved_service.thread_deleted(thread.id):
            log.info("solved_thread_deleted", thread_id=thread.id)

    async def _last_reply(self, thread: nextcord.Thread, asker_id: int | None) -> Reply | None:
        """The last message in the thread by neither the asker nor a bot."""
        try:
            async for message in thread.history(limit=100):
                if message.author.bot or message.author.id == asker_id or not message.content:
                    continue
                return Reply(message.content, await self._author_kind(message, thread.guild))
        except nextcord.HTTPException:
            log.warning("solved_tag_history_unread", thread_id=thread.id, exc_info=True)
        return None

    async def _close(self, channel: object) -> None:
        """knowledge.close_solved: the forum's solved tag applied and the thread archived."""
        if not self.close_solved or not isinstance(channel, nextcord.Thread):
            return
        forum = channel.parent
        if not isinstance(forum, nextcord.ForumChannel) or forum.id not in self.forum_ids:
            return
        available = [ForumTag(tag.id, tag.name) for tag in forum.available_tags if tag.id]
        edit = close_thread(
            available,
            channel.applied_tag_ids,
            archived=channel.archived,
            solved_tags=self.solved_tags,
        )
        if edit is None:
            return
        tags = [tag for tag in forum.available_tags if tag.id in edit.applied_tags]
        try:
            await channel.edit(applied_tags=tags, archived=True)
        except nextcord.HTTPException:
            log.warning("solved_thread_not_closed", thread_id=channel.id, exc_info=True)

    async def _author_kind(self, message: nextcord.Message, guild: nextcord.Guild | None) -> str:
        """ "moderator" or "member": a message read by REST has its author without roles
        (and there is no members intent), so the member is read for them."""
        author: nextcord.Member | nextcord.User = message.author
        if guild is not None and not isinstance(author, nextcord.Member):
            with contextlib.suppress(nextcord.HTTPException):
                author = await guild.fetch_member(author.id)
        moderator = self.solved_service.policy.is_moderator(member_facts(author, guild))
        return "moderator" if moderator else "member"

    async def _say_solved(self, interaction: nextcord.Interaction, outcome: SolvedOutcome) -> None:
        match outcome:
            case Solved():
                key = "solved.done_indexed" if outcome.indexed else "solved.done"
            case NotAllowed():
                key = "solved.refused"
            case UnknownAnswer():
                key = "solved.no_answer"
            case _:
                assert_never(outcome)
        await interaction.response.send_message(t(key, self.lang), ephemeral=True)

    async def _forum_thread(self, channel: object) -> ForumThread | None:
        """The forum thread `channel` is, with its starter's text; None elsewhere."""
        if not isinstance(channel, nextcord.Thread) or channel.parent_id not in self.forum_ids:
            return None
        starter = None
        with contextlib.suppress(nextcord.NotFound):  # deleted: the title stays
            starter = await channel.fetch_message(channel.id)  # the starter's id: the thread's
        return ForumThread(
            guild_id=channel.guild.id,
            forum_id=channel.parent_id,
            thread_id=channel.id,
            title=channel.name,
            question=starter.content if starter is not None else "",
            owner_id=channel.owner_id,
            tags=tuple(tag.name for tag in channel.applied_tags or ()),
            created_at=channel.created_at,
        )


def _tag_names(thread: nextcord.Thread) -> list[str]:
    return [tag.name for tag in thread.applied_tags or ()]


def setup(bot: commands.Bot, *, services: Services) -> None:
    bot.add_cog(FeedbackCog(bot, services))
    # Persistent: registered before any message is known, it answers clicks on the
    # answers of earlier processes too.
    bot.add_view(FeedbackView(services.settings.prompts.language))
