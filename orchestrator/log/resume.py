"""Resuming an interrupted run: what its rows say was done, and the rows it leaves to finish.

A run killed mid-step leaves rows with status ``'started'``; :func:`mark_stale_started` turns them
into ``'interrupted'``, and a resumed run repeats neither a finished step nor one interrupted again
after its retries.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePath
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from orchestrator.log.engine import write_session
from orchestrator.log.schema import Interaction, Persona, Run
from orchestrator.log.write import stored_audio_path

#: A step that ends in error or is interrupted is tried again this many times, each time in a new
#: row with ``attempt`` + 1; after that it is left behind. The runner retries by the same count.
STEP_RETRIES = 1


def mark_stale_started(
    engine: Engine, run_id: int, error: str = "the run ended before this step finished"
) -> int:
    """Turn the ``'started'`` rows of a dead run into ``'interrupted'``; return how many.

    ``finished_at`` stays NULL: when the step really stopped is unknown.
    """
    stmt = (
        update(Interaction)
        .where(Interaction.run_id == run_id, Interaction.status == "started")
        .values(status="interrupted", error=error)
    )
    with engine.begin() as connection:
        return connection.execute(stmt).rowcount


@dataclass(frozen=True)
class ResumeState:
    """What an interrupted run has behind it, as its rows tell."""

    persona: str
    steps: list[str]  # the words of every planned step, as recorded when the run began
    done: set[int]  # steps not to repeat
    attempts: dict[int, int]  # retry number for steps that were interrupted
    enable_outcomes: dict[str, str | None]  # skill id -> what the last enable reply meant
    open_outcomes: dict[str, tuple[str | None, str | None]]  # skill id -> the last open's verdict, skill heard


def resume_state(engine: Engine, run_id: int) -> ResumeState:
    """What an interrupted run has behind it; `reopen_run` once the caller has decided to continue it."""
    mark_stale_started(engine, run_id)
    with write_session(engine) as session:
        run = session.get(Run, run_id)
        if run is None:
            raise LookupError(f"no run with id {run_id}")
        if run.status == "completed":
            raise ValueError(f"run {run_id} is completed; there is nothing to resume")
        persona = session.scalar(select(Persona.name).where(Persona.id == run.persona_id)) or ""
        rows = session.execute(
            select(Interaction.step_index, Interaction.attempt, Interaction.status, Interaction.kind,
                   Interaction.skill_id, Interaction.reply_outcome, Interaction.reply_heard_skill)
            .where(Interaction.run_id == run_id).order_by(Interaction.step_index, Interaction.attempt)
        ).all()
        if run.config_json is None:
            raise ValueError(f"run {run_id} never began; there is nothing to resume")
        steps = json.loads(run.config_json).get("steps", [])
    return _resume_from_rows(persona, steps, rows)


def reopen_run(engine: Engine, run_id: int) -> None:
    """Mark a run running again, for a worker that continues it."""
    stmt = update(Run).where(Run.id == run_id).values(status="running", finished_at=None, error=None)
    with engine.begin() as connection:
        connection.execute(stmt)


def _resume_from_rows(persona: str, steps: list[str], rows: Sequence[Any]) -> ResumeState:
    done: set[int] = set()
    attempts: dict[int, int] = {}
    enable_outcomes: dict[str, str | None] = {}
    open_outcomes: dict[str, tuple[str | None, str | None]] = {}
    for index, attempt, status, kind, skill_id, outcome, heard in rows:
        if status == "interrupted" and attempt < STEP_RETRIES:
            attempts[index] = attempt + 1
            done.discard(index)
            continue
        done.add(index)
        attempts.pop(index, None)
        if kind == "enable" and skill_id:
            enable_outcomes[skill_id] = outcome
        elif kind == "open" and skill_id:
            open_outcomes[skill_id] = (outcome, heard)
    return ResumeState(persona, steps, done, attempts, enable_outcomes, open_outcomes)


def resumable_run(engine: Engine, persona: str, since: datetime) -> int | None:
    """The persona's latest run since `since` that stopped before its end, if any."""
    stmt = (
        select(Run.id).join(Persona, Persona.id == Run.persona_id)
        .where(Persona.name == persona, Run.status.in_(("interrupted", "running")), Run.started_at >= since,
               Run.config_json.is_not(None))
        .order_by(Run.started_at.desc()).limit(1)
    )
    with engine.connect() as connection:
        return connection.execute(stmt).scalar()


def adopt_response_audio(engine: Engine, run_id: int, step_index: int, attempt: int, path: PurePath) -> bool:
    """Point a step's row at its recording if nothing points at it yet, and queue it for a transcript.

    True if it did."""
    with write_session(engine) as session:
        row = session.scalar(select(Interaction).where(
            Interaction.run_id == run_id, Interaction.step_index == step_index, Interaction.attempt == attempt))
        if row is None or row.response_audio is not None:
            return False
        audio_dir = session.scalar(select(Run.audio_dir).where(Run.id == run_id))
        row.response_audio = stored_audio_path(path, audio_dir)
        row.transcript_state = row.transcript_state or "pending"
        return True
