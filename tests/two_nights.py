"""A small log of two nights whose every count is known, built with the log's own write helpers.

Night 2026-03-04 (both runs completed):
  pets on echo-1     enable B01 ok (enabled), open B01 ok, say B01 no_response, say B01 retry ok,
                     enable B02 ok (not_found), stop B01 error
  vanilla on echo-2  ask ok, ask timeout
Night 2026-03-05:
  pets on echo-1     run failed: enable B02 ok (enabled), open B02 interrupted
  vanilla on echo-2  missed (scheduler down)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from orchestrator import log
from orchestrator.analysis.reports import Filters, run_report

NIGHT_1 = "2026-03-04"
NIGHT_2 = "2026-03-05"


@dataclass(frozen=True)
class Step:
    kind: str
    skill: str | None
    status: str
    transcript: str | None = None
    latency: float | None = None
    length: float | None = None
    outcome: str | None = None
    error: str | None = None
    attempt: int = 0
    install: str | None = None


PETS_NIGHT_1 = [
    Step("enable", "B01", "ok", "Cat Facts is now enabled", 1.0, 2.0, "enabled", install="enabled"),
    Step("open", "B01", "ok", "welcome to cat facts", 1.5, 3.0, "skill_opened"),
    Step("say", "B01", "no_response", outcome="no_response"),
    Step("say", "B01", "ok", "here is a cat fact cats sleep a lot", 2.0, 4.0, "other", attempt=1),
    Step("enable", "B02", "ok", "I couldn't find that skill", 0.5, 1.0, "not_found", install="not_found"),
    Step("stop", "B01", "error", error="DeviceError: the microphone vanished at run.py:300"),
]
VANILLA_NIGHT_1 = [
    Step("ask", None, "ok", "it is nine o'clock", 1.0, 1.0, "other"),
    Step("ask", None, "timeout", error="no reply within 15 s"),
]
PETS_NIGHT_2 = [
    Step("enable", "B02", "ok", "Dog Feeder is now enabled", 1.0, 2.0, "enabled", install="enabled"),
    Step("open", "B02", "interrupted", error="the run ended before this step finished"),
]

#: Every step is given these, so a night's audio minutes are known: half a minute per step.
PROMPT_SECONDS = 6.0
RECORDED_SECONDS = 24.0


def _run(engine: Engine, persona_id: int, device_id: int, audio_dir: Path, scheduled_for: str) -> int:
    return log.start_run(
        engine, persona_id=persona_id, device_id=device_id, audio_dir=audio_dir, config={"test": True},
        asr_engine="vosk", asr_model="small", tts_engine="espeak-ng", tts_voice="en-us", tts_rate=170,
        audio_backend="sounddevice",
        scheduled_for=scheduled_for,
    )


def _steps(engine: Engine, run_id: int, steps: list[Step]) -> None:
    for index, step in enumerate(steps):
        interaction_id = log.start_interaction(
            engine, run_id=run_id, step_index=index, kind=step.kind, attempt=step.attempt, skill_id=step.skill,
            prompt_text=f"Alexa, {step.kind}",
        )
        fields: dict[str, Any] = {
            "prompt_seconds": PROMPT_SECONDS, "recorded_seconds": RECORDED_SECONDS,
            "response_audio": f"recordings/{run_id}/{index:03d}-{step.kind}.wav",
        }
        if step.transcript is not None:
            fields.update(transcript=step.transcript, response_latency_seconds=step.latency,
                          response_seconds=step.length)
        log.finish_interaction(engine, interaction_id, step.status,  # type: ignore[arg-type]
                               error=step.error, reply_outcome=step.outcome, **fields)
        if step.install is not None and step.skill is not None:
            log.record_install(engine, run_id=run_id, skill_id=step.skill, action="enable", outcome=step.install,
                               interaction_id=interaction_id)


def build(db_path: Path, audio_dir: Path) -> Engine:
    """Write the two nights to a new log at ``db_path``; the engine is returned open, as a lab leaves it."""
    engine = log.open_log(db_path)
    pets = log.upsert_persona(engine, name="pets", interest="pets-animals")
    vanilla = log.upsert_persona(engine, name="vanilla", interest=None, is_control=True)
    echo_1 = log.upsert_device(engine, name="echo-1", room="a")
    echo_2 = log.upsert_device(engine, name="echo-2", room="b")
    log.upsert_skill(engine, id="B01", name="Cat Facts", invocation_name="cat facts", category="pets-animals")
    log.upsert_skill(engine, id="B02", name="Dog Feeder", invocation_name="dog feeder", category="pets-animals")

    run = _run(engine, pets, echo_1, audio_dir, f"{NIGHT_1}T21:00:00Z")
    _steps(engine, run, PETS_NIGHT_1)
    log.finish_run(engine, run, "completed")
    # Past midnight UTC, still the night of the 4th.
    run = _run(engine, vanilla, echo_2, audio_dir, "2026-03-05T01:30:00Z")
    _steps(engine, run, VANILLA_NIGHT_1)
    log.finish_run(engine, run, "completed")

    run = _run(engine, pets, echo_1, audio_dir, f"{NIGHT_2}T21:00:00Z")
    _steps(engine, run, PETS_NIGHT_2)
    log.finish_run(engine, run, "failed", error="the Echo's microphone was unplugged")
    log.record_missed_run(engine, persona_id=vanilla, device_id=echo_2, scheduled_for=f"{NIGHT_2}T21:05:00Z",
                          error="the scheduler was down")
    return engine


@pytest.fixture(scope="module", name="db")
def two_nights_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The two nights' log, built once per test module that imports this fixture (as `db`)."""
    folder = tmp_path_factory.mktemp("two-nights")
    path = folder / "orchestrator.sqlite"
    build(path, folder).dispose()
    yield path


def rows_of(db: Path, name: str, **filters: Any) -> list[dict[str, Any]]:
    """A report's rows over `db`, as dicts."""
    columns, rows = run_report(db, name, Filters(**filters))
    with rows:
        return [dict(zip(columns, row, strict=True)) for row in rows]


def pick(rows: list[dict[str, Any]], *keys: str) -> list[tuple[Any, ...]]:
    return [tuple(row[key] for key in keys) for row in rows]
