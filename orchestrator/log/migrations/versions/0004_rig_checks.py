"""Rig self-tests: each check, its verdict per Echo, the probe levels, and the check a run followed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

``runs.rig_check_id`` is added with SQLite's own ``ALTER TABLE ... ADD COLUMN``, not a batch
rebuild: the views of 0003 read ``runs`` and would break on the rebuild's rename.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.Text


def upgrade() -> None:
    op.create_table(
        "rig_checks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("started_at", Timestamp(), nullable=False),
        sa.Column("finished_at", Timestamp(), nullable=False),
        sa.Column("host", sa.Text(), nullable=True),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("probe_level_dbfs", sa.Float(), nullable=False),
        sa.Column("min_level_dbfs", sa.Float(), nullable=False),
        sa.Column("max_crosstalk_dbfs", sa.Float(), nullable=False),
        sa.Column("min_snr_db", sa.Float(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rig_checks"),
    )
    op.create_table(
        "rig_check_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rig_check_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("probe_hz", sa.Float(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("level_dbfs", sa.Float(), nullable=True),
        sa.Column("noise_dbfs", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["rig_check_id"], ["rig_checks.id"],
                                name="fk_rig_check_results_rig_check_id_rig_checks"),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name="fk_rig_check_results_device_id_devices"),
        sa.PrimaryKeyConstraint("id", name="pk_rig_check_results"),
    )
    op.create_index("ix_rig_check_results_rig_check_id", "rig_check_results", ["rig_check_id"])
    op.create_table(
        "rig_check_levels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rig_check_id", sa.Integer(), nullable=False),
        sa.Column("speaker_device_id", sa.Integer(), nullable=False),
        sa.Column("microphone_device_id", sa.Integer(), nullable=False),
        sa.Column("same_room", sa.Boolean(), nullable=False),
        sa.Column("level_dbfs", sa.Float(), nullable=False),
        sa.Column("noise_dbfs", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["rig_check_id"], ["rig_checks.id"],
                                name="fk_rig_check_levels_rig_check_id_rig_checks"),
        sa.ForeignKeyConstraint(["speaker_device_id"], ["devices.id"],
                                name="fk_rig_check_levels_speaker_device_id_devices"),
        sa.ForeignKeyConstraint(["microphone_device_id"], ["devices.id"],
                                name="fk_rig_check_levels_microphone_device_id_devices"),
        sa.PrimaryKeyConstraint("id", name="pk_rig_check_levels"),
    )
    op.create_index("ix_rig_check_levels_rig_check_id", "rig_check_levels", ["rig_check_id"])
    op.execute("ALTER TABLE runs ADD COLUMN rig_check_id INTEGER "
               "CONSTRAINT fk_runs_rig_check_id_rig_checks REFERENCES rig_checks (id)")


def downgrade() -> None:
    op.execute("ALTER TABLE runs DROP COLUMN rig_check_id")
    op.drop_index("ix_rig_check_levels_rig_check_id", table_name="rig_check_levels")
    op.drop_table("rig_check_levels")
    op.drop_index("ix_rig_check_results_rig_check_id", table_name="rig_check_results")
    op.drop_table("rig_check_results")
    op.drop_table("rig_checks")
