"""Remember which forum threads were answered: exactly one answer per thread

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 00:00:00

The primary key on thread_id is what makes an answer happen once: a replayed gateway
event, a restart's catch-up and a second handler all try the same INSERT.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "thread_answers",
        sa.Column("thread_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("forum_id", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("ledger_id", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("reason", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("thread_answers")
