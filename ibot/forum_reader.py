"""Forum threads read from Discord with nextcord, for `ibot finetune export-threads`,
`ibot kb sync` and the bot's start-up sync of the knowledge base.

What it reads, through the REST API (rate limits are nextcord's HTTP client's: it waits
when a bucket's headers say it is spent, and retries after a 429's `retry_after`):

- the guild's active threads, `GET /guilds/{guild.id}/threads/active` (every channel's:
  callers keep their forums' threads);
- a forum's archived public threads, `GET /channels/{id}/threads/archived/public`,
  newest archived first, page by page with `before` (the last thread's
  archive_timestamp) while `has_more`, `ARCHIVED_PAGE_SIZE` a page. Not nextcord's
  `archived_threads(limit=None)`: nextcord 3.2 asks 50 a page and stops after the first
  full page (it counts a limit of 50 down to 0), so a forum with more than 50 archived
  threads was read only in part;
- a thread's messages (`GET /channels/{id}/messages`, oldest first), who put an accept
  emoji on a message (`GET …/reactions/{emoji}`, only for messages carrying one), and
  the authors' roles (`GET /guilds/{id}/members/{user.id}`, once per author).

Turning what was read into plain records (`ibot.services.thread_records`) is this
module's job; deciding what they mean is the callers'. nextcord is imported inside the
functions, so importing this module stays cheap.

`connected_client` logs in with the bot's token as a plain nextcord client that never
touches the slash commands (a default client would unregister the bot's commands on
connect), with the intents guilds, guild messages and message content.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ibot.services.thread_records import (
    ArchivedPage,
    MessageRecord,
    ThreadRecord,
    ThreadSummary,
    normalize_emoji,
)

if TYPE_CHECKING:
    import nextcord

    from ibot.services.permissions import RolePolicy

# The most threads a page may hold: openapi.json, list_public_archived_threads, `limit`
# from 2 to 100 (nextcord asks 50 unless told).
ARCHIVED_PAGE_SIZE = 100
UNKNOWN_CHANNEL = 10003


class ForumReadError(RuntimeError):
    """A problem the user can fix (no forum configured, not a forum…); one clear line."""


@dataclass
class ReadStats:
    forums: int = 0
    threads: int = 0
    messages: int = 0
    reaction_lookups_failed: int = 0
    members_not_found: int = 0
    problems: list[str] = field(default_factory=list)


def message_text(message: nextcord.Message) -> str:
    """Content plus embed descriptions (the bot's answers are embeds)."""
    parts = [message.content or ""]
    parts += [embed.description for embed in message.embeds if embed.description]
    return "\n\n".join(p.strip() for p in parts if p and p.strip())


class ThreadReader:
    """Reads threads into records; caches members (one fetch per author)."""

    def __init__(
        self,
        client: nextcord.Client,
        policy: RolePolicy,
        accept_emojis: Sequence[str],
        stats: ReadStats,
    ) -> None:
        self.client = client
        self.policy = policy
        self.accept = {normalize_emoji(e) for e in accept_emojis}
        self.stats = stats
        self._moderators: dict[tuple[int, int], bool] = {}

    async def is_moderator(
        self, guild: nextcord.Guild, user: nextcord.User | nextcord.Member
    ) -> bool:
        import nextcord

        from ibot.services.permissions import MemberFacts

        key = (guild.id, user.id)
        if key not in self._moderators:
            member = user if isinstance(user, nextcord.Member) else guild.get_member(user.id)
            if member is None:
                try:
                    member = await guild.fetch_member(user.id)
                except nextcord.NotFound:  # left the server: no roles any more
                    self.stats.members_not_found += 1
            if member is None:
                self._moderators[key] = False
            else:
                permissions = member.guild_permissions
                facts = MemberFacts.of(
                    [role.id for role in member.roles],
                    administrator=permissions.administrator,
                    manage_messages=permissions.manage_messages,
                    is_owner=guild.owner_id == member.id,
                )
                self._moderators[key] = self.policy.is_moderator(facts)
        return self._moderators[key]

    async def author_reactions(self, message: nextcord.Message, author_id: int) -> frozenset[str]:
        """Accept emojis among the reactions that the thread's author put on `message`."""
        import nextcord

        found = set()
        for reaction in message.reactions:
            emoji = normalize_emoji(str(reaction.emoji))
            if emoji not in self.accept or (reaction.me and reaction.count <= 1):
                continue
            try:
                users = [user.id async for user in reaction.users(limit=None)]
            except nextcord.HTTPException as err:
                self.stats.reaction_lookups_failed += 1
                self.stats.problems.append(f"reactions of message {message.id}: {err}")
                continue
            if author_id in users:
                found.add(emoji)
        return frozenset(found)

    async def thread(self, thread: nextcord.Thread, forum: nextcord.ForumChannel) -> ThreadRecord:
        author_id = thread.owner_id or 0
        me = self.client.user.id if self.client.user else 0
        records = []
        async for message in thread.history(limit=None, oldest_first=True):
            self.stats.messages += 1
            author = message.author
            is_us = author.id == me
            is_other_bot = author.bot and not is_us
            records.append(
                MessageRecord(
                    id=message.id,
                    author_id=author.id,
                    author_name=author.name,
                    text=message_text(message),
                    is_us=is_us,
                    is_other_bot=is_other_bot,
                    is_moderator=not author.bot
                    and author.id != author_id
                    and await self.is_moderator(forum.guild, author),
                    author_reactions=await self.author_reactions(message, author_id)
                    if author.id != author_id and not is_other_bot
                    else frozenset(),
                )
            )
        return ThreadRecord(
            id=thread.id,
            guild_id=forum.guild.id,
            forum_id=forum.id,
            forum_name=forum.name,
            title=thread.name,
            author_id=author_id,
            messages=tuple(records),
            tags=tag_names(thread),
            created_at=thread.created_at.isoformat() if thread.created_at else "",
            archived=bool(thread.archived),
        )


def tag_names(thread: nextcord.Thread) -> tuple[str, ...]:
    return tuple(tag.name for tag in getattr(thread, "applied_tags", []) or [])


async def forum_channel(client: nextcord.Client, forum_id: int) -> nextcord.ForumChannel:
    """The forum with this id (from the cache, else fetched); ForumReadError when it
    cannot be read or is not a forum."""
    import nextcord

    forum = client.get_channel(forum_id)
    if forum is None:
        try:
            forum = await client.fetch_channel(forum_id)
        except nextcord.HTTPException as err:
            raise ForumReadError(f"forum {forum_id}: cannot be read ({err})") from None
    if not isinstance(forum, nextcord.ForumChannel):
        raise ForumReadError(f"channel {forum_id} (#{getattr(forum, 'name', '?')}) is not a forum")
    return forum


async def guild_forums(
    client: nextcord.Client, forum_ids: Iterable[int]
) -> tuple[dict[int, list[nextcord.ForumChannel]], list[str]]:
    """The forums by guild; and a line for each id that is not a readable forum."""
    by_guild: dict[int, list[nextcord.ForumChannel]] = {}
    problems = []
    for forum_id in dict.fromkeys(forum_ids):
        try:
            forum = await forum_channel(client, forum_id)
        except ForumReadError as err:
            problems.append(str(err))
            continue
        by_guild.setdefault(forum.guild.id, []).append(forum)
    return by_guild, problems


async def archived_page(
    forum: nextcord.ForumChannel, before: datetime | None, *, limit: int = ARCHIVED_PAGE_SIZE
) -> tuple[list[nextcord.Thread], bool]:
    """One page of the forum's archived public threads archived before `before` (None:
    the newest), newest first; and Discord's `has_more`."""
    import nextcord

    state = forum.guild._state
    data = await state.http.get_public_archived_threads(
        forum.id, before=before.isoformat() if before else None, limit=limit
    )
    threads = [nextcord.Thread(guild=forum.guild, state=state, data=d) for d in data["threads"]]
    return threads, bool(data.get("has_more"))


async def archived_threads(forum: nextcord.ForumChannel) -> AsyncIterator[nextcord.Thread]:
    """Every archived public thread of the forum, newest archived first."""
    before: datetime | None = None
    while True:
        threads, has_more = await archived_page(forum, before)
        for thread in threads:
            yield thread
        if not has_more or not threads:
            return
        oldest = min(archive_time(t) for t in threads)
        if before is not None and oldest >= before:
            return  # a page that does not move back would be asked for again and again
        before = oldest


async def forum_threads(
    client: nextcord.Client, forum_id: int, limit: int | None = None
) -> tuple[nextcord.ForumChannel, list[nextcord.Thread]]:
    """The forum and its threads, active and archived (the newest `limit`), oldest first."""
    forum = await forum_channel(client, forum_id)
    threads = {t.id: t for t in await forum.guild.active_threads() if t.parent_id == forum.id}
    async for thread in archived_threads(forum):
        threads.setdefault(thread.id, thread)
    chosen = sorted(threads.values(), key=lambda t: t.id, reverse=True)[:limit]
    return forum, sorted(chosen, key=lambda t: t.id)


def archive_time(thread: nextcord.Thread) -> datetime:
    stamp = thread.archive_timestamp
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def summary(thread: nextcord.Thread) -> ThreadSummary:
    return ThreadSummary(
        id=thread.id,
        guild_id=thread.guild.id,
        forum_id=thread.parent_id or 0,
        last_message_id=thread.last_message_id,
        tags=tag_names(thread),
        archived=bool(thread.archived),
        archive_timestamp=archive_time(thread),
    )


class DiscordForumSource:
    """The knowledge-base sync's `ForumSource`, read through a nextcord client (the
    bot's own, or `connected_client`'s). Listed threads are kept until read."""

    def __init__(self, client: nextcord.Client, reader: ThreadReader) -> None:
        self.client = client
        self.reader = reader
        self._listed: dict[int, nextcord.Thread] = {}

    def _open(self) -> None:
        """ForumReadError once the client is closed: nextcord would open a new HTTP
        session for the next request, one that nothing closes (the bot is stopping)."""
        if self.client.is_closed():
            raise ForumReadError("the Discord client is closed")

    async def active_threads(self, guild_id: int) -> list[ThreadSummary]:
        self._open()
        guild = self.client.get_guild(guild_id)
        if guild is None:
            raise ForumReadError(f"guild {guild_id}: not among the bot's guilds")
        threads = await guild.active_threads()
        self._listed.update({t.id: t for t in threads})
        return [summary(t) for t in threads]

    async def archived_page(self, forum_id: int, before: datetime | None) -> ArchivedPage:
        self._open()
        forum = await forum_channel(self.client, forum_id)
        threads, has_more = await archived_page(forum, before)
        self._listed.update({t.id: t for t in threads})
        return ArchivedPage(tuple(summary(t) for t in threads), has_more)

    async def read(self, thread: ThreadSummary) -> ThreadRecord | None:
        import nextcord

        self._open()
        listed = self._listed.pop(thread.id, None)
        try:
            if listed is None:
                channel = await self.client.fetch_channel(thread.id)
                if not isinstance(channel, nextcord.Thread):
                    return None
                listed = channel
            forum = await forum_channel(self.client, thread.forum_id)
            return await self.reader.thread(listed, forum)
        except nextcord.NotFound as err:
            if err.code == UNKNOWN_CHANNEL:
                return None  # deleted between the listing and now
            raise

    async def exists(self, thread_id: int) -> bool:
        import nextcord

        self._open()
        try:
            await self.client.fetch_channel(thread_id)
        except nextcord.NotFound as err:
            return err.code != UNKNOWN_CHANNEL
        except nextcord.Forbidden:
            return True  # there, out of the bot's sight now: not a deletion
        return True


def read_intents() -> nextcord.Intents:
    import nextcord

    intents = nextcord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.message_content = True
    return intents


@contextlib.asynccontextmanager
async def connected_client(
    token: str, *, ready_timeout_s: float = 60.0, **options: Any
) -> AsyncIterator[nextcord.Client]:
    """A nextcord client logged in and ready (guilds cached), closed on exit."""
    import nextcord

    class ReadOnlyClient(nextcord.Client):
        """Never syncs slash commands: a client without them would delete the bot's."""

        async def on_connect(self) -> None:
            return None

        async def on_guild_available(self, guild: nextcord.Guild) -> None:
            return None

    client = ReadOnlyClient(
        intents=read_intents(),
        rollout_associate_known=False,
        rollout_delete_unknown=False,
        rollout_register_new=False,
        rollout_update_known=False,
        **options,
    )
    task = asyncio.create_task(client.start(token))
    ready = asyncio.create_task(client.wait_until_ready())
    try:
        done, _ = await asyncio.wait(
            {ready, task}, timeout=ready_timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            task.result()  # start() failed: its error (bad token, intents) surfaces here
            raise ForumReadError("the Discord connection closed before it was ready")
        if ready not in done:
            raise ForumReadError(f"Discord was not ready after {ready_timeout_s:g} s")
        yield client
    finally:
        ready.cancel()
        await client.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 10)
