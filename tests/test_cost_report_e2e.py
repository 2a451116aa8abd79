"""/cost-report end to end: the real bot against the fake Discord, on a real ledger."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from ibot.db.ledger import LedgerEntry
from ibot.i18n import t
from ibot.money import format_usd
from ibot.testing.harness import Harness

pytestmark = pytest.mark.slow


@pytest.fixture
async def harness(tmp_path: Path):
    async with Harness(tmp_path) as running:
        yield running


async def spend(harness: Harness, *, days_ago: float, user_id: int, cost: int, guild_id=None):
    world = harness.world
    await harness.services.ledger.record(
        LedgerEntry(
            created_at=datetime.now(UTC) - timedelta(days=days_ago),
            guild_id=world.guild.id if guild_id is None else guild_id,
            channel_id=world.text.id,
            user_id=user_id,
            feature="ask",
            backend="openai",
            model_requested="gpt-4o",
            model="gpt-4o-2024-08-06",
            status="ok",
            prompt_tokens=1000,
            completion_tokens=200,
            cost_micros=cost,
        )
    )


async def cost_report(harness: Harness, who, options=None):
    world = harness.world
    handle = await harness.discord.invoke_slash(
        world.guild, who, world.text, "cost-report", options or {}
    )
    return handle, await handle.wait_answer(timeout=20)


@pytest.mark.parametrize("who", ["member", "moderator"])
async def test_members_without_admin_rights_are_refused_privately(harness, who):
    handle, answer = await cost_report(harness, getattr(harness.world, who))

    assert answer.ephemeral and not handle.deferred
    assert answer.content == t("cost_report.refused", "fr")
    assert not answer.embeds and not answer.files


async def test_admin_gets_a_private_report_with_the_chart(harness):
    world = harness.world
    await spend(harness, days_ago=1, user_id=world.member.id, cost=300_000)
    await spend(harness, days_ago=2, user_id=world.moderator.id, cost=100_000)
    await spend(harness, days_ago=10, user_id=world.member.id, cost=200_000)  # before
    await spend(harness, days_ago=1, user_id=world.member.id, cost=9_000_000, guild_id=1)

    handle, answer = await cost_report(harness, world.admin, {"group_by": "user"})

    assert handle.deferred and answer.ephemeral  # private by default
    [embed] = answer.embeds
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert fields["Appels"].startswith("**2**")
    assert f"**{format_usd(400_000)} USD**" in fields["Coût"]  # the other guild is not counted
    assert "+100,0 %" in fields["Coût"]  # 0.4 USD against 0.2 USD the 7 days before
    lines = embed["description"].splitlines()
    assert f"<@{world.member.id}>" in lines[1] and f"<@{world.moderator.id}>" in lines[2]
    assert answer.allowed_mentions == {"parse": []}  # shown as mentions, never pinged
    assert embed["image"]["url"] == "attachment://costs.png"
    assert [f.filename for f in answer.files] == ["costs.png"]
    chart = Image.open(io.BytesIO(answer.file_bytes("costs.png")))
    assert chart.format == "PNG" and chart.size == (1000, 500)


async def test_export_attaches_every_call_as_csv_and_public_when_asked(harness):
    world = harness.world
    for days_ago in (0.1, 1, 3):
        await spend(harness, days_ago=days_ago, user_id=world.member.id, cost=1_000)
    await spend(harness, days_ago=40, user_id=world.member.id, cost=1_000)  # outside

    _, answer = await cost_report(
        harness, world.admin, {"period": "30d", "export": True, "private": False}
    )

    assert not answer.ephemeral
    assert sorted(f.filename for f in answer.files) == ["costs.png", "ledger.csv"]
    rows = list(csv.DictReader(io.StringIO(answer.file_bytes("ledger.csv").decode())))
    assert len(rows) == 3
    assert {row["user_id"] for row in rows} == {str(world.member.id)}


async def test_a_configured_admin_role_is_enough(harness):
    world = harness.world
    harness.overrides["roles"] = {"admins": [world.mod_role.id]}
    await harness.restart_bot()

    _, answer = await cost_report(harness, world.moderator, {"period": "today"})

    assert answer.embeds and answer.ephemeral


async def test_a_bad_custom_period_is_explained_privately(harness):
    _, answer = await cost_report(
        harness, harness.world.admin, {"period": "custom", "from": "2025-03-10", "to": "2025-03-01"}
    )

    assert answer.ephemeral and not answer.embeds
    assert answer.content == t("cost_report.period.bad_dates", "fr")
