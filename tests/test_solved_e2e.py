"""A thread is solved when…, end to end: real nextcord against the fake Discord, real
database, the knowledge base on. A moderator applies the forum's solved tag; a thread is
deleted; knowledge.close_solved closes a solved thread (tag applied, archived)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from ibot.db.feedback import FeedbackStore
from ibot.i18n import t
from ibot.testing.harness import Harness

pytestmark = pytest.mark.slow

SOLVED = "ibot:solved"
TITLE = "ModuleNotFoundError: No module named requests"
QUESTION = "Mon script affiche ModuleNotFoundError: No module named 'requests', pourquoi ?"
ANSWER = "Il te manque le paquet : lance **python -m pip install requests** dans ton venv."
FIX = "C'était l'interpréteur : sélectionne celui du venv dans VS Code."


def knowledge_on(close_solved: bool = False) -> dict[str, object]:
    return {"knowledge": {"enabled": True, "close_solved": close_solved}}


@pytest.fixture
async def harness(tmp_path: Path):
    async with Harness(tmp_path, settings=knowledge_on()) as running:
        yield running


@pytest.fixture
async def closing(tmp_path: Path):
    async with Harness(tmp_path, settings=knowledge_on(close_solved=True)) as running:
        yield running


async def until(predicate, within_s: float = 10.0):
    """Poll `predicate` (the bot's handling of a gateway event sends nothing to wait on)."""
    async with asyncio.timeout(within_s):
        while not (found := predicate()):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    return found


def logged(logs: list[dict], event: str) -> int:
    return sum(1 for entry in logs if entry.get("event") == event)


async def forum_answer(harness: Harness):
    world, discord = harness.world, harness.discord
    harness.openai.script(ANSWER)
    thread = await discord.create_forum_thread(
        world.forum, author=world.member, title=TITLE, content=QUESTION
    )
    [answer] = await discord.wait_for(
        lambda: (found := discord.messages_in(thread)) and found, timeout=10
    )
    # The bot records its answer just after Discord has it: a tag applied in between
    # would find no answer yet (the test's race, not a moderator's).
    assert harness.services is not None
    answers = FeedbackStore(harness.services.sessionmaker)
    async with asyncio.timeout(10):
        while await answers.answer(answer.id) is None:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    return thread, answer


def thread_patches(harness: Harness, thread) -> list:
    return [
        r
        for r in harness.discord.requests_to("PATCH", "/channels/")
        if r.path.endswith(f"/{thread.id}")
    ]


async def test_the_solved_tag_makes_the_thread_searchable_once(harness):
    world, discord, knowledge = harness.world, harness.discord, harness.services.knowledge
    thread, _ = await forum_answer(harness)

    with capture_logs() as logs:
        await discord.tag_thread(thread, ["python", "Résolu"])
        await until(lambda: logged(logs, "solved_by_tag"))
        await discord.tag_thread(thread, ["python"])  # taken off, then applied again
        await discord.tag_thread(thread, ["Résolu"])
        await until(lambda: logged(logs, "solved_tag_already_indexed"))

    [hit] = await knowledge.search("No module named requests", guild_id=world.guild.id)
    assert hit.thread_id == thread.id and hit.title == TITLE
    stats = await knowledge.stats(world.guild.id)
    assert stats.threads == 1 and dict(stats.per_answer_kind) == {"bot": 1}
    assert not discord.channels[thread.id].archived  # close_solved is off
    assert thread_patches(harness, thread) == []


async def test_the_solved_tag_without_a_bot_answer_takes_the_last_reply(harness):
    world, discord, knowledge = harness.world, harness.discord, harness.services.knowledge
    thread = await discord.create_forum_thread(
        world.forum, author=world.member, title=TITLE, content=QUESTION, tags=["no-bot"]
    )
    await discord.post_message(thread, world.moderator, FIX)
    await discord.post_message(thread, world.member, "Merci, ça marche !")  # the asker's

    with capture_logs() as logs:
        await discord.tag_thread(thread, ["no-bot", "Résolu"])
        await until(lambda: logged(logs, "solved_by_tag"))

    [hit] = await knowledge.search("interpréteur VS Code", guild_id=world.guild.id)
    assert hit.thread_id == thread.id
    assert dict((await knowledge.stats(world.guild.id)).per_answer_kind) == {"moderator": 1}


async def test_the_solved_tag_with_no_answer_indexes_nothing(harness):
    world, discord, knowledge = harness.world, harness.discord, harness.services.knowledge
    thread = await discord.create_forum_thread(
        world.forum, author=world.member, title=TITLE, content=QUESTION, tags=["no-bot"]
    )

    with capture_logs() as logs:
        await discord.tag_thread(thread, ["Résolu"])
        await until(lambda: logged(logs, "solved_tag_without_answer"))

    assert (await knowledge.stats(world.guild.id)).threads == 0


async def test_a_deleted_thread_leaves_the_knowledge_base(harness):
    world, discord, knowledge = harness.world, harness.discord, harness.services.knowledge
    thread, answer = await forum_answer(harness)
    reply = await harness.discord.click(world.member, answer, SOLVED)
    assert (await reply.wait_answer()).content == t("solved.done_indexed", "fr")
    assert await knowledge.search("No module named requests", guild_id=world.guild.id)

    with capture_logs() as logs:
        await discord.delete_thread(thread)
        await until(lambda: logged(logs, "solved_thread_deleted"))

    assert await knowledge.search("No module named requests", guild_id=world.guild.id) == []
    assert (await knowledge.stats(world.guild.id)).threads == 0


async def test_close_solved_tags_and_archives_the_thread_on_the_tick(closing):
    world, discord, knowledge = closing.world, closing.discord, closing.services.knowledge
    thread, answer = await forum_answer(closing)

    with capture_logs() as logs:
        handle = await discord.click(world.member, answer, SOLVED)
        assert (await handle.wait_answer()).content == t("solved.done_indexed", "fr")
        await discord.wait_for(lambda: discord.channels[thread.id].archived, timeout=10)
        # the tag the bot applied comes back as a THREAD_UPDATE: nothing indexed twice
        await until(lambda: logged(logs, "solved_tag_already_indexed"))

    closed = discord.channels[thread.id]
    assert closed.applied_tags == [world.forum.tag_id("Résolu")]
    [patch] = thread_patches(closing, thread)
    assert patch.json is not None and patch.json["archived"] is True
    assert [int(tag) for tag in patch.json["applied_tags"]] == [world.forum.tag_id("Résolu")]
    assert (await knowledge.stats(world.guild.id)).threads == 1


async def test_close_solved_off_leaves_the_thread_as_it_was(harness):
    world, discord = harness.world, harness.discord
    thread, answer = await forum_answer(harness)

    handle = await discord.click(world.member, answer, SOLVED)
    assert (await handle.wait_answer()).content == t("solved.done_indexed", "fr")
    with capture_logs() as logs:  # an event handled after the tick's: the tick closed nothing
        await discord.tag_thread(thread, ["Résolu"])
        await until(lambda: logged(logs, "solved_tag_already_indexed"))

    assert not discord.channels[thread.id].archived
    assert thread_patches(harness, thread) == []


async def test_close_solved_archives_a_thread_a_moderator_tagged_solved(closing):
    world, discord, knowledge = closing.world, closing.discord, closing.services.knowledge
    thread, _ = await forum_answer(closing)

    await discord.tag_thread(thread, ["python", "Résolu"])
    await discord.wait_for(lambda: discord.channels[thread.id].archived, timeout=10)

    tags = [world.forum.tag_id("python"), world.forum.tag_id("Résolu")]
    assert sorted(discord.channels[thread.id].applied_tags) == sorted(tags)  # kept, not doubled
    assert (await knowledge.stats(world.guild.id)).threads == 1
