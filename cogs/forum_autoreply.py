"""Forum auto-reply: a new thread in a configured forum gets one answer, then humans take over.

Thin: Discord events in, `ForumService` calls, Discord messages out; the thread's state
and the catch-up's plan are the service's. Exactly one answer
per thread is guaranteed by the service's claim (a database row), not by memory, so a
replayed THREAD_CREATE, a restart or the catch-up never answers twice.

The catch-up runs whenever events may have been lost: on every new gateway session (its
`on_ready`: at start, and after Discord refused a RESUME, which never replays the gap),
and for a guild that becomes available after the session's start (loaded late, or back
from an outage: its events meanwhile were never sent), for that guild's forums. A
RESUME replays the gap itself, so `on_resumed` needs nothing. Catch-ups of one forum
never overlap: asked for while one runs, it runs once more after.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Iterable
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
from cogs.feedback import answer_buttons, record_answer
from ibot.app import Services
from ibot.domain import Feature
from ibot.i18n import t
from ibot.services.feedback import PostedAnswer
from ibot.services.forum import CatchUp, ForumOutcome, ForumPost
from ibot.services.outcomes import Answered, Failed

log = structlog.get_logger("ibot.forum")

UNKNOWN_MESSAGE = 10008
# Discord can deliver THREAD_CREATE before the starter message is readable.
STARTER_RETRY_DELAYS_S = (0.25, 0.5, 1.0, 2.0, 4.0)
# Discord refusing the answer's message for good: the thread went away or closed while
# the model wrote (JSON error codes, opcodes-and-status-codes.mdx). Nothing is retried,
# nor posted instead: the same refusal would meet it.
UNDELIVERABLE = {
    10003: "thread_deleted",  # Unknown Channel
    50001: "missing_access",
    50013: "missing_permissions",  # a locked thread, for a bot without MANAGE_THREADS
    50083: "thread_archived",  # archived and locked: posting cannot unarchive it
    160005: "thread_locked",
}
CATCH_UP_CONCURRENCY = 4
HISTORY_CHECK_LIMIT = 25


class ForumAutoReply(commands.Cog):
    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.services = services
        self.service = services.forum_service()
        self.feedback = services.feedback_service()
        settings = services.settings
        self.forum_ids = set(settings.discord.forum_channel_ids)
        self.lang = settings.prompts.language
        self.title = settings.prompts.answer_title or t(
            "answer_title", self.lang, bot_name=settings.prompts.bot_name
        )
        self._session_starting = False  # READY came, on_ready (its catch-up) not yet
        self._catching_up: set[int] = set()  # forums whose catch-up runs now
        self._catch_up_again: set[int] = set()  # asked for meanwhile: once more after
        self._tasks: set[asyncio.Task[None]] = set()

    @commands.Cog.listener()
    async def on_thread_create(self, thread: nextcord.Thread) -> None:
        if thread.parent_id not in self.forum_ids:
            return
        await self.handle(thread)

    @commands.Cog.listener()
    async def on_connect(self) -> None:
        # nextcord dispatches "connect" on each READY (a new session), not on RESUMED;
        # the guilds that arrive before its on_ready are in on_ready's catch-up.
        self._session_starting = True

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        # Every new session: at start, and after Discord refused a RESUME (op 9), when
        # the events of the gap are lost.
        self._session_starting = False
        self.request_catch_up(self.forum_ids)

    @commands.Cog.listener()
    async def on_guild_available(self, guild: nextcord.Guild) -> None:
        # A GUILD_CREATE after on_ready: a guild listed unavailable in READY that loaded
        # late, or back from an outage (GUILD_DELETE unavailable); nothing of it was sent.
        self._guild_arrived(guild)

    @commands.Cog.listener()
    async def on_guild_join(self, guild: nextcord.Guild) -> None:
        # What nextcord fires instead when that GUILD_CREATE lacks `unavailable`.
        self._guild_arrived(guild)

    def _guild_arrived(self, guild: nextcord.Guild) -> None:
        if self._session_starting:
            return  # the session's on_ready catches up every forum
        self.request_catch_up(f for f in self.forum_ids if guild.get_channel(f) is not None)

    def request_catch_up(self, forum_ids: Iterable[int]) -> None:
        """Catch up these forums in the background. One whose catch-up is running is
        caught up once more after it (that run may have read Discord too early), however
        often it is asked for meanwhile."""
        wanted = set(forum_ids) & self.forum_ids
        self._catch_up_again |= wanted & self._catching_up
        fresh = wanted - self._catching_up
        if not fresh:
            return
        self._catching_up |= fresh
        task = asyncio.create_task(self._catch_up_logged(fresh))
        self._tasks.add(task)  # referenced until done: the loop holds tasks only weakly
        task.add_done_callback(self._tasks.discard)

    async def _catch_up_logged(self, forum_ids: set[int]) -> None:
        """The catch-up in the background, then again for the forums asked for meanwhile:
        a failure is logged, and live events go on being answered (the posts it missed
        wait for the next catch-up)."""
        try:
            while forum_ids:
                try:
                    await self.catch_up(forum_ids)
                except Exception:
                    log.exception(
                        "forum_catch_up_failed",
                        hours=self.service.catch_up_hours,
                        forum_ids=sorted(forum_ids),
                    )
                again = forum_ids & self._catch_up_again
                self._catch_up_again -= again
                self._catching_up -= forum_ids - again
                forum_ids = again
        finally:
            self._catching_up -= forum_ids
            self._catch_up_again -= forum_ids

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
        try:
            starter = await fetch_starter(thread)
        except nextcord.HTTPException as err:
            if not await self._undeliverable(thread, err, None):
                raise
            return
        if starter is None:
            await self.service.abandon(thread.id, "starter_missing")
            with contextlib.suppress(nextcord.HTTPException):  # recorded; the log tells
                await thread.send(
                    t("forum.starter_missing", self.lang), allowed_mentions=NO_MENTIONS
                )
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
        reason = await self.service.skip_if_unwanted(post)
        if reason is not None:
            log.info("forum_post_skipped", thread_id=thread.id, reason=reason)
            return
        outcome: ForumOutcome | None = None
        try:
            async with thread.typing():
                outcome = await self.service.answer(post)
            await self._post(thread, outcome, post)
        except nextcord.HTTPException as err:
            if not await self._undeliverable(thread, err, outcome):
                raise

    async def _undeliverable(
        self, thread: nextcord.Thread, err: nextcord.HTTPException, outcome: ForumOutcome | None
    ) -> bool:
        """Whether Discord refused for good (`UNDELIVERABLE`): then the thread is recorded
        failed with the reason (and the model call's ledger row, if one was made), one
        line is logged, and nothing else is posted."""
        reason = UNDELIVERABLE.get(err.code) if 400 <= err.status < 500 else None
        if err.status == 429:
            # nextcord gave up on a rate limit: five tries at once, as it ignores the
            # retry_after of a 429 whose bucket is not spent (a shared resource's limit,
            # rate-limits.mdx). Another post there would only wait in the same limit.
            reason = "rate_limited"
        if reason is None:
            return False
        log.warning(
            "forum_answer_undeliverable",
            thread_id=thread.id,
            guild_id=thread.guild.id,
            reason=reason,
            status=err.status,
            code=err.code,
            ledger_id=outcome.ledger_id if outcome is not None else None,
        )
        await self.service.undelivered(thread.id, reason, outcome)
        return True

    async def _post(self, thread: nextcord.Thread, outcome: ForumOutcome, post: ForumPost) -> None:
        """Post the outcome in the thread, then record it; an answer's first message
        carries the feedback buttons (cogs/feedback.py)."""
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
                    if first is None:
                        first = await thread.send(
                            embeds=embeds,
                            view=answer_buttons(self.lang),
                            allowed_mentions=NO_MENTIONS,
                        )
                    else:
                        await thread.send(embeds=embeds, allowed_mentions=NO_MENTIONS)
                message_id = first.id if first else None
                await self.service.posted(thread.id, outcome, message_id=message_id)
                if first is not None:
                    await record_answer(
                        self.feedback,
                        PostedAnswer(
                            message_id=first.id,
                            guild_id=thread.guild.id,
                            feature=Feature.AUTO_REPLY,
                            answer=outcome.text,
                            channel_id=post.forum_id,
                            thread_id=thread.id,
                            ledger_id=outcome.ledger_id,
                            asker_id=post.author_id,
                            title=post.title,
                            question=post.content,
                        ),
                    )
            case Failed():
                await thread.send(failure_text(outcome, self.lang), allowed_mentions=NO_MENTIONS)
                await self.service.posted(thread.id, outcome)
            case _:
                assert_never(outcome)

    async def catch_up(self, forum_ids: Collection[int] | None = None) -> None:
        """Answer the threads of these forums (default: all) opened while the bot missed
        their events (the service says which)."""
        since = self.service.catch_up_since(datetime.now(UTC))
        if since is None:
            return
        forums = self.forum_ids if forum_ids is None else set(forum_ids)
        recent = await self._recent_threads(forums, since)
        threads = {t.id: t for t in recent if created_at(t) >= since}
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

    async def _recent_threads(
        self, forum_ids: Collection[int], since: datetime
    ) -> list[nextcord.Thread]:
        """The open threads of these forums (only them: a guild back from an outage reads
        its own forums, not every configured one). Archived and locked ones are left out:
        answering an old post there would reopen a thread that was closed (posting
        unarchives it) or override a moderator's lock; those the catch-up would have
        answered are logged."""
        found: dict[int, nextcord.Thread] = {}
        closed: dict[int, nextcord.Thread] = {}
        for forum_id in forum_ids:
            forum = self.bot.get_channel(forum_id)
            if not isinstance(forum, nextcord.ForumChannel):
                continue
            for thread in forum.threads:
                (closed if thread.archived or thread.locked else found)[thread.id] = thread
            try:
                async for thread in forum.archived_threads(limit=100):
                    if created_at(thread) < since:
                        break
                    closed[thread.id] = thread
            except nextcord.HTTPException:
                log.warning("catch_up_archived_failed", forum_id=forum_id, exc_info=True)
        await self._log_closed_skipped(closed, since)
        return list(found.values())

    async def _log_closed_skipped(
        self, closed: dict[int, nextcord.Thread], since: datetime
    ) -> None:
        recent = [tid for tid, thread in closed.items() if created_at(thread) >= since]
        unanswered = [item.thread_id for item in await self.service.plan_catch_up(recent)]
        if unanswered:
            log.info(
                "forum_catch_up_skipped_closed",
                archived=[i for i in unanswered if closed[i].archived],
                locked=[i for i in unanswered if closed[i].locked and not closed[i].archived],
            )

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
