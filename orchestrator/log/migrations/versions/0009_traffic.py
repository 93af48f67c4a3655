"""Network traffic: each Echo's network identity, the host clock of each run, captures and their flows.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29

``devices.mac`` and ``devices.ip`` are how an Echo's packets are found in a capture. A run records
the host clock's synchronisation (``clock_sync``, ``clock_source``, ``clock_offset_seconds``) and
the documented accuracy of the log's timestamps (``timestamp_accuracy_seconds``), so that traffic
timed by another clock can be lined up with the steps. ``captures`` holds every capture file (made
during a night, or imported) and ``flows`` what ``orchestrator traffic analyze`` read from them.

Columns are added with SQLite's own ``ALTER TABLE ... ADD COLUMN``: the views read ``devices`` and
``runs`` and would break on a batch rebuild's rename.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.Text
DEVICE_COLUMNS = (("mac", "TEXT"), ("ip", "TEXT"))
RUN_COLUMNS = (("clock_sync", "TEXT"), ("clock_source", "TEXT"), ("clock_offset_seconds", "FLOAT"),
               ("timestamp_accuracy_seconds", "FLOAT"))


def upgrade() -> None:
    for column, kind in DEVICE_COLUMNS:
        op.execute(f"ALTER TABLE devices ADD COLUMN {column} {kind}")
    for column, kind in RUN_COLUMNS:
        op.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")
    op.create_table(
        "captures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=True),
        sa.Column("bytes", sa.Integer(), nullable=True),
        sa.Column("interface", sa.Text(), nullable=True),
        sa.Column("filter", sa.Text(), nullable=True),
        sa.Column("snap_length", sa.Integer(), nullable=True),
        sa.Column("device_id", sa.Integer(), nullable=True),
        sa.Column("clock_offset_seconds", sa.Float(), nullable=False),
        sa.Column("started_at", Timestamp(), nullable=True),
        sa.Column("finished_at", Timestamp(), nullable=True),
        sa.Column("first_packet_at", Timestamp(), nullable=True),
        sa.Column("last_packet_at", Timestamp(), nullable=True),
        sa.Column("packets", sa.Integer(), nullable=True),
        sa.Column("packets_dropped", sa.Integer(), nullable=True),
        sa.Column("host", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("analyzed_at", Timestamp(), nullable=True),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name="fk_captures_device_id_devices"),
        sa.PrimaryKeyConstraint("id", name="pk_captures"),
    )
    op.create_table(
        "flows",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("capture_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("interaction_id", sa.Integer(), nullable=True),
        sa.Column("link", sa.Text(), nullable=False),
        sa.Column("protocol", sa.Text(), nullable=False),
        sa.Column("echo_address", sa.Text(), nullable=True),
        sa.Column("echo_port", sa.Integer(), nullable=True),
        sa.Column("remote_address", sa.Text(), nullable=True),
        sa.Column("remote_port", sa.Integer(), nullable=True),
        sa.Column("first_packet_at", Timestamp(), nullable=False),
        sa.Column("last_packet_at", Timestamp(), nullable=False),
        sa.Column("packets_out", sa.Integer(), nullable=False),
        sa.Column("bytes_out", sa.Integer(), nullable=False),
        sa.Column("packets_in", sa.Integer(), nullable=False),
        sa.Column("bytes_in", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("name_source", sa.Text(), nullable=True),
        sa.Column("domain", sa.Text(), nullable=True),
        sa.Column("tracker", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(["capture_id"], ["captures.id"], name="fk_flows_capture_id_captures"),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name="fk_flows_device_id_devices"),
        sa.ForeignKeyConstraint(["interaction_id"], ["interactions.id"], name="fk_flows_interaction_id_interactions"),
        sa.PrimaryKeyConstraint("id", name="pk_flows"),
    )
    op.create_index("ix_flows_capture_id", "flows", ["capture_id"])
    op.create_index("ix_flows_interaction_id", "flows", ["interaction_id"])
    op.create_index("ix_flows_device_id_first_packet_at", "flows", ["device_id", "first_packet_at"])


def downgrade() -> None:
    op.drop_index("ix_flows_device_id_first_packet_at", table_name="flows")
    op.drop_index("ix_flows_interaction_id", table_name="flows")
    op.drop_index("ix_flows_capture_id", table_name="flows")
    op.drop_table("flows")
    op.drop_table("captures")
    for column, _kind in reversed(RUN_COLUMNS):
        op.execute(f"ALTER TABLE runs DROP COLUMN {column}")
    for column, _kind in reversed(DEVICE_COLUMNS):
        op.execute(f"ALTER TABLE devices DROP COLUMN {column}")
