"""A covering index for one guild's cost reports and budget sums

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 00:00:00

/cost-report always reads one guild's calls over a period, and so do the budget checks.
With only (guild_id, created_at), the database finds those rows in the index but then
reads each one from the table; when several guilds share the ledger their rows are
interleaved, so that means reading nearly every table page of the period. This index
also holds every column a report groups by or sums, so the report is answered from the
index alone (SQLite "USING COVERING INDEX", PostgreSQL index-only scan).

Measured with benchmarks/report_speed.py on 1 000 000 calls over 90 days (SQLite, warm
cache, the same run with and without this index, through the report service): a 30-day
report of one guild by user takes 0.11 s instead of 0.14 s for a guild holding 80 % of
the calls (1.2x), 0.015 s instead of 0.021 s for one holding 5 % (1.5x; 3x on the bare
SQL). A second covering index led by created_at, for reports over all guilds, was
measured and dropped: 1.1x at best, for 120 MB per million calls; ix_ledger_created_at
already serves those reports (0.16 s), because the ledger is appended in time order. On
PostgreSQL the planner keeps using ix_ledger_created_at for big guilds (about 0.06 s).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Kept in this file, not imported from ibot: a migration describes its own time.
    op.create_index(
        "ix_ledger_guild_report",
        "ledger",
        [
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
        ],
    )


def downgrade() -> None:
    op.drop_index("ix_ledger_guild_report", table_name="ledger")
