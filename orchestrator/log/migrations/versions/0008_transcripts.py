"""Transcripts as records of their own, and a transcript state on every step.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

One recording can have several transcripts (the small model during the night, a larger one the
next morning): ``transcripts`` keeps each with its engine, model, library version, time, words and
confidence. ``is_current`` marks the one per step that the log shows; a partial unique index
allows at most one. ``interactions.transcript``, ``words_json`` and ``confidence`` stay where
analysts' queries read them: they are the current transcript, copied in the same transaction
that makes it current.

``interactions.transcript_state`` says where a step's transcript is: ``pending`` (its recording is
queued for the background transcriber), ``working`` (claimed by the transcriber named in
``transcript_claim``), ``done`` or ``failed`` (``transcript_error`` says why); NULL when there is
nothing to transcribe (no recording). ``transcript_tries`` counts claims, so a recording that
kills its transcriber is not tried forever.

Existing logs are carried over: a step's transcript becomes its first, current, transcript with
the run's speech engine and model, stamped with the step's end; such steps are ``done``.

The views read ``interactions``; they are dropped and created again: ``interaction_details``
gains the transcript's state, id, engine and model, and a new ``transcript_details`` lists every
transcript, current or not.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The views as they were before: 0006 writes them out whole; this revision adds to two of them.
PREVIOUS = "0006_comparison_views.py"

OLD_TRANSCRIPT = "    i.transcript AS transcript,\n"
NEW_TRANSCRIPT = OLD_TRANSCRIPT + (
    "    i.transcript_state AS transcript_state,\n"
    "    t.id AS transcript_id,\n"
    "    t.engine AS transcript_engine,\n"
    "    t.model AS transcript_model,\n"
)
OLD_JOIN = "LEFT JOIN skills AS s ON s.id = i.skill_id\n"
NEW_JOIN = OLD_JOIN + "LEFT JOIN transcripts AS t ON t.interaction_id = i.id AND t.is_current = 1\n"

TRANSCRIPT_DETAILS = """
CREATE VIEW transcript_details AS
SELECT
    t.id AS transcript_id,
    t.interaction_id AS interaction_id,
    i.run_id AS run_id,
    n.night AS night,
    n.night_round AS night_round,
    p.name AS persona,
    d.name AS echo,
    i.step_index AS step_index,
    i.attempt AS attempt,
    i.kind AS kind,
    i.skill_id AS skill_id,
    i.prompt_text AS prompt_text,
    t.is_current AS is_current,
    t.engine AS engine,
    t.model AS model,
    t.version AS version,
    t.created_at AS created_at,
    t.text AS transcript,
    CASE WHEN coalesce(trim(t.text), '') = '' THEN 0
         ELSE length(trim(t.text)) - length(replace(trim(t.text), ' ', '')) + 1 END AS transcript_words,
    t.confidence AS confidence,
    t.audio_seconds AS audio_seconds,
    t.decode_seconds AS decode_seconds,
    r.audio_dir || '/' || t.recording AS recording_path,
    i.persona_id AS persona_id,
    i.device_id AS device_id
FROM transcripts AS t
JOIN interactions AS i ON i.id = t.interaction_id
JOIN runs AS r ON r.id = i.run_id
JOIN personas AS p ON p.id = i.persona_id
JOIN devices AS d ON d.id = i.device_id
LEFT JOIN run_nights AS n ON n.run_id = i.run_id
"""


def _previous() -> ModuleType:
    spec = importlib.util.spec_from_file_location("views_previous", Path(__file__).with_name(PREVIOUS))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def views() -> dict[str, str]:
    """The views as this revision defines them."""
    old: dict[str, str] = _previous().VIEWS
    details = old["interaction_details"]
    assert OLD_TRANSCRIPT in details and OLD_JOIN in details
    new = dict(old)
    new["interaction_details"] = details.replace(OLD_TRANSCRIPT, NEW_TRANSCRIPT).replace(OLD_JOIN, NEW_JOIN)
    new["transcript_details"] = TRANSCRIPT_DETAILS
    return new


def _drop_views() -> None:
    for name in reversed(list(views())):
        op.execute(f"DROP VIEW IF EXISTS {name}")


def upgrade() -> None:
    _drop_views()
    op.create_table(
        "transcripts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("interaction_id", sa.Integer(), nullable=False),
        sa.Column("recording", sa.Text(), nullable=True),
        sa.Column("engine", sa.Text(), nullable=True),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("version", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("words_json", sa.Text(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("audio_seconds", sa.Float(), nullable=True),
        sa.Column("decode_seconds", sa.Float(), nullable=True),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["interaction_id"], ["interactions.id"],
                                name="fk_transcripts_interaction_id_interactions"),
        sa.PrimaryKeyConstraint("id", name="pk_transcripts"),
    )
    op.create_index("ix_transcripts_interaction_id", "transcripts", ["interaction_id"])
    op.create_index("uq_transcripts_current", "transcripts", ["interaction_id"], unique=True,
                    sqlite_where=sa.text("is_current = 1"))
    # Plain ADD COLUMN, not a batch rebuild: other views and tables refer to interactions.
    for column, kind in (("transcript_state", "TEXT"), ("transcript_claim", "TEXT"),
                         ("transcript_tries", "INTEGER NOT NULL DEFAULT 0"), ("transcript_error", "TEXT")):
        op.execute(f"ALTER TABLE interactions ADD COLUMN {column} {kind}")
    op.create_index("ix_interactions_transcript_state", "interactions", ["transcript_state"])
    op.execute("""
        INSERT INTO transcripts (interaction_id, recording, engine, model, version, created_at, text, words_json,
                                 confidence, audio_seconds, decode_seconds, is_current)
        SELECT i.id, i.response_audio, r.asr_engine, r.asr_model, r.asr_version,
               coalesce(i.finished_at, i.started_at), i.transcript, i.words_json, i.confidence,
               i.recorded_seconds, i.asr_rtf * i.recorded_seconds, 1
        FROM interactions AS i JOIN runs AS r ON r.id = i.run_id
        WHERE i.transcript IS NOT NULL
        ORDER BY i.id
    """)
    op.execute("UPDATE interactions SET transcript_state = 'done', transcript_tries = 1 WHERE transcript IS NOT NULL")
    for statement in views().values():
        op.execute(statement)


def downgrade() -> None:
    _drop_views()
    op.drop_index("ix_interactions_transcript_state", "interactions")
    for column in ("transcript_error", "transcript_tries", "transcript_claim", "transcript_state"):
        op.execute(f"ALTER TABLE interactions DROP COLUMN {column}")
    op.drop_index("uq_transcripts_current", "transcripts")
    op.drop_index("ix_transcripts_interaction_id", "transcripts")
    op.drop_table("transcripts")
    for statement in _previous().VIEWS.values():
        op.execute(statement)
