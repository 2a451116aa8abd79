"""Hybrid retrieval end to end: real nextcord and the real openai client against the fake
Discord and the fake OpenAI, with knowledge.embeddings on.

The guild's solved threads are indexed (embedded) before the member acts, as `ibot kb
import` would have done; a member's paraphrase that shares no word with a thread then
finds it, through the services `ibot.app` builds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ibot.domain import Feature
from ibot.services.knowledge import SolvedThread, thread_url
from ibot.services.semantic import HybridKnowledgeBase
from ibot.testing.harness import Harness

pytestmark = pytest.mark.slow

SOLVED_ID = 1_300_000_000_000_000_011
TITLE = "pip install échoue dans le venv"
PARAPHRASE = "instale refusé accès"  # no word in common with the thread
SETTINGS = {"knowledge": {"enabled": True, "embeddings": {"enabled": True, "min_similarity": 0.35}}}


@pytest.fixture
async def harness(tmp_path: Path):
    async with Harness(tmp_path, settings=SETTINGS) as running:
        assert running.services is not None
        knowledge = running.services.knowledge
        assert isinstance(knowledge, HybridKnowledgeBase)
        await knowledge.index(
            [
                SolvedThread(
                    guild_id=running.world.guild.id,
                    forum_id=running.world.forum.id,
                    thread_id=SOLVED_ID,
                    title=TITLE,
                    question="Quand je lance pip install requests dans mon venv j'ai une "
                    "erreur de permission.",
                    answer="Active le venv avant : source venv/bin/activate puis "
                    "python -m pip install requests.",
                    answer_kind="moderator",
                )
            ]
        )
        yield running


async def test_similar_finds_a_paraphrase_with_one_embedding_call(harness):
    world, discord, openai = harness.world, harness.discord, harness.openai
    before = len(openai.requests)

    handle = await discord.invoke_slash(
        world.guild, world.member, world.text, "similar", {"query": PARAPHRASE}
    )
    reply = await handle.wait_answer(timeout=10)

    assert reply.ephemeral
    assert f"[{TITLE}]({thread_url(world.guild.id, SOLVED_ID)})" in reply.content
    [call] = openai.requests[before:]
    assert call.endpoint == "embeddings" and call.body["input"] == [PARAPHRASE]
    rows = [r for r in await harness.services.ledger.rows() if r.feature == Feature.KB_EMBED]
    assert rows[-1].note == "kb_embed query: 1 input"
    assert rows[-1].guild_id == world.guild.id and rows[-1].prompt_tokens == call.prompt_tokens


async def test_a_forum_answer_quotes_the_thread_found_by_meaning(harness):
    world, discord, openai = harness.world, harness.discord, harness.openai
    openai.script("Comme dans [1] : active d'abord ton venv.")

    thread = await discord.create_forum_thread(
        world.forum, author=world.member, title=PARAPHRASE, content="aidez-moi", tags=["python"]
    )
    [answer] = await discord.wait_for(
        lambda: (found := discord.messages_in(thread)) and found, timeout=10
    )

    chat = [r for r in openai.requests if r.endpoint == "chat.completions"][-1]
    assert (
        f"[1] {TITLE} — {thread_url(world.guild.id, SOLVED_ID)}"
        in (chat.body["messages"][-1]["content"])
    )
    assert thread_url(world.guild.id, SOLVED_ID) in answer.embeds[-1]["description"]
