"""/cost-report shows the members' feedback, end to end: the real bot answers a forum
thread on the fake Discord, members click 👍 / 👎 / ✅, an admin asks for the report."""

from __future__ import annotations

from pathlib import Path

import pytest

from ibot.i18n import t
from ibot.money import format_usd
from ibot.testing.harness import Harness

pytestmark = pytest.mark.slow

UP, DOWN, SOLVED = "ibot:vote:up", "ibot:vote:down", "ibot:solved"


@pytest.fixture
async def harness(tmp_path: Path):
    async with Harness(tmp_path) as running:
        yield running


async def forum_answer(harness: Harness, title: str):
    world, discord = harness.world, harness.discord
    harness.openai.script("Lance **python -m pip install requests** dans ton venv.")
    thread = await discord.create_forum_thread(
        world.forum, author=world.member, title=title, content=f"{title} ?"
    )
    [answer] = await discord.wait_for(
        lambda: (found := discord.messages_in(thread)) and found, timeout=10
    )
    return answer


async def click(harness: Harness, member, message, custom_id: str) -> None:
    handle = await harness.discord.click(member, message, custom_id)
    await handle.wait_answer()


async def report(harness: Harness, options: dict) -> dict:
    world = harness.world
    handle = await harness.discord.invoke_slash(
        world.guild, world.admin, world.text, "cost-report", options
    )
    answer = await handle.wait_answer(timeout=20)
    [embed] = answer.embeds
    return embed


async def test_the_report_shows_answers_helpful_rate_solved_and_cost_per_solved(harness):
    world = harness.world
    liked = await forum_answer(harness, "pip introuvable")
    await forum_answer(harness, "venv cassé")  # an answer nobody votes on
    await click(harness, world.moderator, liked, UP)
    await click(harness, world.admin, liked, UP)
    await click(harness, harness.discord.create_member(world.guild, "bob"), liked, DOWN)
    await click(harness, world.member, liked, SOLVED)  # the asker
    cost = sum(row.cost_micros or 0 for row in await harness.services.ledger.rows())

    embed = await report(harness, {"period": "today"})

    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert fields["Avis des membres"] == t(
        "cost_report.feedback_value",
        "fr",
        answers="2",
        helpful="66,7 %",  # 2 👍 out of 3 votes
        up="2",
        down="1",
        solved="1",
        per_solved=f"{format_usd(cost)} USD",  # both answers' calls, one solved thread
    )
    lines = embed["description"].splitlines()
    assert lines[1].startswith("1. `auto_reply`")
    assert lines[2] == t(
        "cost_report.top_feedback",
        "fr",
        answers="2",
        helpful="66,7 %",
        solved="1",
        per_solved=f"{format_usd(cost)} USD",
    )


async def test_without_votes_the_rate_and_cost_per_solved_say_none(harness):
    await forum_answer(harness, "pip introuvable")
    harness.overrides["prompts"] = {"language": "en"}
    await harness.restart_bot()

    embed = await report(harness, {"period": "today", "group_by": "model"})

    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert fields["Members' feedback"] == (
        "**1** answer(s) · helpful: **—** (0 👍 / 0 👎)\n"
        "solved: **0** · cost per solved thread: **—**"
    )
    assert "↳ answers: 1 · helpful: — · solved: 0 · per solved thread: —" in embed["description"]


async def test_a_period_without_answers_says_so(harness):
    embed = await report(harness, {"period": "today"})

    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert fields["Avis des membres"] == t("cost_report.feedback_none", "fr")
