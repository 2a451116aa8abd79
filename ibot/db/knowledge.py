"""Storage of the knowledge base: solved threads and their full-text index.

One portable table, `knowledge_threads`, holds each solved thread (keyed by its Discord
id, so a thread is stored once whatever the number of imports), its text, and its index
terms per field as produced by `ibot.services.lexical` (space-separated). The full-text
index over those terms is the engine's own, created by migration 0006:

- **SQLite**: `knowledge_fts`, an FTS5 table with *external content* (it reads
  `knowledge_threads`, stores only the inverted index), kept in step by three triggers on
  `knowledge_threads`, so every INSERT/UPDATE/DELETE of a row changes its index entry in
  the same statement (atomic even on the AUTOCOMMIT sessions of `make_sessionmaker`).
  Ranked with `bm25()`; its `unicode61` tokenizer is given the lexical connectors as
  token characters, so a term such as `venv/bin/python` stays one token.
- **PostgreSQL**: a `search_vector tsvector` column with a GIN index, written in the same
  transaction as the row from a `tsvector` literal built here (never `to_tsvector`, whose
  parser would split the terms differently), weights A/B/C for title/question/answer.
  Ranked with `ts_rank` (its weights for A/B/C, and normalised by the log of the
  document's length, like BM25's length normalisation); `ts_rank_cd` (cover density)
  was ten times slower on a 32-term OR query over 3 000 threads, for a rank that only
  orders the candidates.

Both are queried with OR over the query's terms and always filtered by guild in the SQL.

**Term counts.** `knowledge_terms` holds, per guild and term, the number of threads
holding the term (and, under the empty term `THREADS_KEY`, the guild's number of
threads): the document frequencies a search needs for its idf weights, read with one
primary-key lookup per term instead of counting doclists (at 100 000 threads a common
term's count read ~50 000 index entries per search). It is kept exact by `write` and
`delete`, which read the old terms of the threads they change and apply the difference in
the same transaction as the rows (`BEGIN IMMEDIATE` on SQLite, whose sessions are
otherwise AUTOCOMMIT; an advisory lock on PostgreSQL), so two writers cannot both
count a thread. Migration 0010 builds it from the stored threads.
These engine-specific objects are made by the migration with raw DDL and described by no
ORM class; `include_name` keeps Alembic's autogenerate (and the schema test) from
reporting them. A later SQLite migration that rebuilds `knowledge_threads` in batch mode
(copy and rename) drops its triggers and must recreate them, then rebuild the index:
``INSERT INTO knowledge_fts(knowledge_fts) VALUES('rebuild')``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    CursorResult,
    Index,
    Integer,
    String,
    Table,
    Text,
    delete,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from ibot.db.models import Base, IdType, UTCDateTime
from ibot.domain import utcnow

TABLE = "knowledge_threads"
FTS_TABLE = "knowledge_fts"  # SQLite (and its shadow tables knowledge_fts_*)
VECTOR_COLUMN = "search_vector"  # PostgreSQL
VECTOR_INDEX = "ix_knowledge_threads_search_vector"
GUILD_INDEX = "ix_knowledge_threads_thread_id_guild_id"  # (thread_id, guild_id)
TERMS_TABLE = "knowledge_terms"
THREADS_KEY = ""  # the term under which knowledge_terms counts a guild's threads

# Characters FTS5 must keep inside a token: those of ibot.services.lexical.CONNECTORS.
FTS_TOKENCHARS = "./:#+-_"

# Field weights of the engines' own ranks (bm25 column weights; tsvector A/B/C). They
# order the candidates; the score shown is computed by the service from the terms.
BM25_WEIGHTS = (3.0, 2.0, 1.0)  # title, question, answer
TS_RANK_WEIGHTS = "{0.1, 0.33, 0.67, 1.0}"  # D, C (answer), B (question), A (title)
_PG_MAX_POSITION = 16383  # PostgreSQL's limits on tsvector positions
_PG_MAX_POSITIONS_PER_LEXEME = 255
_WRITE_BATCH = 500
_WRITE_LOCK = 0x1B07_4B42  # PostgreSQL advisory lock key of the knowledge base's writers


class KnowledgeThreadRecord(Base):
    """A solved thread and its index terms (see the module docstring for the index)."""

    __tablename__ = TABLE

    # Discord's thread id; on SQLite the INTEGER PRIMARY KEY, i.e. the FTS5 rowid.
    thread_id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=False)
    guild_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    forum_id: Mapped[int | None] = mapped_column(BigInteger)
    title: Mapped[str] = mapped_column(Text, nullable=False)
    question: Mapped[str] = mapped_column(Text, nullable=False)
    answer: Mapped[str] = mapped_column(Text, nullable=False)
    answer_kind: Mapped[str] = mapped_column(String(32), nullable=False)
    tags: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    solved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    indexed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    # sha256 of the stored content and the normaliser's version: same hash, no re-index.
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    terms_title: Mapped[str] = mapped_column(Text, nullable=False)
    terms_question: Mapped[str] = mapped_column(Text, nullable=False)
    terms_answer: Mapped[str] = mapped_column(Text, nullable=False)

    __table_args__ = (
        Index("ix_knowledge_threads_guild_id_solved_at", "guild_id", "solved_at"),
        # Lets a search check the guild of each matching thread without reading its row.
        Index(GUILD_INDEX, "thread_id", "guild_id"),
    )


class KnowledgeTermRecord(Base):
    """How many threads of a guild hold a term (`THREADS_KEY`: the guild's threads)."""

    __tablename__ = TERMS_TABLE

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    term: Mapped[str] = mapped_column(String(64), primary_key=True)
    threads: Mapped[int] = mapped_column(Integer, nullable=False)


def include_name(name: str | None, type_: str, parent_names: Mapping[str, Any]) -> bool:
    """Alembic's `include_name` hook: False for the engine-specific search objects (the
    FTS5 table and its shadow tables, the tsvector column and its GIN index)."""
    if name is None:
        return True
    if type_ == "table":
        return not (name == FTS_TABLE or name.startswith(f"{FTS_TABLE}_"))
    if parent_names.get("table_name") == TABLE:
        return not (
            (type_ == "column" and name == VECTOR_COLUMN)
            or (type_ == "index" and name == VECTOR_INDEX)
        )
    return True


@dataclass(frozen=True, slots=True)
class KnowledgeDocument:
    """A thread ready to be stored: its content and its index terms per field."""

    thread_id: int
    guild_id: int
    forum_id: int | None
    title: str
    question: str
    answer: str
    answer_kind: str
    tags: tuple[str, ...]
    created_at: datetime | None
    solved_at: datetime | None
    content_hash: str
    title_terms: tuple[str, ...]
    question_terms: tuple[str, ...]
    answer_terms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StoredContent:
    """A stored thread's content, as it was given (no index terms)."""

    thread_id: int
    guild_id: int
    forum_id: int | None
    title: str
    question: str
    answer: str
    answer_kind: str
    tags: tuple[str, ...]
    created_at: datetime | None
    solved_at: datetime | None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A thread the engine matched, with its terms for scoring; `engine_rank`: higher is
    better, on the engine's own scale (bm25 negated, ts_rank), for ties only."""

    thread_id: int
    guild_id: int
    title: str
    title_terms: frozenset[str]
    question_terms: frozenset[str]
    answer_terms: frozenset[str]
    engine_rank: float


@dataclass(frozen=True, slots=True)
class StoreStats:
    threads: int
    per_guild: dict[int, int] = field(default_factory=dict)
    per_answer_kind: dict[str, int] = field(default_factory=dict)
    newest_solved_at: datetime | None = None


# ---- query syntax: every term quoted, so nothing a user typed is an operator ------------


def _check_term(term: str) -> str:
    if not term or any(c.isspace() or c in "\"'\\" for c in term):
        raise ValueError(f"not an index term: {term!r}")
    return term


def fts5_match(terms: Iterable[str]) -> str:
    """An FTS5 MATCH expression: any of `terms` (each a quoted string, "" escaped)."""
    return " OR ".join('"' + _check_term(t).replace('"', '""') + '"' for t in terms)


def _pg_quote(term: str) -> str:
    return "'" + _check_term(term).replace("\\", "\\\\").replace("'", "''") + "'"


def tsquery_literal(terms: Iterable[str]) -> str:
    """A tsquery literal: any of `terms`, each a quoted lexeme (no parser, no config)."""
    return " | ".join(_pg_quote(t) for t in terms)


def tsvector_literal(fields: Sequence[tuple[Sequence[str], str]]) -> str:
    """A tsvector literal of (terms, weight letter) fields: positions in reading order,
    within PostgreSQL's limits (a later position is clamped, never a term dropped)."""
    positions: dict[str, list[str]] = {}
    position = 0
    for terms, weight in fields:
        for term in terms:
            position = min(position + 1, _PG_MAX_POSITION)
            held = positions.setdefault(term, [])
            entry = f"{position}{weight}"
            if len(held) < _PG_MAX_POSITIONS_PER_LEXEME and entry not in held:
                held.append(entry)
    return " ".join(f"{_pg_quote(term)}:{','.join(held)}" for term, held in positions.items())


# ---- the store ---------------------------------------------------------------------------


def _chunks[T](items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class KnowledgeStore:
    """SQL for the knowledge base, one code path per engine (SQLite, PostgreSQL)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    @staticmethod
    def _dialect(session: AsyncSession) -> str:
        name = session.get_bind().dialect.name
        if name not in ("sqlite", "postgresql"):
            raise NotImplementedError(f"the knowledge base needs SQLite or PostgreSQL, not {name}")
        return name

    async def content_hashes(self, thread_ids: Iterable[int]) -> dict[int, str]:
        ids = list(dict.fromkeys(thread_ids))
        found: dict[int, str] = {}
        async with self._sessionmaker() as session:
            for chunk in _chunks(ids, _WRITE_BATCH):
                rows = await session.execute(
                    select(
                        KnowledgeThreadRecord.thread_id, KnowledgeThreadRecord.content_hash
                    ).where(KnowledgeThreadRecord.thread_id.in_(chunk))
                )
                found.update({thread_id: digest for thread_id, digest in rows})
        return found

    async def write(self, documents: Sequence[KnowledgeDocument]) -> None:
        """Insert or replace these threads, their index entries and the term counts (one
        thread once), in one transaction."""
        if not documents:
            return
        table = cast(Table, KnowledgeThreadRecord.__table__)
        now = utcnow()
        async with self._sessionmaker() as session, _transaction(session) as dialect:
            insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
            for chunk in _chunks(documents, _WRITE_BATCH):
                old = await _stored_terms(session, [d.thread_id for d in chunk])
                statement = insert(table)
                columns = [c.name for c in table.columns if c.name != "thread_id"]
                statement = statement.on_conflict_do_update(
                    index_elements=["thread_id"],
                    set_={name: statement.excluded[name] for name in columns},
                    where=table.c.content_hash != statement.excluded.content_hash,
                )
                await session.execute(statement, [_row(d, now) for d in chunk])
                if dialect == "postgresql":
                    await session.execute(
                        text(
                            f"UPDATE {TABLE} SET {VECTOR_COLUMN} = CAST(:vector AS tsvector) "
                            "WHERE thread_id = :thread_id"
                        ),
                        [{"thread_id": d.thread_id, "vector": _vector(d)} for d in chunk],
                    )
                changes: Counter[tuple[int, str]] = Counter()
                for d in chunk:
                    _count(changes, old.get(d.thread_id), (d.guild_id, _distinct_terms(d)))
                await _apply_counts(session, dialect, changes)

    async def delete(self, thread_id: int) -> bool:
        async with self._sessionmaker() as session, _transaction(session) as dialect:
            old = await _stored_terms(session, [thread_id])
            result = await session.execute(
                delete(KnowledgeThreadRecord).where(KnowledgeThreadRecord.thread_id == thread_id)
            )
            changes: Counter[tuple[int, str]] = Counter()
            _count(changes, old.get(thread_id), None)
            await _apply_counts(session, dialect, changes)
        return cast(CursorResult[Any], result).rowcount == 1

    async def stored_page(
        self, *, after: int | None, limit: int
    ) -> list[tuple[StoredContent, str]]:
        """Up to `limit` stored threads by id after `after`, with their content hashes."""
        record = KnowledgeThreadRecord
        statement = select(record).order_by(record.thread_id).limit(limit)
        if after is not None:
            statement = statement.where(record.thread_id > after)
        async with self._sessionmaker() as session:
            rows = (await session.scalars(statement)).all()
        return [
            (
                StoredContent(
                    thread_id=r.thread_id,
                    guild_id=r.guild_id,
                    forum_id=r.forum_id,
                    title=r.title,
                    question=r.question,
                    answer=r.answer,
                    answer_kind=r.answer_kind,
                    tags=tuple(r.tags),
                    created_at=r.created_at,
                    solved_at=r.solved_at,
                ),
                r.content_hash,
            )
            for r in rows
        ]

    async def contents(
        self, thread_ids: Sequence[int], *, guild_id: int | None
    ) -> dict[int, tuple[str, str]]:
        """Question and answer of these threads (of `guild_id` only, when given)."""
        if not thread_ids:
            return {}
        statement = select(
            KnowledgeThreadRecord.thread_id,
            KnowledgeThreadRecord.question,
            KnowledgeThreadRecord.answer,
        ).where(KnowledgeThreadRecord.thread_id.in_(list(thread_ids)))
        if guild_id is not None:
            statement = statement.where(KnowledgeThreadRecord.guild_id == guild_id)
        async with self._sessionmaker() as session:
            rows = await session.execute(statement)
            return {thread_id: (question, answer) for thread_id, question, answer in rows}

    async def candidates(
        self, terms: Sequence[str], *, guild_id: int | None, limit: int
    ) -> list[Candidate]:
        """Threads with any of `terms`, best first by the engine's rank, at most `limit`."""
        if not terms:
            return []
        params: dict[str, Any] = {"limit": limit}
        guild = ""
        if guild_id is not None:
            guild, params["guild_id"] = "AND g.guild_id = :guild_id", guild_id
        columns = (
            "k.thread_id, k.guild_id, k.title, k.terms_title, k.terms_question, k.terms_answer"
        )
        # The engine ranks every matching thread, so the inner query carries only ids and
        # ranks through its sort, and the guild is read from a narrow index (SQLite) rather
        # than from the rows, whose term columns are kilobytes; the wide columns are read
        # for the `limit` best only. At 100 000 threads this halved a common-word query.
        async with self._sessionmaker() as session:
            if self._dialect(session) == "sqlite":
                weights = ", ".join(str(w) for w in BM25_WEIGHTS)
                top = (
                    f"SELECT {FTS_TABLE}.rowid AS id, -bm25({FTS_TABLE}, {weights}) AS rank "
                    f"FROM {FTS_TABLE} CROSS JOIN {TABLE} AS g INDEXED BY {GUILD_INDEX} "
                    f"ON g.thread_id = {FTS_TABLE}.rowid "
                    f"WHERE {FTS_TABLE} MATCH :match {guild} "
                    "ORDER BY rank DESC, id LIMIT :limit"
                )
                params["match"] = fts5_match(terms)
            else:
                top = (
                    "SELECT g.thread_id AS id, "
                    f"ts_rank('{TS_RANK_WEIGHTS}', g.{VECTOR_COLUMN}, q.query, 1) AS rank "
                    f"FROM {TABLE} AS g CROSS JOIN (SELECT CAST(:query AS tsquery) AS query) AS q "
                    f"WHERE g.{VECTOR_COLUMN} @@ q.query {guild} "
                    "ORDER BY rank DESC, id LIMIT :limit"
                )
                params["query"] = tsquery_literal(terms)
            sql = (
                f"SELECT {columns}, top.rank FROM ({top}) AS top "
                f"JOIN {TABLE} AS k ON k.thread_id = top.id "
                "ORDER BY top.rank DESC, top.id"
            )
            rows = (await session.execute(text(sql), params)).all()
        return [
            Candidate(
                thread_id=row[0],
                guild_id=row[1],
                title=row[2],
                title_terms=frozenset(row[3].split()),
                question_terms=frozenset(row[4].split()),
                answer_terms=frozenset(row[5].split()),
                engine_rank=float(row[6]),
            )
            for row in rows
        ]

    async def document_frequencies(
        self, groups: Sequence[Sequence[str]], *, guild_id: int | None
    ) -> tuple[int, list[int]]:
        """(threads in scope, threads holding each group), from `knowledge_terms`.

        A group's count is its most frequent term's: a lower bound of the threads holding
        any of its terms, exact for a one-term group. The alternatives of a group are
        the stems of one word, which a text holding the word has together, so they
        almost always count the same threads.
        """
        terms = list(dict.fromkeys([THREADS_KEY, *(t for g in groups for t in g)]))
        record = KnowledgeTermRecord
        statement = (
            select(record.term, func.sum(record.threads))
            .where(record.term.in_(terms))
            .group_by(record.term)
        )
        if guild_id is not None:
            statement = statement.where(record.guild_id == guild_id)
        async with self._sessionmaker() as session:
            counts = {term: int(n or 0) for term, n in await session.execute(statement)}
        holding = [max((counts.get(t, 0) for t in group), default=0) for group in groups]
        return counts.get(THREADS_KEY, 0), holding

    async def stats(self, guild_id: int | None = None) -> StoreStats:
        record = KnowledgeThreadRecord
        scope = [] if guild_id is None else [record.guild_id == guild_id]
        async with self._sessionmaker() as session:
            guilds = await session.execute(
                select(record.guild_id, func.count()).where(*scope).group_by(record.guild_id)
            )
            per_guild = {g: int(n) for g, n in guilds}
            kinds = await session.execute(
                select(record.answer_kind, func.count()).where(*scope).group_by(record.answer_kind)
            )
            per_kind = {kind: int(n) for kind, n in kinds}
            newest = await session.scalar(select(func.max(record.solved_at)).where(*scope))
        return StoreStats(
            threads=sum(per_guild.values()),
            per_guild=dict(sorted(per_guild.items())),
            per_answer_kind=dict(sorted(per_kind.items(), key=lambda kv: (-kv[1], kv[0]))),
            newest_solved_at=newest,
        )


@asynccontextmanager
async def _transaction(session: AsyncSession) -> AsyncIterator[str]:
    """One transaction around a write, whatever the session's isolation: SQLite's
    sessions are AUTOCOMMIT (ibot.db.engine), so it is opened by hand, IMMEDIATE so that
    the old terms read first cannot change before the write; on PostgreSQL a transaction
    advisory lock serialises the knowledge base's writers (row locks would not: two
    writers of a thread not stored yet find no row to lock, and both would count it).
    Writes are rare (imports, a thread solved); searches take no lock. Yields the dialect."""
    dialect = KnowledgeStore._dialect(session)
    if dialect == "sqlite":
        connection = await session.connection()
        await connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield dialect
        except BaseException:
            await connection.exec_driver_sql("ROLLBACK")
            raise
        await connection.exec_driver_sql("COMMIT")
    else:
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _WRITE_LOCK})
        yield dialect
        await session.commit()


async def _stored_terms(
    session: AsyncSession, thread_ids: Sequence[int]
) -> dict[int, tuple[int, frozenset[str]]]:
    """Guild and distinct terms of the stored threads among `thread_ids`."""
    record = KnowledgeThreadRecord
    statement = select(
        record.thread_id,
        record.guild_id,
        record.terms_title,
        record.terms_question,
        record.terms_answer,
    ).where(record.thread_id.in_(list(thread_ids)))
    rows = await session.execute(statement)
    return {
        thread_id: (guild_id, frozenset(f"{title} {question} {answer}".split()))
        for thread_id, guild_id, title, question, answer in rows
    }


def _distinct_terms(document: KnowledgeDocument) -> frozenset[str]:
    return frozenset((*document.title_terms, *document.question_terms, *document.answer_terms))


def _count(
    changes: Counter[tuple[int, str]],
    old: tuple[int, frozenset[str]] | None,
    new: tuple[int, frozenset[str]] | None,
) -> None:
    """Add to `changes` what replacing a thread's `old` (guild, terms) by `new` does to
    the term counts; None: not stored (before) or deleted (after)."""
    if old is not None and new is not None and old[0] == new[0]:
        guild = new[0]
        for term in new[1] - old[1]:
            changes[guild, term] += 1
        for term in old[1] - new[1]:
            changes[guild, term] -= 1
        return
    if old is not None:
        changes[old[0], THREADS_KEY] -= 1
        for term in old[1]:
            changes[old[0], term] -= 1
    if new is not None:
        changes[new[0], THREADS_KEY] += 1
        for term in new[1]:
            changes[new[0], term] += 1


async def _apply_counts(
    session: AsyncSession, dialect: str, changes: Counter[tuple[int, str]]
) -> None:
    """Add `changes` to knowledge_terms; a count that falls to 0 loses its row."""
    rows = [{"guild_id": g, "term": t, "threads": n} for (g, t), n in changes.items() if n]
    if not rows:
        return
    table = cast(Table, KnowledgeTermRecord.__table__)
    insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
    for chunk in _chunks(rows, _WRITE_BATCH):
        statement = insert(table)
        statement = statement.on_conflict_do_update(
            index_elements=["guild_id", "term"],
            set_={"threads": table.c.threads + statement.excluded.threads},
        )
        await session.execute(statement, list(chunk))
    gone = [{"guild_id": g, "term": t} for (g, t), n in changes.items() if n < 0]
    if gone:
        await session.execute(
            text(
                f"DELETE FROM {TERMS_TABLE} "
                "WHERE guild_id = :guild_id AND term = :term AND threads <= 0"
            ),
            gone,
        )


def _row(document: KnowledgeDocument, now: datetime) -> dict[str, Any]:
    return {
        "thread_id": document.thread_id,
        "guild_id": document.guild_id,
        "forum_id": document.forum_id,
        "title": document.title,
        "question": document.question,
        "answer": document.answer,
        "answer_kind": document.answer_kind,
        "tags": list(document.tags),
        "created_at": document.created_at,
        "solved_at": document.solved_at,
        "indexed_at": now,
        "content_hash": document.content_hash,
        "terms_title": " ".join(document.title_terms),
        "terms_question": " ".join(document.question_terms),
        "terms_answer": " ".join(document.answer_terms),
    }


def _vector(document: KnowledgeDocument) -> str:
    return tsvector_literal(
        [(document.title_terms, "A"), (document.question_terms, "B"), (document.answer_terms, "C")]
    )
