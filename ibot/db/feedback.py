"""The bot's answers that carry feedback buttons, and the members' votes on them.

`answers` has one row per answer posted with the buttons, keyed by the id of its first
message (the message the buttons are on): what a click needs to know after a restart (the
feature, the ledger row, whose call_id names the call, who asked, the thread) and what
✅ puts in the knowledge base (the question and the answer's text), and when and by
whom it was marked solved.
`answer_feedback` has one vote (+1 or −1) per member per answer: the unique key makes a
second vote an update of the first, whichever process writes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    case,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from ibot.db.models import Base, IdType, UTCDateTime
from ibot.domain import utcnow

MARKS_BATCH = 500  # ids per IN (…): well under SQLite's 999 bound values of old builds


class AnswerRecord(Base):
    __tablename__ = "answers"

    message_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    guild_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)  # the forum, for a thread
    thread_id: Mapped[int | None] = mapped_column(BigInteger)
    feature: Mapped[str] = mapped_column(String(16), nullable=False)
    ledger_id: Mapped[int | None] = mapped_column(BigInteger)
    asker_id: Mapped[int | None] = mapped_column(BigInteger)
    title: Mapped[str] = mapped_column(Text, nullable=False, default="")
    question: Mapped[str] = mapped_column(Text, nullable=False, default="")
    answer: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    solved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    solved_by: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_answers_thread_id", "thread_id"),)


class VoteRecord(Base):
    __tablename__ = "answer_feedback"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("answers.message_id", ondelete="CASCADE"), nullable=False
    )
    member_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    vote: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    voted_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)

    __table_args__ = (
        UniqueConstraint("message_id", "member_id", name="uq_answer_feedback_message_member"),
    )


@dataclass(frozen=True, slots=True)
class AnswerMarks:
    """What members said of one answer: its votes and whether it was marked solved."""

    up: int = 0
    down: int = 0
    solved: bool = False

    @property
    def helpful(self) -> bool:
        """More 👍 than 👎, and at least one: the members found it helpful."""
        return self.up >= 1 and self.up > self.down


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    message_id: int
    guild_id: int
    channel_id: int | None
    thread_id: int | None
    feature: str
    ledger_id: int | None
    asker_id: int | None
    title: str
    question: str
    answer: str
    solved_at: datetime | None
    solved_by: int | None


def _stored(row: AnswerRecord) -> StoredAnswer:
    return StoredAnswer(
        message_id=row.message_id,
        guild_id=row.guild_id,
        channel_id=row.channel_id,
        thread_id=row.thread_id,
        feature=row.feature,
        ledger_id=row.ledger_id,
        asker_id=row.asker_id,
        title=row.title,
        question=row.question,
        answer=row.answer,
        solved_at=row.solved_at,
        solved_by=row.solved_by,
    )


class FeedbackStore:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def add_answer(self, answer: StoredAnswer) -> None:
        """Record a posted answer; the same message id twice keeps the first."""
        async with self._sessionmaker() as session:
            session.add(
                AnswerRecord(
                    message_id=answer.message_id,
                    guild_id=answer.guild_id,
                    channel_id=answer.channel_id,
                    thread_id=answer.thread_id,
                    feature=answer.feature,
                    ledger_id=answer.ledger_id,
                    asker_id=answer.asker_id,
                    title=answer.title,
                    question=answer.question,
                    answer=answer.answer,
                )
            )
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()

    async def answer(self, message_id: int) -> StoredAnswer | None:
        async with self._sessionmaker() as session:
            row = await session.get(AnswerRecord, message_id)
            return _stored(row) if row is not None else None

    async def answer_in_thread(self, thread_id: int) -> StoredAnswer | None:
        """The first answer recorded in this thread (the auto-reply's, usually)."""
        async with self._sessionmaker() as session:
            row = await session.scalar(
                select(AnswerRecord)
                .where(AnswerRecord.thread_id == thread_id)
                .order_by(AnswerRecord.created_at, AnswerRecord.message_id)
                .limit(1)
            )
            return _stored(row) if row is not None else None

    async def vote(self, message_id: int, member_id: int, vote: int) -> bool:
        """Set this member's vote on the answer; False when it already was `vote`."""
        for _ in range(2):  # a concurrent first vote of the same member: update it then
            async with self._sessionmaker() as session:
                row = await session.scalar(
                    select(VoteRecord).where(
                        VoteRecord.message_id == message_id, VoteRecord.member_id == member_id
                    )
                )
                if row is not None and row.vote == vote:
                    return False
                if row is None:
                    session.add(VoteRecord(message_id=message_id, member_id=member_id, vote=vote))
                else:
                    row.vote = vote
                    row.voted_at = utcnow()
                try:
                    await session.commit()
                    return True
                except IntegrityError:
                    await session.rollback()
        return False

    async def counts(self, message_id: int) -> tuple[int, int]:
        """(👍, 👎) votes on the answer."""
        async with self._sessionmaker() as session:
            rows = await session.execute(
                select(VoteRecord.vote, func.count())
                .where(VoteRecord.message_id == message_id)
                .group_by(VoteRecord.vote)
            )
            tally = {vote: count for vote, count in rows.all()}
        return tally.get(1, 0), tally.get(-1, 0)

    async def marks(self, message_ids: Iterable[int]) -> dict[int, AnswerMarks]:
        """Votes and solved mark of each of these answers that is recorded; an id that
        is no recorded answer (not the bot's, or posted before feedback existed) is
        absent. Read in batches of MARKS_BATCH ids (SQLite's limit on bound values)."""
        wanted = sorted(set(message_ids))
        found: dict[int, AnswerMarks] = {}
        async with self._sessionmaker() as session:
            for first in range(0, len(wanted), MARKS_BATCH):
                batch = wanted[first : first + MARKS_BATCH]
                rows = await session.execute(
                    select(
                        AnswerRecord.message_id,
                        AnswerRecord.solved_at.is_not(None),
                        func.coalesce(func.sum(case((VoteRecord.vote > 0, 1), else_=0)), 0),
                        func.coalesce(func.sum(case((VoteRecord.vote < 0, 1), else_=0)), 0),
                    )
                    .outerjoin(VoteRecord, VoteRecord.message_id == AnswerRecord.message_id)
                    .where(AnswerRecord.message_id.in_(batch))
                    .group_by(AnswerRecord.message_id, AnswerRecord.solved_at)
                )
                for message_id, solved, up, down in rows.all():
                    found[message_id] = AnswerMarks(up=int(up), down=int(down), solved=bool(solved))
        return found

    async def mark_solved(self, message_id: int, member_id: int | None, at: datetime) -> None:
        async with self._sessionmaker() as session:
            await session.execute(
                update(AnswerRecord)
                .where(AnswerRecord.message_id == message_id)
                .values(solved_at=at, solved_by=member_id)
            )
            await session.commit()
