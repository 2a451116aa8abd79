"""The knowledge base's backfill at start: each guild's configured forums synced in the
background once the session is ready (`ibot.services.knowledge_sync`, the same run as
`ibot kb sync`), so solved threads of a forum configured, or solved, while the bot was
down are found by the next question.

Thin: a gateway event in, `KnowledgeSync.sync_guild` through the bot's own client,
one log line out. It never delays an answer: it runs in a task of its own, reading one
thing at a time, and a failure is logged while the bot goes on serving (what the run
stored is kept; the next run goes on from there). It runs on each new session (READY:
at start, and after Discord refused a RESUME, when events were lost), never on a
RESUME, and for a guild that becomes available later; the sync's state makes a run
that finds nothing new cost one listing per forum and no message read. Live changes
(✅, `/solved`, a solved tag, a deleted thread) are cogs/feedback.py's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import nextcord
import structlog
from nextcord.ext import commands

from ibot.app import Services
from ibot.forum_reader import DiscordForumSource, ReadStats, ThreadReader
from ibot.services.thread_records import DEFAULT_ACCEPT_EMOJIS

log = structlog.get_logger("ibot.knowledge_sync")


class KnowledgeSyncCog(commands.Cog):
    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.services = services
        self.sync = services.knowledge_sync()
        self.policy = services.role_policy()
        self.forum_ids = set(services.settings.discord.forum_channel_ids)
        self._session_starting = False
        self._running: set[int] = set()  # guilds whose sync runs now
        self._again: set[int] = set()  # asked for meanwhile: once more after
        self._tasks: set[asyncio.Task[None]] = set()

    @commands.Cog.listener()
    async def on_connect(self) -> None:
        self._session_starting = True  # READY came; its on_ready syncs every guild

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        self._session_starting = False
        self.request(self._forums_by_guild())

    @commands.Cog.listener()
    async def on_close(self) -> None:
        # The bot is stopping: a sync in progress stops here (what it stored is kept,
        # and the next start goes on from there) rather than fail on a closed client.
        for task in list(self._tasks):
            task.cancel()

    @commands.Cog.listener()
    async def on_guild_available(self, guild: nextcord.Guild) -> None:
        self._guild_arrived(guild)

    @commands.Cog.listener()
    async def on_guild_join(self, guild: nextcord.Guild) -> None:
        self._guild_arrived(guild)

    def _guild_arrived(self, guild: nextcord.Guild) -> None:
        if not self._session_starting and guild.id in self._forums_by_guild():
            self.request([guild.id])

    def _forums_by_guild(self) -> dict[int, list[int]]:
        """The configured forums the bot sees, by guild."""
        found: dict[int, list[int]] = {}
        for forum_id in sorted(self.forum_ids):
            forum = self.bot.get_channel(forum_id)
            if isinstance(forum, nextcord.ForumChannel):
                found.setdefault(forum.guild.id, []).append(forum.id)
        return found

    def request(self, guild_ids: Iterable[int]) -> None:
        """Sync these guilds in the background; one whose sync is running is synced
        once more after it."""
        if self.sync is None or self.services.in_flight.draining:
            return
        for guild_id in guild_ids:
            if guild_id in self._running:
                self._again.add(guild_id)
                continue
            self._running.add(guild_id)
            task = asyncio.create_task(self._run(guild_id))
            self._tasks.add(task)  # referenced until done: the loop holds tasks weakly
            task.add_done_callback(self._tasks.discard)

    async def _run(self, guild_id: int) -> None:
        try:
            while True:
                await self._sync_logged(guild_id)
                if guild_id not in self._again:
                    return
                self._again.discard(guild_id)
        finally:
            self._running.discard(guild_id)

    async def _sync_logged(self, guild_id: int) -> None:
        assert self.sync is not None
        forums = self._forums_by_guild().get(guild_id, [])
        if not forums:
            return
        stats = ReadStats()
        source = DiscordForumSource(
            self.bot, ThreadReader(self.bot, self.policy, DEFAULT_ACCEPT_EMOJIS, stats)
        )
        try:
            report = await self.sync.sync_guild(source, guild_id, forums)
        except asyncio.CancelledError:
            log.info("knowledge_sync_stopped", guild_id=guild_id, reason="shutting down")
            raise
        except Exception:
            if self.bot.is_closed():
                log.info("knowledge_sync_stopped", guild_id=guild_id, reason="shutting down")
                return
            log.exception("knowledge_sync_failed", guild_id=guild_id, forum_ids=forums)
            return
        log.info(
            "knowledge_sync",
            guild_id=guild_id,
            pages=report.pages,
            listed=report.listed,
            read=report.read,
            unchanged=report.unchanged,
            added=report.added,
            updated=report.updated,
            kept=report.kept,
            removed=report.removed,
            deleted=report.deleted,
            starter_missing=report.starter_missing,
            messages=stats.messages,
            problems=report.problems + stats.problems,
            duration_s=round(report.duration_s, 3),
        )


def setup(bot: commands.Bot, *, services: Services) -> None:
    bot.add_cog(KnowledgeSyncCog(bot, services))
