"""Knowledge-base sync state: how far each forum was read, and each thread as last read

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 00:00:00

`kb_sync_forums`: per forum, the archive time down to which its archived threads were
all read, and the cursor of an interrupted pass (resumed by the next run).
`kb_sync_threads`: per thread read, its last_message_id, tags and archived flag then
(an unchanged thread is not read again), the outcome, the hash of the knowledge-base
content the sync wrote (NULL: the entry is someone else's), when it was last listed.
See ibot/db/knowledge_sync.py.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "kb_sync_forums",
        sa.Column("forum_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("archived_through", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pass_top", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pass_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pass_full", sa.Boolean(), nullable=False),
        sa.Column("pass_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "kb_sync_threads",
        sa.Column("thread_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("forum_id", sa.BigInteger(), nullable=False),
        sa.Column("last_message_id", sa.BigInteger(), nullable=True),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("archived", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("listed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_kb_sync_threads_forum_id_listed_at", "kb_sync_threads", ["forum_id", "listed_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_kb_sync_threads_forum_id_listed_at", table_name="kb_sync_threads")
    op.drop_table("kb_sync_threads")
    op.drop_table("kb_sync_forums")
