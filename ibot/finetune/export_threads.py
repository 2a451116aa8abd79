"""Solved forum threads exported from Discord (`ibot finetune export-threads`).

Two halves. `build_export` turns thread records (plain data) into the export and holds
every rule about what counts as an answer; it is tested without Discord.
`export_threads` connects with the bot's token, reads the configured forums' threads
(active and archived) and their messages, and hands the records to `build_export`.

**The answer of a thread** ("accepted or moderator answer"), first rule that applies:

1. ``accepted``: the first reply that the thread's author marked with an accept emoji
   (✅, ✔️ or ☑️ by default, ``--accept-emoji``), whoever wrote it, the bot included;
2. ``moderator``: the first reply by a moderator, someone other than the thread's author
   with a role of ``roles.moderators`` or ``roles.admins``, the Manage Messages or
   Administrator permission, or the server's ownership (the bot's own rule for
   moderators);
3. ``bot``: the bot's first reply, but only when no human other than the author replied
   (when people discussed without marking an answer, the bot's answer is not known to
   be the solution);

otherwise the thread is unsolved (``"answer": null``). Replies with no text (an image
alone) are never answers. An answer continues over the same author's directly following
messages (long answers are split over several), joined by a blank line. The text of a
message is its content followed by its embeds' descriptions (the bot answers in embeds;
their titles and footers, cost included, are left out). Other bots' messages are
ignored.

**Export schema** (version 1), UTF-8 JSON, snowflakes as strings::

    {
      "format": "ibot-forum-threads",
      "version": 1,
      "exported_at": "2025-01-31T12:00:00+00:00",
      "accept_emojis": ["✅", "✔️", "☑️"],
      "threads": [
        {
          "id": "…", "guild_id": "…", "forum_id": "…", "forum_name": "aide-python",
          "title": "Erreur pip", "tags": ["python"], "author_id": "…",
          "created_at": "…", "archived": true,
          "question": "the starter message's text ('' when it was deleted)",
          "replies": 3,
          "answer": {"kind": "accepted" | "moderator" | "bot", "message_id": "…",
                     "author_id": "…", "author_name": "…", "text": "…"} | null
        }
      ]
    }

Reading uses a plain nextcord client with the bot's token that never touches the slash
commands (a default client would unregister the bot's commands on connect), the intents
guilds, guild messages and message content, and REST for history, members and reactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ibot.finetune.runtime import progress

if TYPE_CHECKING:
    import nextcord

    from ibot.config import Settings
    from ibot.services.permissions import RolePolicy

EXPORT_FORMAT = "ibot-forum-threads"
EXPORT_VERSION = 1
DEFAULT_ACCEPT_EMOJIS: tuple[str, ...] = ("✅", "✔️", "☑️")


class AnswerKind(StrEnum):
    ACCEPTED = "accepted"
    MODERATOR = "moderator"
    BOT = "bot"


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One message of a thread, as far as choosing the answer needs it."""

    id: int
    author_id: int
    author_name: str
    text: str
    is_us: bool = False  # written by this bot
    is_other_bot: bool = False  # written by another bot account (ignored)
    is_moderator: bool = False
    author_reactions: frozenset[str] = frozenset()  # emojis the thread's author put on it


@dataclass(frozen=True, slots=True)
class ThreadRecord:
    id: int
    guild_id: int
    forum_id: int
    forum_name: str
    title: str
    author_id: int
    messages: tuple[MessageRecord, ...]  # oldest first; the starter has the thread's id
    tags: tuple[str, ...] = ()
    created_at: str = ""
    archived: bool = False


@dataclass(frozen=True, slots=True)
class Answer:
    kind: AnswerKind
    message: MessageRecord
    text: str


def normalize_emoji(emoji: str) -> str:
    """✔️ and ✔ are the same mark (the variation selector is presentation only)."""
    return emoji.replace("\ufe0f", "")


def _replies(thread: ThreadRecord) -> list[MessageRecord]:
    return [
        m for m in thread.messages if m.id != thread.id and not m.is_other_bot and m.text.strip()
    ]


def choose_answer(
    thread: ThreadRecord, accept_emojis: Iterable[str] = DEFAULT_ACCEPT_EMOJIS
) -> Answer | None:
    """The thread's answer by the module's rules, or None when it is unsolved."""
    accept = {normalize_emoji(e) for e in accept_emojis}
    replies = _replies(thread)
    others = [m for m in replies if m.author_id != thread.author_id]
    chosen: tuple[AnswerKind, MessageRecord] | None = None
    for message in others:
        if {normalize_emoji(e) for e in message.author_reactions} & accept:
            chosen = (AnswerKind.ACCEPTED, message)
            break
    if chosen is None:
        for message in others:
            if message.is_moderator and not message.is_us:
                chosen = (AnswerKind.MODERATOR, message)
                break
    if chosen is None and not any(not m.is_us for m in others):
        ours = [m for m in others if m.is_us]
        if ours:
            chosen = (AnswerKind.BOT, ours[0])
    if chosen is None:
        return None
    kind, message = chosen
    return Answer(kind, message, _answer_text(thread, message))


def _answer_text(thread: ThreadRecord, first: MessageRecord) -> str:
    """The chosen message plus the same author's directly following messages."""
    messages = [m for m in thread.messages if m.id != thread.id and not m.is_other_bot]
    start = next(i for i, m in enumerate(messages) if m.id == first.id)
    parts = []
    for message in messages[start:]:
        if message.author_id != first.author_id:
            break
        if message.text.strip():
            parts.append(message.text.strip())
    return "\n\n".join(parts)


def thread_entry(thread: ThreadRecord, answer: Answer | None) -> dict[str, Any]:
    starter = next((m for m in thread.messages if m.id == thread.id), None)
    return {
        "id": str(thread.id),
        "guild_id": str(thread.guild_id),
        "forum_id": str(thread.forum_id),
        "forum_name": thread.forum_name,
        "title": thread.title,
        "tags": list(thread.tags),
        "author_id": str(thread.author_id),
        "created_at": thread.created_at,
        "archived": thread.archived,
        "question": starter.text.strip() if starter else "",
        "replies": len(_replies(thread)),
        "answer": None
        if answer is None
        else {
            "kind": answer.kind.value,
            "message_id": str(answer.message.id),
            "author_id": str(answer.message.author_id),
            "author_name": answer.message.author_name,
            "text": answer.text,
        },
    }


def build_export(
    threads: Iterable[ThreadRecord],
    *,
    exported_at: datetime,
    accept_emojis: Sequence[str] = DEFAULT_ACCEPT_EMOJIS,
) -> dict[str, Any]:
    """The export document for these threads (oldest thread first)."""
    entries = [
        thread_entry(thread, choose_answer(thread, accept_emojis))
        for thread in sorted(threads, key=lambda t: t.id)
    ]
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": exported_at.isoformat(),
        "accept_emojis": list(accept_emojis),
        "threads": entries,
    }


def export_summary(export: dict[str, Any]) -> dict[str, int]:
    """Counts by answer kind plus unsolved threads, for the command's output."""
    counts: Counter[str] = Counter()
    for entry in export["threads"]:
        counts[entry["answer"]["kind"] if entry["answer"] else "unsolved"] += 1
    return {"threads": len(export["threads"]), **counts}


def write_export(path: Path, export: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(export, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)  # a crash never leaves half an export behind


# ---- the Discord half ------------------------------------------------------------------


class ExportError(RuntimeError):
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


class _Reader:
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
        tags = tuple(tag.name for tag in getattr(thread, "applied_tags", []) or [])
        return ThreadRecord(
            id=thread.id,
            guild_id=forum.guild.id,
            forum_id=forum.id,
            forum_name=forum.name,
            title=thread.name,
            author_id=author_id,
            messages=tuple(records),
            tags=tags,
            created_at=thread.created_at.isoformat() if thread.created_at else "",
            archived=bool(thread.archived),
        )


async def _forum_threads(
    client: nextcord.Client, forum_id: int, limit: int | None
) -> tuple[nextcord.ForumChannel, list[nextcord.Thread]]:
    import nextcord

    forum = client.get_channel(forum_id)
    if forum is None:
        try:
            forum = await client.fetch_channel(forum_id)
        except nextcord.HTTPException as err:
            raise ExportError(f"forum {forum_id}: cannot be read ({err})") from None
    if not isinstance(forum, nextcord.ForumChannel):
        raise ExportError(f"channel {forum_id} (#{getattr(forum, 'name', '?')}) is not a forum")
    threads = {t.id: t for t in await forum.guild.active_threads() if t.parent_id == forum.id}
    async for thread in forum.archived_threads(limit=None):
        threads.setdefault(thread.id, thread)
    chosen = sorted(threads.values(), key=lambda t: t.id, reverse=True)[:limit]
    return forum, sorted(chosen, key=lambda t: t.id)


async def read_threads(
    client: nextcord.Client,
    forum_ids: Sequence[int],
    *,
    policy: RolePolicy,
    accept_emojis: Sequence[str] = DEFAULT_ACCEPT_EMOJIS,
    limit: int | None = None,
    show_progress: bool = True,
) -> tuple[list[ThreadRecord], ReadStats]:
    """Records of the forums' threads (the newest `limit` per forum), through `client`."""
    stats = ReadStats()
    reader = _Reader(client, policy, accept_emojis, stats)
    records = []
    for forum_id in forum_ids:
        forum, threads = await _forum_threads(client, forum_id, limit)
        stats.forums += 1
        for thread in progress(
            threads, desc=f"#{forum.name}", enabled=show_progress, unit="thread"
        ):
            records.append(await reader.thread(thread, forum))
            stats.threads += 1
    return records, stats


def export_intents() -> nextcord.Intents:
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
        intents=export_intents(),
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
            raise ExportError("the Discord connection closed before it was ready")
        if ready not in done:
            raise ExportError(f"Discord was not ready after {ready_timeout_s:g} s")
        yield client
    finally:
        ready.cancel()
        await client.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 10)


async def export_threads(
    settings: Settings,
    out: Path,
    *,
    forum_ids: Sequence[int] | None = None,
    accept_emojis: Sequence[str] = DEFAULT_ACCEPT_EMOJIS,
    limit: int | None = None,
    show_progress: bool = True,
    client_options: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], ReadStats]:
    """Read the forums with the bot's token and write the export to `out`."""
    from ibot.services.permissions import RolePolicy

    if settings.discord_token is None:
        raise ExportError("no Discord token configured (BOT_TOKEN)")
    forums = list(forum_ids or settings.discord.forum_channel_ids)
    if not forums:
        raise ExportError("no forum to read: configure discord.forum_channel_ids or pass --forum")
    roles = settings.roles
    policy = RolePolicy(moderators=frozenset(roles.moderators), admins=frozenset(roles.admins))
    async with connected_client(
        settings.discord_token.get_secret_value(), **(client_options or {})
    ) as client:
        records, stats = await read_threads(
            client,
            forums,
            policy=policy,
            accept_emojis=accept_emojis,
            limit=limit,
            show_progress=show_progress,
        )
    export = build_export(records, exported_at=datetime.now(UTC), accept_emojis=accept_emojis)
    write_export(out, export)
    return export, stats
