"""Where the knowledge-base sync stands, so that a second run reads only what is new.

Two tables (migration 0008), written by `ibot.services.knowledge_sync`:

- `kb_sync_forums`, one row per forum: `archived_through`, the archive time down to
  which the forum's archived threads were all read (Discord lists them newest archived
  first, and an archived thread cannot change: threads.mdx, "Users cannot edit
  messages, add reactions … in archived threads"), and the cursor of a pass that was
  interrupted (`pass_top`, `pass_before`, `pass_full`, `pass_started_at`), so the next
  run goes on from the page it stopped at;
- `kb_sync_threads`, one row per thread read: what it looked like when read (its
  `last_message_id`, applied tags, archived or not), so a thread that shows the same
  in a listing is not read again; the outcome; the hash of the knowledge-base content
  the sync itself wrote for it (NULL when the stored entry, if any, is someone else's:
  a ✅, `/solved`, a solved tag, `ibot kb import`); when it was last listed.

Each write is one statement (the AUTOCOMMIT sessions of `make_sessionmaker`), so a run
killed at any point leaves rows that are each whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    CursorResult,
    Index,
    String,
    Text,
    delete,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute, Mapped, mapped_column

from ibot.db.feedback import AnswerRecord
from ibot.db.models import Base, UTCDateTime

_BATCH = 500  # ids per IN (…) clause


class SyncForumRecord(Base):
    __tablename__ = "kb_sync_forums"

    forum_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    guild_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    archived_through: Mapped[datetime | None] = mapped_column(UTCDateTime())
    pass_top: Mapped[datetime | None] = mapped_column(UTCDateTime())
    pass_before: Mapped[datetime | None] = mapped_column(UTCDateTime())
    pass_full: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    pass_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SyncThreadRecord(Base):
    __tablename__ = "kb_sync_threads"

    thread_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    guild_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    forum_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    last_message_id: Mapped[int | None] = mapped_column(BigInteger)
    tags: Mapped[str] = mapped_column(Text, nullable=False)  # sorted names, one per line
    archived: Mapped[bool] = mapped_column(Boolean, nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    read_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    listed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)

    __table_args__ = (Index("ix_kb_sync_threads_forum_id_listed_at", "forum_id", "listed_at"),)


@dataclass(frozen=True, slots=True)
class ForumState:
    forum_id: int
    guild_id: int
    archived_through: datetime | None = None
    pass_top: datetime | None = None
    pass_before: datetime | None = None
    pass_full: bool = False
    pass_started_at: datetime | None = None
    synced_at: datetime | None = None

    @property
    def interrupted(self) -> bool:
        """A pass over the archived pages stopped before its end (`pass_before` set)."""
        return self.pass_before is not None


@dataclass(frozen=True, slots=True)
class ThreadState:
    thread_id: int
    guild_id: int
    forum_id: int
    last_message_id: int | None
    tags: str
    archived: bool
    outcome: str
    content_hash: str | None
    read_at: datetime
    listed_at: datetime


@dataclass(frozen=True, slots=True)
class RecordedMark:
    """A bot answer in the thread marked solved by ✅ or `/solved` (table `answers`)."""

    message_id: int
    answer: str
    solved_at: datetime


def _chunks[T](items: Sequence[T], size: int = _BATCH) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _forum(row: SyncForumRecord) -> ForumState:
    return ForumState(
        forum_id=row.forum_id,
        guild_id=row.guild_id,
        archived_through=row.archived_through,
        pass_top=row.pass_top,
        pass_before=row.pass_before,
        pass_full=row.pass_full,
        pass_started_at=row.pass_started_at,
        synced_at=row.synced_at,
    )


def _thread(row: SyncThreadRecord) -> ThreadState:
    return ThreadState(
        thread_id=row.thread_id,
        guild_id=row.guild_id,
        forum_id=row.forum_id,
        last_message_id=row.last_message_id,
        tags=row.tags,
        archived=row.archived,
        outcome=row.outcome,
        content_hash=row.content_hash,
        read_at=row.read_at,
        listed_at=row.listed_at,
    )


class SyncStateStore:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def forum(self, forum_id: int) -> ForumState | None:
        async with self._sessionmaker() as session:
            row = await session.get(SyncForumRecord, forum_id)
            return _forum(row) if row is not None else None

    async def save_forum(self, state: ForumState) -> None:
        values: dict[str, Any] = {
            "guild_id": state.guild_id,
            "archived_through": state.archived_through,
            "pass_top": state.pass_top,
            "pass_before": state.pass_before,
            "pass_full": state.pass_full,
            "pass_started_at": state.pass_started_at,
            "synced_at": state.synced_at,
        }
        await self._upsert(SyncForumRecord, SyncForumRecord.forum_id, state.forum_id, values)

    async def threads(self, thread_ids: Iterable[int]) -> dict[int, ThreadState]:
        ids = list(dict.fromkeys(thread_ids))
        found: dict[int, ThreadState] = {}
        async with self._sessionmaker() as session:
            for chunk in _chunks(ids):
                rows = await session.scalars(
                    select(SyncThreadRecord).where(SyncThreadRecord.thread_id.in_(chunk))
                )
                found.update({row.thread_id: _thread(row) for row in rows})
        return found

    async def save_thread(self, state: ThreadState) -> None:
        values: dict[str, Any] = {
            "guild_id": state.guild_id,
            "forum_id": state.forum_id,
            "last_message_id": state.last_message_id,
            "tags": state.tags,
            "archived": state.archived,
            "outcome": state.outcome,
            "content_hash": state.content_hash,
            "read_at": state.read_at,
            "listed_at": state.listed_at,
        }
        await self._upsert(SyncThreadRecord, SyncThreadRecord.thread_id, state.thread_id, values)

    async def listed(self, thread_ids: Sequence[int], at: datetime) -> None:
        """These threads were seen in a listing at `at` (unchanged: not read again)."""
        async with self._sessionmaker() as session:
            for chunk in _chunks(list(thread_ids)):
                await session.execute(
                    update(SyncThreadRecord)
                    .where(SyncThreadRecord.thread_id.in_(chunk))
                    .values(listed_at=at)
                )
            await session.commit()

    async def unlisted(
        self, forum_id: int, *, listed_before: datetime, active_only: bool
    ) -> list[int]:
        """Threads of the forum not listed since `listed_before`; `active_only`: only
        those that were active when last read (an archived one is listed again only by a
        full pass)."""
        statement = select(SyncThreadRecord.thread_id).where(
            SyncThreadRecord.forum_id == forum_id, SyncThreadRecord.listed_at < listed_before
        )
        if active_only:
            statement = statement.where(SyncThreadRecord.archived.is_(False))
        async with self._sessionmaker() as session:
            return list(await session.scalars(statement.order_by(SyncThreadRecord.thread_id)))

    async def forget(self, thread_id: int) -> None:
        async with self._sessionmaker() as session:
            await session.execute(
                delete(SyncThreadRecord).where(SyncThreadRecord.thread_id == thread_id)
            )
            await session.commit()

    async def recorded_marks(self, thread_ids: Iterable[int]) -> dict[int, RecordedMark]:
        """Per thread, its first bot answer marked solved by ✅ or `/solved`."""
        ids = list(dict.fromkeys(thread_ids))
        found: dict[int, RecordedMark] = {}
        async with self._sessionmaker() as session:
            for chunk in _chunks(ids):
                rows = await session.scalars(
                    select(AnswerRecord)
                    .where(AnswerRecord.thread_id.in_(chunk), AnswerRecord.solved_at.is_not(None))
                    .order_by(AnswerRecord.solved_at, AnswerRecord.message_id)
                )
                for row in rows:
                    if row.thread_id is not None and row.solved_at is not None:
                        found.setdefault(
                            row.thread_id, RecordedMark(row.message_id, row.answer, row.solved_at)
                        )
        return found

    async def _upsert(
        self,
        model: type[SyncForumRecord] | type[SyncThreadRecord],
        key: InstrumentedAttribute[int],
        key_value: int,
        values: dict[str, Any],
    ) -> None:
        """Update the row, or insert it when there is none (an insert that loses to a
        concurrent one, another sync running at once, is retried as an update)."""
        for _ in range(2):
            async with self._sessionmaker() as session:
                result = await session.execute(
                    update(model).where(key == key_value).values(**values)
                )
                if cast(CursorResult[Any], result).rowcount:
                    await session.commit()
                    return
                session.add(model(**{key.key: key_value}, **values))
                try:
                    await session.commit()
                    return
                except IntegrityError:
                    await session.rollback()
        raise RuntimeError(f"{model.__tablename__} {key_value}: could not be written")
