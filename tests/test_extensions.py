"""Every extension loads with its services and registers exactly the expected commands."""

from __future__ import annotations

from pathlib import Path

import nextcord

from ibot.app import build_services
from ibot.bot import EXTENSIONS, IBot, bot_intents
from ibot.config import load_settings

EXPECTED_COMMANDS = {"ask-gpt", "summary", "budget", "cost-report", "similar", "solved"}


async def test_every_extension_loads_and_commands_are_named(tmp_path: Path):
    settings = load_settings(None, database_url=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    services = await build_services(settings)
    try:
        bot = IBot(services)
        assert set(bot.extensions) == set(EXTENSIONS)
        names = {command.name for command in bot.get_all_application_commands()}
        assert names == EXPECTED_COMMANDS
        await bot.close()
    finally:
        await services.aclose()


def test_intents_are_the_fewest_needed():
    intents = bot_intents()
    enabled = {name for name, value in intents if value}
    assert enabled == {"guilds", "guild_messages", "message_content"}
    assert not intents.members and not intents.presences
    assert isinstance(intents, nextcord.Intents)
