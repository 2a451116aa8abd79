"""A partial index for the start-up scan of pending ledger rows; drop a redundant index

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 00:00:00

At every start the bot closes the rows a dead process left pending (`Ledger.pending()`,
`WHERE status = 'pending'`). Without an index that is a scan of the whole ledger, which
grows by every call ever made; pending rows are only the calls in flight, so a partial
index holding just them is tiny and stays so (SQLite and PostgreSQL both have partial
indexes; the predicate is the same literal the query uses, so both planners use it).

`ix_ledger_guild_id_created_at` is a prefix of the covering `ix_ledger_guild_report`
(migration 0003, led by the same two columns): every query it could serve is served by
the covering one, and each call paid for writing both.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_index(
        "ix_ledger_pending",
        "ledger",
        ["id"],
        sqlite_where=_PENDING,
        postgresql_where=_PENDING,
    )
    op.drop_index("ix_ledger_guild_id_created_at", table_name="ledger")


def downgrade() -> None:
    op.create_index("ix_ledger_guild_id_created_at", "ledger", ["guild_id", "created_at"])
    op.drop_index("ix_ledger_pending", table_name="ledger")
