"""Embeddings of the knowledge base: one vector per solved thread, portable

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 00:00:00

`knowledge_embeddings` holds, per thread, the vector of its text for one embedding model
and size (float32 little-endian bytes), the model, the size, the sha256 of the text that
was embedded (same text, same model and size: no new call) and when. It is the source
of truth and the same on every engine.

The vector *index* is not made here: its size is a setting (knowledge.embeddings.
dimensions) and it needs an extension the database may lack (pgvector on PostgreSQL,
sqlite-vec on SQLite), which must never stop an upgrade. ibot/db/knowledge_vectors.py
creates it on first use for the configured model and size (a `vec0` virtual table on
SQLite, a `vector(N)` table on PostgreSQL, both named `knowledge_vec_<model>_d<N>`),
fills it from this table, and drops the index of another model or size. The downgrade
drops those too.

No foreign key to `knowledge_threads`: on SQLite (foreign_keys=ON) a batch-mode rebuild
of that table, which drops and recreates it, would cascade and delete every
embedding. A removed thread's embedding is deleted with it by the knowledge base, and
searches join `knowledge_threads`, so a leftover row is never shown.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "knowledge_embeddings"
INDEX_PREFIX = "knowledge_vec_"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("thread_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("dimensions", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("embedded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_knowledge_embeddings_guild_id_model", TABLE, ["guild_id", "model", "dimensions"]
    )


def downgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name == "sqlite":
        # The vec0 tables (their shadow tables go with them); dropping one needs the
        # sqlite-vec module, which every connection of ibot.db.engine has.
        names = connection.execute(
            sa.text(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND sql LIKE 'CREATE VIRTUAL TABLE%' AND name LIKE :prefix"
            ),
            {"prefix": INDEX_PREFIX + "%"},
        ).scalars()
    else:
        names = connection.execute(
            sa.text(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema() AND table_name LIKE :prefix"
            ),
            {"prefix": INDEX_PREFIX + "%"},
        ).scalars()
    for name in list(names):
        op.execute(f'DROP TABLE IF EXISTS "{name}"')
    op.drop_index("ix_knowledge_embeddings_guild_id_model", table_name=TABLE)
    op.drop_table(TABLE)
