"""SIGKILL while /ask-gpt and /summary are deferred and their model calls in flight: the
next start answers each of them, once, by editing the deferred response, and the ledger
holds every call made for them, before the kill (closed as interrupted) and after.

The bot runs as its own process (`python -m ibot run`) against the fake Discord and the
fake OpenAI server, which live in the test process and outlive it.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image
from sqlalchemy import text

from ibot.db.engine import create_engine, make_sessionmaker
from ibot.db.ledger import Ledger
from ibot.domain import CallStatus, ErrorKind
from ibot.i18n import t
from ibot.testing.bot_process import BotProcess
from ibot.testing.harness import Harness

pytestmark = pytest.mark.slow


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (320, 200), (200, 40, 40)).save(out, format="PNG")
    return out.getvalue()


async def test_commands_cut_off_by_a_sigkill_are_answered_once_after_the_restart(tmp_path):
    async with Harness(tmp_path, in_process_bot=False, openai={"seed": 5}) as harness:
        discord, fake, world = harness.discord, harness.openai, harness.world
        assert world is not None
        bot = BotProcess(harness, tmp_path)
        await bot.start()
        for line in ("Le build casse depuis hier.", "C'est la mise à jour de pip.", "Réglé ?"):
            await discord.post_message(world.text, world.member, line)
        shot = discord.add_attachment("erreur.png", png(), "image/png")

        fake.latency_s = 5.0  # the model is still "generating" when the kill comes
        handles = [
            await discord.invoke_slash(
                world.guild, world.member, world.text, "ask-gpt", {"question": "Pourquoi ?"}
            ),
            await discord.invoke_slash(
                world.guild,
                world.member,
                world.text,
                "ask-gpt",
                {"question": "Et cette erreur ?", "image": shot, "private": True},
            ),
            await discord.invoke_slash(
                world.guild, world.moderator, world.text, "summary", {"messages": 20}
            ),
        ]

        def in_flight() -> list:
            return [r for r in fake.requests if r.billed and r.status == 0]

        await discord.wait_for(lambda: all(h.deferred for h in handles), timeout=10)
        await fake.wait_for_requests(3, within_s=10)  # billed on arrival, answered in 5 s
        killed = {r.client_request_id for r in in_flight()}
        await bot.kill()
        assert all(h.original is not None and h.original.loading for h in handles)

        # What the dead process left: three held commands, none with its token in clear.
        engine = create_engine(f"sqlite+aiosqlite:///{bot.database}")
        try:
            async with engine.connect() as connection:
                held = (await connection.execute(text("SELECT * FROM pending_interactions"))).all()
        finally:
            await engine.dispose()
        assert len(held) == 3
        assert not any(h.token in str(row) for h in handles for row in held)

        fake.latency_s = 0.0
        await bot.start()
        await discord.wait_for(
            lambda: all(h.original is not None and not h.original.loading for h in handles),
            timeout=60,
        )
        assert await bot.stop() == 0
        await discord.flush()
        log_text = bot.log_path.read_text(errors="replace")

        engine = create_engine(f"sqlite+aiosqlite:///{bot.database}")
        try:
            rows = await Ledger(make_sessionmaker(engine)).rows()
            async with engine.connect() as connection:
                left = (await connection.execute(text("SELECT * FROM pending_interactions"))).all()
        finally:
            await engine.dispose()

    # Each member got exactly one answer: the "thinking…" message edited once, with the
    # note that the bot restarted, and nothing else.
    public_ask, private_ask, summary = handles
    for handle in handles:
        original = handle.original
        assert original is not None and not original.deleted
        assert len(original.edits) == 1 and handle.followups == [], handle.name
        assert original.data["content"] == t("resume.note", "fr")
        assert original.embeds and original.embeds[0]["description"]
    assert public_ask.original.embeds[0]["title"] == "❓ Pourquoi ?"
    assert public_ask.original.data["components"]  # the feedback buttons, as usual
    assert private_ask.ephemeral and not private_ask.original.data.get("components")
    title = t("summary.title", "fr", channel=world.text.name, count=3)
    assert summary.original.embeds[0]["title"] == title  # the three messages, not our notes
    assert left == []

    # The resumed image question sent its image again.
    image_requests = [
        r for r in fake.requests if r.served and "image_url" in str(r.body["messages"][-1])
    ]
    assert image_requests

    # Every call made for them is in the ledger: the three cut off by the kill closed as
    # interrupted by the start-up scan, the three made again answered.
    by_call = {row.call_id: row for row in rows}
    assert len(killed) == 3
    for call_id in killed:
        row = by_call[call_id]
        assert (row.status, row.error_kind) == (CallStatus.ERROR, ErrorKind.INTERRUPTED)
    for record in fake.requests:
        if record.billed and record.client_request_id not in killed:
            assert by_call[record.client_request_id].status == CallStatus.OK
    answered = [row for row in rows if row.status == CallStatus.OK]
    assert sorted(row.feature for row in answered) == ["ask", "ask", "summary"]
    assert len(rows) == 6

    # The tokens never reached the log, of either process.
    assert "pending_interactions_resumed" in log_text
    assert not any(h.token in log_text for h in handles)


async def test_a_command_whose_token_expired_meanwhile_is_dropped_and_the_start_goes_on(
    tmp_path,
):
    async with Harness(tmp_path, in_process_bot=False) as harness:
        discord, fake, world = harness.discord, harness.openai, harness.world
        assert world is not None
        bot = BotProcess(harness, tmp_path)
        await bot.start()
        fake.latency_s = 5.0
        ask = await discord.invoke_slash(
            world.guild, world.member, world.text, "ask-gpt", {"question": "Pourquoi ?"}
        )
        await discord.wait_for(lambda: ask.deferred, timeout=10)
        await fake.wait_for_requests(1, within_s=10)
        await bot.kill()

        fake.latency_s = 0.0
        discord.token_lifetime_s = 0.0  # Discord answers 401 Invalid Webhook Token now
        await bot.start()
        await fake.wait_for_requests(2, within_s=30)  # answered again, through the gateway
        await discord.wait_for(lambda: ask.rejected, timeout=30)
        # The bot still serves: a new question gets its answer.
        discord.token_lifetime_s = 15 * 60.0
        later = await discord.invoke_slash(
            world.guild, world.member, world.text, "ask-gpt", {"question": "Et là ?"}
        )
        answer = await later.wait_answer(timeout=30)
        assert await bot.stop() == 0
        log_lines = bot.log_path.read_text(errors="replace").splitlines()
        engine = create_engine(f"sqlite+aiosqlite:///{bot.database}")
        try:
            async with engine.connect() as connection:
                left = (await connection.execute(text("SELECT * FROM pending_interactions"))).all()
        finally:
            await engine.dispose()

    assert answer.embeds and ask.original is not None and ask.original.loading
    assert ("webhook", 50027) in ask.rejected
    refused = [line for line in log_lines if "pending_interaction_undeliverable" in line]
    assert len(refused) == 1 and '"status": 401' in refused[0] and ask.token not in refused[0]
    assert left == []
