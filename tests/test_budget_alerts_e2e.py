"""A member's own daily cap reached, end to end: the real bot against the fake Discord and
the fake OpenAI server, on a real database; the admin channel hears of it once."""

from __future__ import annotations

from pathlib import Path

from test_budget_e2e import invoke_subcommand

from ibot.money import format_usd
from ibot.testing.harness import Harness, build_world


async def test_a_member_reaching_their_cap_posts_one_alert_in_the_admin_channel(
    tmp_path: Path,
):
    harness = Harness(tmp_path)
    await harness.discord.start()
    await harness.openai.start()
    try:
        world = harness.world = build_world(harness.discord)
        admin_channel = harness.discord.create_text_channel(world.guild, "admins")
        harness.overrides = {
            "discord": {"admin_channel_id": admin_channel.id},
            "features": {"ask": {"max_output_tokens": 10}},
        }
        harness.openai.set_default_answer("Oui.")
        await harness.start_bot()
        change = await invoke_subcommand(
            harness,
            world.admin,
            world.text,
            "budget",
            "set",
            {"scope": "user_daily", "usd": "0.002"},
        )
        await change.wait_answer(timeout=10)

        # One gpt-4o ask (a bit over 0.001 USD) fits the member's 0.002; a second does not:
        # it is the cheaper model that answers, and the admins are told, once.
        answers = []
        for _ in range(3):
            ask = await harness.discord.invoke_slash(
                world.guild, world.member, world.text, "ask-gpt", {"question": "Bonjour ?"}
            )
            answers.append(await ask.wait_answer(timeout=10))
        await harness.services.budgets.drain()

        assert "Budget serré" in answers[1].embeds[-1]["footer"]["text"]
        [alert] = harness.discord.messages_in(admin_channel)
        assert alert.content.startswith(
            f"🛑 <@{world.member.id}> a atteint son plafond quotidien de 0.0020 USD ("
        )
        assert alert.allowed_mentions == {"parse": []}  # the member is named, not pinged
        first, *_ = await harness.services.ledger.rows()  # the one gpt-4o answer
        assert (first.status, first.model_requested) == ("ok", "gpt-4o")
        assert f"({format_usd(first.cost_micros)} USD dépensés)" in alert.content
    finally:
        await harness.stop()
