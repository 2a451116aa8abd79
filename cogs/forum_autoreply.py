"""Forum auto-reply: a new thread in a configured forum gets one answer, then humans take over.

Thin: Discord events in, `ForumService` calls, Discord messages out. Exactly one answer
per thread is guaranteed by the service's claim (a database row), not by memory, so a
replayed THREAD_CREATE, a restart or the catch-up never answers twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import nextcord
import structlog
from nextcord.ext import commands

from cogs._render import (
    NO_MENTIONS,
    answered_embeds,
    attachment_source,
    failure_text,
)
from ibot.app import Services
from ibot.db.threads import ThreadState
from ibot.i18n import t
from ibot.services.ask import Answered
from ibot.services.forum import ForumPost

log = structlog.get_logger("ibot.forum")

UNKNOWN_MESSAGE = 10008
# Discord can deliver THREAD_CREATE before the starter message is readable.
STARTER_RETRY_DELAYS_S = (0.25, 0.5, 1.0, 2.0, 4.0)
CATCH_UP_CONCURRENCY = 4
HISTORY_CHECK_LIMIT = 25


class ForumAutoReply(commands.Cog):
    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.services = services
        self.service = services.forum_service()
        settings = services.settings
        self.forum_ids = set(settings.discord.forum_channel_ids)
        self.catch_up_hours = settings.discord.catch_up_hours
        self.lang = settings.prompts.language
        self.title = settings.prompts.answer_title or t(
            "answer_title", self.lang, bot_name=settings.prompts.bot_name
        )
        self._caught_up = False
        self._tasks: set[asyncio.Task[None]] = set()

    @commands.Cog.listener()
    async def on_thread_create(self, thread: nextcord.Thread) -> None:
        if thread.parent_id not in self.forum_ids:
            return
        await self.handle(thread)

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        # on_ready fires again after a full reconnect: catch up once per process.
        if self._caught_up:
            return
        self._caught_up = True
        task = asyncio.create_task(self._catch_up_logged())
        self._tasks.add(task)  # referenced until done: the loop holds tasks only weakly
        task.add_done_callback(self._tasks.discard)

    async def _catch_up_logged(self) -> None:
        """The catch-up in the background: a failure is logged, and live events go on
        being answered (the posts it missed wait for the next start's catch-up)."""
        try:
            await self.catch_up()
        except Exception:
            log.exception("forum_catch_up_failed", hours=self.catch_up_hours)

    async def handle(self, thread: nextcord.Thread, *, take_over: bool = False) -> None:
        """Answer `thread` unless it is someone else's, skipped, or already answered."""
        in_flight = self.services.in_flight
        if in_flight.draining:
            return  # stopping: the next start's catch-up answers it
        async with in_flight.track():  # a graceful stop lets the answer reach Discord
            await self._handle(thread, take_over=take_over)

    async def _handle(self, thread: nextcord.Thread, *, take_over: bool) -> None:
        claimed = (
            await self.service.store.take_over(thread.id)
            if take_over
            else await self.service.claim(
                thread.id, guild_id=thread.guild.id, forum_id=thread.parent_id
            )
        )
        if not claimed:
            return
        try:
            await self._answer(thread)
        except Exception:
            log.exception("forum_answer_failed", thread_id=thread.id, guild_id=thread.guild.id)
            await self.service.finish(thread.id, ThreadState.FAILED, reason="internal_error")
            with contextlib.suppress(nextcord.HTTPException):
                await thread.send(t("error.generic", self.lang), allowed_mentions=NO_MENTIONS)

    async def _answer(self, thread: nextcord.Thread) -> None:
        tags = tuple(tag.name for tag in thread.applied_tags)
        starter = await fetch_starter(thread)
        if starter is None:
            await self.service.finish(thread.id, ThreadState.FAILED, reason="starter_missing")
            await thread.send(t("error.generic", self.lang), allowed_mentions=NO_MENTIONS)
            return
        reason = self.service.skip_reason(author_is_bot=starter.author.bot, tags=tags)
        if reason is not None:
            await self.service.finish(thread.id, ThreadState.SKIPPED, reason=reason)
            return
        post = ForumPost(
            thread_id=thread.id,
            guild_id=thread.guild.id,
            forum_id=thread.parent_id,
            title=thread.name,
            content=starter.content,
            author_id=starter.author.id,
            author_name=starter.author.display_name,
            tags=tags,
            attachments=tuple(attachment_source(a) for a in starter.attachments),
            created_at=thread.created_at,
        )
        async with thread.typing():
            outcome = await self.service.answer(post)
        if not isinstance(outcome, Answered):
            await thread.send(failure_text(outcome, self.lang), allowed_mentions=NO_MENTIONS)
            await self._finish_after_posting(
                thread.id,
                ThreadState.FAILED,
                ledger_id=outcome.ledger_id,
                reason=outcome.kind.value,
            )
            return
        messages = answered_embeds(
            outcome,
            title=self.title,
            lang=self.lang,
            limit_bytes=self.services.settings.attachments.max_download_bytes,
        )
        first: nextcord.Message | None = None
        for embeds in messages:
            sent = await thread.send(embeds=embeds, allowed_mentions=NO_MENTIONS)
            first = first or sent
        await self._finish_after_posting(
            thread.id,
            ThreadState.ANSWERED,
            message_id=first.id if first else None,
            ledger_id=outcome.ledger_id,
        )

    async def _finish_after_posting(self, thread_id: int, state: ThreadState, **kw: object) -> None:
        """Record the thread's outcome once its message is posted. If the database fails
        now, the user already has their message: nothing more is posted (no error after
        an answer), and the claim left behind is settled by the next start's catch-up,
        which finds the posted message."""
        try:
            await self.service.finish(thread_id, state, **kw)
        except Exception:
            log.exception("thread_state_write_failed", thread_id=thread_id, state=str(state))

    async def catch_up(self) -> None:
        """Answer the threads opened while the bot was down (within catch_up_hours)."""
        if self.catch_up_hours <= 0:
            return
        since = datetime.now(UTC) - timedelta(hours=self.catch_up_hours)
        threads = [t for t in await self._recent_threads(since) if t.created_at >= since]
        states = await self.service.store.states(t.id for t in threads)
        semaphore = asyncio.Semaphore(CATCH_UP_CONCURRENCY)
        todo = []
        for thread in threads:
            known = states.get(thread.id)
            if known is None:
                todo.append((thread, False))
            elif known[0] is ThreadState.CLAIMED and known[1] != self.service.store.owner:
                todo.append((thread, True))  # its process died before answering

        async def one(thread: nextcord.Thread, take_over: bool) -> None:
            async with semaphore:
                if take_over and await self._already_answered(thread):
                    await self.service.store.take_over(thread.id)
                    await self.service.finish(
                        thread.id, ThreadState.ANSWERED, reason="found_after_restart"
                    )
                    return
                await self.handle(thread, take_over=take_over)

        log.info("forum_catch_up", threads=len(threads), to_answer=len(todo))
        await asyncio.gather(*(one(thread, take_over) for thread, take_over in todo))

    async def _recent_threads(self, since: datetime) -> list[nextcord.Thread]:
        found: dict[int, nextcord.Thread] = {}
        for forum_id in self.forum_ids:
            forum = self.bot.get_channel(forum_id)
            if not isinstance(forum, nextcord.ForumChannel):
                continue
            for thread in forum.threads:
                found[thread.id] = thread
            try:
                async for thread in forum.archived_threads(limit=100):
                    if thread.created_at < since:
                        break
                    found[thread.id] = thread
            except nextcord.HTTPException:
                log.warning("catch_up_archived_failed", forum_id=forum_id, exc_info=True)
        return list(found.values())

    async def _already_answered(self, thread: nextcord.Thread) -> bool:
        me = self.bot.user
        async for message in thread.history(limit=HISTORY_CHECK_LIMIT, oldest_first=True):
            if me is not None and message.author.id == me.id:
                return True
        return False


async def fetch_starter(thread: nextcord.Thread) -> nextcord.Message | None:
    """The thread's first message (its id is the thread's), retrying Discord's 10008 race."""
    for delay in (0.0, *STARTER_RETRY_DELAYS_S):
        if delay:
            await asyncio.sleep(delay)
        try:
            return await thread.fetch_message(thread.id)
        except nextcord.NotFound as err:
            if err.code != UNKNOWN_MESSAGE:
                raise
    log.warning("starter_message_missing", thread_id=thread.id)
    return None


def setup(bot: commands.Bot, *, services: Services) -> None:
    bot.add_cog(ForumAutoReply(bot, services))
