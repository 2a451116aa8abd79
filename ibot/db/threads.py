"""Which forum threads were answered: exactly one answer per thread, across restarts.

A thread is *claimed* (one INSERT on its primary key) before any model call, so a
replayed THREAD_CREATE, the catch-up at start and a second event handler can never
answer it twice. Each claim carries the id of the process that made it: a claim left by
a process that died (crash, SIGKILL) is not answered, and the next process may take it
over at catch-up, after checking Discord for an answer posted just before the crash.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

import structlog
from sqlalchemy import BigInteger, CursorResult, Integer, String, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from ibot.db.models import Base, UTCDateTime
from ibot.domain import utcnow

log = structlog.get_logger("ibot.threads")


class ThreadState(StrEnum):
    CLAIMED = "claimed"  # an answer is being produced by `owner`
    ANSWERED = "answered"
    FAILED = "failed"  # the model failed; the user was told; not retried automatically
    SKIPPED = "skipped"  # bot author, "no bot" tag…


class ThreadAnswer(Base):
    __tablename__ = "thread_answers"

    thread_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    forum_id: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    owner: Mapped[str] = mapped_column(String(64), nullable=False)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    ledger_id: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="1")
    reason: Mapped[str | None] = mapped_column(String(64))


class ThreadStore:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], owner: str) -> None:
        self._sessionmaker = sessionmaker
        self.owner = owner

    async def claim(self, thread_id: int, *, guild_id: int | None, forum_id: int | None) -> bool:
        """True if this process now owns the thread's answer; False if it is taken."""
        async with self._sessionmaker() as session:
            session.add(
                ThreadAnswer(
                    thread_id=thread_id,
                    guild_id=guild_id,
                    forum_id=forum_id,
                    state=ThreadState.CLAIMED,
                    owner=self.owner,
                    claimed_at=utcnow(),
                )
            )
            try:
                await session.commit()
            except IntegrityError:
                return False
        return True

    async def take_over(self, thread_id: int) -> bool:
        """Claim a thread left CLAIMED by a dead process (catch-up only)."""
        async with self._sessionmaker() as session:
            result = await session.execute(
                update(ThreadAnswer)
                .where(
                    ThreadAnswer.thread_id == thread_id,
                    ThreadAnswer.state == ThreadState.CLAIMED,
                    ThreadAnswer.owner != self.owner,
                )
                .values(owner=self.owner, claimed_at=utcnow(), attempts=ThreadAnswer.attempts + 1)
            )
            await session.commit()
            return cast(CursorResult[Any], result).rowcount == 1

    async def finish(
        self,
        thread_id: int,
        state: ThreadState,
        *,
        message_id: int | None = None,
        ledger_id: int | None = None,
        reason: str | None = None,
    ) -> bool:
        """Record the outcome of this process's claim; False (and nothing written) when
        the claim is not ours: another process took it over meanwhile, its state is
        that process's to write."""
        async with self._sessionmaker() as session:
            result = await session.execute(
                update(ThreadAnswer)
                .where(ThreadAnswer.thread_id == thread_id, ThreadAnswer.owner == self.owner)
                .values(
                    state=state,
                    finished_at=utcnow(),
                    message_id=message_id,
                    ledger_id=ledger_id,
                    reason=reason,
                )
            )
            await session.commit()
        if cast(CursorResult[Any], result).rowcount == 1:
            return True
        log.warning(
            "thread_finish_not_owner", thread_id=thread_id, owner=self.owner, state=str(state)
        )
        return False

    async def states(self, thread_ids: Iterable[int]) -> dict[int, tuple[ThreadState, str]]:
        """(state, owner) of each known thread among `thread_ids`."""
        ids = list(thread_ids)
        if not ids:
            return {}
        async with self._sessionmaker() as session:
            rows = await session.execute(
                select(ThreadAnswer.thread_id, ThreadAnswer.state, ThreadAnswer.owner).where(
                    ThreadAnswer.thread_id.in_(ids)
                )
            )
            return {tid: (ThreadState(state), owner) for tid, state, owner in rows}
