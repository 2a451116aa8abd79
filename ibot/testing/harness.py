"""The real bot against the fake Discord and the fake OpenAI server, on loopback.

Used by the end-to-end tests and by `ibot demo`: it builds a small guild (roles for an
admin, a moderator, a denied member; a forum with tags, a text channel, a chat channel),
starts the actual `IBot` with services built by `build_services`, and can stop and
restart the bot on the same database (restarts, catch-up, crash recovery).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nextcord.http import Route

from ibot.app import Services, build_services
from ibot.bot import IBot
from ibot.config import Settings, load_settings
from ibot.testing.fake_discord import (
    ADMINISTRATOR,
    MANAGE_MESSAGES,
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeMember,
    FakeRole,
)
from ibot.testing.fake_openai import FakeOpenAI

DISCORD_TOKEN = "fake-discord-token"
OPENAI_KEY = "sk-fake-harness-key-0123456789abcdef"


@dataclass
class World:
    guild: FakeGuild
    admin_role: FakeRole
    mod_role: FakeRole
    denied_role: FakeRole
    admin: FakeMember
    moderator: FakeMember
    member: FakeMember
    denied: FakeMember
    forum: FakeChannel
    text: FakeChannel
    chat: FakeChannel


def build_world(fake: FakeDiscord) -> World:
    guild = fake.create_guild("Entraide Python")
    admin_role = fake.create_role(guild, "Admin", permissions=ADMINISTRATOR)
    mod_role = fake.create_role(guild, "Modo")
    denied_role = fake.create_role(guild, "Sans IA")
    helper_role = fake.create_role(guild, "Helper", permissions=MANAGE_MESSAGES)
    del helper_role  # exists so that Manage Messages without a moderator role is tested
    return World(
        guild=guild,
        admin_role=admin_role,
        mod_role=mod_role,
        denied_role=denied_role,
        admin=fake.create_member(guild, "admin", roles=[admin_role]),
        moderator=fake.create_member(guild, "modo", roles=[mod_role]),
        member=fake.create_member(guild, "alice"),
        denied=fake.create_member(guild, "mallory", roles=[denied_role]),
        forum=fake.create_forum(
            guild, "aide-python", tags=["python", "débutant", "no-bot", "Résolu"]
        ),
        text=fake.create_text_channel(guild, "général"),
        chat=fake.create_text_channel(guild, "discussion-ia"),
    )


def world_settings(world: World, overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` with the discord and roles sections pointed at `world` (its guild,
    forum, chat channel and roles; no /ask-gpt or chat cooldown); their own keys win."""
    settings = dict(overrides)
    settings["discord"] = {
        "guild_ids": [world.guild.id],
        "forum_channel_ids": [world.forum.id],
        "gpt_channel_ids": [world.chat.id],
        "ask_cooldown_s": 0,
        "chat_cooldown_s": 0,
        **overrides.get("discord", {}),
    }
    settings["roles"] = {
        "denied_ask": [world.denied_role.id],
        "moderators": [world.mod_role.id],
        "admins": [world.admin_role.id],
        **overrides.get("roles", {}),
    }
    return settings


class Harness:
    def __init__(
        self,
        workdir: Path,
        *,
        settings: dict[str, Any] | None = None,
        openai: dict[str, Any] | None = None,
        discord: dict[str, Any] | None = None,
        in_process_bot: bool = True,
    ) -> None:
        """`in_process_bot=False`: only the fakes and the world start (the bot runs as a
        process of its own: see ibot/testing/bot_process.py)."""
        self.workdir = workdir
        self.in_process_bot = in_process_bot
        self.overrides = settings or {}
        self.discord = FakeDiscord(token=DISCORD_TOKEN, **(discord or {}))
        self.openai = FakeOpenAI(api_key=OPENAI_KEY, **(openai or {}))
        self.world: World | None = None
        self.bot: IBot | None = None
        self.services: Services | None = None
        self._task: asyncio.Task[None] | None = None
        self._original_base = Route.BASE

    async def __aenter__(self) -> Harness:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        await self.discord.start()
        await self.openai.start()
        self.world = build_world(self.discord)
        if self.in_process_bot:
            await self.start_bot()

    def settings(self) -> Settings:
        assert self.world is not None
        overrides = world_settings(self.world, self.overrides)
        discord, roles = overrides.pop("discord"), overrides.pop("roles")
        return load_settings(
            None,
            discord_token=DISCORD_TOKEN,
            openai_api_key=OPENAI_KEY,
            openai_base_url=self.openai.base_url,
            database_url=f"sqlite+aiosqlite:///{self.workdir / 'ibot.db'}",
            discord=discord,
            roles=roles,
            **overrides,
        )

    async def start_bot(self) -> IBot:
        """Build services and start a new bot process-equivalent on the same database."""
        self.services = await build_services(self.settings())
        await self.services.gateway.close_interrupted()
        Route.BASE = self.discord.base_url
        bot = IBot(self.services, guild_ready_timeout=0.05)
        self.bot = bot
        self._task = asyncio.create_task(bot.start(DISCORD_TOKEN))
        ready = asyncio.create_task(bot.wait_until_ready())
        done, _ = await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            ready.cancel()
            self._task.result()  # start() failed: raise its error here
        assert self.world is not None
        guild = self.world.guild
        # Every command the bot defines (a test may invoke any of them at once), not a
        # list kept by hand that misses the newest cogs' commands.
        wanted = {command.name for command in bot.get_all_application_commands()}
        await self.discord.wait_for(
            lambda: {c["name"] for c in self.discord.registered_commands(guild)} >= wanted,
            timeout=10,
        )
        return bot

    async def stop_bot(self) -> None:
        if self.bot is not None:
            await self.bot.close()
        if self._task is not None:
            # The bot's own errors at shutdown were logged by it; stopping must go on.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 10)
        if self.services is not None:
            await self.services.aclose()
        self.bot = self._task = self.services = None

    async def restart_bot(self) -> IBot:
        await self.stop_bot()
        return await self.start_bot()

    async def stop(self) -> None:
        await self.stop_bot()
        Route.BASE = self._original_base
        await self.openai.stop()
        await self.discord.stop()
