"""Solved threads, end to end: real nextcord against the fake Discord and fake OpenAI.

The knowledge base is on (settings knowledge.enabled) and filled with
`KnowledgeBase.upsert` before the member acts, as `ibot kb import` would have done.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ibot.i18n import t
from ibot.services.knowledge import SolvedThread, thread_url
from ibot.testing.harness import Harness

pytestmark = pytest.mark.slow

SOLVED_ID = 1_300_000_000_000_000_001
ELSEWHERE_ID = 1_300_000_000_000_000_002
OTHER_GUILD = 999_999_999_999_999_999
TITLE = "ModuleNotFoundError: No module named requests"


@pytest.fixture
async def harness(tmp_path: Path):
    async with Harness(tmp_path, settings={"knowledge": {"enabled": True}}) as running:
        assert running.services is not None and running.services.knowledge is not None
        guild = running.world.guild.id
        await running.services.knowledge.upsert(
            [
                SolvedThread(
                    guild_id=guild,
                    forum_id=running.world.forum.id,
                    thread_id=SOLVED_ID,
                    title=TITLE,
                    question="Mon bot plante : ModuleNotFoundError: No module named 'requests'.",
                    answer="Installe-le dans ton venv : pip install requests.",
                    answer_kind="moderator",
                ),
                SolvedThread(
                    guild_id=OTHER_GUILD,
                    forum_id=None,
                    thread_id=ELSEWHERE_ID,
                    title="No module named requests (autre serveur)",
                    question="ModuleNotFoundError: No module named 'requests'",
                    answer="python -m pip install requests",
                    answer_kind="member",
                ),
            ]
        )
        yield running


async def test_new_thread_like_a_solved_one_gets_its_link_under_the_heading(harness):
    world, discord, openai = harness.world, harness.discord, harness.openai
    openai.script("Il te manque le paquet, comme dans [1] : lance **pip install requests**.")
    url = thread_url(world.guild.id, SOLVED_ID)

    thread = await discord.create_forum_thread(
        world.forum,
        author=world.member,
        title="No module named requests",
        content="Mon script affiche ModuleNotFoundError: No module named 'requests', pourquoi ?",
        tags=["python"],
    )
    [answer] = await discord.wait_for(
        lambda: (found := discord.messages_in(thread)) and found, timeout=10
    )

    sent = openai.requests[-1].body["messages"][-1]["content"]
    assert f"[1] {TITLE} — {url}" in sent
    assert str(ELSEWHERE_ID) not in sent
    description = answer.embeds[-1]["description"]
    heading = t("knowledge.sources_heading", "fr")
    assert heading == "Discussions résolues similaires"
    assert f"**{heading}**\n[1] [{TITLE}]({url})" in description
    assert str(ELSEWHERE_ID) not in description


async def test_similar_lists_the_solved_thread_privately_without_a_model_call(harness):
    world, discord, openai = harness.world, harness.discord, harness.openai
    before = len(openai.requests)

    handle = await discord.invoke_slash(
        world.guild, world.member, world.text, "similar", {"query": "No module named requests"}
    )
    reply = await handle.wait_answer(timeout=10)

    assert reply.ephemeral
    assert f"[{TITLE}]({thread_url(world.guild.id, SOLVED_ID)})" in reply.content
    assert "score" in reply.content and str(ELSEWHERE_ID) not in reply.content
    assert len(openai.requests) == before


@pytest.mark.parametrize(
    ("query", "key"),
    [("🙂🎉", "similar.bad_query"), ("recette de tarte aux pommes", "similar.none")],
)
async def test_similar_says_clearly_when_there_is_nothing_to_show(harness, query, key):
    world, discord = harness.world, harness.discord
    handle = await discord.invoke_slash(
        world.guild, world.member, world.text, "similar", {"query": query}
    )
    reply = await handle.wait_answer(timeout=10)

    assert reply.ephemeral and reply.content == t(key, "fr")
    assert harness.openai.requests == []


async def test_similar_with_the_knowledge_base_off_says_so(tmp_path: Path):
    async with Harness(tmp_path) as harness:
        world, discord = harness.world, harness.discord
        handle = await discord.invoke_slash(
            world.guild, world.member, world.text, "similar", {"query": "requests"}
        )
        reply = await handle.wait_answer(timeout=10)

        assert reply.ephemeral and reply.content == t("similar.off", "fr")
