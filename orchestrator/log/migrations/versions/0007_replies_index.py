"""An index that holds what the reports across nights read of every step.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29

``orchestrator report compare`` and ``skill-history`` sum the steps of many nights by run, skill,
words, status and verdict, with the reply, its latency and its length. With all of these in one
index, in that order, SQLite reads the index alone and finds the steps already in the order it
sums them, instead of reading every (wide) row of ``interactions`` and sorting them: on a million
steps that is the difference between seconds and tens of seconds on a busy machine. It costs about
a tenth of the log's size.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("run_id", "skill_id", "prompt_text", "status", "reply_outcome", "transcript",
           "response_latency_seconds", "response_seconds")


def upgrade() -> None:
    op.create_index("ix_interactions_replies", "interactions", list(COLUMNS))


def downgrade() -> None:
    op.drop_index("ix_interactions_replies", table_name="interactions")
