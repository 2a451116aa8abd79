"""ORM tables of the cost ledger.

The schema itself is owned by the Alembic migrations in migrations/versions; these classes
describe the same tables for queries, and tests/test_migrations.py checks that the two
agree (autogenerate finds no difference), so a column added here without a migration
fails the suite instead of failing in production.
"""

from __future__ import annotations

import importlib
import pkgutil
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Index, Integer, MetaData, String, text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from ibot.domain import utcnow

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY; PostgreSQL gets
# a BIGINT identity, because a busy bot could in principle pass 2^31 calls.
IdType = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always stored in UTC and always read back timezone-aware.

    PostgreSQL's timestamptz already does this. SQLite has no timezone support at all:
    SQLAlchemy writes the wall-clock digits and drops the offset, so a value written at
    +02:00 would silently read back two hours off, and comparisons are done on the text.
    Normalising every value (stored and compared) to naive UTC on SQLite, and tagging it
    UTC on the way out, makes both databases behave the same.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        # A naive datetime is taken to be UTC already: that is what every caller in iBot
        # means, and refusing it would turn a harmless query into a crash.
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stored: datetime = value  # the driver's datetime (naive from SQLite)
        if stored.tzinfo is None:
            return stored.replace(tzinfo=UTC)
        return stored.astimezone(UTC)


class Base(DeclarativeBase):
    pass


def all_models_metadata() -> MetaData:
    """Base.metadata with every table of the ibot.db package registered.

    Tables are declared in several modules (the ledger here, others beside it); a table
    joins the metadata only once its module is imported. Autogenerate and the schema
    check in the tests need all of them, or they would report the others as extra.
    """
    import ibot.db

    for module in pkgutil.iter_modules(ibot.db.__path__):
        importlib.import_module(f"ibot.db.{module.name}")
    return Base.metadata


class LedgerRecord(Base):
    """One model call, whatever its outcome (ok, error, fallback or refused)."""

    __tablename__ = "ledger"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    # Discord snowflakes exceed 2^31 (and 2^53), hence BigInteger everywhere.
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    thread_id: Mapped[int | None] = mapped_column(BigInteger)
    user_id: Mapped[int | None] = mapped_column(BigInteger)
    feature: Mapped[str] = mapped_column(String(16), nullable=False)
    backend: Mapped[str] = mapped_column(String(16), nullable=False)
    model_requested: Mapped[str] = mapped_column(String(64), nullable=False)
    model: Mapped[str | None] = mapped_column(String(64))  # the model that answered
    request_id: Mapped[str | None] = mapped_column(String(128))
    prompt_tokens: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    cached_tokens: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    image_tokens: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    completion_tokens: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    # Integer micro-dollars; NULL means the answering model had no price, which is not 0.
    cost_micros: Mapped[int | None] = mapped_column(BigInteger)
    latency_ms: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    error_kind: Mapped[str | None] = mapped_column(String(32))
    usage_source: Mapped[str] = mapped_column(String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="1")
    note: Mapped[str | None] = mapped_column(String(255))
    # Our id of the call, written before it is sent (status pending) and sent to OpenAI
    # as X-Client-Request-Id: a call whose answer never came can still be matched.
    call_id: Mapped[str | None] = mapped_column(String(36))

    __table_args__ = (
        Index("ix_ledger_created_at", "created_at"),
        Index("ix_ledger_call_id", "call_id"),
        # Only the rows in flight, for the start-up scan of pending calls (migration 0012).
        Index(
            "ix_ledger_pending",
            "id",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        # Covering index for one guild's reports and budget sums (migration 0003, which
        # says why and what was measured): answered from the index, not the table rows.
        Index(
            "ix_ledger_guild_report",
            "guild_id",
            "created_at",
            "user_id",
            "feature",
            "channel_id",
            "model",
            "model_requested",
            "prompt_tokens",
            "cached_tokens",
            "completion_tokens",
            "cost_micros",
        ),
    )
