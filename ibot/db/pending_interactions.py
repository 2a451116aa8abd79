"""Slash commands deferred and not yet answered, so that a crash does not lose them.

An /ask-gpt or /summary is deferred ("the bot is thinking…") before its model call, and
Discord keeps the interaction's token valid for 15 minutes. A row is written here when
the command defers and deleted once the answer (or the failure message) is delivered:
a row that outlives its process is a member still waiting, whom the next start answers
by editing that deferred response (ibot/services/resume.py).

The token opens the conversation's webhook to whoever holds it, so it is stored sealed
(ibot/sealing.py, bound to the interaction id) with a key derived from the bot token,
and never logged. The question and its options are kept as JSON, as the command got
them, to be asked again exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import JSON, BigInteger, String, Text, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from ibot.db.models import Base, UTCDateTime
from ibot.domain import CallContext, Feature, utcnow
from ibot.sealing import Sealer, SealError

log = structlog.get_logger("ibot.pending_interactions")


class PendingInteractionRecord(Base):
    __tablename__ = "pending_interactions"

    interaction_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    application_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    token_sealed: Mapped[str] = mapped_column(Text, nullable=False)
    feature: Mapped[str] = mapped_column(String(16), nullable=False)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # {"question": ..., "options": {...}}: see PendingRequest.
    request: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    # The ledger row of the answer's call, once it is known (the answer then only
    # remained to be delivered when the process died).
    ledger_id: Mapped[int | None] = mapped_column(BigInteger)


@dataclass(frozen=True, slots=True)
class AttachmentRef:
    """The /ask-gpt image option, enough to download it again (its URL lives a day)."""

    id: int
    filename: str
    size: int
    url: str
    proxy_url: str | None = None
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """What the member asked: the question (none for /summary) and its options."""

    question: str = ""
    private: bool = False
    author: str = ""  # the asker's display name, as the prompt names them
    channel_name: str = ""  # the summary's title names it
    parent_id: int | None = None  # the channel is a thread of this channel (or forum)
    messages: int | None = None  # /summary's message count
    image: AttachmentRef | None = None

    def to_json(self) -> dict[str, Any]:
        image = self.image
        return {
            "question": self.question,
            "options": {
                "private": self.private,
                "author": self.author,
                "channel_name": self.channel_name,
                "parent_id": self.parent_id,
                "messages": self.messages,
                "image": None if image is None else asdict(image),
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PendingRequest:
        options = data.get("options") or {}
        image = options.get("image")
        return cls(
            question=data.get("question") or "",
            private=bool(options.get("private")),
            author=options.get("author") or "",
            channel_name=options.get("channel_name") or "",
            parent_id=options.get("parent_id"),
            messages=options.get("messages"),
            image=None if not image else AttachmentRef(**image),
        )


@dataclass(frozen=True, slots=True)
class PendingInteraction:
    interaction_id: int
    application_id: int
    token: str = field(repr=False)  # never in a repr, hence never in a log line
    feature: Feature
    user_id: int
    guild_id: int | None
    channel_id: int | None
    request: PendingRequest
    created_at: datetime = field(default_factory=utcnow)
    ledger_id: int | None = None

    def context(self) -> CallContext:
        """The call's ledger columns, as the command computes them: /summary in a thread
        books the parent channel and the thread; /ask-gpt books the channel it was in."""
        in_thread = self.feature is Feature.SUMMARY and self.request.parent_id is not None
        return CallContext(
            feature=self.feature,
            guild_id=self.guild_id,
            channel_id=self.request.parent_id if in_thread else self.channel_id,
            thread_id=self.channel_id if in_thread else None,
            user_id=self.user_id,
        )


class PendingInteractionStore:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], sealer: Sealer) -> None:
        self._sessionmaker = sessionmaker
        self._sealer = sealer

    @staticmethod
    def _associated(interaction_id: int) -> bytes:
        return f"pending_interaction:{interaction_id}".encode()

    async def add(self, pending: PendingInteraction) -> None:
        sealed = self._sealer.seal(
            pending.token, associated=self._associated(pending.interaction_id)
        )
        async with self._sessionmaker() as session:
            session.add(
                PendingInteractionRecord(
                    interaction_id=pending.interaction_id,
                    application_id=pending.application_id,
                    token_sealed=sealed,
                    feature=str(pending.feature),
                    guild_id=pending.guild_id,
                    channel_id=pending.channel_id,
                    user_id=pending.user_id,
                    request=pending.request.to_json(),
                    created_at=pending.created_at,
                    ledger_id=pending.ledger_id,
                )
            )
            await session.commit()

    async def note_ledger(self, interaction_id: int, ledger_id: int) -> None:
        async with self._sessionmaker() as session:
            await session.execute(
                update(PendingInteractionRecord)
                .where(PendingInteractionRecord.interaction_id == interaction_id)
                .values(ledger_id=ledger_id)
            )
            await session.commit()

    async def remove(self, interaction_id: int) -> None:
        async with self._sessionmaker() as session:
            await session.execute(
                delete(PendingInteractionRecord).where(
                    PendingInteractionRecord.interaction_id == interaction_id
                )
            )
            await session.commit()

    async def pending(self) -> list[PendingInteraction]:
        """Every row, oldest first, token opened. A row whose token does not open (the
        bot token changed since, or the row was altered) cannot be answered: it is
        deleted, with a warning."""
        async with self._sessionmaker() as session:
            records = list(
                await session.scalars(
                    select(PendingInteractionRecord).order_by(PendingInteractionRecord.created_at)
                )
            )
        found: list[PendingInteraction] = []
        for record in records:
            try:
                token = self._sealer.open(
                    record.token_sealed, associated=self._associated(record.interaction_id)
                )
            except SealError:
                log.warning(
                    "pending_interaction_unreadable",
                    interaction_id=record.interaction_id,
                    feature=record.feature,
                )
                await self.remove(record.interaction_id)
                continue
            found.append(
                PendingInteraction(
                    interaction_id=record.interaction_id,
                    application_id=record.application_id,
                    token=token,
                    feature=Feature(record.feature),
                    user_id=record.user_id,
                    guild_id=record.guild_id,
                    channel_id=record.channel_id,
                    request=PendingRequest.from_json(record.request),
                    created_at=record.created_at,
                    ledger_id=record.ledger_id,
                )
            )
        return found
