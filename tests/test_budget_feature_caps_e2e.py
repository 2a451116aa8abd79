"""A feature's daily cap end to end: the real bot against the fake Discord and the fake
OpenAI server, on a real database. An admin caps /summary with `/budget set`, the next
summary gets the cheaper model, a lower cap refuses it with the cap and its reset named,
and the admin channel hears of it once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from test_budget_e2e import invoke_subcommand

from ibot.db.ledger import LedgerEntry
from ibot.testing.harness import Harness, build_world


async def test_budget_set_feature_daily_summary_degrades_then_refuses_and_alerts_once(
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
            # gpt-4o's worst case (1500 output tokens: 0.015 USD) will not fit in what is
            # left of the cap; gpt-4o-mini's (under 0.001 USD) will.
            "features": {"summary": {"model": "gpt-4o", "cheaper_model": "gpt-4o-mini"}},
        }
        harness.openai.set_default_answer("Résumé : on s'est dit bonjour.")
        await harness.start_bot()
        guild, services = world.guild, harness.services
        # Earlier today the guild's summaries cost 0.49 USD.
        await services.ledger.record(
            LedgerEntry(
                feature="summary",
                backend="openai",
                model_requested="gpt-4o",
                status="ok",
                guild_id=guild.id,
                user_id=world.moderator.id,
                cost_micros=490_000,
                created_at=datetime.now(UTC),
            )
        )
        change = await invoke_subcommand(
            harness,
            world.admin,
            world.text,
            "budget",
            "set",
            {"scope": "feature_daily:summary", "usd": "0.5"},
        )
        confirmation = await change.wait_answer(timeout=10)
        assert confirmation.ephemeral
        assert confirmation.content == (
            "C'est noté : budget quotidien des résumés à 0.50 USD (avant : pas de plafond)."
        )
        [stored] = await services.budgets.store.changes(guild.id)
        assert (stored.scope, stored.cap_micros, stored.changed_by) == (
            "feature_daily:summary",
            500_000,
            world.admin.id,
        )
        show = await invoke_subcommand(harness, world.admin, world.text, "budget", "show")
        description = (await show.wait_answer(timeout=10)).embeds[0]["description"]
        assert "**Budget quotidien des résumés** : 0.50 USD — dépensé 0.4900 USD" in description

        await harness.discord.post_message(world.text, world.member, "Bonjour à tous !")
        summaries = []
        for _ in range(2):
            summary = await harness.discord.invoke_slash(
                guild, world.moderator, world.text, "summary", {}
            )
            summaries.append(await summary.wait_answer(timeout=10))
        assert all(s.embeds for s in summaries)
        rows = [r for r in await services.ledger.rows() if r.status != "ok"]
        assert [(r.status, r.model_requested, r.model) for r in rows] == [
            ("fallback", "gpt-4o", "gpt-4o-mini-2024-07-18")
        ] * 2

        # Lowered below what was spent: even the cheaper model is refused, and says why.
        lower = await invoke_subcommand(
            harness,
            world.admin,
            world.text,
            "budget",
            "set",
            {"scope": "feature_daily:summary", "usd": "0.4"},
        )
        await lower.wait_answer(timeout=10)
        summary = await harness.discord.invoke_slash(
            guild, world.moderator, world.text, "summary", {}
        )
        refusal = await summary.wait_answer(timeout=10)
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        stamp = f"<t:{int((midnight + timedelta(days=1)).timestamp())}:R>"
        assert refusal.content == (
            f"Le budget quotidien des résumés est épuisé ; il se renouvelle {stamp}."
        )
        await services.budgets.drain()

        # One alert for the three summaries the cap stopped, pinging no one.
        [alert] = harness.discord.messages_in(admin_channel)
        assert alert.content == (
            "🛑 Budget quotidien des résumés épuisé (0.49 / 0.50 USD) : les demandes passent "
            f"au modèle moins cher ou sont refusées jusqu'au renouvellement, {stamp}."
        )
        assert alert.allowed_mentions == {"parse": []}
    finally:
        await harness.stop()
