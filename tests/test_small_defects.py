"""Small defects (issue 12, defect 6): each test shows one of them stays fixed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from ibot.bot import CloseOnSignal, run_bot
from ibot.config import ConfigError, fail_on_config_error, load_settings


@pytest.fixture(autouse=True)
def _no_repository_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No config/ibot.toml or .env of the checkout is read."""
    monkeypatch.chdir(tmp_path)


async def test_run_bot_without_a_token_is_a_config_error_not_an_assert(capsys):
    settings = load_settings(None)
    assert settings.discord_token is None

    with pytest.raises(ConfigError) as caught:
        await run_bot(settings)

    assert caught.value.key == "discord_token" and "BOT_TOKEN" in str(caught.value)
    with pytest.raises(SystemExit) as exited:  # what the CLI does with a ConfigError
        fail_on_config_error(caught.value)
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("config error: discord_token: ")


class SlowBot:
    def __init__(self) -> None:
        self.closes = 0
        self.release = asyncio.Event()

    async def close(self) -> None:
        self.closes += 1
        await self.release.wait()  # draining the answers in progress


async def test_a_second_signal_while_closing_starts_no_second_close():
    bot = SlowBot()
    handler = CloseOnSignal(bot)  # type: ignore[arg-type]

    with capture_logs() as logs:
        handler()
        first = handler.task
        await asyncio.sleep(0)
        handler()  # SIGTERM again while the first close drains
        await asyncio.sleep(0)

    assert first is not None and handler.task is first  # kept: cannot be collected mid-close
    assert bot.closes == 1
    assert [e["event"] for e in logs] == ["shutdown_signal_ignored"]
    bot.release.set()
    await first


def test_chat_cooldown_setting_defaults_to_a_few_seconds_and_is_never_negative():
    assert load_settings(None).discord.chat_cooldown_s == 5
    assert load_settings(None, discord={"chat_cooldown_s": 0}).discord.chat_cooldown_s == 0
    with pytest.raises(ConfigError, match=r"discord\.chat_cooldown_s"):
        load_settings(None, discord={"chat_cooldown_s": -1})
