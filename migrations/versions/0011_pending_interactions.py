"""Slash commands deferred and not yet answered (answered again after a crash)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 00:00:00

`pending_interactions` holds one row per /ask-gpt or /summary between its deferral and
the delivery of its answer: a row left by a dead process is a member still waiting,
answered at the next start while Discord's 15-minute interaction token lasts (see
ibot/db/pending_interactions.py). The token is stored sealed (`token_sealed`), never in
clear. The table only ever holds the commands in flight: no index beyond its key.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pending_interactions",
        sa.Column("interaction_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("application_id", sa.BigInteger(), nullable=False),
        sa.Column("token_sealed", sa.Text(), nullable=False),
        sa.Column("feature", sa.String(16), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("channel_id", sa.BigInteger(), nullable=True),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ledger_id", sa.BigInteger(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("pending_interactions")
