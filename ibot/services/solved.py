"""Marking a question solved: by the ✅ under a bot answer, or by `/solved`.

Only the asker (who opened the thread, or asked the question) and moderators may. In a
forum thread the thread's question (title and starter text) and the answer that solved
it go into the knowledge base, so later questions like it find it; elsewhere (an
/ask-gpt in a channel) the answer is only recorded solved. Discord-free: the cog reads
the thread and its messages and passes the facts in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ibot.db.feedback import StoredAnswer
from ibot.domain import utcnow
from ibot.services.feedback import FeedbackService
from ibot.services.knowledge import KnowledgeBase, SolvedThread
from ibot.services.permissions import MemberFacts, RolePolicy


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


class SolvedService:
    def __init__(
        self, feedback: FeedbackService, knowledge: KnowledgeBase | None, policy: RolePolicy
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

    async def _solve(
        self,
        recorded: StoredAnswer | None,
        member_id: int,
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
