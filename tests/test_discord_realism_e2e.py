"""What real Discord does to a forum bot, and the real bot living with it (issue 11).

Each behaviour is a switch of the fake Discord, and each test runs the real bot (real
nextcord, real openai client, real database) against it: the starter message arriving
before, after or well after THREAD_CREATE; THREAD_CREATE without `newly_created` for a
thread the bot is merely added to; messages without content when the Message Content
intent is off; attachment URLs that expired or that the CDN refuses; archived, locked
and deleted threads. Each test checks what a member (or the operator, in the log)
would notice.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import ibot.bot
from ibot.db.threads import ThreadAnswer, ThreadState
from ibot.i18n import t
from ibot.testing.fake_discord import MANAGE_THREADS, FakeChannel, FakeDiscord, Intent
from ibot.testing.harness import Harness

pytestmark = pytest.mark.slow


@pytest.fixture
async def harness(tmp_path: Path):
    async with Harness(tmp_path) as running:
        yield running


async def answers_in(harness: Harness, thread: FakeChannel, within_s: float = 10.0):
    """Wait until the bot posted in `thread` and return what it posted there."""
    discord = harness.discord
    return await discord.wait_for(
        lambda: (found := discord.messages_in(thread)) and found, timeout=within_s
    )


async def settled(harness: Harness) -> None:
    """Wait until a post made now is answered: the bot handled every event before it."""
    assert harness.world is not None
    control = await harness.discord.create_forum_thread(
        harness.world.forum, author=harness.world.member, title="Contrôle", content="Et ça ?"
    )
    await answers_in(harness, control)


async def record_of(harness: Harness, thread: FakeChannel) -> ThreadAnswer | None:
    assert harness.services is not None
    async with harness.services.sessionmaker() as session:
        return await session.get(ThreadAnswer, thread.id)


async def finished_record(harness: Harness, thread: FakeChannel) -> ThreadAnswer:
    """The thread's record once the bot has finished with it (not claimed any more).

    The bot writes it after its last Discord call, so there is no request to wait for:
    the database is read again until the condition holds (10 s at most)."""
    async with asyncio.timeout(10):
        while True:
            row = await record_of(harness, thread)
            if row is not None and row.state != ThreadState.CLAIMED:
                return row
            await asyncio.sleep(0.02)


async def ledger_rows_for(harness: Harness, thread: FakeChannel) -> list[Any]:
    assert harness.services is not None
    return [r for r in await harness.services.ledger.rows() if r.thread_id == thread.id]


def dispatched(discord: FakeDiscord, event: str) -> list[dict[str, Any]]:
    """The `d` of every `event` the fake sent to any gateway session."""
    return [
        frame.data
        for session in discord.gateway.sessions.values()
        for frame in session.history
        if frame.event == event
    ]


def while_generating(discord: FakeDiscord, title: str, act: Callable[[FakeChannel], None]):
    """A scripted model answer that first does `act` to the thread titled `title`: what a
    moderator or the member does while the model writes, before the bot can post."""

    def answer(body: dict[str, Any]) -> str:
        act(next(c for c in discord.channels.values() if c.is_thread and c.name == title))
        return "Voici la réponse à ta question."

    return answer


def prompt_text(harness: Harness) -> str:
    """The text of the user message of the last model call."""
    content = harness.openai.requests[-1].body["messages"][-1]["content"]
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)


def starter_reads(discord: FakeDiscord, thread: FakeChannel) -> list[int | None]:
    return [r.status for r in discord.requests_to("GET", f"/channels/{thread.id}/messages/")]


# 1. the starter message: before, after, not readable for a moment, well after -------------


@pytest.mark.parametrize(
    ("starter", "misses"),
    [("before", 0), ("after", 0), ("after", 2)],
    ids=["before-thread-create", "after-thread-create", "unreadable-twice"],
)
async def test_the_starter_message_before_after_or_briefly_unreadable_gets_one_answer(
    harness, starter, misses
):
    world, discord = harness.world, harness.discord
    thread = await discord.create_forum_thread(
        world.forum,
        author=world.member,
        title="Ordre des événements",
        content="Mon import échoue",
        starter=starter,
        starter_misses=misses,
    )

    [answer] = await answers_in(harness, thread)

    order = [
        frame.event
        for session in discord.gateway.sessions.values()
        for frame in session.history
        if frame.event in ("THREAD_CREATE", "MESSAGE_CREATE") and frame.data["id"] == str(thread.id)
    ]
    first, second = ("MESSAGE_CREATE", "THREAD_CREATE")[:: 1 if starter == "before" else -1]
    assert order == [first, second]
    assert starter_reads(discord, thread) == [404] * misses + [200]
    assert answer.embeds and "Mon import échoue" in prompt_text(harness)
    await settled(harness)
    assert len(discord.messages_in(thread)) == 1
    assert (await finished_record(harness, thread)).state == ThreadState.ANSWERED


async def test_a_starter_message_that_comes_after_the_last_retry_gets_one_clear_message(
    harness, monkeypatch
):
    world, discord = harness.world, harness.discord
    cog = harness.bot.get_cog("ForumAutoReply")
    # The bot's own retry schedule, shortened so that the test does not wait 8 s for it.
    monkeypatch.setattr(sys.modules[type(cog).__module__], "STARTER_RETRY_DELAYS_S", (0.01,) * 3)
    thread = await discord.create_forum_thread(
        world.forum,
        author=world.member,
        title="Message en retard",
        content="Discord me perd",
        starter="late",
    )

    [message] = await answers_in(harness, thread)  # the bot gave up: it says so, once
    assert message.content == t("forum.starter_missing", "fr")
    assert starter_reads(discord, thread) == [404] * 4  # the first read and three retries
    record = await finished_record(harness, thread)
    assert (record.state, record.reason) == (ThreadState.FAILED, "starter_missing")

    await discord.deliver_starter(thread)  # well after: readable, MESSAGE_CREATE sent
    await settled(harness)

    assert [m.content for m in discord.messages_in(thread)] == [message.content]
    assert await ledger_rows_for(harness, thread) == []
    assert not any("Message en retard" in str(r.body) for r in harness.openai.requests)


# 2. THREAD_CREATE without newly_created ----------------------------------------------------


async def test_an_old_thread_the_bot_is_added_to_is_not_answered(harness):
    world, discord = harness.world, harness.discord
    old = await discord.create_forum_thread(
        world.forum,
        author=world.member,
        title="Ancien fil",
        content="Une vieille question, réglée depuis",
        announce=False,  # posted where the bot could not see it
    )

    await discord.add_bot_to_thread(old)
    await settled(harness)  # a later post answered: the bot parsed THREAD_CREATE before it

    assert harness.bot.get_guild(world.guild.id).get_thread(old.id) is not None  # it has it

    [create] = [d for d in dispatched(discord, "THREAD_CREATE") if d["id"] == str(old.id)]
    assert "newly_created" not in create
    assert discord.messages_in(old) == []
    assert await record_of(harness, old) is None
    assert not any("Ancien fil" in str(r.body) for r in harness.openai.requests)


# 3. no Message Content intent ----------------------------------------------------------------


async def test_without_the_message_content_intent_one_warning_and_empty_posts_are_skipped(
    tmp_path, monkeypatch
):
    with_content = ibot.bot.bot_intents

    def without_content():
        intents = with_content()
        intents.message_content = False  # a bot that does not ask for it: no 4014
        return intents

    monkeypatch.setattr(ibot.bot, "bot_intents", without_content)
    portal = Intent.GUILD_MEMBERS | Intent.GUILD_PRESENCES  # Message Content not enabled
    with capture_logs() as logs:
        async with Harness(tmp_path, discord={"privileged_intents": portal}) as harness:
            world, discord = harness.world, harness.discord
            log_file = discord.add_attachment("trace.log", b"KeyError: 'x'\n", "text/plain")
            thread = await discord.create_forum_thread(
                world.forum,
                author=world.member,
                title="Pourquoi ?",
                content="Mon script plante, voici la trace",
                attachments=[log_file],
            )
            record = await finished_record(harness, thread)
            openai_requests = list(harness.openai.requests)
            posted = discord.messages_in(thread)
            [starter_event] = [
                d for d in dispatched(discord, "MESSAGE_CREATE") if d["id"] == str(thread.id)
            ]

    assert (starter_event["content"], starter_event["attachments"]) == ("", [])
    assert (record.state, record.reason) == (ThreadState.SKIPPED, "empty_post")
    assert posted == [] and openai_requests == []
    warnings = [e for e in logs if e["event"] == "message_content_intent_missing"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["requested"] is False and warnings[0]["enabled_in_portal"] is False


async def test_with_the_message_content_intent_there_is_no_warning(tmp_path):
    with capture_logs() as logs:
        async with Harness(tmp_path):
            pass
    assert [e for e in logs if e["event"] == "message_content_intent_missing"] == []


async def test_the_portal_switched_off_mid_session_empties_posts_which_are_skipped(harness):
    world, discord = harness.world, harness.discord
    discord.privileged_intents &= ~Intent.MESSAGE_CONTENT  # REST reads now hide content
    thread = await discord.create_forum_thread(
        world.forum, author=world.member, title="Vide", content="Ma question"
    )

    record = await finished_record(harness, thread)

    assert (record.state, record.reason) == (ThreadState.SKIPPED, "empty_post")
    assert discord.messages_in(thread) == []
    assert harness.openai.requests == []


# 4. attachment URLs: signed, expired, refused ----------------------------------------------

SIGNED = re.compile(r"\?ex=[0-9a-f]+&is=[0-9a-f]+&hm=[0-9a-f]{64}&$")


@pytest.mark.parametrize("refusal", ["expired", 403, 404])
async def test_an_attachment_that_cannot_be_downloaded_is_named_and_the_text_answered(
    harness, refusal
):
    world, discord = harness.world, harness.discord
    lost = discord.add_attachment("erreur.log", b"KeyError: 'secret_key'\n", "text/plain")
    if refusal == "expired":
        discord.expire_attachment_urls()  # a day passes for the CDN
    else:
        discord.faults.attachment_error(lost, status=refusal)
    kept = discord.add_attachment("config.toml", b"[bot]\nprefix = '!'\n", "text/plain")

    thread = await discord.create_forum_thread(
        world.forum,
        author=world.member,
        title="Pièces jointes",
        content="Mon bot plante au démarrage",
        attachments=[lost, kept],
    )
    [answer] = await answers_in(harness, thread)

    urls = [a["url"] for a in discord.message(thread.id).attachments]
    assert all(SIGNED.search(url) for url in urls)
    by_file = {d.path.rsplit("/", 1)[-1]: d.status for d in discord.downloads}
    assert by_file == {"erreur.log": 404 if refusal == "expired" else refusal, "config.toml": 200}
    text = prompt_text(harness)
    assert "Mon bot plante au démarrage" in text and "prefix = '!'" in text
    assert "secret_key" not in text
    description = answer.embeds[0]["description"]
    assert t("attachment.download_failed", "fr", name="erreur.log") in description
    assert "config.toml" not in description  # read: no note about it


# 5. archived and locked threads ------------------------------------------------------------


async def test_the_catch_up_leaves_an_archived_unanswered_thread_alone(harness):
    world, discord = harness.world, harness.discord
    await harness.stop_bot()
    archived = await discord.create_forum_thread(
        world.forum, author=world.member, title="Fermé", content="Question d'hier"
    )
    await discord.archive_thread(archived)  # closed by a moderator meanwhile
    missed = await discord.create_forum_thread(
        world.forum, author=world.member, title="Ouvert", content="Question de la nuit"
    )

    with capture_logs() as logs:
        await harness.start_bot()
        await answers_in(harness, missed)  # the same catch-up saw both

    assert discord.messages_in(archived) == []
    assert discord.channels[archived.id].archived  # not revived by a post
    assert await record_of(harness, archived) is None
    [skipped] = [e for e in logs if e["event"] == "forum_catch_up_skipped_closed"]
    assert skipped["archived"] == [archived.id]


async def test_posting_in_a_thread_archived_meanwhile_unarchives_it(harness):
    world, discord, openai = harness.world, harness.discord, harness.openai
    openai.script(while_generating(discord, "Archivé", discord.world.archive_thread))
    thread = await discord.create_forum_thread(
        world.forum, author=world.member, title="Archivé", content="Ça s'archive vite"
    )

    [answer] = await answers_in(harness, thread)

    assert answer.embeds
    assert not discord.channels[thread.id].archived
    updates = [d for d in dispatched(discord, "THREAD_UPDATE") if d["id"] == str(thread.id)]
    assert [u["thread_metadata"]["archived"] for u in updates] == [True, False]
    await settled(harness)
    assert not harness.bot.get_guild(world.guild.id).get_thread(thread.id).archived


@pytest.mark.parametrize(
    ("archived", "status", "code", "reason"),
    [(False, 403, 50013, "missing_permissions"), (True, 400, 50083, "thread_archived")],
    ids=["locked", "locked-and-archived"],
)
async def test_a_thread_locked_meanwhile_refuses_the_answer_and_the_bot_records_it(
    harness, archived, status, code, reason
):
    world, discord, openai = harness.world, harness.discord, harness.openai
    bot_role = next(r for r in world.guild.roles.values() if r.bot_id == discord.bot_user.id)
    bot_role.permissions &= ~MANAGE_THREADS
    await discord.dispatch(
        "GUILD_ROLE_UPDATE", {"guild_id": str(world.guild.id), "role": bot_role.payload()}
    )

    def close(thread: FakeChannel) -> None:
        discord.world.lock_thread(thread)
        if archived:
            discord.world.archive_thread(thread)

    openai.script(while_generating(discord, "Verrouillé", close))
    with capture_logs() as logs:
        thread = await discord.create_forum_thread(
            world.forum, author=world.member, title="Verrouillé", content="Encore là ?"
        )
        record = await finished_record(harness, thread)
        await settled(harness)  # the bot goes on answering

    posts = discord.requests_to("POST", f"/channels/{thread.id}/messages")
    assert [p.status for p in posts] == [status]  # refused once, not retried
    assert discord.messages_in(thread) == []
    assert discord.channels[thread.id].locked and discord.channels[thread.id].archived is archived
    [row] = await ledger_rows_for(harness, thread)
    assert (record.state, record.reason, record.ledger_id) == (ThreadState.FAILED, reason, row.id)
    [line] = [e for e in logs if e["event"] == "forum_answer_undeliverable"]
    assert (line["log_level"], line["code"], line["status"]) == ("warning", code, status)
    assert not [e for e in logs if e["event"] == "forum_answer_failed"]


# 6. a thread deleted while the answer is written ------------------------------------------


async def test_a_thread_deleted_while_the_answer_is_written_is_recorded_and_nothing_posted(
    harness,
):
    world, discord, openai = harness.world, harness.discord, harness.openai
    openai.script(while_generating(discord, "Supprimé", discord.world.delete_thread))
    sent_before = len(discord.sent_by_bot())
    with capture_logs() as logs:
        thread = await discord.create_forum_thread(
            world.forum, author=world.member, title="Supprimé", content="Je supprime tout"
        )
        record = await finished_record(harness, thread)

    [deleted] = [d for d in dispatched(discord, "THREAD_DELETE") if d["id"] == str(thread.id)]
    assert deleted == {
        "id": str(thread.id),
        "guild_id": str(world.guild.id),
        "parent_id": str(world.forum.id),
        "type": 11,
    }
    posts = discord.requests_to("POST", f"/channels/{thread.id}/messages")
    assert [p.status for p in posts] == [404]
    assert len(discord.sent_by_bot()) == sent_before  # nothing posted, here or elsewhere
    [row] = await ledger_rows_for(harness, thread)  # the model call stays accounted for
    assert (record.state, record.reason, record.ledger_id) == (
        ThreadState.FAILED,
        "thread_deleted",
        row.id,
    )
    [line] = [e for e in logs if e["log_level"] in ("warning", "error", "critical")]
    assert (line["event"], line["thread_id"], line["code"]) == (
        "forum_answer_undeliverable",
        thread.id,
        10003,
    )
