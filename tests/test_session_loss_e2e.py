"""A lost gateway session or an unavailable guild loses no forum post (issue 11).

Discord expires a session a few minutes after its connection is lost: the RESUME is
refused (op 9 INVALID_SESSION, `d: false`), the bot IDENTIFYs again and the events of the
gap are never sent. A guild can also be unavailable (an outage: GUILD_DELETE with
`unavailable: true`, then GUILD_CREATE when it is back; or listed unavailable in READY and
loaded late): its events meanwhile are never sent either. The real bot, against the fake
Discord, must still answer each post made meanwhile, and only once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ibot.testing.fake_discord import FakeChannel, FakeDiscord
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


async def settled(harness: Harness, thread: FakeChannel) -> None:
    """Wait until `thread` is answered and the bot has handled everything before a later
    post (answered too), so that a second answer to `thread` would already be there."""
    assert harness.world is not None
    await answers_in(harness, thread)
    control = await harness.discord.create_forum_thread(
        harness.world.forum, author=harness.world.member, title="Contrôle", content="Et ça ?"
    )
    await answers_in(harness, control)


def sent_thread_create(discord: FakeDiscord, thread: FakeChannel) -> bool:
    """Whether any gateway session of the fake was sent THREAD_CREATE for `thread`."""
    return any(
        frame.event == "THREAD_CREATE" and frame.data["id"] == str(thread.id)
        for session in discord.gateway.sessions.values()
        for frame in session.history
    )


async def ledger_rows_for(harness: Harness, thread: FakeChannel) -> int:
    assert harness.services is not None
    return len([r for r in await harness.services.ledger.rows() if r.thread_id == thread.id])


async def test_a_post_made_while_the_session_expired_is_answered_once(harness):
    world, discord = harness.world, harness.discord
    identifies = len(discord.identify_payloads)
    resumes = len(discord.resume_payloads)

    discord.hold_resumes()  # the bot stays away until the session is gone
    await discord.drop_gateway()
    await discord.wait_for(lambda: len(discord.resume_payloads) > resumes)
    assert discord.expire_sessions() == 1
    thread = await discord.create_forum_thread(
        world.forum, author=world.member, title="Pendant la coupure", content="Quelqu'un ?"
    )
    discord.release_resumes()

    [answer] = await answers_in(harness, thread)
    refused = discord.resume_replies[-1]
    assert (refused["op"], refused["d"]) == (9, False)
    assert len(discord.identify_payloads) == identifies + 1  # a new session
    assert not sent_thread_create(discord, thread)  # nothing of the gap was replayed
    assert answer.embeds
    await settled(harness, thread)
    assert len(discord.messages_in(thread)) == 1
    assert await ledger_rows_for(harness, thread) == 1


async def test_a_normal_resume_replays_the_gap_and_answers_nothing_twice(harness):
    world, discord = harness.world, harness.discord
    before = await discord.create_forum_thread(
        world.forum, author=world.member, title="Avant", content="Première question"
    )
    await answers_in(harness, before)
    identifies = len(discord.identify_payloads)
    resumes = len(discord.resume_payloads)

    discord.hold_resumes()
    await discord.drop_gateway(replay_last=10)  # also re-sends what the bot already had
    await discord.wait_for(lambda: len(discord.resume_payloads) > resumes)
    gap = await discord.create_forum_thread(
        world.forum, author=world.member, title="Pendant la coupure", content="Et moi ?"
    )
    discord.release_resumes()

    [answer] = await answers_in(harness, gap)
    resumed = discord.resume_replies[-1]
    assert (resumed["op"], resumed["t"]) == (0, "RESUMED")
    assert len(discord.identify_payloads) == identifies  # the same session
    assert sent_thread_create(discord, gap)  # the gap was replayed
    assert answer.embeds
    await settled(harness, gap)
    assert len(discord.messages_in(before)) == 1
    assert len(discord.messages_in(gap)) == 1
    assert await ledger_rows_for(harness, before) == 1
    assert await ledger_rows_for(harness, gap) == 1


async def test_a_post_made_during_a_guild_outage_is_answered_when_it_is_back(harness):
    world, discord = harness.world, harness.discord
    await discord.guild_outage(world.guild)
    thread = await discord.create_forum_thread(
        world.forum, author=world.member, title="Pendant la panne", content="Allô ?"
    )
    assert not sent_thread_create(discord, thread)  # an unavailable guild's events are lost

    await discord.guild_back(world.guild)

    [answer] = await answers_in(harness, thread)
    assert answer.embeds
    await settled(harness, thread)
    assert len(discord.messages_in(thread)) == 1
    assert await ledger_rows_for(harness, thread) == 1


async def test_a_guild_that_loads_after_ready_gets_its_unanswered_post_answered(harness):
    world, discord = harness.world, harness.discord
    await harness.stop_bot()
    thread = await discord.create_forum_thread(
        world.forum, author=world.member, title="Posté pendant l'arrêt", content="Allô ?"
    )
    await discord.delay_guild_create(world.guild)

    await harness.start_bot()  # READY lists the guild unavailable; no GUILD_CREATE yet
    [session] = discord.gateway.sessions.values()
    ready = next(f for f in session.history if f.event == "READY")
    assert ready.data["guilds"] == [{"id": str(world.guild.id), "unavailable": True}]
    assert [f.event for f in session.history if f.event.startswith("GUILD_")] == []
    assert discord.messages_in(thread) == []

    await discord.guild_back(world.guild)

    [answer] = await answers_in(harness, thread)
    assert answer.embeds
    await settled(harness, thread)
    assert len(discord.messages_in(thread)) == 1
    assert await ledger_rows_for(harness, thread) == 1


async def test_catch_ups_of_one_forum_never_overlap_and_coalesce(harness, monkeypatch):
    """Many triggers while a catch-up runs give exactly one more run, after it."""
    cog = harness.bot.get_cog("ForumAutoReply")
    forum_id = harness.world.forum.id
    running = 0
    runs: list[frozenset[int]] = []
    overlapped = False
    first_started = asyncio.Event()
    release_first = asyncio.Event()
    second_done = asyncio.Event()

    async def recording(forum_ids=None):
        nonlocal running, overlapped
        running += 1
        overlapped = overlapped or running > 1
        runs.append(frozenset(forum_ids or ()))
        try:
            if len(runs) == 1:
                first_started.set()
                await release_first.wait()
            else:
                second_done.set()
        finally:
            running -= 1

    await asyncio.wait_for(asyncio.gather(*cog._tasks), 10)  # the start's catch-up is done
    monkeypatch.setattr(cog, "catch_up", recording)
    cog.request_catch_up([forum_id])
    await asyncio.wait_for(first_started.wait(), 5)
    for _ in range(5):
        cog.request_catch_up([forum_id])  # while the first runs: coalesced into one
    release_first.set()
    await asyncio.wait_for(second_done.wait(), 5)
    await asyncio.wait_for(asyncio.gather(*cog._tasks), 5)  # and nothing after it

    assert not overlapped
    assert runs == [frozenset({forum_id}), frozenset({forum_id})]
