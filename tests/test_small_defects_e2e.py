"""Small defects (issue 12, defect 6) as a member or a deployer sees them: the real bot
against the fake Discord and the fake OpenAI server."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from ibot.db.threads import ThreadStore
from ibot.i18n import t
from ibot.testing.bot_process import BotProcess
from ibot.testing.harness import Harness

pytestmark = pytest.mark.slow


def logged_events(path: Path) -> list[str]:
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line).get("event"))
        except (json.JSONDecodeError, AttributeError):
            continue  # not a log line of the bot (a stray print)
    return events


async def test_a_second_sigterm_starts_no_second_close(tmp_path):
    async with Harness(tmp_path, in_process_bot=False) as harness:
        discord, fake, world = harness.discord, harness.openai, harness.world
        assert world is not None
        fake.latency_s = 1.5  # an answer is being generated when the signals come
        bot = BotProcess(harness, tmp_path)
        await bot.start()
        thread = await discord.create_forum_thread(
            world.forum, author=world.member, title="Question", content="Pourquoi ?"
        )
        await fake.wait_for_requests(1, within_s=20)
        assert bot.process is not None
        bot.process.send_signal(signal.SIGTERM)  # the service manager stops the bot…
        await asyncio.sleep(0.3)
        code = await bot.stop()  # …and, impatient, sends SIGTERM again

        assert code == 0, bot.log_tail()
        events = logged_events(bot.log_path)
        assert events.count("shutdown_draining") == 1, bot.log_tail()
        assert "shutdown_signal_ignored" in events
        [answer] = discord.messages_in(thread)  # the drain still let the answer through
        assert answer.embeds


async def until(predicate, within_s: float = 10.0):
    """Poll `predicate` (captured log events signal nothing to wait on)."""
    async with asyncio.timeout(within_s):
        while not (found := predicate()):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    return found


async def test_a_failing_catch_up_is_logged_and_the_bot_keeps_serving(tmp_path, monkeypatch):
    async def locked(self, thread_ids):  # the catch-up's read of the known threads
        raise OSError("database is locked")

    monkeypatch.setattr(ThreadStore, "states", locked)
    with capture_logs() as logs:
        async with Harness(tmp_path) as harness:
            discord, world = harness.discord, harness.world
            [failure] = await until(
                lambda: [e for e in logs if e["event"] == "forum_catch_up_failed"]
            )
            thread = await discord.create_forum_thread(
                world.forum, author=world.member, title="Après", content="Et ça ?"
            )
            [answer] = await discord.wait_for(lambda: discord.messages_in(thread), timeout=10)

    assert failure["log_level"] == "error" and failure["exc_info"]
    assert answer.embeds


def replied_to(message) -> int | None:
    reference = message.data.get("message_reference") or {}
    return int(reference["message_id"]) if reference.get("message_id") else None


async def test_a_chat_message_while_the_bot_stops_gets_a_short_reply_and_no_model_call(
    tmp_path,
):
    async with Harness(tmp_path) as harness:
        world, discord, fake = harness.world, harness.discord, harness.openai
        fake.latency_s = 1.0  # a forum answer is still being generated at the stop
        thread = await discord.create_forum_thread(
            world.forum, author=world.member, title="Question", content="Pourquoi ?"
        )
        await fake.wait_for_requests(1)

        closing = asyncio.create_task(harness.bot.close())  # what SIGTERM does
        await asyncio.sleep(0)
        assert harness.services.in_flight.draining
        late = await discord.post_message(world.chat, world.moderator, "Et moi ?")
        await discord.flush()
        await closing

        assert len(fake.requests) == 1  # the chat message during the stop cost nothing
        assert discord.messages_in(thread)[0].embeds  # the answer in progress got through
        [restarting] = discord.messages_in(world.chat)
        assert replied_to(restarting) == late.id
        assert restarting.content == t("error.restarting", "fr") and not restarting.embeds


async def test_a_member_posting_again_within_the_chat_cooldown_gets_an_hourglass(tmp_path):
    now = [1000.0]
    async with Harness(tmp_path, settings={"discord": {"chat_cooldown_s": 5}}) as harness:
        world, discord, fake = harness.world, harness.discord, harness.openai
        cog = harness.bot.get_cog("ChatCog")
        cog.cooldowns._clock = lambda: now[0]  # the cooldown's time, not the test's

        await discord.post_message(world.chat, world.member, "Salut !")
        await discord.wait_for(lambda: discord.messages_in(world.chat), timeout=10)
        now[0] += 2
        again = await discord.post_message(world.chat, world.member, "Tu es là ?")
        await discord.wait_for(lambda: discord.message(again).data.get("reactions"), timeout=5)
        other = await discord.post_message(world.chat, world.moderator, "Et moi ?")
        await discord.wait_for(lambda: len(discord.messages_in(world.chat)) >= 2, timeout=10)
        now[0] += 4  # 6 s after the first answer: free again
        later = await discord.post_message(world.chat, world.member, "Et maintenant ?")
        await discord.wait_for(lambda: len(discord.messages_in(world.chat)) >= 3, timeout=10)

        assert len(fake.requests) == 3  # "Tu es là ?" made no model call
        assert [r["emoji"]["name"] for r in discord.message(again).data["reactions"]] == ["⏳"]
        replies = [replied_to(m) for m in discord.messages_in(world.chat)]
        assert again.id not in replies and other.id in replies and later.id in replies
        assert "Tu es là ?" not in str(fake.requests[-1].body["messages"])
