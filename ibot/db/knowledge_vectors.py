"""Storage of the knowledge base's embeddings, and their vector index.

Two layers, so that a vector index can always be rebuilt and an engine without one
still works:

- **`knowledge_embeddings`** (migration 0009, `KnowledgeEmbeddingRecord`): portable, the
  source of truth. One row per thread: its guild, the model and size of the vector,
  the sha256 of the text that was embedded, the vector (float32, little-endian bytes)
  and when. A row of another model or size than the configured one is stale: the
  thread is embedded again at the next backfill.
- **the vector index**, one table per model and size, `knowledge_vec_<model>_d<N>`,
  created here on first use (the size is a setting, so no migration can know it) and
  filled from the portable rows; the index of a previous model or size is dropped:
  - SQLite: a sqlite-vec `vec0` virtual table, `guild_id` its *partition key* (a search
    reads one guild's vectors only), `embedding float[N]` with the cosine metric,
    keyed by rowid = thread id; a KNN query (`MATCH` and `k`);
  - PostgreSQL: `CREATE EXTENSION vector` (pgvector), a table with a `vector(N)`
    column and a B-tree on guild_id, ordered by the cosine distance operator `<=>`.
    The search is exact within the guild. pgvector's HNSW index was not used: before
    pgvector 0.8 (iterative scans) an approximate index scan filtered by guild returns
    only the guild's share of its `ef_search` candidates (40 by default), so a small
    guild of a big table would get fewer hits than asked, and the two engines would
    disagree. Measured with benchmarks/semantic.py: see its docstring.

Every search is filtered by guild in the index *and* joined to `knowledge_threads` on
the same guild, and to the portable row of the configured model and size: a thread of
another guild, a removed thread or a stale index entry is never returned.

An engine without its extension (a PostgreSQL without pgvector, a SQLite whose Python
cannot load sqlite-vec) is told once: `available()` logs one line, `semantic_search_off`
with the reason, and answers False from then on; the knowledge base then searches
lexically only. A database that is merely down is not "unavailable": that error goes to
the caller, and the next call tries again.

The index is written after the portable row (SQLite sessions here autocommit each
statement), so a crash in between leaves an index short of a row: the first
`available()` of a process compares their counts and rebuilds the index when they
differ.
"""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import structlog
from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, Table, delete, func, select
from sqlalchemy import text as sql
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from ibot.db.engine import sqlite_vec_problem
from ibot.db.knowledge import TABLE as THREADS_TABLE
from ibot.db.knowledge import KnowledgeThreadRecord
from ibot.db.models import Base, UTCDateTime
from ibot.domain import utcnow

log = structlog.get_logger("ibot.knowledge")

TABLE = "knowledge_embeddings"
INDEX_PREFIX = "knowledge_vec_"
_BATCH = 500


class KnowledgeEmbeddingRecord(Base):
    """The vector of one thread's text, for one model and size (module docstring)."""

    __tablename__ = TABLE

    thread_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    guild_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    model: Mapped[str] = mapped_column(String(64), nullable=False)
    dimensions: Mapped[int] = mapped_column(Integer, nullable=False)
    # sha256 of the text that was embedded: the same text is never embedded twice.
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    vector: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)  # float32, little-endian
    embedded_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)

    __table_args__ = (
        Index("ix_knowledge_embeddings_guild_id_model", "guild_id", "model", "dimensions"),
    )


class VectorIndexUnavailable(Exception):
    """The engine cannot hold the vector index (its extension is missing)."""


@dataclass(frozen=True, slots=True)
class EmbeddedThread:
    """A thread's vector, ready to be stored."""

    thread_id: int
    guild_id: int
    content_hash: str
    vector: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A thread close to a query vector; `similarity`: the cosine, in [-1, 1]."""

    thread_id: int
    guild_id: int
    title: str
    similarity: float


@dataclass(frozen=True, slots=True)
class StoredThread:
    """A stored thread as a backfill reads it: its text, and the hash of what was
    embedded for it with the configured model and size (None: nothing yet)."""

    thread_id: int
    guild_id: int
    title: str
    question: str
    answer: str
    tags: tuple[str, ...]
    embedded_hash: str | None


def index_name(model: str, dimensions: int) -> str:
    """The index table of `model` at `dimensions` (a valid SQL identifier)."""
    slug = re.sub(r"[^a-z0-9]+", "_", model.lower()).strip("_")[:40] or "model"
    return f"{INDEX_PREFIX}{slug}_d{dimensions}"


def pack(vector: Sequence[float]) -> bytes:
    """float32 little-endian bytes: the portable column, and sqlite-vec's blob format."""
    return struct.pack(f"<{len(vector)}f", *vector)


def unpack(data: bytes) -> tuple[float, ...]:
    return struct.unpack(f"<{len(data) // 4}f", data)


def pg_literal(vector: Sequence[float]) -> str:
    """pgvector's text form, '[0.1,0.2,…]'."""
    return "[" + ",".join(repr(float(v)) for v in vector) + "]"


def _chunks[T](items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class VectorStore:
    """The embeddings of one model and size, and their index (module docstring)."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], *, model: str, dimensions: int
    ) -> None:
        if dimensions < 1:
            raise ValueError(f"dimensions must be at least 1, got {dimensions}")
        self._sessionmaker = sessionmaker
        self.model = model
        self.dimensions = dimensions
        self.index = index_name(model, dimensions)
        self.problem: str | None = None  # why the index is unavailable, once known
        self._ready: bool | None = None
        self._lock = asyncio.Lock()

    # ---- the index ---------------------------------------------------------------

    async def available(self) -> bool:
        """Whether the vector index can be used; made (and checked) on the first call."""
        if self._ready is None:
            async with self._lock:
                if self._ready is None:
                    try:
                        await self._prepare()
                    except VectorIndexUnavailable as exc:
                        self.problem = str(exc)
                        self._ready = False
                        log.warning(
                            "semantic_search_off",
                            reason=self.problem,
                            effect="knowledge base searched lexically only",
                        )
                    else:
                        self._ready = True
        return self._ready

    async def _dialect(self) -> str:
        async with self._sessionmaker() as session:
            name = session.get_bind().dialect.name
        if name not in ("sqlite", "postgresql"):
            raise VectorIndexUnavailable(f"no vector index on {name}")
        return name

    async def _prepare(self) -> None:
        dialect = await self._dialect()
        if dialect == "sqlite":
            await self._prepare_sqlite()
        else:
            await self._prepare_postgresql()
        index_rows, stored = await self.counts()
        if index_rows != stored:
            log.info("vector_index_rebuild", index=self.index, had=index_rows, stored=stored)
            await self.rebuild()

    async def _prepare_sqlite(self) -> None:
        async with self._sessionmaker() as session:
            try:
                await session.execute(sql("SELECT vec_version()"))
            except OperationalError as exc:
                reason = sqlite_vec_problem() or str(exc.orig)
                raise VectorIndexUnavailable(f"sqlite-vec is not loaded: {reason}") from None
            await self._drop_other_indexes(session, "sqlite")
            await session.execute(
                sql(
                    f"CREATE VIRTUAL TABLE IF NOT EXISTS {self.index} USING vec0("
                    "guild_id integer partition key, "
                    f"embedding float[{self.dimensions}] distance_metric=cosine)"
                )
            )
            await session.commit()

    async def _prepare_postgresql(self) -> None:
        async with self._sessionmaker() as session:
            found = await session.scalar(sql("SELECT 1 FROM pg_extension WHERE extname = 'vector'"))
        if not found:
            async with self._sessionmaker() as session:
                try:
                    await session.execute(sql("CREATE EXTENSION IF NOT EXISTS vector"))
                    await session.commit()
                except (ProgrammingError, DBAPIError) as exc:
                    await session.rollback()
                    detail = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
                    raise VectorIndexUnavailable(
                        f"pgvector is not available on this PostgreSQL server "
                        f"(CREATE EXTENSION vector: {detail})"
                    ) from None
        async with self._sessionmaker() as session:
            await self._drop_other_indexes(session, "postgresql")
            await session.execute(
                sql(
                    f"CREATE TABLE IF NOT EXISTS {self.index} ("
                    "thread_id BIGINT PRIMARY KEY, guild_id BIGINT NOT NULL, "
                    f"embedding vector({self.dimensions}) NOT NULL)"
                )
            )
            await session.execute(
                sql(f"CREATE INDEX IF NOT EXISTS ix_{self.index}_guild ON {self.index} (guild_id)")
            )
            await session.commit()

    async def _drop_other_indexes(self, session: AsyncSession, dialect: str) -> None:
        """The index of a model or size no longer configured goes (module docstring)."""
        if dialect == "sqlite":
            query = (
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND sql LIKE 'CREATE VIRTUAL TABLE%' AND substr(name, 1, :n) = :prefix"
            )
        else:
            query = (
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema() AND substr(table_name, 1, :n) = :prefix"
            )
        params = {"n": len(INDEX_PREFIX), "prefix": INDEX_PREFIX}
        names = (await session.execute(sql(query), params)).scalars().all()
        for name in names:
            if name != self.index:
                log.info("vector_index_dropped", index=name, now=self.index)
                await session.execute(sql(f'DROP TABLE IF EXISTS "{name}"'))

    async def counts(self) -> tuple[int, int]:
        """(rows in the index, portable rows of the configured model and size)."""
        record = KnowledgeEmbeddingRecord
        async with self._sessionmaker() as session:
            index_rows = await session.scalar(sql(f"SELECT count(*) FROM {self.index}"))
            stored = await session.scalar(
                select(func.count())
                .select_from(record)
                .where(record.model == self.model, record.dimensions == self.dimensions)
            )
        return int(index_rows or 0), int(stored or 0)

    async def rebuild(self) -> None:
        """Refill the index from the portable rows of the configured model and size."""
        record = KnowledgeEmbeddingRecord
        async with self._sessionmaker() as session:
            await session.execute(sql(f"DELETE FROM {self.index}"))
            await session.commit()
        after = -(2**63)
        while True:
            async with self._sessionmaker() as session:
                rows = (
                    await session.execute(
                        select(record.thread_id, record.guild_id, record.vector)
                        .where(
                            record.model == self.model,
                            record.dimensions == self.dimensions,
                            record.thread_id > after,
                        )
                        .order_by(record.thread_id)
                        .limit(_BATCH)
                    )
                ).all()
            if not rows:
                return
            await self._write_index(
                [EmbeddedThread(t, g, "", unpack(v)) for t, g, v in rows], replace=False
            )
            after = rows[-1][0]

    # ---- rows ----------------------------------------------------------------------

    async def embedded_hashes(self, thread_ids: Iterable[int]) -> dict[int, str]:
        """The hash of what was embedded for these threads, with this model and size."""
        ids = list(dict.fromkeys(thread_ids))
        record = KnowledgeEmbeddingRecord
        found: dict[int, str] = {}
        async with self._sessionmaker() as session:
            for chunk in _chunks(ids, _BATCH):
                rows = await session.execute(
                    select(record.thread_id, record.content_hash).where(
                        record.thread_id.in_(chunk),
                        record.model == self.model,
                        record.dimensions == self.dimensions,
                    )
                )
                found.update({thread_id: digest for thread_id, digest in rows})
        return found

    async def write(self, rows: Sequence[EmbeddedThread]) -> None:
        """Store these vectors (one row per thread, replacing any older) and index them."""
        if not rows:
            return
        for row in rows:
            if len(row.vector) != self.dimensions:
                raise ValueError(
                    f"thread {row.thread_id}: a vector of {len(row.vector)} dimensions, "
                    f"not {self.dimensions}"
                )
        table = cast(Table, KnowledgeEmbeddingRecord.__table__)
        now = utcnow()
        async with self._sessionmaker() as session:
            dialect = session.get_bind().dialect.name
            insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
            for chunk in _chunks(rows, _BATCH):
                statement = insert(table)
                columns = [c.name for c in table.columns if c.name != "thread_id"]
                statement = statement.on_conflict_do_update(
                    index_elements=["thread_id"],
                    set_={name: statement.excluded[name] for name in columns},
                )
                values = [
                    {
                        "thread_id": row.thread_id,
                        "guild_id": row.guild_id,
                        "model": self.model,
                        "dimensions": self.dimensions,
                        "content_hash": row.content_hash,
                        "vector": pack(row.vector),
                        "embedded_at": now,
                    }
                    for row in chunk
                ]
                await session.execute(statement, values)
            await session.commit()
        if await self.available():
            await self._write_index(rows, replace=True)

    async def _write_index(self, rows: Sequence[EmbeddedThread], *, replace: bool) -> None:
        async with self._sessionmaker() as session:
            dialect = session.get_bind().dialect.name
            for chunk in _chunks(rows, _BATCH):
                if dialect == "sqlite":
                    if replace:  # vec0 has no upsert
                        await session.execute(
                            sql(f"DELETE FROM {self.index} WHERE rowid = :thread_id"),
                            [{"thread_id": row.thread_id} for row in chunk],
                        )
                    await session.execute(
                        sql(
                            f"INSERT INTO {self.index}(rowid, guild_id, embedding) "
                            "VALUES (:thread_id, :guild_id, :embedding)"
                        ),
                        [
                            {
                                "thread_id": row.thread_id,
                                "guild_id": row.guild_id,
                                "embedding": pack(row.vector),
                            }
                            for row in chunk
                        ],
                    )
                else:
                    await session.execute(
                        sql(
                            f"INSERT INTO {self.index} (thread_id, guild_id, embedding) "
                            "VALUES (:thread_id, :guild_id, "
                            "CAST(CAST(:embedding AS text) AS vector)) "
                            "ON CONFLICT (thread_id) DO UPDATE SET guild_id = excluded.guild_id, "
                            "embedding = excluded.embedding"
                        ),
                        [
                            {
                                "thread_id": row.thread_id,
                                "guild_id": row.guild_id,
                                "embedding": pg_literal(row.vector),
                            }
                            for row in chunk
                        ],
                    )
            await session.commit()

    async def delete(self, thread_id: int) -> bool:
        """Forget a thread's vector (and its index entry); False when it had none."""
        record = KnowledgeEmbeddingRecord
        async with self._sessionmaker() as session:
            result = await session.execute(delete(record).where(record.thread_id == thread_id))
            await session.commit()
        if self._ready:
            key = "rowid" if await self._dialect() == "sqlite" else "thread_id"
            async with self._sessionmaker() as session:
                await session.execute(
                    sql(f"DELETE FROM {self.index} WHERE {key} = :thread_id"),
                    {"thread_id": thread_id},
                )
                await session.commit()
        return bool(cast(Any, result).rowcount)

    async def nearest(
        self, vector: Sequence[float], *, guild_id: int | None, limit: int
    ) -> list[Neighbour]:
        """The `limit` threads of `guild_id` (None: every guild, for the CLI only)
        closest to `vector`, closest first; [] when the index is unavailable."""
        if limit < 1 or not await self.available():
            return []
        if len(vector) != self.dimensions:
            raise ValueError(f"a query of {len(vector)} dimensions, not {self.dimensions}")
        params: dict[str, Any] = {
            "limit": limit,
            "model": self.model,
            "dims": self.dimensions,
        }
        joins = (
            f"JOIN {THREADS_TABLE} AS k ON k.thread_id = v.thread_id "
            f"JOIN {TABLE} AS e ON e.thread_id = v.thread_id "
            "AND e.model = :model AND e.dimensions = :dims"
        )
        async with self._sessionmaker() as session:
            if session.get_bind().dialect.name == "sqlite":
                in_guild = "" if guild_id is None else "AND guild_id = :guild_id"
                # MATERIALIZED: flattened into the outer query, the KNN would see its
                # ORDER BY, which vec0 refuses.
                query = (
                    "WITH v AS MATERIALIZED ("
                    f"SELECT rowid AS thread_id, distance FROM {self.index} "
                    f"WHERE embedding MATCH :query AND k = :limit {in_guild}) "
                    "SELECT v.thread_id, k.guild_id, k.title, v.distance FROM v "
                    f"{joins} "
                    + ("" if guild_id is None else "WHERE k.guild_id = :guild_id ")
                    + "ORDER BY v.distance, v.thread_id"
                )
                params["query"] = pack(vector)
            else:
                in_guild = "" if guild_id is None else "WHERE guild_id = :guild_id "
                both = "" if guild_id is None else "WHERE k.guild_id = :guild_id "
                # The nearest of the index table alone first, then the joins: joined
                # first, every candidate's thread and portable rows would be read.
                # The query's vector parsed once (q), not once per row.
                query = (
                    "WITH q AS MATERIALIZED ("
                    "SELECT CAST(CAST(:query AS text) AS vector) AS query), "
                    "v AS MATERIALIZED ("
                    "SELECT thread_id, embedding <=> q.query AS distance "
                    f"FROM {self.index} CROSS JOIN q {in_guild}"
                    "ORDER BY distance, thread_id LIMIT :limit) "
                    "SELECT v.thread_id, k.guild_id, k.title, v.distance FROM v "
                    f"{joins} {both}"
                    "ORDER BY v.distance, v.thread_id"
                )
                params["query"] = pg_literal(vector)
            if guild_id is not None:
                params["guild_id"] = guild_id
            rows = (await session.execute(sql(query), params)).all()
        return [
            Neighbour(int(thread_id), int(guild), title, 1.0 - float(distance))
            for thread_id, guild, title, distance in rows
        ]

    async def stored_threads(
        self, *, after: int | None, limit: int, guild_id: int | None = None
    ) -> list[StoredThread]:
        """A page of the stored threads (by thread id, after `after`), each with the
        hash of what was embedded for it with this model and size: a backfill's input."""
        thread, record = KnowledgeThreadRecord, KnowledgeEmbeddingRecord
        statement = (
            select(
                thread.thread_id,
                thread.guild_id,
                thread.title,
                thread.question,
                thread.answer,
                thread.tags,
                record.content_hash,
            )
            .outerjoin(
                record,
                (record.thread_id == thread.thread_id)
                & (record.model == self.model)
                & (record.dimensions == self.dimensions),
            )
            .order_by(thread.thread_id)
            .limit(limit)
        )
        if after is not None:
            statement = statement.where(thread.thread_id > after)
        if guild_id is not None:
            statement = statement.where(thread.guild_id == guild_id)
        async with self._sessionmaker() as session:
            rows = (await session.execute(statement)).all()
        return [
            StoredThread(t, g, title, q, a, tuple(tags or ()), digest)
            for t, g, title, q, a, tags, digest in rows
        ]
