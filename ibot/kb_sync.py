"""`ibot kb sync`: the knowledge base brought in step with the configured forums, from
the command line (the bot does the same at start: cogs/knowledge_sync.py).

It connects as `ibot finetune export-threads` does (ibot/forum_reader.py: a client that
never touches the slash commands), groups `discord.forum_channel_ids` by guild (a
forum is only ever synced into its own guild), and runs
`ibot.services.knowledge_sync.KnowledgeSync` for each guild. A setting that makes the
sync impossible is a `SyncSetupError` (one line; the command exits 2); a run that stops
half-way (Discord down, Ctrl-C) keeps what it stored and the next one goes on from there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ibot.config import Settings
    from ibot.services.knowledge_sync import SyncReport


class SyncSetupError(RuntimeError):
    """The settings (or what Discord says of them) make the sync impossible; one line."""


@dataclass
class SyncOutcome:
    reports: list[SyncReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # forums that could not be read…
    messages: int = 0  # messages read, all guilds together


def check_settings(settings: Settings) -> None:
    """SyncSetupError when the settings cannot give a sync (token, switch, forums)."""
    if settings.discord_token is None:
        raise SyncSetupError("no Discord token configured (BOT_TOKEN)")
    if not settings.knowledge.enabled:
        raise SyncSetupError("the knowledge base is off: set knowledge.enabled = true")
    if not settings.discord.forum_channel_ids:
        raise SyncSetupError(
            "no forum to sync: configure discord.forum_channel_ids (FORUM_CHANNEL_IDS)"
        )


async def sync_knowledge(
    settings: Settings,
    *,
    guild_id: int | None = None,
    full: bool = False,
    client_options: dict[str, Any] | None = None,
) -> SyncOutcome:
    """Sync every guild of the configured forums (only `guild_id`'s when given)."""
    import nextcord

    from ibot.db.engine import create_engine, make_sessionmaker
    from ibot.db.feedback import FeedbackStore
    from ibot.db.knowledge_sync import SyncStateStore
    from ibot.db.migrate import upgrade
    from ibot.forum_reader import (
        DiscordForumSource,
        ReadStats,
        ThreadReader,
        connected_client,
        guild_forums,
    )
    from ibot.services.feedback import FeedbackService
    from ibot.services.knowledge import KnowledgeBase
    from ibot.services.knowledge_sync import KnowledgeSync
    from ibot.services.permissions import RolePolicy
    from ibot.services.solved import SolvedService
    from ibot.services.thread_records import DEFAULT_ACCEPT_EMOJIS

    check_settings(settings)
    assert settings.discord_token is not None
    if settings.discord.api_base_url:
        nextcord.http.Route.BASE = settings.discord.api_base_url
    roles = settings.roles
    policy = RolePolicy(moderators=frozenset(roles.moderators), admins=frozenset(roles.admins))
    await upgrade(settings.database_url)
    engine = create_engine(settings.database_url)
    outcome = SyncOutcome()
    try:
        sessionmaker = make_sessionmaker(engine)
        knowledge = KnowledgeBase(sessionmaker, min_score=settings.knowledge.min_score)
        solved = SolvedService(FeedbackService(FeedbackStore(sessionmaker)), knowledge, policy)
        sync = KnowledgeSync(
            knowledge,
            SyncStateStore(sessionmaker),
            solved,
            sessionmaker,
            solved_tags=settings.knowledge.solved_tags,
        )
        token = settings.discord_token.get_secret_value()
        async with connected_client(token, **(client_options or {})) as client:
            by_guild, outcome.problems = await guild_forums(
                client, settings.discord.forum_channel_ids
            )
            if guild_id is not None:
                by_guild = {g: forums for g, forums in by_guild.items() if g == guild_id}
                if not by_guild:
                    raise SyncSetupError(
                        f"no configured forum is in guild {guild_id} (discord.forum_channel_ids)"
                    )
            if not by_guild:
                unread = "; ".join(outcome.problems)
                raise SyncSetupError(f"none of the configured forums can be read: {unread}")
            stats = ReadStats()
            source = DiscordForumSource(
                client, ThreadReader(client, policy, DEFAULT_ACCEPT_EMOJIS, stats)
            )
            for guild, forums in sorted(by_guild.items()):
                outcome.reports.append(
                    await sync.sync_guild(source, guild, [f.id for f in forums], full=full)
                )
            outcome.messages = stats.messages
            outcome.problems += stats.problems
    finally:
        await engine.dispose()
    return outcome


def render_report(report: SyncReport) -> str:
    """A guild's run, a few lines for a terminal."""
    lines = [
        f"guild {report.guild_id}: {report.forums} forum(s), {report.pages} page(s) listed, "
        f"{report.listed} thread(s)",
        f"  read {report.read}, skipped as unchanged {report.unchanged}",
        f"  solved: {report.added} added, {report.updated} updated, {report.kept} kept as "
        f"marked; unsolved {report.unsolved}",
        f"  removed {report.removed} ({report.deleted} deleted on Discord)",
    ]
    if report.starter_missing:
        lines.append(
            f"  starter message deleted: {report.starter_missing} (indexed under the title "
            "alone when answered)"
        )
    if report.resumed:
        lines.append(f"  went on with an interrupted pass in {report.resumed} forum(s)")
    lines += [f"  warning: {problem}" for problem in report.problems]
    lines.append(f"  took {report.duration_s:.2f} s")
    return "\n".join(lines)


def render_table(outcome: SyncOutcome) -> str:
    parts = [render_report(report) for report in outcome.reports]
    parts += [f"warning: {problem}" for problem in outcome.problems]
    return "\n".join(parts)


def render_json(outcome: SyncOutcome) -> str:
    return json.dumps(
        {
            "guilds": [report.as_dict() for report in outcome.reports],
            "messages_read": outcome.messages,
            "problems": outcome.problems,
        },
        ensure_ascii=False,
        indent=2,
    )
