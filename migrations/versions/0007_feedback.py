"""Feedback on the bot's answers: the answers with buttons, and the members' votes

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 00:00:00

`answers` maps an answer's first message (the one carrying 👍 / 👎 / ✅) to what a click
needs after a restart: feature, ledger row (whose call_id names the call), asker,
thread, the question and answer texts (for the knowledge base), and when and by whom
it was marked solved.
`answer_feedback` holds one vote per member per answer (unique message_id, member_id).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "answers",
        sa.Column("message_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), nullable=True),
        sa.Column("thread_id", sa.BigInteger(), nullable=True),
        sa.Column("feature", sa.String(16), nullable=False),
        sa.Column("ledger_id", sa.BigInteger(), nullable=True),
        sa.Column("asker_id", sa.BigInteger(), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("solved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("solved_by", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_answers_thread_id", "answers", ["thread_id"])
    op.create_table(
        "answer_feedback",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column(
            "message_id",
            sa.BigInteger(),
            sa.ForeignKey("answers.message_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("vote", sa.SmallInteger(), nullable=False),
        sa.Column("voted_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("message_id", "member_id", name="uq_answer_feedback_message_member"),
    )


def downgrade() -> None:
    op.drop_table("answer_feedback")
    op.drop_index("ix_answers_thread_id", table_name="answers")
    op.drop_table("answers")
