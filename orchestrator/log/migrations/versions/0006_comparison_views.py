"""Views for comparing personas with the control, night after night: every view now carries the
persona's interest, whether it is the control, the night and its round, and a step's exact moments.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

The views are written out whole here, as they now are, rather than patched from an older
revision's text: this file is where to read what a view holds.

A night is the UTC date of the evening a run belongs to (``night``, as in 0003): its
``scheduled_for`` (or ``started_at`` for a run started by hand) minus 12 hours, so a night from
noon to noon UTC has one date. Two nights run on one date (two demo nights, or a night repeated
by hand after a fault) are told apart by ``night_round``: a persona's first run of that date is
round 1, its second run round 2, and so on, in the order the runs were meant to start. Runs of
different personas with the same date and round belong to the same night; a resumed run keeps its
row, and so its round. The view ``run_nights`` gives both for every run, and the other views take
them from it, so they are defined once. They join it with LEFT JOIN although every run has its
row there: SQLite then keeps the view's own table as the outer loop, so a view's rows come in the
order of that table's ids, as before, instead of night by night.

SQLite checks views when a table they read is renamed: a later migration that rebuilds a table
with ``batch_alter_table`` must drop these views first and create them again afterwards.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUN_NIGHTS = """
CREATE VIEW run_nights AS
SELECT
    id AS run_id,
    night,
    row_number() OVER (
        PARTITION BY persona_id, night
        ORDER BY coalesce(scheduled_for, started_at), id
    ) AS night_round
FROM (
    SELECT id, persona_id, scheduled_for, started_at,
           date(coalesce(scheduled_for, started_at), '-12 hours') AS night
    FROM runs
)
"""

RUN_DETAILS = """
CREATE VIEW run_details AS
SELECT
    r.id AS run_id,
    n.night AS night,
    n.night_round AS night_round,
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
    r.rig_check_id AS rig_check_id,
    r.tool_version AS tool_version,
    r.config_sha256 AS config_sha256,
    r.asr_engine AS asr_engine,
    r.asr_model AS asr_model,
    r.asr_version AS asr_version,
    r.tts_voice AS tts_voice,
    r.tts_rate AS tts_rate,
    r.audio_backend AS audio_backend,
    r.host AS host,
    r.audio_dir AS audio_dir,
    r.persona_id AS persona_id,
    r.device_id AS device_id
FROM runs AS r
JOIN personas AS p ON p.id = r.persona_id
LEFT JOIN run_nights AS n ON n.run_id = r.id
LEFT JOIN devices AS d ON d.id = r.device_id
"""

# transcript_words: Vosk and PocketSphinx separate words with single spaces; no transcript, no words.
INTERACTION_DETAILS = """
CREATE VIEW interaction_details AS
SELECT
    i.id AS interaction_id,
    i.run_id AS run_id,
    n.night AS night,
    n.night_round AS night_round,
    p.name AS persona,
    p.interest AS persona_interest,
    p.is_control AS is_control,
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
    i.reply_heard_skill AS reply_heard_skill,
    i.expectation_met AS expectation_met,
    i.started_at AS started_at,
    i.prompt_started_at AS prompt_started_at,
    i.prompt_ended_at AS prompt_ended_at,
    i.response_started_at AS response_started_at,
    i.response_ended_at AS response_ended_at,
    i.finished_at AS finished_at,
    i.prompt_seconds AS prompt_seconds,
    i.response_latency_seconds AS response_latency_seconds,
    i.response_seconds AS response_seconds,
    i.recorded_seconds AS recorded_seconds,
    i.transcript AS transcript,
    CASE WHEN coalesce(trim(i.transcript), '') = '' THEN 0
         ELSE length(trim(i.transcript)) - length(replace(trim(i.transcript), ' ', '')) + 1
    END AS transcript_words,
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
LEFT JOIN run_nights AS n ON n.run_id = i.run_id
LEFT JOIN skills AS s ON s.id = i.skill_id
"""

INSTALL_DETAILS = """
CREATE VIEW install_details AS
SELECT
    si.id AS install_id,
    si.run_id AS run_id,
    n.night AS night,
    n.night_round AS night_round,
    p.name AS persona,
    p.interest AS persona_interest,
    p.is_control AS is_control,
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
LEFT JOIN run_nights AS n ON n.run_id = si.run_id
LEFT JOIN devices AS d ON d.id = r.device_id
LEFT JOIN skills AS s ON s.id = si.skill_id
LEFT JOIN interactions AS i ON i.id = si.interaction_id
"""

#: In the order they are created: run_nights first, as the others read it.
VIEWS = {
    "run_nights": RUN_NIGHTS,
    "run_details": RUN_DETAILS,
    "interaction_details": INTERACTION_DETAILS,
    "install_details": INSTALL_DETAILS,
}

#: The installs of the nights a report asks for are found through their runs.
INDEXES = {"ix_skill_installs_run_id": "CREATE INDEX ix_skill_installs_run_id ON skill_installs (run_id)"}


def _views_of_0005() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("views_0005", Path(__file__).with_name("0005_speech_engines.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    views: dict[str, str] = module.views()
    return views


def _drop(views: Sequence[str]) -> None:
    for name in reversed(views):
        op.execute(f"DROP VIEW IF EXISTS {name}")


def upgrade() -> None:
    _drop(list(VIEWS))
    for statement in VIEWS.values():
        op.execute(statement)
    for statement in INDEXES.values():
        op.execute(statement)


def downgrade() -> None:
    for name in INDEXES:
        op.execute(f"DROP INDEX {name}")
    _drop(list(VIEWS))
    for statement in _views_of_0005().values():
        op.execute(statement)
