"""Votes on the bot's answers: 👍 / 👎 by anyone, one per member per answer.

Discord-free: the cog records each answer it posts with the buttons (`record`), then
passes each click in (`vote`) and shows the counts of the typed outcome. An answer is
known by the id of its first message, so a click after a restart still finds it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from ibot.db.feedback import FeedbackStore, StoredAnswer
from ibot.domain import Feature, utcnow

UP = 1
DOWN = -1
# A click can come before the cog that posted the answer has recorded it (the buttons
# are visible as soon as Discord has the message): on a message this recent, a click
# waits for that record, at most RECORD_WAIT_S (Discord wants its reply within 3 s).
RECORDING_GRACE = timedelta(seconds=30)
RECORD_WAIT_S = 2.0


@dataclass(frozen=True, slots=True)
class PostedAnswer:
    """An answer the bot just posted with the feedback buttons on `message_id`."""

    message_id: int
    guild_id: int
    feature: Feature
    answer: str
    channel_id: int | None = None  # the forum, for a forum thread
    thread_id: int | None = None
    ledger_id: int | None = None
    asker_id: int | None = None
    title: str = ""  # the forum thread's title
    question: str = ""  # its starter text, or the /ask-gpt question


@dataclass(frozen=True, slots=True)
class Voted:
    """The member's vote was counted (new, or changed); the answer's counts now."""

    up: int
    down: int


@dataclass(frozen=True, slots=True)
class VoteUnchanged:
    """The member had already voted this way: nothing changed."""

    up: int
    down: int


@dataclass(frozen=True, slots=True)
class NotAnAnswer:
    """The message is no answer the bot recorded (posted before feedback existed)."""


type VoteOutcome = Voted | VoteUnchanged | NotAnAnswer


class FeedbackService:
    """One per process (`Services.feedback_service`): a click waits in memory for the
    record of an answer being posted by this same process."""

    def __init__(self, store: FeedbackStore) -> None:
        self.store = store
        self._recorded: dict[int, asyncio.Event] = {}

    async def answer(self, message_id: int, sent_at: datetime | None = None) -> StoredAnswer | None:
        """The answer on `message_id`; for a message sent at `sent_at`, less than
        RECORDING_GRACE ago, once it is recorded (waiting RECORD_WAIT_S at most)."""
        found = await self.store.answer(message_id)
        if found is not None or sent_at is None or utcnow() - sent_at > RECORDING_GRACE:
            return found
        event = self._recorded.setdefault(message_id, asyncio.Event())
        try:
            async with asyncio.timeout(RECORD_WAIT_S):
                await event.wait()
        except TimeoutError:
            pass  # recorded just before the wait began, or never: the store says
        finally:
            if self._recorded.get(message_id) is event:
                del self._recorded[message_id]
        return await self.store.answer(message_id)

    async def record(self, posted: PostedAnswer) -> None:
        await self.store.add_answer(
            StoredAnswer(
                message_id=posted.message_id,
                guild_id=posted.guild_id,
                channel_id=posted.channel_id,
                thread_id=posted.thread_id,
                feature=posted.feature.value,
                ledger_id=posted.ledger_id,
                asker_id=posted.asker_id,
                title=posted.title,
                question=posted.question,
                answer=posted.answer,
                solved_at=None,
                solved_by=None,
            )
        )
        event = self._recorded.get(posted.message_id)
        if event is not None:
            event.set()

    async def vote(
        self, message_id: int, member_id: int, *, up: bool, sent_at: datetime | None = None
    ) -> VoteOutcome:
        """`sent_at`: when the clicked message was sent (see `answer`)."""
        if await self.answer(message_id, sent_at) is None:
            return NotAnAnswer()
        changed = await self.store.vote(message_id, member_id, UP if up else DOWN)
        ups, downs = await self.store.counts(message_id)
        return Voted(ups, downs) if changed else VoteUnchanged(ups, downs)

    async def counts(self, message_id: int) -> tuple[int, int]:
        return await self.store.counts(message_id)
