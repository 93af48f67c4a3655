"""Initial schema: personas, devices, skills, runs, interactions, skill_installs.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Timestamps are TEXT holding ISO-8601 UTC (``2025-01-31T22:05:07.123Z``); see orchestrator.log.
Types here are spelled out rather than imported from the models, so this file keeps describing
the schema it created even after the models move on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.Text


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "personas",
        _id(),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("interest", sa.Text(), nullable=True),
        sa.Column("is_control", sa.Boolean(), nullable=False),
        sa.Column("file_path", sa.Text(), nullable=True),
        sa.Column("file_sha256", sa.Text(), nullable=True),
        sa.Column("created_at", Timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_personas"),
        sa.UniqueConstraint("name", name="uq_personas_name"),
    )
    op.create_table(
        "devices",
        _id(),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("room", sa.Text(), nullable=True),
        sa.Column("speaker_device", sa.Text(), nullable=True),
        sa.Column("microphone_device", sa.Text(), nullable=True),
        sa.Column("audio_backend", sa.Text(), nullable=True),
        sa.Column("created_at", Timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
        sa.UniqueConstraint("name", name="uq_devices_name"),
    )
    op.create_table(
        "skills",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("invocation_name", sa.Text(), nullable=True),
        sa.Column("category", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_skills"),
    )
    op.create_table(
        "runs",
        _id(),
        sa.Column("persona_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("started_at", Timestamp(), nullable=False),
        sa.Column("finished_at", Timestamp(), nullable=True),
        sa.Column("scheduled_for", Timestamp(), nullable=True),
        sa.Column("tool_version", sa.Text(), nullable=True),
        sa.Column("config_sha256", sa.Text(), nullable=True),
        sa.Column("config_json", sa.Text(), nullable=True),
        sa.Column("vosk_model", sa.Text(), nullable=True),
        sa.Column("tts_engine", sa.Text(), nullable=True),
        sa.Column("tts_voice", sa.Text(), nullable=True),
        sa.Column("tts_rate", sa.Float(), nullable=True),
        sa.Column("audio_backend", sa.Text(), nullable=True),
        sa.Column("host", sa.Text(), nullable=True),
        sa.Column("audio_dir", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.ForeignKeyConstraint(["persona_id"], ["personas.id"], name="fk_runs_persona_id_personas"),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name="fk_runs_device_id_devices"),
    )
    op.create_index("ix_runs_persona_id_started_at", "runs", ["persona_id", "started_at"])

    op.create_table(
        "interactions",
        _id(),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("persona_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("skill_id", sa.Text(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("prompt_text", sa.Text(), nullable=True),
        sa.Column("prompt_audio", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", Timestamp(), nullable=False),
        sa.Column("prompt_started_at", Timestamp(), nullable=True),
        sa.Column("prompt_ended_at", Timestamp(), nullable=True),
        sa.Column("response_started_at", Timestamp(), nullable=True),
        sa.Column("response_ended_at", Timestamp(), nullable=True),
        sa.Column("finished_at", Timestamp(), nullable=True),
        sa.Column("prompt_seconds", sa.Float(), nullable=True),
        sa.Column("response_latency_seconds", sa.Float(), nullable=True),
        sa.Column("response_seconds", sa.Float(), nullable=True),
        sa.Column("response_audio", sa.Text(), nullable=True),
        sa.Column("recorded_seconds", sa.Float(), nullable=True),
        sa.Column("end_detect_delay", sa.Float(), nullable=True),
        sa.Column("transcript", sa.Text(), nullable=True),
        sa.Column("words_json", sa.Text(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("transcript_ready_delay", sa.Float(), nullable=True),
        sa.Column("asr_rtf", sa.Float(), nullable=True),
        sa.Column("input_overflows", sa.Integer(), nullable=True),
        sa.Column("output_underflows", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_interactions"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_interactions_run_id_runs"),
        sa.ForeignKeyConstraint(
            ["persona_id"], ["personas.id"], name="fk_interactions_persona_id_personas"
        ),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name="fk_interactions_device_id_devices"),
        sa.ForeignKeyConstraint(["skill_id"], ["skills.id"], name="fk_interactions_skill_id_skills"),
    )
    op.create_index("ix_interactions_run_id", "interactions", ["run_id"])
    op.create_index("ix_interactions_persona_id_started_at", "interactions", ["persona_id", "started_at"])
    op.create_index("ix_interactions_status", "interactions", ["status"])
    op.create_index("ix_interactions_skill_id", "interactions", ["skill_id"])

    op.create_table(
        "skill_installs",
        _id(),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("persona_id", sa.Integer(), nullable=False),
        sa.Column("skill_id", sa.Text(), nullable=False),
        sa.Column("interaction_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("created_at", Timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_skill_installs"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_skill_installs_run_id_runs"),
        sa.ForeignKeyConstraint(
            ["persona_id"], ["personas.id"], name="fk_skill_installs_persona_id_personas"
        ),
        sa.ForeignKeyConstraint(["skill_id"], ["skills.id"], name="fk_skill_installs_skill_id_skills"),
        sa.ForeignKeyConstraint(
            ["interaction_id"], ["interactions.id"], name="fk_skill_installs_interaction_id_interactions"
        ),
    )
    op.create_index(
        "ix_skill_installs_persona_id_skill_id", "skill_installs", ["persona_id", "skill_id"]
    )


def downgrade() -> None:
    op.drop_table("skill_installs")
    op.drop_table("interactions")
    op.drop_table("runs")
    op.drop_table("skills")
    op.drop_table("devices")
    op.drop_table("personas")
