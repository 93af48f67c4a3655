"""What each reply meant: the classifier's verdict, its score and the rule that matched.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("interactions") as batch:
        batch.add_column(sa.Column("reply_outcome", sa.Text(), nullable=True))
        batch.add_column(sa.Column("reply_outcome_score", sa.Float(), nullable=True))
        batch.add_column(sa.Column("reply_outcome_rule", sa.Text(), nullable=True))
        batch.add_column(sa.Column("expectation_met", sa.Boolean(), nullable=True))
        batch.create_index("ix_interactions_reply_outcome", ["reply_outcome"])


def downgrade() -> None:
    with op.batch_alter_table("interactions") as batch:
        batch.drop_index("ix_interactions_reply_outcome")
        batch.drop_column("expectation_met")
        batch.drop_column("reply_outcome_rule")
        batch.drop_column("reply_outcome_score")
        batch.drop_column("reply_outcome")
