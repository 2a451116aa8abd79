"""Discord sends and model calls do not hold each other back.

A message held by one of Discord's per-route rate limits delays that message only: other
threads and commands are answered meanwhile. A model call that hangs delays its own
answer only: refusals, other threads and other questions go on. Proven by order of
events (the others finish while the held one is still held), never by timing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ibot.testing.harness import Harness

pytestmark = pytest.mark.slow


async def open_thread(harness: Harness, title: str):
    world = harness.world
    assert world is not None
    return await harness.discord.create_forum_thread(
        world.forum, author=world.member, title=title, content="Mon code plante, pourquoi ?"
    )


async def test_a_rate_limited_discord_send_holds_back_nothing_else(tmp_path: Path):
    async with Harness(tmp_path) as harness:
        world, discord, fake = harness.world, harness.discord, harness.openai
        fake.slow(0.3)  # thread A's model call: time to arm Discord's 429 for its answer
        held = await open_thread(harness, "A")
        discord.faults.rate_limit(
            f"/channels/{held.id}/messages", method="POST", times=1, retry_after=3.0
        )

        posts = f"/{held.id}/messages"
        await discord.wait_for(
            lambda: any(r.status == 429 for r in discord.requests_to("POST", posts)), timeout=10
        )

        # While A's answer waits out its 429, B and a question go through.
        other = await open_thread(harness, "B")
        ask = await discord.invoke_slash(
            world.guild, world.member, world.text, "ask-gpt", {"question": "Bonjour ?"}
        )
        await discord.wait_for(lambda: discord.messages_in(other), timeout=10)
        ask_answer = await ask.wait_answer(timeout=10)

        assert ask_answer.embeds and discord.messages_in(other)[0].embeds
        assert discord.messages_in(held) == []  # still waiting out its own 429
        [answer] = await discord.wait_for(lambda: discord.messages_in(held), timeout=10)
        assert answer.embeds


async def test_a_hanging_model_call_holds_back_nothing_else(tmp_path: Path):
    settings = {"openai": {"timeout_s": 30.0}, "discord": {"shutdown_grace_s": 0}}
    async with Harness(tmp_path, settings=settings) as harness:
        world, discord, fake = harness.world, harness.discord, harness.openai
        fake.hang()  # the next model call gets no answer until the server stops
        stuck = await open_thread(harness, "A")
        await fake.wait_for_requests(1)

        refused = await discord.invoke_slash(
            world.guild, world.denied, world.text, "ask-gpt", {"question": "Et moi ?"}
        )
        refusal = await refused.wait_answer(timeout=10)
        other = await open_thread(harness, "B")
        ask = await discord.invoke_slash(
            world.guild, world.member, world.text, "ask-gpt", {"question": "Bonjour ?"}
        )
        ask_answer = await ask.wait_answer(timeout=10)
        await discord.wait_for(lambda: discord.messages_in(other), timeout=10)

        assert refusal.ephemeral and refusal.content
        assert ask_answer.embeds and discord.messages_in(other)[0].embeds
        assert discord.messages_in(stuck) == [] and fake.requests[0].status == 0
