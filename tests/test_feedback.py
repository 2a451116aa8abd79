"""Votes and ✅ on the bot's answers, through the Discord-free services, on SQLite and
PostgreSQL (the conftest `sessionmaker` runs each test on both)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from ibot.db.feedback import FeedbackStore
from ibot.domain import Feature, utcnow
from ibot.services.feedback import FeedbackService, NotAnAnswer, PostedAnswer, Voted, VoteUnchanged
from ibot.services.knowledge import KnowledgeBase
from ibot.services.permissions import MemberFacts, RolePolicy
from ibot.services.solved import (
    AlreadySolved,
    CloseThread,
    ForumTag,
    ForumThread,
    NoAnswerFound,
    NotAllowed,
    Reply,
    Solved,
    SolvedService,
    UnknownAnswer,
    close_thread,
    is_solved_tag_added,
)

GUILD = 1_100_000_000_000_000_001
FORUM = 1_100_000_000_000_000_002
THREAD = 1_100_000_000_000_000_003
ANSWER = 1_100_000_000_000_000_004  # the bot's answer's first message
ASKER = 1_100_000_000_000_000_010
ALICE = 1_100_000_000_000_000_011
BOB = 1_100_000_000_000_000_012
MOD_ROLE = 1_100_000_000_000_000_020
NOBODY = MemberFacts.of([])
TITLE = "ModuleNotFoundError: No module named requests"
QUESTION = "Mon script plante avec ModuleNotFoundError: No module named 'requests'."
BOT_TEXT = "Installe le paquet dans ton venv : python -m pip install requests."


def forum_answer(message_id: int = ANSWER) -> PostedAnswer:
    return PostedAnswer(
        message_id=message_id,
        guild_id=GUILD,
        feature=Feature.AUTO_REPLY,
        answer=BOT_TEXT,
        channel_id=FORUM,
        thread_id=THREAD,
        ledger_id=42,
        asker_id=ASKER,
        title=TITLE,
        question=QUESTION,
    )


def thread() -> ForumThread:
    return ForumThread(
        guild_id=GUILD,
        forum_id=FORUM,
        thread_id=THREAD,
        title=TITLE,
        question=QUESTION,
        owner_id=ASKER,
        tags=("python",),
    )


@pytest.fixture
def feedback(sessionmaker) -> FeedbackService:
    return FeedbackService(FeedbackStore(sessionmaker))


@pytest.fixture
def knowledge(sessionmaker) -> KnowledgeBase:
    return KnowledgeBase(sessionmaker)


@pytest.fixture
def solved(feedback, knowledge) -> SolvedService:
    policy = RolePolicy(moderators=frozenset({MOD_ROLE}))
    return SolvedService(feedback, knowledge, policy)


async def test_one_vote_per_member_and_changing_it(feedback: FeedbackService) -> None:
    await feedback.record(forum_answer())

    assert await feedback.vote(ANSWER, ALICE, up=True) == Voted(1, 0)
    assert await feedback.vote(ANSWER, ALICE, up=True) == VoteUnchanged(1, 0)
    assert await feedback.vote(ANSWER, BOB, up=True) == Voted(2, 0)
    assert await feedback.vote(ANSWER, ALICE, up=False) == Voted(1, 1)
    assert await feedback.vote(ANSWER, ALICE, up=False) == VoteUnchanged(1, 1)
    assert await feedback.counts(ANSWER) == (1, 1)


async def test_votes_are_per_answer(feedback: FeedbackService) -> None:
    other = ANSWER + 1
    await feedback.record(forum_answer())
    await feedback.record(forum_answer(other))

    await feedback.vote(ANSWER, ALICE, up=True)
    assert await feedback.vote(other, ALICE, up=False) == Voted(0, 1)
    assert await feedback.counts(ANSWER) == (1, 0)


async def test_a_message_that_is_no_recorded_answer_takes_no_vote(
    feedback: FeedbackService,
) -> None:
    assert await feedback.vote(ANSWER, ALICE, up=True) == NotAnAnswer()
    assert await feedback.counts(ANSWER) == (0, 0)


async def test_a_click_that_comes_before_the_answer_is_recorded_waits_for_it(
    feedback: FeedbackService,
) -> None:
    """The buttons are visible once Discord has the message, a moment before the bot
    recorded it: a click then is counted, not refused."""
    click = asyncio.create_task(feedback.vote(ANSWER, ALICE, up=True, sent_at=utcnow()))

    await feedback.record(forum_answer())  # lands while the click is being handled

    assert await click == Voted(1, 0)


async def test_an_old_message_without_a_record_is_not_waited_for(
    feedback: FeedbackService,
) -> None:
    long_ago = utcnow() - timedelta(hours=1)
    assert await feedback.vote(ANSWER, ALICE, up=True, sent_at=long_ago) == NotAnAnswer()


async def test_recording_the_same_answer_twice_keeps_its_votes(feedback: FeedbackService) -> None:
    await feedback.record(forum_answer())
    await feedback.vote(ANSWER, ALICE, up=True)

    await feedback.record(forum_answer())

    assert await feedback.counts(ANSWER) == (1, 0)


async def test_the_askers_tick_puts_the_thread_in_the_knowledge_base(
    feedback: FeedbackService, solved: SolvedService, knowledge: KnowledgeBase, sessionmaker
) -> None:
    await feedback.record(forum_answer())
    assert await knowledge.search("No module named requests", guild_id=GUILD) == []

    outcome = await solved.mark_answer(ANSWER, member_id=ASKER, facts=NOBODY, thread=thread())

    assert outcome == Solved(indexed=True)
    [hit] = await knowledge.search("No module named requests", guild_id=GUILD)
    assert hit.thread_id == THREAD and hit.title == TITLE
    stored = await FeedbackStore(sessionmaker).answer(ANSWER)
    assert stored is not None and stored.solved_by == ASKER and stored.solved_at is not None


async def test_a_moderator_may_tick_someone_elses_answer(
    feedback: FeedbackService, solved: SolvedService, knowledge: KnowledgeBase
) -> None:
    await feedback.record(forum_answer())
    moderator = MemberFacts.of([MOD_ROLE])
    helper = MemberFacts.of([], manage_messages=True)

    assert await solved.mark_answer(ANSWER, member_id=BOB, facts=helper) == Solved(indexed=False)
    outcome = await solved.mark_answer(ANSWER, member_id=ALICE, facts=moderator, thread=thread())

    assert outcome == Solved(indexed=True)
    assert await knowledge.search("requests", guild_id=GUILD)


async def test_anyone_else_is_refused_and_nothing_changes(
    feedback: FeedbackService, solved: SolvedService, knowledge: KnowledgeBase, sessionmaker
) -> None:
    await feedback.record(forum_answer())

    outcome = await solved.mark_answer(ANSWER, member_id=ALICE, facts=NOBODY, thread=thread())

    assert outcome == NotAllowed()
    assert await knowledge.search("No module named requests", guild_id=GUILD) == []
    stored = await FeedbackStore(sessionmaker).answer(ANSWER)
    assert stored is not None and stored.solved_at is None


async def test_a_tick_outside_a_forum_thread_only_records_solved(
    feedback: FeedbackService, solved: SolvedService, knowledge: KnowledgeBase, sessionmaker
) -> None:
    await feedback.record(
        PostedAnswer(
            message_id=ANSWER,
            guild_id=GUILD,
            feature=Feature.ASK,
            answer=BOT_TEXT,
            asker_id=ASKER,
            question="Comment installer requests ?",
        )
    )

    assert await solved.mark_answer(ANSWER, member_id=ASKER, facts=NOBODY) == Solved(False)
    assert await knowledge.search("installer requests", guild_id=GUILD) == []
    stored = await FeedbackStore(sessionmaker).answer(ANSWER)
    assert stored is not None and stored.solved_by == ASKER


async def test_solved_command_with_a_members_message(
    feedback: FeedbackService, solved: SolvedService, knowledge: KnowledgeBase
) -> None:
    await feedback.record(forum_answer())
    member_text = "Chez moi c'était le mauvais interpréteur : choisis celui du venv."

    outcome = await solved.mark_thread(
        thread(), member_id=ASKER, facts=NOBODY, answer=member_text, answer_kind="member"
    )

    assert outcome == Solved(indexed=True)
    [hit] = await knowledge.search("mauvais interpréteur venv", guild_id=GUILD)
    assert hit.thread_id == THREAD


async def test_solved_command_defaults_to_the_bots_answer_and_checks_who(
    feedback: FeedbackService, solved: SolvedService, knowledge: KnowledgeBase, sessionmaker
) -> None:
    assert await solved.mark_thread(thread(), member_id=ASKER, facts=NOBODY) == UnknownAnswer()
    await feedback.record(forum_answer())

    assert await solved.mark_thread(thread(), member_id=BOB, facts=NOBODY) == NotAllowed()
    assert await solved.mark_thread(thread(), member_id=ASKER, facts=NOBODY) == Solved(True)

    assert await knowledge.search("pip install requests venv", guild_id=GUILD)
    stored = await FeedbackStore(sessionmaker).answer(ANSWER)
    assert stored is not None and stored.solved_by == ASKER


async def test_unknown_answer_for_a_tick_on_another_message(solved: SolvedService) -> None:
    assert await solved.mark_answer(ANSWER, member_id=ASKER, facts=NOBODY) == UnknownAnswer()


SOLVED_TAGS = ("Résolu", "Solved")


def test_a_solved_tag_counts_when_it_is_added_whatever_its_case() -> None:
    assert is_solved_tag_added(["python"], ["python", "RÉSOLU"], SOLVED_TAGS)
    assert is_solved_tag_added([], ["solved"], SOLVED_TAGS)
    assert not is_solved_tag_added(["Résolu"], ["Résolu", "python"], SOLVED_TAGS)  # had it
    assert not is_solved_tag_added(["Solved"], ["Résolu"], SOLVED_TAGS)  # solved already
    assert not is_solved_tag_added([], ["python"], SOLVED_TAGS)
    assert not is_solved_tag_added(["Résolu"], [], SOLVED_TAGS)  # taken off


def test_closing_adds_the_forums_solved_tag_once_and_archives() -> None:
    forum = [ForumTag(1, "python"), ForumTag(2, "résolu"), ForumTag(3, "Solved")]

    assert close_thread(forum, [1], archived=False, solved_tags=SOLVED_TAGS) == CloseThread((1, 2))
    assert close_thread(forum, [3], archived=False, solved_tags=SOLVED_TAGS) == CloseThread((3,))
    untagged = [ForumTag(1, "python")]  # no solved tag in this forum: only archived
    assert close_thread(untagged, [1], archived=False, solved_tags=SOLVED_TAGS) == CloseThread((1,))
    full = [10, 11, 12, 13, 14]  # Discord's limit of 5 applied tags
    assert close_thread(forum, full, archived=False, solved_tags=SOLVED_TAGS) == CloseThread(
        tuple(full)
    )
    assert close_thread(forum, [1], archived=True, solved_tags=SOLVED_TAGS) is None


async def test_a_solved_tag_indexes_the_bots_answer_once(
    feedback: FeedbackService, solved: SolvedService, knowledge: KnowledgeBase, sessionmaker
) -> None:
    await feedback.record(forum_answer())
    other = Reply("Regarde plutôt ton PATH.", "member")

    assert await solved.solved_by_tag(thread(), reply=other) == Solved(indexed=True)
    assert await solved.solved_by_tag(thread(), reply=other) == AlreadySolved()

    stats = await knowledge.stats(GUILD)
    assert stats.threads == 1 and dict(stats.per_answer_kind) == {"bot": 1}
    stored = await FeedbackStore(sessionmaker).answer(ANSWER)
    assert stored is not None and stored.solved_at is not None and stored.solved_by is None


async def test_a_solved_tag_without_a_bot_answer_takes_the_reply_or_nothing(
    solved: SolvedService, knowledge: KnowledgeBase
) -> None:
    assert await solved.solved_by_tag(thread(), reply=None) == NoAnswerFound()
    assert (await knowledge.stats(GUILD)).threads == 0

    fix = Reply("C'était le mauvais interpréteur : choisis celui du venv.", "moderator")
    assert await solved.solved_by_tag(thread(), reply=fix) == Solved(indexed=True)

    [hit] = await knowledge.search("mauvais interpréteur venv", guild_id=GUILD)
    assert hit.thread_id == THREAD
    assert dict((await knowledge.stats(GUILD)).per_answer_kind) == {"moderator": 1}


async def test_a_deleted_thread_leaves_the_knowledge_base(
    solved: SolvedService, knowledge: KnowledgeBase
) -> None:
    assert await solved.thread_deleted(THREAD) is False  # never solved: nothing to do
    await solved.solved_by_tag(thread(), reply=Reply("pip install requests", "member"))

    assert await solved.thread_deleted(THREAD) is True
    assert await knowledge.search("No module named requests", guild_id=GUILD) == []


async def test_without_a_knowledge_base_a_tag_after_the_tick_keeps_who_solved_it(
    feedback: FeedbackService, sessionmaker
) -> None:
    solved = SolvedService(feedback, None, RolePolicy(moderators=frozenset({MOD_ROLE})))
    await feedback.record(forum_answer())
    assert await solved.mark_answer(ANSWER, member_id=ASKER, facts=NOBODY, thread=thread()) == (
        Solved(indexed=False)
    )

    assert await solved.solved_by_tag(thread(), reply=None) == AlreadySolved()
    stored = await FeedbackStore(sessionmaker).answer(ANSWER)
    assert stored is not None and stored.solved_by == ASKER
