"""Ledger rows written before the call (status pending) carry the call's own id

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 22:00:00

The gateway now writes a row before it sends a call and completes that row afterwards,
so a process killed mid-call leaves a `pending` row instead of no row at all; the next
start closes it as an interrupted call at its worst-case cost. `call_id` is also sent
to OpenAI as X-Client-Request-Id, which lets such a row be matched with the provider's
records. The index serves those look-ups; NULL for the rows written before this
revision.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN (no table copy on SQLite): fast on a ledger of millions of rows.
    op.add_column("ledger", sa.Column("call_id", sa.String(36), nullable=True))
    op.create_index("ix_ledger_call_id", "ledger", ["call_id"])


def downgrade() -> None:
    op.drop_index("ix_ledger_call_id", table_name="ledger")
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("call_id")
