"""Writing the log: each helper is one transaction, committed before it returns.

A step's row is written with status ``'started'`` *before* the step executes and is completed when
it ends (the layout of OpenWPM's ``crawl_history``), so a process killed mid-step still leaves a
visible row and gaps are never silent. Every run records what is needed to reproduce it: the
tool's version, the resolved configuration and its hash, the speech engines, the host.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import socket
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Any, Literal, TypedDict, Unpack

from sqlalchemy import func, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from orchestrator.core.clock import TIMESTAMP_ACCURACY_SECONDS, ClockState, host_clock
from orchestrator.log.engine import write_session
from orchestrator.log.schema import (
    INSTALL_ACTIONS,
    INTERACTION_STATUSES,
    RIG_VERDICTS,
    RUN_STATUSES,
    TRANSCRIPT_STATES,
    Device,
    InstallAction,
    Interaction,
    InteractionStatus,
    Persona,
    RigCheck,
    RigCheckLevel,
    RigCheckResult,
    Run,
    RunStatus,
    Skill,
    SkillInstall,
    to_utc,
    utcnow,
)
from orchestrator.log.transcripts import Heard, add_transcript

# ---------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------

#: The distribution whose installed version every run records.
DIST_NAME = "echo-orchestrator"


@lru_cache(maxsize=1)
def tool_version() -> str:
    """The installed version of this tool, stored with every run."""
    try:
        return importlib.metadata.version(DIST_NAME)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, so equal configs give equal text and equal hashes."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _text(value: str | PurePath | None) -> str | None:
    return None if value is None else str(value)


# ---------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------


def _check(value: str, allowed: frozenset[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {sorted(allowed)}")


def upsert_persona(
    engine: Engine,
    *,
    name: str,
    interest: str | None,
    is_control: bool = False,
    file_path: str | PurePath | None = None,
    file_sha256: str | None = None,
) -> int:
    """Insert or update the persona called ``name`` and return its id."""
    values = {
        "interest": interest,
        "is_control": is_control,
        "file_path": _text(file_path),
        "file_sha256": file_sha256,
    }
    stmt = (
        sqlite_insert(Persona)
        .values(name=name, created_at=utcnow(), **values)
        .on_conflict_do_update(index_elements=[Persona.name], set_=values)
        .returning(Persona.id)
    )
    with engine.begin() as connection:
        return connection.execute(stmt).scalar_one()


def upsert_device(
    engine: Engine,
    *,
    name: str,
    room: str | None = None,
    speaker_device: str | None = None,
    microphone_device: str | None = None,
    audio_backend: str | None = None,
    mac: str | None = None,
    ip: str | None = None,
) -> int:
    """Insert or update the device called ``name`` and return its id."""
    values = {
        "room": room,
        "speaker_device": speaker_device,
        "microphone_device": microphone_device,
        "audio_backend": audio_backend,
        "mac": mac,
        "ip": ip,
    }
    stmt = (
        sqlite_insert(Device)
        .values(name=name, created_at=utcnow(), **values)
        .on_conflict_do_update(index_elements=[Device.name], set_=values)
        .returning(Device.id)
    )
    with engine.begin() as connection:
        return connection.execute(stmt).scalar_one()


def upsert_skill(
    engine: Engine,
    *,
    id: str,
    name: str | None = None,
    invocation_name: str | None = None,
    category: str | None = None,
) -> str:
    """Insert or update a skill; a ``None`` field keeps what an earlier source already recorded."""
    stmt = sqlite_insert(Skill).values(
        id=id, name=name, invocation_name=invocation_name, category=category
    )
    columns = ("name", "invocation_name", "category")
    stmt = stmt.on_conflict_do_update(
        index_elements=[Skill.id],
        set_={c: func.coalesce(stmt.excluded[c], Skill.__table__.c[c]) for c in columns},
    )
    with engine.begin() as connection:
        connection.execute(stmt)
    return id


def start_run(
    engine: Engine,
    *,
    persona_id: int,
    device_id: int,
    audio_dir: Path,
    config: Mapping[str, Any] | str,
    asr_engine: str | None,
    asr_model: str | PurePath | None,
    asr_version: str | None = None,
    tts_engine: str | None,
    tts_voice: str | None,
    tts_rate: float | None,
    audio_backend: str | None,
    scheduled_for: datetime | str | None = None,
    host: str | None = None,
    rig_check_id: int | None = None,
    clock: ClockState | None = None,
) -> int:
    """Record the start of a run with its provenance and return the run id.

    ``config`` is the resolved configuration (a mapping, stored as canonical JSON, or JSON text);
    its SHA-256 lets analysts group runs that used the same settings. ``clock`` is the host
    clock's state (read now when not given).
    """
    clock = clock or host_clock()
    if isinstance(config, str):
        json.loads(config)  # refuse text that analysts could not parse back
        config_json = config
    else:
        config_json = canonical_json(config)
    run = Run(
        persona_id=persona_id,
        device_id=device_id,
        status="running",
        started_at=utcnow(),
        scheduled_for=None if scheduled_for is None else to_utc(scheduled_for),
        tool_version=tool_version(),
        config_sha256=sha256_text(config_json),
        config_json=config_json,
        asr_engine=asr_engine,
        asr_model=_text(asr_model),
        asr_version=asr_version,
        tts_engine=tts_engine,
        tts_voice=tts_voice,
        tts_rate=tts_rate,
        audio_backend=audio_backend,
        host=host or socket.gethostname(),
        audio_dir=str(Path(audio_dir).expanduser().resolve()),
        rig_check_id=rig_check_id,
        clock_sync=clock.sync,
        clock_source=clock.source,
        clock_offset_seconds=clock.offset_seconds,
        timestamp_accuracy_seconds=TIMESTAMP_ACCURACY_SECONDS,
    )
    with write_session(engine) as session:
        session.add(run)
        session.flush()
        return run.id


def record_missed_run(
    engine: Engine,
    *,
    persona_id: int,
    device_id: int | None,
    scheduled_for: datetime | str,
    error: str | None = None,
    host: str | None = None,
) -> int:
    """Record a scheduled run that never started (e.g. the scheduler was down), so it is not silent."""
    return record_unstarted_run(engine, persona_id=persona_id, device_id=device_id, status="missed",
                                scheduled_for=scheduled_for, error=error, host=host)


def record_unstarted_run(
    engine: Engine,
    *,
    persona_id: int,
    device_id: int | None,
    status: Literal["missed", "failed"],
    scheduled_for: datetime | str | None,
    error: str | None = None,
    host: str | None = None,
    rig_check_id: int | None = None,
) -> int:
    """A run that never began: `missed` (it was not started) or `failed` (it could not start)."""
    now = utcnow()
    run = Run(
        persona_id=persona_id,
        device_id=device_id,
        status=status,
        started_at=now,
        finished_at=now,
        scheduled_for=to_utc(scheduled_for) if scheduled_for is not None else None,
        tool_version=tool_version(),
        host=host or socket.gethostname(),
        error=error,
        rig_check_id=rig_check_id,
    )
    with write_session(engine) as session:
        session.add(run)
        session.flush()
        return run.id


def finish_run(engine: Engine, run_id: int, status: RunStatus, error: str | None = None) -> None:
    """Close a run with its final status."""
    _check(status, RUN_STATUSES - {"running"}, "final run status")
    stmt = (
        update(Run)
        .where(Run.id == run_id)
        .values(status=status, finished_at=utcnow(), error=error)
    )
    with engine.begin() as connection:
        if connection.execute(stmt).rowcount != 1:
            raise LookupError(f"no run with id {run_id}")


def stored_audio_path(value: str | PurePath | None, audio_dir: str | None) -> str | None:
    """The stored form of an audio path: POSIX text relative to the run's audio_dir.

    Absolute paths are made relative here so the log stays valid when the audio folder is
    moved or copied to an analyst's machine along with the database.
    """
    if value is None:
        return None
    path = Path(value)
    if path.is_absolute():
        if audio_dir is None:
            raise ValueError(f"{path} is absolute but the run has no audio_dir")
        # audio_dir is stored resolved; resolve the folder (not a symlinked file) to match it.
        for candidate in (path, path.parent.resolve() / path.name):
            if candidate.is_relative_to(audio_dir):
                return candidate.relative_to(audio_dir).as_posix()
        raise ValueError(f"{path} is not inside the run's audio_dir {audio_dir}")
    return path.as_posix()


def start_interaction(
    engine: Engine,
    *,
    run_id: int,
    step_index: int,
    kind: str,
    attempt: int = 0,
    skill_id: str | None = None,
    prompt_text: str | None = None,
    prompt_audio: str | PurePath | None = None,
) -> int:
    """Insert the row for a step about to execute (status ``'started'``) and return its id.

    Committed before the step runs, so a crash or kill during the step leaves this row behind.
    """
    with write_session(engine) as session:
        run = session.execute(
            select(Run.persona_id, Run.device_id, Run.audio_dir).where(Run.id == run_id)
        ).one_or_none()
        if run is None:
            raise LookupError(f"no run with id {run_id}")
        if run.device_id is None:
            raise ValueError(f"run {run_id} has no device; it cannot have interactions")
        interaction = Interaction(
            run_id=run_id,
            persona_id=run.persona_id,
            device_id=run.device_id,
            step_index=step_index,
            attempt=attempt,
            skill_id=skill_id,
            kind=kind,
            prompt_text=prompt_text,
            prompt_audio=stored_audio_path(prompt_audio, run.audio_dir),
            status="started",
            started_at=utcnow(),
        )
        session.add(interaction)
        session.flush()
        return interaction.id


class InteractionFields(TypedDict, total=False):
    """What a finished step can report; every key is an ``interactions`` column except ``words``."""

    error: str | None
    prompt_text: str | None
    prompt_audio: str | PurePath | None
    prompt_started_at: datetime | str | None
    prompt_ended_at: datetime | str | None
    response_started_at: datetime | str | None
    response_ended_at: datetime | str | None
    finished_at: datetime | str | None
    prompt_seconds: float | None
    response_latency_seconds: float | None
    response_seconds: float | None
    response_audio: str | PurePath | None
    recorded_seconds: float | None
    end_detect_delay: float | None
    transcript: str | None
    #: Vosk-style word list ``[{"word", "start", "end", "conf"}, ...]``, stored in words_json.
    words: Sequence[Mapping[str, Any]] | None
    confidence: float | None
    transcript_ready_delay: float | None
    asr_rtf: float | None
    input_overflows: int | None
    output_underflows: int | None
    reply_outcome: str | None
    reply_outcome_score: float | None
    reply_outcome_rule: str | None
    reply_heard_skill: str | None
    expectation_met: bool | None
    #: 'pending' queues the recording for the background transcriber (log/transcripts.py).
    transcript_state: str | None


_INTERACTION_FIELDS = frozenset(InteractionFields.__annotations__)
_TIMESTAMP_FIELDS = frozenset(
    {"prompt_started_at", "prompt_ended_at", "response_started_at", "response_ended_at", "finished_at"}
)


_HEARD_FIELDS = ("transcript", "words", "confidence")


def _interaction_values(fields: Mapping[str, Any], audio_dir: str | None) -> dict[str, Any]:
    unknown = set(fields) - _INTERACTION_FIELDS
    if unknown:
        raise TypeError(f"not an interaction field: {', '.join(sorted(unknown))}")
    if fields.get("transcript_state") not in (None, *TRANSCRIPT_STATES):
        raise ValueError(f"unknown transcript state {fields['transcript_state']!r}")
    values = {k: v for k, v in fields.items() if k not in _HEARD_FIELDS}
    for key in ("prompt_audio", "response_audio"):
        if key in values:
            values[key] = stored_audio_path(values[key], audio_dir)
    for key in _TIMESTAMP_FIELDS & values.keys():
        if values[key] is not None:
            values[key] = to_utc(values[key])
    return values


def _update_interaction(
    engine: Engine, interaction_id: int, fields: Mapping[str, Any], status: str | None = None
) -> None:
    with write_session(engine) as session:
        interaction = session.get(Interaction, interaction_id)
        if interaction is None:
            raise LookupError(f"no interaction with id {interaction_id}")
        run = session.get(Run, interaction.run_id)
        assert run is not None  # a foreign key
        for key, value in _interaction_values(fields, run.audio_dir).items():
            setattr(interaction, key, value)
        if status is not None:
            interaction.status = status
        if fields.get("transcript") is not None:
            add_transcript(session, interaction, _heard(fields, run))


def _heard(fields: Mapping[str, Any], run: Run) -> Heard:
    """A transcript reported with a step, heard by the run's speech engine."""
    audio, rtf = fields.get("recorded_seconds"), fields.get("asr_rtf")
    return Heard(fields["transcript"], list(fields.get("words") or []), fields.get("confidence"),
                 run.asr_engine, run.asr_model, run.asr_version, audio_seconds=audio,
                 decode_seconds=rtf * audio if rtf is not None and audio is not None else None)


def finish_interaction(
    engine: Engine, interaction_id: int, status: InteractionStatus, **fields: Unpack[InteractionFields]
) -> None:
    """Record how a step ended: its status plus any of :class:`InteractionFields`.

    ``finished_at`` defaults to now. Audio paths may be absolute (inside the run's audio_dir) or
    already relative to it. A ``transcript`` is stored as the step's current transcript (a row of
    ``transcripts``, heard by the run's speech engine), and the step's transcript state is ``done``.
    """
    _check(status, INTERACTION_STATUSES - {"started"}, "final interaction status")
    fields.setdefault("finished_at", utcnow())
    _update_interaction(engine, interaction_id, fields, status)


def update_interaction(
    engine: Engine, interaction_id: int, **fields: Unpack[InteractionFields]
) -> None:
    """Add fields to a step without changing its status, e.g. a transcript that arrives later."""
    _update_interaction(engine, interaction_id, fields)


def record_install(
    engine: Engine,
    *,
    run_id: int,
    skill_id: str,
    action: InstallAction,
    outcome: str | None,
    interaction_id: int | None = None,
) -> int:
    """Record an enable/disable of a skill for the run's persona and return the row id."""
    _check(action, INSTALL_ACTIONS, "install action")
    with write_session(engine) as session:
        persona_id = session.scalar(select(Run.persona_id).where(Run.id == run_id))
        if persona_id is None:
            raise LookupError(f"no run with id {run_id}")
        install = SkillInstall(
            run_id=run_id,
            persona_id=persona_id,
            skill_id=skill_id,
            interaction_id=interaction_id,
            action=action,
            outcome=outcome,
            created_at=utcnow(),
        )
        session.add(install)
        session.flush()
        return install.id


def record_rig_check(engine: Engine, check: RigCheck, results: Sequence[RigCheckResult],
                     levels: Sequence[RigCheckLevel]) -> int:
    """Store a rig self-test with its verdicts and levels in one transaction; return its id."""
    _check(check.trigger, frozenset({"night", "manual"}), "rig check trigger")
    for result in results:
        _check(result.status, RIG_VERDICTS, "rig check verdict")
    with write_session(engine) as session:
        session.add(check)
        session.flush()
        rows: list[RigCheckResult | RigCheckLevel] = [*results, *levels]
        for row in rows:
            row.rig_check_id = check.id
            session.add(row)
        return check.id
