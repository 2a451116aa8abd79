"""Error replies of /ask-gpt and /summary stay private even when the question was public.

Both commands defer first (`private=False`: a public "thinking…" message). Discord's
first follow-up after such a deferral *edits* that loading message and keeps its
ephemerality, whatever flags it asks for (receiving-and-responding.mdx, "Create
Followup Message"). An error meant for the asker alone must therefore not be that
first follow-up: the bot deletes the public placeholder, then sends a new, ephemeral
message. End to end: real nextcord against the fake Discord, which keeps that rule.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ibot.i18n import t
from ibot.testing.fake_discord import FakeDiscord
from ibot.testing.fake_discord.model import StoredMessage
from ibot.testing.harness import Harness

pytestmark = pytest.mark.slow


@pytest.fixture
async def harness(tmp_path: Path):
    async with Harness(tmp_path) as running:
        yield running


def ever_public_with(discord: FakeDiscord, text: str) -> list[StoredMessage]:
    """Bot messages, deleted ones included, that were public and at some point held `text`."""
    return [
        m
        for m in discord.sent_by_bot()
        if not m.ephemeral
        and (text in m.content or any(text in (e.get("content") or "") for e in m.edits))
    ]


async def test_failed_public_ask_tells_only_the_asker(harness):
    world, discord, openai = harness.world, harness.discord, harness.openai
    openai.insufficient_quota(times=5)  # never retried: the call fails at once
    expected = t("error.insufficient_quota", "fr")

    handle = await discord.invoke_slash(
        world.guild,
        world.member,
        world.text,
        "ask-gpt",
        {"question": "Bonjour ?", "private": False},
    )
    reply = await handle.wait_answer(timeout=10)
    await discord.flush()

    assert handle.deferred and not handle.callbacks[0].get("data", {}).get("flags")
    assert reply.content == expected
    assert reply.ephemeral, "the error went to the whole channel"
    assert not reply.deleted
    assert discord.messages_in(world.text) == []  # no error, no leftover "thinking…"
    assert ever_public_with(discord, expected) == []


async def test_public_summary_of_an_empty_channel_tells_only_the_moderator(harness):
    world, discord = harness.world, harness.discord
    expected = t("summary.too_few_messages", "fr")

    handle = await discord.invoke_slash(
        world.guild, world.moderator, world.text, "summary", {"private": False}
    )
    reply = await handle.wait_answer(timeout=10)
    await discord.flush()

    assert handle.deferred
    assert reply.content == expected
    assert reply.ephemeral, "the error went to the whole channel"
    assert discord.messages_in(world.text) == []
    assert ever_public_with(discord, expected) == []
    assert not [r for r in harness.openai.requests if r.served]


async def test_successful_public_ask_is_still_posted_for_everyone(harness):
    world, discord, openai = harness.world, harness.discord, harness.openai
    openai.script("Bonjour à toi aussi !")

    handle = await discord.invoke_slash(
        world.guild,
        world.member,
        world.text,
        "ask-gpt",
        {"question": "Bonjour ?", "private": False},
    )
    answer = await handle.wait_answer(timeout=10)
    await discord.flush()

    assert not answer.ephemeral and not answer.deleted
    assert answer.embeds[0]["description"].startswith("Bonjour à toi aussi")
    assert discord.messages_in(world.text) == [answer]
    assert answer.id == handle.original.id  # it filled the "thinking…" message


async def test_successful_private_ask_stays_private(harness):
    world, discord, openai = harness.world, harness.discord, harness.openai
    openai.script("Réponse privée.")

    handle = await discord.invoke_slash(
        world.guild,
        world.member,
        world.text,
        "ask-gpt",
        {"question": "Bonjour ?", "private": True},
    )
    answer = await handle.wait_answer(timeout=10)
    await discord.flush()

    assert answer.ephemeral and answer.embeds
    assert discord.messages_in(world.text) == []


async def test_failed_private_ask_is_private_without_deleting_anything(harness):
    world, discord, openai = harness.world, harness.discord, harness.openai
    openai.insufficient_quota(times=5)

    handle = await discord.invoke_slash(
        world.guild,
        world.member,
        world.text,
        "ask-gpt",
        {"question": "Bonjour ?", "private": True},
    )
    reply = await handle.wait_answer(timeout=10)
    await discord.flush()

    assert reply.ephemeral and reply.content == t("error.insufficient_quota", "fr")
    assert reply.id == handle.original.id  # the private deferral was simply filled
    assert not discord.requests_to("DELETE", "/messages/@original")
