"""Views for the joins analysts write every day: steps, runs and installs with persona, Echo and skill.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Every view has a ``night`` column: the UTC date of the evening a run belongs to, taken from when it
was scheduled (or started, for a run started by hand) minus 12 hours, so a night's runs from noon
to noon UTC share one date even when they cross midnight, and a missed run recorded the next
morning still counts for the night it was meant for.

SQLite checks views when a table they read is renamed. A later migration that rebuilds one of
these tables with ``batch_alter_table`` (copy, drop, rename) must drop the views first and create
them again afterwards, or the rename fails with "error in view ...: no such table".
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# `r` is always the runs table in the views below.
NIGHT = "date(coalesce(r.scheduled_for, r.started_at), '-12 hours')"

# Vosk separates words with single spaces; an empty or missing transcript has no words.
WORDS = (
    "CASE WHEN coalesce(trim(i.transcript), '') = '' THEN 0 "
    "ELSE length(trim(i.transcript)) - length(replace(trim(i.transcript), ' ', '')) + 1 END"
)

RUN_DETAILS = f"""
CREATE VIEW run_details AS
SELECT
    r.id AS run_id,
    {NIGHT} AS night,
    p.name AS persona,
    p.interest AS persona_interest,
    p.is_control AS is_control,
    d.name AS echo,
    d.room AS room,
    r.status AS status,
    r.scheduled_for AS scheduled_for,
    r.started_at AS started_at,
    r.finished_at AS finished_at,
    round((julianday(r.finished_at) - julianday(r.started_at)) * 86400, 3) AS seconds,
    r.error AS error,
    r.tool_version AS tool_version,
    r.config_sha256 AS config_sha256,
    r.vosk_model AS vosk_model,
    r.tts_voice AS tts_voice,
    r.tts_rate AS tts_rate,
    r.audio_backend AS audio_backend,
    r.host AS host,
    r.audio_dir AS audio_dir,
    r.persona_id AS persona_id,
    r.device_id AS device_id
FROM runs AS r
JOIN personas AS p ON p.id = r.persona_id
LEFT JOIN devices AS d ON d.id = r.device_id
"""

INTERACTION_DETAILS = f"""
CREATE VIEW interaction_details AS
SELECT
    i.id AS interaction_id,
    i.run_id AS run_id,
    {NIGHT} AS night,
    p.name AS persona,
    d.name AS echo,
    d.room AS room,
    i.step_index AS step_index,
    i.attempt AS attempt,
    i.kind AS kind,
    i.skill_id AS skill_id,
    s.name AS skill_name,
    s.category AS skill_category,
    i.prompt_text AS prompt_text,
    i.status AS status,
    i.error AS error,
    i.reply_outcome AS reply_outcome,
    i.expectation_met AS expectation_met,
    i.started_at AS started_at,
    i.finished_at AS finished_at,
    i.prompt_seconds AS prompt_seconds,
    i.response_latency_seconds AS response_latency_seconds,
    i.response_seconds AS response_seconds,
    i.recorded_seconds AS recorded_seconds,
    i.transcript AS transcript,
    {WORDS} AS transcript_words,
    i.confidence AS confidence,
    r.audio_dir || '/' || i.prompt_audio AS prompt_audio_path,
    r.audio_dir || '/' || i.response_audio AS response_audio_path,
    r.status AS run_status,
    i.persona_id AS persona_id,
    i.device_id AS device_id
FROM interactions AS i
JOIN runs AS r ON r.id = i.run_id
JOIN personas AS p ON p.id = i.persona_id
JOIN devices AS d ON d.id = i.device_id
LEFT JOIN skills AS s ON s.id = i.skill_id
"""

INSTALL_DETAILS = f"""
CREATE VIEW install_details AS
SELECT
    si.id AS install_id,
    si.run_id AS run_id,
    {NIGHT} AS night,
    p.name AS persona,
    d.name AS echo,
    si.skill_id AS skill_id,
    s.name AS skill_name,
    s.category AS skill_category,
    si.action AS action,
    si.outcome AS outcome,
    si.created_at AS created_at,
    si.interaction_id AS interaction_id,
    i.status AS step_status,
    i.transcript AS reply_transcript,
    si.persona_id AS persona_id
FROM skill_installs AS si
JOIN runs AS r ON r.id = si.run_id
JOIN personas AS p ON p.id = si.persona_id
LEFT JOIN devices AS d ON d.id = r.device_id
LEFT JOIN skills AS s ON s.id = si.skill_id
LEFT JOIN interactions AS i ON i.id = si.interaction_id
"""

VIEWS = {
    "run_details": RUN_DETAILS,
    "interaction_details": INTERACTION_DETAILS,
    "install_details": INSTALL_DETAILS,
}


def upgrade() -> None:
    for statement in VIEWS.values():
        op.execute(statement)


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW {name}")
