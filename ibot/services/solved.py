"""Marking a question solved: by the ✅ under a bot answer, by `/solved`, or by a solved
tag (settings knowledge.solved_tags) applied to the forum thread.

Only the asker (who opened the thread, or asked the question) and moderators may. In a
forum thread the thread's question (title and starter text) and the answer that solved
it go into the knowledge base, so later questions like it find it; elsewhere (an
/ask-gpt in a channel) the answer is only recorded solved. A deleted thread leaves the
knowledge base. With knowledge.close_solved, a solved thread is closed: the forum's
solved tag applied, the thread archived (`close_thread` says what to change).
Discord-free: the cog reads the thread and its messages and passes the facts in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from ibot.db.feedback import StoredAnswer
from ibot.domain import utcnow
from ibot.services.feedback import FeedbackService
from ibot.services.knowledge import SolvedThread
from ibot.services.permissions import MemberFacts, RolePolicy
from ibot.services.retriever import Retriever


@dataclass(frozen=True, slots=True)
class ForumThread:
    """A forum thread, as the cog read it from Discord."""

    guild_id: int
    forum_id: int | None
    thread_id: int
    title: str
    question: str  # the starter message's text
    owner_id: int | None  # who opened it: its asker
    tags: tuple[str, ...] = ()
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Solved:
    """Recorded solved; `indexed`: the thread went into the knowledge base."""

    indexed: bool


@dataclass(frozen=True, slots=True)
class NotAllowed:
    """Neither the asker nor a moderator: nothing changed."""


@dataclass(frozen=True, slots=True)
class UnknownAnswer:
    """No answer of the bot is recorded there (none posted, or before feedback existed)."""


type SolvedOutcome = Solved | NotAllowed | UnknownAnswer


@dataclass(frozen=True, slots=True)
class AlreadySolved:
    """The thread is in the knowledge base already: left as it is (the tag the bot
    applies when closing a thread it just indexed comes back as this)."""


@dataclass(frozen=True, slots=True)
class NoAnswerFound:
    """Tagged solved, but neither a bot answer nor a reply by someone else is there."""


type TagOutcome = Solved | AlreadySolved | NoAnswerFound


@dataclass(frozen=True, slots=True)
class Reply:
    """A message in the thread by someone other than the asker, as the cog read it."""

    text: str
    answer_kind: str  # "member" or "moderator"


@dataclass(frozen=True, slots=True)
class ForumTag:
    """One of the forum's available tags."""

    id: int
    name: str


@dataclass(frozen=True, slots=True)
class CloseThread:
    """The edit that closes a solved thread: these tags applied, and archived."""

    applied_tags: tuple[int, ...]


def folded(names: Iterable[str]) -> frozenset[str]:
    return frozenset(name.casefold() for name in names)


def is_solved_tag_added(
    before: Iterable[str], after: Iterable[str], solved_tags: Iterable[str]
) -> bool:
    """The thread went from no solved tag (names compared casefolded) to one."""
    solved = folded(solved_tags)
    return not (folded(before) & solved) and bool(folded(after) & solved)


def close_thread(
    available: Sequence[ForumTag],
    applied: Sequence[int],
    *,
    archived: bool,
    solved_tags: Iterable[str],
) -> CloseThread | None:
    """How to close a solved thread: the forum's first solved tag added (when it has one
    and none is applied, and fewer than Discord's 5 are), then archived; None when it is
    archived already (a moderator closed it; a change would need it reopened)."""
    if archived:
        return None
    solved = folded(solved_tags)
    tags = tuple(applied)
    by_id = {tag.id: tag.name.casefold() for tag in available}
    if not any(by_id.get(tag) in solved for tag in tags) and len(tags) < 5:
        tag = next((tag for tag in available if tag.name.casefold() in solved), None)
        if tag is not None:
            tags = (*tags, tag.id)
    return CloseThread(applied_tags=tags)


class SolvedService:
    def __init__(
        self, feedback: FeedbackService, knowledge: Retriever | None, policy: RolePolicy
    ) -> None:
        self.feedback = feedback
        self.store = feedback.store
        self.knowledge = knowledge
        self.policy = policy

    def _may(self, member_id: int, facts: MemberFacts, *askers: int | None) -> bool:
        return member_id in askers or self.policy.is_moderator(facts)

    async def mark_answer(
        self,
        message_id: int,
        *,
        member_id: int,
        facts: MemberFacts,
        thread: ForumThread | None = None,
        sent_at: datetime | None = None,
    ) -> SolvedOutcome:
        """The ✅ under the bot's answer on `message_id` (sent at `sent_at`: see
        FeedbackService.answer); `thread`: the forum thread it is in, if it is in one."""
        answer = await self.feedback.answer(message_id, sent_at)
        if answer is None:
            return UnknownAnswer()
        owner = thread.owner_id if thread is not None else None
        if not self._may(member_id, facts, answer.asker_id, owner):
            return NotAllowed()
        return await self._solve(answer, member_id, thread, answer.answer, "bot")

    async def mark_thread(
        self,
        thread: ForumThread,
        *,
        member_id: int,
        facts: MemberFacts,
        answer: str | None = None,
        answer_kind: str = "bot",
        answer_message_id: int | None = None,
    ) -> SolvedOutcome:
        """`/solved` in a forum thread: `answer` is the text of the message that solved
        it (by an `answer_kind` author), or None for the bot's answer in the thread."""
        recorded = (
            await self.store.answer(answer_message_id) if answer_message_id is not None else None
        )
        if answer is None:
            recorded = recorded or await self.store.answer_in_thread(thread.thread_id)
            if recorded is None:
                if not self._may(member_id, facts, thread.owner_id):
                    return NotAllowed()
                return UnknownAnswer()
            answer, answer_kind = recorded.answer, "bot"
        askers = (thread.owner_id, recorded.asker_id if recorded else None)
        if not self._may(member_id, facts, *askers):
            return NotAllowed()
        return await self._solve(recorded, member_id, thread, answer, answer_kind)

    async def solved_by_tag(self, thread: ForumThread, *, reply: Reply | None) -> TagOutcome:
        """A solved tag was applied to `thread` (by whom, Discord does not say): its
        question goes in with the bot's recorded answer there, else with `reply` (the
        last message by someone other than the asker), else nothing does."""
        recorded = await self.store.answer_in_thread(thread.thread_id)
        if self.knowledge is not None:
            if await self.knowledge.contains(thread.thread_id):
                return AlreadySolved()
        elif recorded is not None and recorded.solved_at is not None:
            return AlreadySolved()  # no knowledge base: only the record says, keep its solver
        if recorded is not None:
            return await self._solve(recorded, None, thread, recorded.answer, "bot")
        if reply is not None:
            return await self._solve(None, None, thread, reply.text, reply.answer_kind)
        return NoAnswerFound()

    async def thread_deleted(self, thread_id: int) -> bool:
        """The thread was deleted: out of the knowledge base. False: it was not there."""
        if self.knowledge is None:
            return False
        return await self.knowledge.remove(thread_id)

    async def _solve(
        self,
        recorded: StoredAnswer | None,
        member_id: int | None,
        thread: ForumThread | None,
        answer: str,
        answer_kind: str,
    ) -> Solved:
        now = utcnow()
        if recorded is not None:
            await self.store.mark_solved(recorded.message_id, member_id, now)
        if thread is None or self.knowledge is None:
            return Solved(indexed=False)
        await self.knowledge.upsert(
            [
                SolvedThread(
                    guild_id=thread.guild_id,
                    forum_id=thread.forum_id,
                    thread_id=thread.thread_id,
                    title=thread.title,
                    question=thread.question,
                    answer=answer,
                    answer_kind=answer_kind,
                    tags=thread.tags,
                    created_at=thread.created_at,
                    solved_at=now,
                )
            ]
        )
        return Solved(indexed=True)
