"""The real bot, end to end: real nextcord against the fake Discord, real openai client
against the fake OpenAI server, real database. Each test is something a user would see."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from PIL import Image

from ibot.db.threads import ThreadState
from ibot.domain import Usage
from ibot.i18n import t
from ibot.money import format_usd
from ibot.pricing import default_price_table
from ibot.testing.harness import Harness

pytestmark = pytest.mark.slow


def png(width: int = 800, height: int = 600) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (20, 120, 200)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
async def harness(tmp_path: Path):
    async with Harness(tmp_path) as running:
        yield running


async def answers_in(harness: Harness, thread, count: int = 1, within_s: float = 10.0):
    """Wait until the bot posted `count` messages in `thread` and return them."""
    discord = harness.discord
    return await discord.wait_for(
        lambda: (found := discord.messages_in(thread)) and len(found) >= count and found,
        timeout=within_s,
    )


def footer_of(message) -> str:
    return message.embeds[-1]["footer"]["text"]


async def ledger_rows(harness: Harness):
    return await harness.services.ledger.rows()


async def test_forum_thread_with_image_and_log_gets_one_answer_with_exact_cost(harness):
    world, discord, openai = harness.world, harness.discord, harness.openai
    openai.script("Il te manque le paquet : lance **pip install requests**.")
    shot = discord.add_attachment("erreur.png", png(), "image/png")
    log = discord.add_attachment(
        "bot.log", b"ModuleNotFoundError: No module named 'requests'\n", "text/plain"
    )

    thread = await discord.create_forum_thread(
        world.forum,
        author=world.member,
        title="Mon bot ne démarre pas",
        content="Voici l'erreur, je ne comprends pas.",
        tags=["python"],
        attachments=[shot, log],
    )
    [answer] = await answers_in(harness, thread)

    sent = openai.requests[-1].body
    user = sent["messages"][-1]["content"]
    kinds = [part["type"] for part in user]
    assert kinds == ["text", "image_url"]
    assert user[1]["image_url"]["detail"] == "high"
    assert "No module named 'requests'" in user[0]["text"]
    assert "Mon bot ne démarre pas" in user[0]["text"] and "python" in user[0]["text"]
    assert answer.embeds[0]["description"].startswith("Il te manque le paquet")
    assert answer.allowed_mentions == {"parse": []}
    [row] = await ledger_rows(harness)
    assert row.thread_id == thread.id and row.feature == "auto_reply"
    assert format_usd(row.cost_micros) in footer_of(answer)
    served = openai.requests[-1]
    usage = Usage(
        prompt_tokens=served.prompt_tokens,
        completion_tokens=served.completion_tokens,
        cached_tokens=served.cached_tokens,
        image_tokens=served.image_tokens,
    )
    assert row.cost_micros == default_price_table().cost_micros(usage, served.model)
    assert str(usage.total_tokens) in footer_of(answer)
    assert discord.requests_to("POST", f"/channels/{thread.id}/typing")


async def test_replayed_thread_create_and_restart_give_no_second_answer(harness):
    world, discord = harness.world, harness.discord
    thread = await discord.create_forum_thread(
        world.forum, author=world.member, title="Question", content="Comment faire ?"
    )
    await answers_in(harness, thread)

    # Replay every dispatch since the thread appeared (THREAD_CREATE, the starter's and the
    # answer's MESSAGE_CREATE), as Discord may after a RESUME.
    await discord.drop_gateway(replay_last=10)
    await discord.wait_for(lambda: discord.resume_payloads)
    await harness.restart_bot()
    # A message posted after both proves the bot processed everything before it.
    later = await discord.create_forum_thread(
        world.forum, author=world.member, title="Autre question", content="Et ça ?"
    )
    await answers_in(harness, later)

    assert len(discord.messages_in(thread)) == 1
    assert len([r for r in await ledger_rows(harness) if r.thread_id == thread.id]) == 1


async def test_thread_opened_while_the_bot_was_down_is_answered_at_start(harness):
    world, discord = harness.world, harness.discord
    await harness.stop_bot()
    thread = await discord.create_forum_thread(
        world.forum, author=world.member, title="Posté pendant la panne", content="Allô ?"
    )

    await harness.start_bot()

    [answer] = await answers_in(harness, thread)
    assert answer.embeds


async def test_starter_race_discord_429_and_5xx_are_survived(harness):
    world, discord = harness.world, harness.discord
    # The race: THREAD_CREATE arrives, but the starter message answers 404 10008 twice.
    t1 = await discord.create_forum_thread(
        world.forum, author=world.member, title="Course", content="Race ?"
    )
    discord.faults.starter_message_race(t1, times=2)
    [a1] = await answers_in(harness, t1)
    assert a1.embeds

    discord.faults.rate_limit("/messages", method="POST", times=1)
    t2 = await discord.create_forum_thread(
        world.forum, author=world.member, title="429", content="Limite ?"
    )
    assert len(await answers_in(harness, t2)) == 1

    discord.faults.server_error("/messages", method="POST", status=502, times=1)
    t3 = await discord.create_forum_thread(
        world.forum, author=world.member, title="502", content="Erreur ?"
    )
    assert len(await answers_in(harness, t3)) == 1


async def test_ten_thousand_character_answer_arrives_complete(tmp_path):
    settings = {"features": {"auto_reply": {"max_output_tokens": 4000}}}
    async with Harness(tmp_path, settings=settings) as harness:
        world, discord, openai = harness.world, harness.discord, harness.openai
        paragraphs = (f"Paragraphe {i} : " + "explication " * 40 for i in range(25))
        long_answer = "\n\n".join(paragraphs)[:10_000]
        openai.script(long_answer)
        thread = await discord.create_forum_thread(
            world.forum, author=world.member, title="Longue", content="Explique tout"
        )
        messages = await discord.wait_for(
            lambda: (
                (found := discord.messages_in(thread))
                and any("footer" in e for m in found for e in m.embeds)
                and found
            )
        )
    text = "".join(e["description"] for m in messages for e in m.embeds)
    assert " ".join(text.split()) == " ".join(long_answer.split())
    assert len(messages) >= 1 and sum(len(m.embeds) for m in messages) >= 3
    for message in messages:
        assert len(message.embeds) <= 10
        assert sum(len(e["description"]) + len(e.get("title", "")) for e in message.embeds) <= 6000
        assert all(len(e["description"]) <= 4096 for e in message.embeds)


async def test_answer_with_everyone_and_role_mentions_pings_nobody(harness):
    world, discord, openai = harness.world, harness.discord, harness.openai
    openai.script(f"@everyone regardez ! <@&{world.mod_role.id}> <@{world.admin.id}>")
    thread = await discord.create_forum_thread(
        world.forum, author=world.member, title="Ping", content="?"
    )
    [answer] = await answers_in(harness, thread)
    assert answer.allowed_mentions == {"parse": []}
    assert answer.data.get("mention_everyone") is False
    assert answer.data.get("mention_roles") == []
    assert answer.data.get("mentions") == []


async def test_no_bot_tag_and_bot_authors_are_skipped(harness):
    world, discord = harness.world, harness.discord
    skipped = await discord.create_forum_thread(
        world.forum, author=world.member, title="Entre humains", content="...", tags=["no-bot"]
    )
    control = await discord.create_forum_thread(
        world.forum, author=world.member, title="Contrôle", content="..."
    )
    await answers_in(harness, control)
    store = harness.services.forum_service().store
    states = await store.states([skipped.id])
    assert states[skipped.id][0] is ThreadState.SKIPPED
    assert discord.messages_in(skipped) == []


async def test_model_failure_posts_one_short_message_and_keeps_the_row(harness):
    world, discord, openai = harness.world, harness.discord, harness.openai
    openai.insufficient_quota(times=1)
    thread = await discord.create_forum_thread(
        world.forum, author=world.member, title="Panne", content="?"
    )
    [message] = await answers_in(harness, thread)
    assert message.content and "Traceback" not in message.content
    assert len(message.content) < 300
    [row] = await ledger_rows(harness)
    assert (row.status, row.error_kind) == ("error", "insufficient_quota")


@pytest.mark.parametrize(
    ("who", "ask_allowed", "summary_allowed"),
    [
        ("admin", True, True),
        ("moderator", True, True),
        ("member", True, False),
        ("denied", False, False),
    ],
)
async def test_permission_matrix(harness, who, ask_allowed, summary_allowed):
    world, discord = harness.world, harness.discord
    member = getattr(world, who)
    await discord.post_message(world.text, world.member, "Un message à résumer.")

    ask = await discord.invoke_slash(
        world.guild, member, world.text, "ask-gpt", {"question": "Bonjour ?"}
    )
    ask_reply = await ask.wait_answer(timeout=10)
    summary = await discord.invoke_slash(world.guild, member, world.text, "summary", {})
    summary_reply = await summary.wait_answer(timeout=10)

    assert bool(ask_reply.embeds) is ask_allowed
    assert bool(summary_reply.embeds) is summary_allowed
    if not ask_allowed:
        assert ask_reply.ephemeral and ask_reply.content
    if not summary_allowed:
        assert summary_reply.ephemeral and summary_reply.content


async def test_ask_private_with_image_is_ephemeral_and_priced(harness):
    world, discord, openai = harness.world, harness.discord, harness.openai
    shot = discord.add_attachment("capture.png", png(1024, 1024), "image/png")
    handle = await discord.invoke_slash(
        world.guild,
        world.member,
        world.text,
        "ask-gpt",
        {"question": "Que vois-tu ?", "image": shot, "private": True},
    )
    answer = await handle.wait_answer(timeout=10)
    assert handle.deferred and answer.ephemeral
    assert openai.requests[-1].image_tokens == 765
    [row] = await ledger_rows(harness)
    assert format_usd(row.cost_micros) in footer_of(answer)


@pytest.mark.parametrize(
    ("name", "data", "content_type"),
    [
        ("corrompue.png", b"\x89PNG\r\n\x1a\n garbage", "image/png"),
        ("vide.png", b"", "image/png"),
        ("archive.zip", b"PK\x03\x04 data", "application/zip"),
        ("journal.log", "ERREUR : échec\n".encode("utf-16"), "text/plain"),
    ],
)
async def test_bad_attachments_get_a_clear_outcome_and_the_bot_keeps_serving(
    harness, name, data, content_type
):
    world, discord, openai = harness.world, harness.discord, harness.openai
    bad = discord.add_attachment(name, data, content_type)
    thread = await discord.create_forum_thread(
        world.forum, author=world.member, title="Pièce jointe", content="Regarde", attachments=[bad]
    )
    [answer] = await answers_in(harness, thread)
    description = answer.embeds[0]["description"]
    if name == "journal.log":
        assert "ERREUR : échec" in openai.requests[-1].body["messages"][-1]["content"]
    else:
        assert name in description  # the answer says which file was not read
    after = await discord.create_forum_thread(
        world.forum, author=world.member, title="Ensuite", content="Toujours là ?"
    )
    assert await answers_in(harness, after)


async def test_huge_and_giant_images_are_refused_clearly(harness):
    world, discord = harness.world, harness.discord
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
        )

    giant = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 100))
        + chunk(b"IEND", b"")
    )
    bomb = discord.add_attachment("geante.png", giant, "image/png")
    big = discord.add_attachment("enorme.log", b"x" * (25 * 1024 * 1024), "text/plain")
    thread = await discord.create_forum_thread(
        world.forum, author=world.member, title="Gros", content="Regarde", attachments=[bomb, big]
    )
    [answer] = await answers_in(harness, thread, within_s=20)
    description = answer.embeds[0]["description"]
    assert "geante.png" in description and "enorme.log" in description


async def test_summary_over_a_thousand_messages_stays_within_budget(tmp_path):
    budget = 6000
    async with Harness(
        tmp_path, settings={"features": {"summary": {"max_prompt_tokens": budget}}}
    ) as harness:
        world, discord, openai = harness.world, harness.discord, harness.openai
        for i in range(1000):
            author = world.member if i % 2 else world.moderator
            await discord.post_message(
                world.text, author, f"Message {i} : question {i} sur asyncio et les threads."
            )
        handle = await discord.invoke_slash(
            world.guild, world.moderator, world.text, "summary", {"messages": 1000}
        )
        answer = await handle.wait_answer(timeout=30)

        assert answer.embeds
        summary_requests = [r for r in openai.requests if r.served]
        assert len(summary_requests) > 2  # chunks, then the combination
        assert all(r.prompt_tokens <= budget for r in summary_requests)
        rows = await harness.services.ledger.rows()
        total = sum(r.cost_micros for r in rows)
        assert format_usd(total) in footer_of(answer)


async def test_chat_channel_answers_with_memory(harness):
    world, discord, openai = harness.world, harness.discord, harness.openai
    await discord.post_message(world.chat, world.member, "Je m'appelle Alice.")
    await answers_in(harness, world.chat)
    await discord.post_message(world.chat, world.member, "Comment je m'appelle ?")
    await answers_in(harness, world.chat, count=2)
    second = openai.requests[-1].body["messages"]
    assert any("Je m'appelle Alice." in str(m["content"]) for m in second)


async def test_forum_followups_are_left_to_humans_by_default(harness):
    world, discord = harness.world, harness.discord
    thread = await discord.create_forum_thread(
        world.forum, author=world.member, title="Suivi", content="?"
    )
    await answers_in(harness, thread)
    await discord.post_message(thread, world.member, "Merci, et ensuite ?")
    control = await discord.post_message(world.chat, world.member, "Ping ?")
    del control
    await answers_in(harness, world.chat)
    assert len(discord.messages_in(thread)) == 1


async def test_bot_asks_for_the_fewest_intents(harness):
    intents = harness.discord.identify_payloads[-1]["intents"]
    guilds, guild_messages, message_content = 1 << 0, 1 << 9, 1 << 15
    assert intents == guilds | guild_messages | message_content


async def test_an_internal_error_still_tells_the_user_and_the_bot_keeps_serving(
    harness, monkeypatch
):
    from ibot.services.forum import ForumService

    world, discord = harness.world, harness.discord
    original = ForumService.answer

    async def broken(self, post):
        if post.title == "Boum":
            raise RuntimeError("a bug")
        return await original(self, post)

    monkeypatch.setattr(ForumService, "answer", broken)
    thread = await discord.create_forum_thread(
        world.forum, author=world.member, title="Boum", content="?"
    )
    [message] = await answers_in(harness, thread)
    assert message.content and "a bug" not in message.content and not message.embeds
    after = await discord.create_forum_thread(
        world.forum, author=world.member, title="Après", content="?"
    )
    assert (await answers_in(harness, after))[0].embeds


async def test_a_graceful_stop_lets_the_answer_in_progress_reach_discord(harness):
    world, discord, fake = harness.world, harness.discord, harness.openai
    fake.latency_s = 0.5  # the model is still "generating" when the stop comes
    thread = await discord.create_forum_thread(
        world.forum, author=world.member, title="Question", content="Pourquoi ?"
    )
    await fake.wait_for_requests(1)
    services = harness.services

    closing = asyncio.create_task(harness.bot.close())  # what SIGTERM does
    await asyncio.sleep(0)  # close() starts: it stops taking new work at once
    assert services.in_flight.draining
    # A post made while the bot drains is not started: the next start's catch-up has it.
    late = await discord.create_forum_thread(
        world.forum, author=world.member, title="Pendant l'arrêt", content="Et moi ?"
    )
    # A question asked while it drains gets a short private "ask again", not silence.
    ask = await discord.invoke_slash(
        world.guild, world.member, world.text, "ask-gpt", {"question": "Bonjour ?"}
    )
    restarting = await ask.wait_answer(timeout=5)
    await discord.flush()
    await closing

    assert restarting.ephemeral and restarting.content == t("error.restarting", "fr")
    [answer] = discord.messages_in(thread)  # posted before the bot disconnected
    assert answer.embeds and len(services.in_flight) == 0
    assert discord.messages_in(late) == []
    assert await services.forum_service().store.states([late.id]) == {}
    await harness.restart_bot()
    [late_answer] = await answers_in(harness, late)
    assert late_answer.embeds and len(discord.messages_in(thread)) == 1


async def test_a_database_failure_after_the_answer_posts_nothing_more(harness, monkeypatch):
    world, discord = harness.world, harness.discord
    store = harness.bot.get_cog("ForumAutoReply").service.store
    finish = store.finish
    failed = asyncio.Event()

    async def locked_once(*args, **kwargs):  # the write after the answer fails, once
        if not failed.is_set():
            failed.set()
            raise OSError("database is locked")
        return await finish(*args, **kwargs)

    monkeypatch.setattr(store, "finish", locked_once)
    thread = await discord.create_forum_thread(
        world.forum, author=world.member, title="Question", content="Comment faire ?"
    )
    [answer] = await answers_in(harness, thread)
    await asyncio.wait_for(failed.wait(), 10)
    await discord.flush()
    await harness.restart_bot()  # the catch-up finds the posted answer
    later = await discord.create_forum_thread(
        world.forum, author=world.member, title="Autre", content="Et ça ?"
    )
    await answers_in(harness, later)

    assert answer.embeds and discord.messages_in(thread) == [answer]
    states = await harness.services.forum_service().store.states([thread.id])
    assert states[thread.id][0] is ThreadState.ANSWERED
