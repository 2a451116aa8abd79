"""The knowledge base: solved threads and their full-text index (FTS5 or tsvector)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 00:00:00

`knowledge_threads` is portable; the index is each engine's own (ibot/db/knowledge.py
says why and how they are queried):

- SQLite: `knowledge_fts`, an FTS5 table with external content (the rows of
  `knowledge_threads`, by rowid = thread_id), kept in step by triggers, so a row and its
  index entry change in the same statement. `unicode61` with the connectors of
  ibot.services.lexical as token characters: `venv/bin/python` is one token, as it is
  one term of the index.
- PostgreSQL: a `search_vector tsvector` column, written by the application from the
  same terms, and its GIN index.

A SQLite migration that later rebuilds `knowledge_threads` in batch mode must recreate
the triggers and rebuild the index (INSERT INTO knowledge_fts(knowledge_fts)
VALUES('rebuild')).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# INTEGER PRIMARY KEY on SQLite (the rowid itself, which FTS5 keys on), BIGINT elsewhere.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_FIELDS = "terms_title, terms_question, terms_answer"
_NEW = "new.terms_title, new.terms_question, new.terms_answer"
_OLD = "old.terms_title, old.terms_question, old.terms_answer"

_SQLITE_UP = (
    "CREATE VIRTUAL TABLE knowledge_fts USING fts5("
    f"{_FIELDS}, content='knowledge_threads', content_rowid='thread_id', "
    "tokenize=\"unicode61 remove_diacritics 0 tokenchars './:#+-_'\")",
    "CREATE TRIGGER knowledge_threads_ai AFTER INSERT ON knowledge_threads BEGIN "
    f"INSERT INTO knowledge_fts(rowid, {_FIELDS}) VALUES (new.thread_id, {_NEW}); END",
    "CREATE TRIGGER knowledge_threads_ad AFTER DELETE ON knowledge_threads BEGIN "
    f"INSERT INTO knowledge_fts(knowledge_fts, rowid, {_FIELDS}) "
    f"VALUES ('delete', old.thread_id, {_OLD}); END",
    f"CREATE TRIGGER knowledge_threads_au AFTER UPDATE OF thread_id, {_FIELDS} "
    "ON knowledge_threads BEGIN "
    f"INSERT INTO knowledge_fts(knowledge_fts, rowid, {_FIELDS}) "
    f"VALUES ('delete', old.thread_id, {_OLD}); "
    f"INSERT INTO knowledge_fts(rowid, {_FIELDS}) VALUES (new.thread_id, {_NEW}); END",
)
_SQLITE_DOWN = (
    "DROP TRIGGER IF EXISTS knowledge_threads_au",
    "DROP TRIGGER IF EXISTS knowledge_threads_ad",
    "DROP TRIGGER IF EXISTS knowledge_threads_ai",
    "DROP TABLE IF EXISTS knowledge_fts",
)


def upgrade() -> None:
    op.create_table(
        "knowledge_threads",
        sa.Column("thread_id", _ID, primary_key=True, autoincrement=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("forum_id", sa.BigInteger(), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("answer_kind", sa.String(32), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("solved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("terms_title", sa.Text(), nullable=False),
        sa.Column("terms_question", sa.Text(), nullable=False),
        sa.Column("terms_answer", sa.Text(), nullable=False),
    )
    op.create_index(
        "ix_knowledge_threads_guild_id_solved_at", "knowledge_threads", ["guild_id", "solved_at"]
    )
    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        for statement in _SQLITE_UP:
            op.execute(statement)
    elif dialect == "postgresql":
        op.add_column(
            "knowledge_threads",
            sa.Column(
                "search_vector",
                postgresql.TSVECTOR(),
                nullable=False,
                server_default=sa.text("''::tsvector"),
            ),
        )
        op.create_index(
            "ix_knowledge_threads_search_vector",
            "knowledge_threads",
            ["search_vector"],
            postgresql_using="gin",
        )


def downgrade() -> None:
    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        for statement in _SQLITE_DOWN:
            op.execute(statement)
    elif dialect == "postgresql":
        op.drop_index("ix_knowledge_threads_search_vector", table_name="knowledge_threads")
    op.drop_index("ix_knowledge_threads_guild_id_solved_at", table_name="knowledge_threads")
    op.drop_table("knowledge_threads")
