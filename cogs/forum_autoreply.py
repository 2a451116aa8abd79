"""Forum auto-reply: a new thread in a configured forum gets one answer, then humans take over.

Thin: Discord events in, `ForumService` calls, Discord messages out; the thread's state
and the catch-up's plan are the service's. Exactly one answer
per thread is guaranteed by the service's claim (a database row), not by memory, so a
replayed THREAD_CREATE, a restart or the catch-up never answers twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import assert_never

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
from ibot.i18n import t
from ibot.services.forum import CatchUp, ForumPost
from ibot.services.outcomes import Answered, Failed

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
            log.exception("forum_catch_up_failed", hours=self.service.catch_up_hours)

    async def handle(self, thread: nextcord.Thread, *, take_over: bool = False) -> None:
        """Answer `thread` unless it is someone else's, skipped, or already answered."""
        in_flight = self.services.in_flight
        if in_flight.draining:
            return  # stopping: the next start's catch-up answers it
        async with in_flight.track():  # a graceful stop lets the answer reach Discord
            await self._handle(thread, take_over=take_over)

    async def _handle(self, thread: nextcord.Thread, *, take_over: bool) -> None:
        service = self.service
        if not await service.begin(
            thread.id, guild_id=thread.guild.id, forum_id=thread.parent_id, take_over=take_over
        ):
            return
        try:
            await self._answer(thread)
        except Exception:
            log.exception("forum_answer_failed", thread_id=thread.id, guild_id=thread.guild.id)
            await service.abandon(thread.id, "internal_error")
            with contextlib.suppress(nextcord.HTTPException):
                await thread.send(t("error.generic", self.lang), allowed_mentions=NO_MENTIONS)

    async def _answer(self, thread: nextcord.Thread) -> None:
        starter = await fetch_starter(thread)
        if starter is None:
            await self.service.abandon(thread.id, "starter_missing")
            await thread.send(t("error.generic", self.lang), allowed_mentions=NO_MENTIONS)
            return
        post = ForumPost(
            thread_id=thread.id,
            guild_id=thread.guild.id,
            forum_id=thread.parent_id,
            title=thread.name,
            content=starter.content,
            author_id=starter.author.id,
            author_name=starter.author.display_name,
            author_is_bot=starter.author.bot,
            tags=tuple(tag.name for tag in thread.applied_tags or ()),
            attachments=tuple(attachment_source(a) for a in starter.attachments),
            created_at=thread.created_at,
        )
        if await self.service.skip_if_unwanted(post) is not None:
            return
        async with thread.typing():
            outcome = await self.service.answer(post)
        match outcome:
            case Answered():
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
                message_id = first.id if first else None
                await self.service.posted(thread.id, outcome, message_id=message_id)
            case Failed():
                await thread.send(failure_text(outcome, self.lang), allowed_mentions=NO_MENTIONS)
                await self.service.posted(thread.id, outcome)
            case _:
                assert_never(outcome)

    async def catch_up(self) -> None:
        """Answer the threads opened while the bot was down (the service says which)."""
        since = self.service.catch_up_since(datetime.now(UTC))
        if since is None:
            return
        threads = {t.id: t for t in await self._recent_threads(since) if created_at(t) >= since}
        plan = await self.service.plan_catch_up(threads)
        semaphore = asyncio.Semaphore(CATCH_UP_CONCURRENCY)

        async def one(item: CatchUp) -> None:
            thread = threads[item.thread_id]
            async with semaphore:
                if item.take_over and await self._already_answered(thread):
                    await self.service.found_answered(thread.id)
                    return
                await self.handle(thread, take_over=item.take_over)

        log.info("forum_catch_up", threads=len(threads), to_answer=len(plan))
        await asyncio.gather(*(one(item) for item in plan))

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
                    if created_at(thread) < since:
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


def created_at(thread: nextcord.Thread) -> datetime:
    """When the thread was opened; Discord gives no `create_timestamp` for threads
    older than 2022-01-09, whose id still tells."""
    return thread.created_at or nextcord.utils.snowflake_time(thread.id)


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
