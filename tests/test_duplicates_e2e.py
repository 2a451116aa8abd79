"""Near duplicates end to end: real nextcord against the fake Discord and fake OpenAI.

The knowledge base is on with the shipped defaults (duplicate_threshold 0.8, the
features' cheaper model gpt-4o-mini, 300 output tokens) and holds one solved thread
of this guild and one of another guild.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ibot.i18n import t
from ibot.money import format_usd
from ibot.services.knowledge import SolvedThread, thread_url
from ibot.testing.harness import Harness

pytestmark = pytest.mark.slow

SOLVED_ID = 1_300_000_000_000_000_001
ELSEWHERE_ID = 1_300_000_000_000_000_002
OTHER_GUILD = 999_999_999_999_999_999
TITLE = "ModuleNotFoundError: No module named requests"
QUESTION = "Mon bot plante : ModuleNotFoundError: No module named 'requests'."
BUTTONS = {"ibot:vote:up", "ibot:vote:down", "ibot:solved"}


@pytest.fixture
async def harness(tmp_path: Path):
    async with Harness(tmp_path, settings={"knowledge": {"enabled": True}}) as running:
        assert running.services is not None and running.services.knowledge is not None
        await running.services.knowledge.upsert(
            [
                SolvedThread(
                    guild_id=running.world.guild.id,
                    forum_id=running.world.forum.id,
                    thread_id=SOLVED_ID,
                    title=TITLE,
                    question=QUESTION,
                    answer="Installe-le dans ton venv : pip install requests.",
                    answer_kind="moderator",
                ),
                SolvedThread(
                    guild_id=OTHER_GUILD,
                    forum_id=None,
                    thread_id=ELSEWHERE_ID,
                    title=TITLE,
                    question=QUESTION,
                    answer="python -m pip install requests",
                    answer_kind="member",
                ),
            ]
        )
        yield running


def buttons(message) -> set[str]:
    return {
        button["custom_id"] for row in message.data["components"] for button in row["components"]
    }


async def test_a_forum_post_like_a_solved_thread_gets_a_short_answer_pointing_to_it(harness):
    world, discord, openai = harness.world, harness.discord, harness.openai
    openai.script("Même souci que dans ce fil : lance **pip install requests** dans ton venv.")
    url = thread_url(world.guild.id, SOLVED_ID)

    thread = await discord.create_forum_thread(
        world.forum, author=world.member, title=TITLE, content=QUESTION
    )
    [answer] = await discord.wait_for(
        lambda: (found := discord.messages_in(thread)) and found, timeout=10
    )

    body = openai.requests[-1].body
    assert body["model"] == "gpt-4o-mini" and body["max_completion_tokens"] == 300
    user = body["messages"][-1]["content"]
    assert "presque identique à une discussion déjà résolue" in user
    assert f"[1] {TITLE} — {url}" in user and str(ELSEWHERE_ID) not in user
    [embed] = answer.embeds
    assert embed["description"].startswith(
        f"✅ **Déjà résolu ici :** [{TITLE}]({url})\n\nMême souci que dans ce fil"
    )
    assert t("knowledge.sources_heading", "fr") not in embed["description"]
    [row] = await harness.services.ledger.rows()
    assert (row.model_requested, row.status) == ("gpt-4o-mini", "ok")
    assert format_usd(row.cost_micros) in embed["footer"]["text"]
    assert buttons(answer) == BUTTONS


async def test_ask_gpt_with_a_solved_question_gets_the_short_answer_too(harness):
    world, discord, openai = harness.world, harness.discord, harness.openai
    openai.script("Comme dans [1] : **pip install requests**.")

    handle = await discord.invoke_slash(
        world.guild, world.member, world.text, "ask-gpt", {"question": f"{TITLE} ?"}
    )
    reply = await handle.wait_answer(timeout=10)

    assert openai.requests[-1].body["model"] == "gpt-4o-mini"
    url = thread_url(world.guild.id, SOLVED_ID)
    assert reply.embeds[0]["description"].startswith(f"✅ **Déjà résolu ici :** [{TITLE}]({url})")
    assert "Total tokens" in reply.embeds[-1]["footer"]["text"]


async def test_a_post_only_somewhat_like_it_gets_the_normal_answer(harness):
    world, discord, openai = harness.world, harness.discord, harness.openai
    openai.script("Il te manque le paquet, comme dans [1].")

    thread = await discord.create_forum_thread(
        world.forum,
        author=world.member,
        title="No module named requests",
        content="Mon script affiche ModuleNotFoundError: No module named 'requests', pourquoi ?",
    )
    [answer] = await discord.wait_for(
        lambda: (found := discord.messages_in(thread)) and found, timeout=10
    )

    assert openai.requests[-1].body["model"] == "gpt-4o"
    description = answer.embeds[-1]["description"]
    assert "Déjà résolu" not in description
    assert f"**{t('knowledge.sources_heading', 'fr')}**" in description
