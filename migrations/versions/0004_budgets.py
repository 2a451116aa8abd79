"""Budget caps changed with /budget (an audit log), and the budget alerts already sent

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 00:00:00

budget_changes is append-only: the newest row of a guild's scope is the cap in force,
and the older ones say who changed what and when. budget_alerts' unique key is what
makes an alert go out once per threshold and period, even across restarts.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# INTEGER PRIMARY KEY on SQLite (its only auto-increment form), BIGINT elsewhere.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "budget_changes",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("scope", sa.String(32), nullable=False),
        # Integer micro-dollars; NULL = no cap.
        sa.Column("cap_micros", sa.BigInteger(), nullable=True),
        sa.Column("changed_by", sa.BigInteger(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("previous_micros", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_budget_changes_guild_id_scope", "budget_changes", ["guild_id", "scope"])
    op.create_table(
        "budget_alerts",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("scope", sa.String(32), nullable=False),
        sa.Column("period_key", sa.String(16), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "guild_id", "scope", "period_key", "threshold", name="uq_budget_alerts_once"
        ),
    )


def downgrade() -> None:
    op.drop_table("budget_alerts")
    op.drop_index("ix_budget_changes_guild_id_scope", table_name="budget_changes")
    op.drop_table("budget_changes")
