"""Feedback on the bot's answers, end to end: real nextcord against the fake Discord
(buttons clicked as a member would), real database, the knowledge base on."""

from __future__ import annotations

from pathlib import Path

import pytest

from ibot.i18n import t
from ibot.testing.harness import Harness

pytestmark = pytest.mark.slow

UP, DOWN, SOLVED = "ibot:vote:up", "ibot:vote:down", "ibot:solved"
TITLE = "ModuleNotFoundError: No module named requests"
QUESTION = "Mon script affiche ModuleNotFoundError: No module named 'requests', pourquoi ?"
ANSWER = "Il te manque le paquet : lance **python -m pip install requests** dans ton venv."


@pytest.fixture
async def harness(tmp_path: Path):
    async with Harness(tmp_path, settings={"knowledge": {"enabled": True}}) as running:
        yield running


def labels(message) -> dict[str, str]:
    [row] = message.data["components"]
    return {button["custom_id"]: button["label"] for button in row["components"]}


async def forum_answer(harness: Harness):
    world, discord = harness.world, harness.discord
    harness.openai.script(ANSWER)
    thread = await discord.create_forum_thread(
        world.forum, author=world.member, title=TITLE, content=QUESTION
    )
    [answer] = await discord.wait_for(
        lambda: (found := discord.messages_in(thread)) and found, timeout=10
    )
    return thread, answer


async def click(harness: Harness, member, message, custom_id: str):
    """Click and return the private reply the clicker got."""
    handle = await harness.discord.click(member, message, custom_id)
    reply = await handle.wait_answer()
    assert handle.callbacks[0]["type"] == 4 and reply.ephemeral
    return reply


async def counts_shown(harness: Harness, message, up: int, down: int) -> None:
    await harness.discord.wait_for(
        lambda: labels(message)[UP] == f"👍 {up}" and labels(message)[DOWN] == f"👎 {down}",
        timeout=5,
    )


async def test_the_answer_has_the_buttons_and_counts_one_vote_per_member(harness):
    world = harness.world
    _, answer = await forum_answer(harness)
    embeds_before = answer.embeds
    assert labels(answer) == {UP: "👍 0", DOWN: "👎 0", SOLVED: "✅ Résolu"}

    reply = await click(harness, world.moderator, answer, UP)
    assert reply.content == t("feedback.voted_up", "fr")
    await counts_shown(harness, answer, 1, 0)

    again = await click(harness, world.moderator, answer, UP)
    assert again.content == t("feedback.unchanged", "fr")
    assert labels(answer)[UP] == "👍 1"

    changed = await click(harness, world.moderator, answer, DOWN)
    assert changed.content == t("feedback.voted_down", "fr")
    await counts_shown(harness, answer, 0, 1)

    await click(harness, world.admin, answer, UP)
    await counts_shown(harness, answer, 1, 1)
    assert answer.embeds == embeds_before  # only the buttons changed


async def test_someone_who_is_neither_asker_nor_moderator_cannot_mark_it_solved(harness):
    world, knowledge = harness.world, harness.services.knowledge
    stranger = harness.discord.create_member(world.guild, "bob")
    _, answer = await forum_answer(harness)

    reply = await click(harness, stranger, answer, SOLVED)

    assert reply.content == t("solved.refused", "fr")
    assert await knowledge.search("No module named requests", guild_id=world.guild.id) == []


async def test_the_askers_tick_makes_the_thread_searchable(harness):
    world, knowledge = harness.world, harness.services.knowledge
    thread, answer = await forum_answer(harness)

    reply = await click(harness, world.member, answer, SOLVED)

    assert reply.content == t("solved.done_indexed", "fr")
    [hit] = await knowledge.search("No module named requests", guild_id=world.guild.id)
    assert hit.thread_id == thread.id and hit.title == TITLE


async def test_the_buttons_still_work_after_a_restart(harness):
    world, discord = harness.world, harness.discord
    _, answer = await forum_answer(harness)
    await click(harness, world.moderator, answer, UP)
    await counts_shown(harness, answer, 1, 0)

    await harness.restart_bot()  # a new process, same fake Discord and database

    reply = await click(harness, world.admin, answer, UP)
    assert reply.content == t("feedback.voted_up", "fr")
    await counts_shown(harness, answer, 2, 0)
    again = await click(harness, world.moderator, answer, UP)  # its vote was kept
    assert again.content == t("feedback.unchanged", "fr")
    solved = await click(harness, world.member, answer, SOLVED)
    assert solved.content == t("solved.done_indexed", "fr")
    assert discord.messages_in(discord.message(answer.id).channel_id) == [answer]


async def test_ask_gpt_answer_has_the_buttons_and_the_tick_only_records_solved(harness):
    world, discord = harness.world, harness.discord
    harness.openai.script("Utilise `python -m venv .venv`.")
    handle = await discord.invoke_slash(
        world.guild, world.member, world.text, "ask-gpt", {"question": "Créer un venv ?"}
    )
    answer = await handle.wait_answer(timeout=10)
    assert labels(answer)[UP] == "👍 0"

    await click(harness, world.moderator, answer, DOWN)
    await counts_shown(harness, answer, 0, 1)
    reply = await click(harness, world.member, answer, SOLVED)

    assert reply.content == t("solved.done", "fr")


async def test_solved_command_with_a_members_message(harness):
    world, discord, knowledge = harness.world, harness.discord, harness.services.knowledge
    thread, _ = await forum_answer(harness)
    fix = await discord.post_message(
        thread, world.moderator, "C'était l'interpréteur : sélectionne celui du venv dans VS Code."
    )

    link = f"https://discord.com/channels/{world.guild.id}/{thread.id}/{fix.id}"
    handle = await discord.invoke_slash(
        world.guild, world.member, thread, "solved", {"message": link}
    )
    reply = await handle.wait_answer(timeout=10)

    assert reply.ephemeral and reply.content == t("solved.done_indexed", "fr")
    [hit] = await knowledge.search("interpréteur VS Code", guild_id=world.guild.id)
    assert hit.thread_id == thread.id
    stats = await knowledge.stats(world.guild.id)
    assert dict(stats.per_answer_kind) == {"moderator": 1}  # the fix's author is a moderator


async def test_solved_command_defaults_to_the_bots_answer_and_refuses_others(harness):
    world, discord, knowledge = harness.world, harness.discord, harness.services.knowledge
    stranger = discord.create_member(world.guild, "bob")
    thread, _ = await forum_answer(harness)

    refused = await discord.invoke_slash(world.guild, stranger, thread, "solved")
    assert (await refused.wait_answer(timeout=10)).content == t("solved.refused", "fr")
    assert await knowledge.search("No module named requests", guild_id=world.guild.id) == []

    handle = await discord.invoke_slash(world.guild, world.member, thread, "solved")
    reply = await handle.wait_answer(timeout=10)

    assert reply.ephemeral and reply.content == t("solved.done_indexed", "fr")
    [hit] = await knowledge.search("No module named requests", guild_id=world.guild.id)
    assert hit.thread_id == thread.id
    assert dict((await knowledge.stats(world.guild.id)).per_answer_kind) == {"bot": 1}


async def test_solved_command_with_a_message_from_elsewhere_is_refused(harness):
    world, discord = harness.world, harness.discord
    thread, _ = await forum_answer(harness)
    elsewhere = await discord.post_message(world.text, world.member, "ailleurs")

    handle = await discord.invoke_slash(
        world.guild, world.member, thread, "solved", {"message": str(elsewhere.id)}
    )
    reply = await handle.wait_answer(timeout=10)

    assert reply.ephemeral and reply.content == t("solved.bad_message", "fr")


async def test_solved_command_outside_a_forum_thread_says_where_it_works(harness):
    world, discord = harness.world, harness.discord
    handle = await discord.invoke_slash(world.guild, world.member, world.text, "solved")
    reply = await handle.wait_answer(timeout=10)

    assert reply.ephemeral and reply.content == t("solved.not_in_forum", "fr")


async def test_chat_answer_has_the_buttons_too(harness):
    world, discord = harness.world, harness.discord
    harness.openai.script("Bonjour ! Que puis-je faire pour toi ?")
    await discord.post_message(world.chat, world.member, "Salut le bot")
    [answer] = await discord.wait_for(
        lambda: (found := discord.messages_in(world.chat)) and found, timeout=10
    )

    await click(harness, world.moderator, answer, UP)

    await counts_shown(harness, answer, 1, 0)
