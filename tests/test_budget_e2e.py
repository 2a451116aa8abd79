"""/budget and budget refusals, end to end: the real bot against the fake Discord and the
fake OpenAI server, on a real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ibot.testing.fake_discord import FakeChannel, FakeMember
from ibot.testing.fake_discord.interactions import InteractionHandle, build_interaction
from ibot.testing.harness import Harness, build_world


async def invoke_subcommand(
    harness: Harness,
    member: FakeMember,
    channel: FakeChannel,
    command: str,
    sub: str,
    options: dict | None = None,
) -> InteractionHandle:
    """`/command sub option:value`, as Discord sends it.

    FakeDiscord.invoke_slash does not build sub-command interactions yet, so this one
    types the options from the sub-command's registration and nests them under it.
    """
    fake, guild = harness.discord, harness.world.guild
    registered = fake._find_command(guild.id, command)
    [definition] = [o for o in registered["options"] if o["name"] == sub]
    flat = {**registered, "options": definition.get("options", [])}
    handle = build_interaction(
        fake, guild, fake._member(guild, member), channel, flat, options or {}, "fr"
    )
    data = handle.payload["data"]
    data["options"] = [{"name": sub, "type": 1, "options": data["options"]}]
    fake._interactions_by_id[handle.id] = handle
    fake._interactions_by_token[handle.token] = handle
    await fake.dispatch("INTERACTION_CREATE", handle.payload)
    return handle


def next_midnight() -> datetime:
    now = datetime.now(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)


@pytest.fixture
async def harness(tmp_path: Path):
    async with Harness(tmp_path) as running:
        yield running


async def test_members_without_admin_rights_are_refused_budget(harness):
    world = harness.world
    for who in (world.member, world.moderator):
        show = await invoke_subcommand(harness, who, world.text, "budget", "show")
        change = await invoke_subcommand(
            harness, who, world.text, "budget", "set", {"scope": "guild_daily", "usd": "0"}
        )
        for handle in (show, change):
            reply = await handle.wait_answer(timeout=10)
            assert reply.ephemeral and "admins" in reply.content
            assert not reply.embeds
    assert await harness.services.budgets.store.changes(world.guild.id) == []


async def test_admin_sets_a_cap_it_is_audited_and_a_refusal_names_budget_and_reset(harness):
    world, discord = harness.world, harness.discord

    change = await invoke_subcommand(
        harness, world.admin, world.text, "budget", "set", {"scope": "guild_daily", "usd": "0"}
    )
    confirmation = await change.wait_answer(timeout=10)
    assert confirmation.ephemeral
    assert "quotidien du serveur" in confirmation.content and "0.00 USD" in confirmation.content
    [stored] = await harness.services.budgets.store.changes(world.guild.id)
    assert (stored.scope, stored.cap_micros, stored.changed_by) == (
        "guild_daily",
        0,
        world.admin.id,
    )
    assert stored.previous_micros is None
    assert abs(stored.changed_at - datetime.now(UTC)) < timedelta(minutes=1)

    ask = await discord.invoke_slash(
        world.guild, world.member, world.text, "ask-gpt", {"question": "Bonjour ?"}
    )
    refusal = await ask.wait_answer(timeout=10)

    assert not refusal.embeds
    stamp = f"<t:{int(next_midnight().timestamp())}:R>"
    assert (
        refusal.content == f"Le budget quotidien du serveur est épuisé ; il se renouvelle {stamp}."
    )
    [row] = await harness.services.ledger.rows()
    assert (row.status, row.error_kind, row.user_id) == ("refused", "budget", world.member.id)
    assert not [r for r in harness.openai.requests if r.served]

    show = await invoke_subcommand(harness, world.admin, world.text, "budget", "show")
    shown = await show.wait_answer(timeout=10)
    description = shown.embeds[0]["description"]
    assert shown.ephemeral and f"<@{world.admin.id}>" in description
    assert "0.00 USD" in description and "pas de plafond" in description


async def test_tight_budget_answers_with_the_cheaper_model_and_says_so(harness):
    world, discord = harness.world, harness.discord
    # Room for gpt-4o-mini's worst case (under 0.001 USD), not for gpt-4o's (over 0.01).
    change = await invoke_subcommand(
        harness, world.admin, world.text, "budget", "set", {"scope": "guild_daily", "usd": "0.005"}
    )
    await change.wait_answer(timeout=10)

    ask = await discord.invoke_slash(
        world.guild, world.member, world.text, "ask-gpt", {"question": "Bonjour ?"}
    )
    answer = await ask.wait_answer(timeout=10)

    assert "Budget serré : modèle moins cher que gpt-4o" in answer.embeds[-1]["footer"]["text"]
    [row] = await harness.services.ledger.rows()
    assert (row.status, row.model_requested, row.model) == (
        "fallback",
        "gpt-4o",
        "gpt-4o-mini-2024-07-18",
    )


async def test_invalid_amount_is_explained_and_changes_nothing(harness):
    world = harness.world
    handle = await invoke_subcommand(
        harness, world.admin, world.text, "budget", "set", {"scope": "user_daily", "usd": "-3"}
    )
    reply = await handle.wait_answer(timeout=10)
    assert reply.ephemeral and "-3" in reply.content
    assert await harness.services.budgets.store.changes(world.guild.id) == []


async def test_crossing_half_the_cap_posts_one_alert_in_the_admin_channel(tmp_path):
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
        await invoke_subcommand(
            harness,
            world.admin,
            world.text,
            "budget",
            "set",
            {"scope": "guild_daily", "usd": "0.002"},
        )
        # One ask costs a bit over 0.001 USD: past 50 % of 0.002, under 100 %.
        ask = await harness.discord.invoke_slash(
            world.guild, world.member, world.text, "ask-gpt", {"question": "Bonjour ?"}
        )
        assert (await ask.wait_answer(timeout=10)).embeds
        [alert] = await harness.discord.wait_for(
            lambda: harness.discord.messages_in(admin_channel), timeout=10
        )
        assert alert.content.startswith("⚠️ Budget quotidien du serveur : 50 % atteint")
        assert alert.allowed_mentions == {"parse": []}
        [row] = await harness.services.ledger.rows()
        assert 1_000 <= row.cost_micros < 2_000  # micro-dollars
    finally:
        await harness.stop()
