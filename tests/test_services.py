"""Discord-free services: permissions, cooldowns, summaries within budget, thread claims."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from ibot.db.ledger import Ledger
from ibot.db.threads import ThreadState, ThreadStore
from ibot.domain import CallContext, ErrorKind, Feature
from ibot.llm.gateway import ModelGateway
from ibot.pricing import default_price_table
from ibot.services.chat import ChatService, Duplicate
from ibot.services.cooldown import Cooldowns
from ibot.services.forum import CatchUp, ForumPost, ForumService
from ibot.services.outcomes import Failed
from ibot.services.permissions import Access, MemberFacts, RolePolicy
from ibot.services.prompts import FeatureConfig, PromptBuilder

ADMIN, MOD, DENIED = 1, 2, 3
POLICY = RolePolicy(
    denied_ask=frozenset({DENIED}), moderators=frozenset({MOD}), admins=frozenset({ADMIN})
)
TEMPLATES = {
    "persona": "Tu es un assistant.",
    "summary": "Résume #{channel} :\n{transcript}",
    "summary_chunk": "Résume ce morceau de #{channel} :\n{transcript}",
    "summary_combine": "Combine ces résumés de #{channel} :\n{transcript}",
    "chat": "Réponds brièvement.",
    "auto_reply": "{author} : {title} [{tags}]\n{content}",
}


@pytest.mark.parametrize(
    ("member", "ask", "summary", "admin"),
    [
        (MemberFacts.of([ADMIN]), True, True, True),
        (MemberFacts.of([], administrator=True), True, True, True),
        (MemberFacts.of([], is_owner=True), True, True, True),
        (MemberFacts.of([MOD]), True, True, False),
        (MemberFacts.of([], manage_messages=True), True, True, False),
        (MemberFacts.of([MOD, DENIED]), True, True, False),
        (MemberFacts.of([]), True, False, False),
        (MemberFacts.of([DENIED]), False, False, False),
    ],
)
def test_permission_matrix(member, ask, summary, admin):
    assert POLICY.allows(Access.ASK, member) is ask
    assert POLICY.allows(Access.SUMMARY, member) is summary
    assert POLICY.allows(Access.ADMIN, member) is admin


def test_cooldown_blocks_then_frees():
    now = [100.0]
    cooldowns = Cooldowns(30, clock=lambda: now[0])
    assert cooldowns.try_acquire("alice") == 0
    now[0] += 10
    assert cooldowns.try_acquire("alice") == pytest.approx(20)
    assert cooldowns.try_acquire("bob") == 0
    now[0] += 21
    assert cooldowns.try_acquire("alice") == 0
    cooldowns.release("alice")
    assert cooldowns.try_acquire("alice") == 0


async def test_chat_skips_replayed_messages_and_remembers(gateway):
    service = ChatService(
        gateway, PromptBuilder(TEMPLATES), FeatureConfig("gpt-4o-mini", 100, 4000)
    )
    ctx = CallContext(feature=Feature.CHAT, channel_id=5)
    await service.reply(
        channel_id=5, message_id=1, author="alice", content="Je suis Alice.", context=ctx
    )
    assert isinstance(
        await service.reply(
            channel_id=5, message_id=1, author="alice", content="Je suis Alice.", context=ctx
        ),
        Duplicate,
    )
    await service.reply(
        channel_id=5, message_id=2, author="alice", content="Qui suis-je ?", context=ctx
    )
    last = gateway.fake.requests[-1].body["messages"]
    assert len(gateway.fake.requests) == 2
    assert any("Je suis Alice." in m["content"] for m in last)


async def test_thread_claims_are_exclusive_and_survive_a_dead_owner(sessionmaker):
    first = ThreadStore(sessionmaker, owner="run-1")
    second = ThreadStore(sessionmaker, owner="run-2")
    assert await first.claim(42, guild_id=1, forum_id=2)
    assert not await first.claim(42, guild_id=1, forum_id=2)
    assert not await second.claim(42, guild_id=1, forum_id=2)
    # run-1 died before answering: run-2 may take the claim over, once.
    assert await second.take_over(42)
    assert not await second.take_over(42)
    await second.finish(42, ThreadState.ANSWERED, message_id=7)
    assert (await first.states([42, 43])) == {42: (ThreadState.ANSWERED, "run-2")}
    assert not await first.take_over(42)


async def test_a_taken_over_claim_is_not_finished_by_its_old_owner(sessionmaker):
    old = ThreadStore(sessionmaker, owner="run-1")
    new = ThreadStore(sessionmaker, owner="run-2")
    assert await old.claim(42, guild_id=1, forum_id=2)
    # run-1 looked dead (stale claim): run-2 took the thread over and is answering it.
    assert await new.take_over(42)
    # run-1 was only slow: its late write must not overwrite run-2's claim.
    with capture_logs() as logs:
        assert await old.finish(42, ThreadState.FAILED, reason="internal_error") is False
    assert [e["event"] for e in logs] == ["thread_finish_not_owner"]
    assert logs[0]["owner"] == "run-1" and logs[0]["thread_id"] == 42
    assert await new.states([42]) == {42: (ThreadState.CLAIMED, "run-2")}
    assert await new.finish(42, ThreadState.ANSWERED, message_id=7) is True
    assert await old.states([42]) == {42: (ThreadState.ANSWERED, "run-2")}
    # A thread nobody claimed is not written either.
    assert await new.finish(43, ThreadState.ANSWERED) is False
    assert await new.states([43]) == {}


def forum_service(sessionmaker, owner: str, **kw) -> ForumService:
    prompts = PromptBuilder(TEMPLATES)
    gateway = ModelGateway(ledger=Ledger(sessionmaker), prices=default_price_table(), openai=None)
    config = FeatureConfig("gpt-4o", 100, 1000)
    return ForumService(gateway, prompts, config, ThreadStore(sessionmaker, owner), **kw)


async def test_catch_up_plans_new_threads_and_dead_claims_only(sessionmaker):
    dead = forum_service(sessionmaker, "run-1")
    for thread_id in (1, 2, 3, 4):
        assert await dead.begin(thread_id, guild_id=9, forum_id=8)
    await dead.store.finish(2, ThreadState.ANSWERED)
    await dead.store.finish(3, ThreadState.SKIPPED, reason="bot_author")
    live = forum_service(sessionmaker, "run-2", catch_up_hours=24)
    assert await live.begin(5, guild_id=9, forum_id=8)  # being answered by this process

    plan = await live.plan_catch_up([1, 2, 3, 4, 5, 6])

    # 1 and 4: run-1 died before answering; 6: never seen. 2, 3 are done, 5 is ours.
    assert plan == [CatchUp(1, take_over=True), CatchUp(4, take_over=True), CatchUp(6, False)]
    now = datetime(2026, 12, 2, 12, tzinfo=UTC)
    assert live.catch_up_since(now) == now - timedelta(hours=24)
    assert dead.catch_up_since(now) is None  # catch_up_hours 0: no catch-up


async def test_forum_thread_states_follow_the_outcome(sessionmaker):
    service = forum_service(sessionmaker, "run-1", no_bot_tags=["sans-bot"])
    post = ForumPost(
        thread_id=10,
        guild_id=9,
        forum_id=8,
        title="t",
        content="c",
        author_id=1,
        author_name="a",
        tags=("Sans-Bot",),
    )
    assert await service.begin(10, guild_id=9, forum_id=8)
    assert await service.skip_if_unwanted(post) == "no_bot_tag"
    assert await service.begin(11, guild_id=9, forum_id=8)
    failed = await service.answer(replace(post, thread_id=11, tags=()))  # no backend at all
    assert isinstance(failed, Failed)
    await service.posted(11, failed)
    assert await service.begin(12, guild_id=9, forum_id=8)
    await service.abandon(12, "starter_missing")

    assert await service.store.states([10, 11, 12]) == {
        10: (ThreadState.SKIPPED, "run-1"),
        11: (ThreadState.FAILED, "run-1"),
        12: (ThreadState.FAILED, "run-1"),
    }


async def test_a_database_failure_after_posting_is_logged_not_raised(sessionmaker):
    service = forum_service(sessionmaker, "run-1")
    assert await service.begin(10, guild_id=9, forum_id=8)

    async def broken(*args, **kw):
        raise OSError("database is locked")

    service.store.finish = broken  # type: ignore[method-assign]
    with capture_logs() as logs:
        await service.posted(10, Failed(ErrorKind.SERVER), message_id=77)

    assert [e["event"] for e in logs] == ["thread_state_write_failed"]
