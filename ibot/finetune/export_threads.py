"""Solved forum threads exported from Discord (`ibot finetune export-threads`).

Two halves. `build_export` turns thread records (plain data) into the export and holds
every rule about what counts as an answer; it is tested without Discord.
`export_threads` connects with the bot's token, reads the configured forums' threads
(active and archived) and their messages, and hands the records to `build_export`.

**The answer of a thread** is chosen by the rules of `ibot.services.thread_records`
("accepted or moderator answer": the reply the author marked ✅, else the first
moderator reply, else the bot's when no other human replied; else unsolved, ``"answer":
null``); the knowledge-base sync (`ibot kb sync`) uses the same rules.

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

Reading is `ibot.forum_reader`'s: a plain nextcord client with the bot's token that
never touches the slash commands, every archived page of each forum, REST for history,
members and reactions.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ibot.finetune.runtime import progress
from ibot.forum_reader import (
    ForumReadError,
    ReadStats,
    ThreadReader,
    connected_client,
    forum_threads,
    message_text,
)
from ibot.forum_reader import read_intents as export_intents
from ibot.services.thread_records import (
    DEFAULT_ACCEPT_EMOJIS,
    Answer,
    AnswerKind,
    MessageRecord,
    ThreadRecord,
    choose_answer,
    normalize_emoji,
    replies,
)

if TYPE_CHECKING:
    import nextcord

    from ibot.config import Settings
    from ibot.services.permissions import RolePolicy

# Importable from here as before the reading and the answer rules moved out.
__all__ = [
    "DEFAULT_ACCEPT_EMOJIS",
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "Answer",
    "AnswerKind",
    "ExportError",
    "MessageRecord",
    "ReadStats",
    "ThreadRecord",
    "build_export",
    "choose_answer",
    "connected_client",
    "export_intents",
    "export_summary",
    "export_threads",
    "message_text",
    "normalize_emoji",
    "read_threads",
    "thread_entry",
    "write_export",
]

EXPORT_FORMAT = "ibot-forum-threads"
EXPORT_VERSION = 1


def thread_entry(thread: ThreadRecord, answer: Answer | None) -> dict[str, Any]:
    starter = thread.starter
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
        "replies": len(replies(thread)),
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


# A problem the user can fix (no token, no forum, not a forum…): one clear line.
ExportError = ForumReadError


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
    reader = ThreadReader(client, policy, accept_emojis, stats)
    records = []
    for forum_id in forum_ids:
        forum, threads = await forum_threads(client, forum_id, limit)
        stats.forums += 1
        for thread in progress(
            threads, desc=f"#{forum.name}", enabled=show_progress, unit="thread"
        ):
            records.append(await reader.thread(thread, forum))
            stats.threads += 1
    return records, stats


async def export_threads(
    settings: Settings,
    out: Path,
    *,
    forum_ids: Sequence[int] | None = None,
    accept_emojis: Sequence[str] = DEFAULT_ACCEPT_EMOJIS,
    limit: int | None = None,
    show_progress: bool = True,
    client_options: dict[str, Any] | None = None,
    select: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None,
) -> tuple[dict[str, Any], ReadStats]:
    """Read the forums with the bot's token and write the export to `out`; `select`
    (the --feedback filter) turns the export into the one written, when given."""
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
    if select is not None:
        export = await select(export)
    write_export(out, export)
    return export, stats
