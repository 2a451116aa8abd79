"""Per-guild term counts of the knowledge base (document frequencies)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 00:00:00

`knowledge_terms` holds, per guild and index term, the number of solved threads holding
the term, and under the empty term the guild's number of threads: the idf weights of a
search are then one primary-key lookup per query term instead of a count over the
engine's doclists (see ibot/db/knowledge.py). Built here from the stored threads' terms;
kept exact afterwards by the store's writes and deletes.

Also an index on knowledge_threads (thread_id, guild_id): a search reads the guild of
every thread the engine matched from it instead of from the (wide) rows.
"""

from collections import Counter
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 1_000


def upgrade() -> None:
    terms = op.create_table(
        "knowledge_terms",
        sa.Column("guild_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("term", sa.String(64), primary_key=True),
        sa.Column("threads", sa.Integer(), nullable=False),
    )
    op.create_index(
        "ix_knowledge_threads_thread_id_guild_id", "knowledge_threads", ["thread_id", "guild_id"]
    )
    counts: Counter[tuple[int, str]] = Counter()
    rows = op.get_bind().execute(
        sa.text("SELECT guild_id, terms_title, terms_question, terms_answer FROM knowledge_threads")
    )
    for guild_id, title, question, answer in rows:
        counts[guild_id, ""] += 1
        for term in set(f"{title} {question} {answer}".split()):
            counts[guild_id, term] += 1
    entries = [{"guild_id": g, "term": t, "threads": n} for (g, t), n in counts.items()]
    for start in range(0, len(entries), _BATCH):
        op.bulk_insert(terms, entries[start : start + _BATCH])


def downgrade() -> None:
    op.drop_table("knowledge_terms")
    op.drop_index("ix_knowledge_threads_thread_id_guild_id", table_name="knowledge_threads")
