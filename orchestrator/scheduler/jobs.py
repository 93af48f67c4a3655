"""What a persona's job needs and does: its arguments, its id, its function, and the runs it did not start.

The job store finds the job function by its text reference (`JOB_FUNC`); it takes plain strings
only, so stored jobs unpickle after restarts and upgrades. A job store that cannot import its job
function deletes the job: this module imports nothing heavy at load time, and every module path
ever stored keeps an alias (orchestrator/schedule.py).

Nothing is skipped silently: a run that was missed (scheduler down, busy, stopping) or skipped
(the persona's previous run still going) gets a ``runs`` row with status ``'missed'``, the time it
was due and the reason; a job that failed before its run could start gets a ``'failed'`` row.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sqlalchemy import Engine, select

from orchestrator import log
from orchestrator.asr.engine import SpeechModel
from orchestrator.core import settings
from orchestrator.scheduler.runtime import RUNTIME, Stopping, scheduled_time

if TYPE_CHECKING:
    from orchestrator.catalog.skills import Catalog
    from orchestrator.lab.config import LabConfig
    from orchestrator.plan.persona import LoadedPersona
    from orchestrator.runner.run import RunSummary

logger = logging.getLogger(__name__)

JOB_FUNC = "orchestrator.scheduler.jobs:run_persona_job"
PERSONA_PREFIX = "persona:"
TRIGGER_PREFIX = "trigger:"


@dataclass(frozen=True)
class JobArgs:
    """A persona job's arguments: plain absolute paths and the speech model, stored in the job store as strings.

    The model is stored as `ENGINE:FOLDER`; a job store written before there were two engines holds
    a bare Vosk folder, which `asr.models.resolve` still reads as one.
    """

    persona: str
    persona_file: Path
    lab: Path
    catalog: Path
    db: Path
    audio_dir: Path
    model: SpeechModel

    def as_args(self) -> list[str]:
        paths = (self.persona_file, self.lab, self.catalog, self.db, self.audio_dir)
        model = f"{self.model.engine}:{self.model.path.expanduser().resolve()}"
        return [self.persona, *(str(p.expanduser().resolve()) for p in paths), model]

    @classmethod
    def from_args(cls, args: Sequence[str]) -> JobArgs:
        from orchestrator.asr.models import resolve

        name, persona_file, lab, catalog, db, audio_dir, model = args
        return cls(name, Path(persona_file), Path(lab), Path(catalog), Path(db), Path(audio_dir), resolve(model))


def job_id(persona: str) -> str:
    return PERSONA_PREFIX + persona


def persona_of(job_id_: str) -> str:
    """The persona of a job id: ``persona:<name>`` or a one-off ``trigger:<name>:<time>``."""
    kind, _, rest = job_id_.partition(":")
    return rest.split(":", 1)[0] if kind == "trigger" else rest


# -- the job ------------------------------------------------------------------------------------


def run_persona_job(persona: str, persona_file: str, lab_file: str, catalog_dir: str, db: str, audio_dir: str,
                    model: str) -> str:
    """Run one persona's night now, after any other night of its room; return how it ended.

    Problems in the files raise (the scheduler records the job as a failed run); a run that does not
    start because the scheduler is stopping is recorded as missed.
    """
    args = JobArgs.from_args((persona, persona_file, lab_file, catalog_dir, db, audio_dir, model))
    scheduled_for = scheduled_time()
    with RUNTIME.job():
        try:
            if RUNTIME.stopping.is_set():
                raise Stopping
            loaded, catalog, lab = load_job_inputs(args)
            room = lab.echo(loaded.persona.echo).room_key
            with RUNTIME.room_turn(room):
                if RUNTIME.stopping.is_set():
                    raise Stopping(room)
                summaries = start_night(loaded, catalog, lab, args, scheduled_for)
        except Stopping as stop:
            waited = f" while it waited for room {stop.args[0]!r}" if stop.args else ""
            record_not_run(args, scheduled_for, f"the scheduler stopped{waited} before the run could start")
            return "missed: the scheduler stopped"
        outcome = ", ".join(f"{s.persona}: {s.status}" + (f" ({s.error})" if s.error else "") for s in summaries)
        if not all(s.run_id for s in summaries):
            # A worker that fails before its run starts (e.g. speech synthesis) leaves no row of its own.
            record_not_run(args, scheduled_for, f"the night ended before its run started: {outcome}", "failed")
    return outcome


def load_job_inputs(args: JobArgs) -> tuple[LoadedPersona, Catalog, LabConfig]:
    """Read the files again at run time: plan edits apply the next night, schedule edits at restart."""
    from orchestrator.catalog.skills import load_catalog
    from orchestrator.lab.config import load_lab
    from orchestrator.plan.persona import load_personas
    from orchestrator.plan.validate import check_lab_bindings

    catalog = load_catalog(args.catalog)
    (loaded,) = load_personas([args.persona_file], catalog)
    if loaded.persona.name != args.persona:
        raise ValueError(f"{args.persona_file} now names persona {loaded.persona.name!r}, not {args.persona!r}; "
                         "restart `orchestrator serve` to schedule it")
    lab = load_lab(args.lab)
    check_lab_bindings(lab, args.lab, [loaded])
    return loaded, catalog, lab


def start_night(loaded: LoadedPersona, catalog: Catalog, lab: LabConfig, args: JobArgs,
                scheduled_for: datetime) -> list[RunSummary]:
    """One persona's night, in worker processes of its own (night.py); SIGTERM to them stops it cleanly."""
    from orchestrator.runner.night import run_personas

    # Nights of different rooms run at once: each needs its own folder for its speech server's socket.
    work_dir = settings.data_dir() / "run" / loaded.persona.name
    return run_personas([loaded], catalog, lab, args.db, args.audio_dir, args.model, scheduled_for=scheduled_for,
                        work_dir=work_dir)


# -- recording runs that did not happen ------------------------------------------------------------


def record_not_run(args: JobArgs, scheduled_for: datetime, reason: str,
                   status: Literal["missed", "failed"] = "missed") -> int:
    """A runs row for a run that never started: 'missed', or 'failed' when the job itself failed."""
    engine = log_engine(args.db)
    try:
        persona_id, device_id = _persona_row(engine, args), _device_row(engine, args)
        if status == "missed":
            run_id = log.record_missed_run(engine, persona_id=persona_id, device_id=device_id,
                                           scheduled_for=scheduled_for, error=reason)
        else:
            run_id = log.record_unstarted_run(engine, persona_id=persona_id, device_id=device_id, status="failed",
                                              scheduled_for=scheduled_for, error=reason)
    finally:
        engine.dispose()
    logger.warning("%s run of %s due %s recorded: %s", status, args.persona, log.to_iso(scheduled_for), reason)
    return run_id


_migrated: set[Path] = set()
_migrating = threading.Lock()


def log_engine(db: Path) -> Engine:
    """An engine on the log, migrated once per process.

    Alembic keeps its migration context in a process-wide global: two threads of one process must
    never migrate at the same time, and the scheduler's listeners and jobs run in many threads.
    """
    path = Path(db).expanduser().resolve()
    with _migrating:
        if path not in _migrated:
            log.open_log(path).dispose()
            _migrated.add(path)
    return log.make_engine(path)


def has_run(db: Path, persona: str, scheduled_for: datetime) -> bool:
    """Whether the log has a run of the persona for that due time (the night started and recorded it)."""
    engine = log_engine(db)
    try:
        with engine.connect() as connection:
            stmt = (select(log.Run.id).join(log.Persona, log.Persona.id == log.Run.persona_id)
                    .where(log.Persona.name == persona, log.Run.scheduled_for == scheduled_for).limit(1))
            return connection.execute(stmt).first() is not None
    finally:
        engine.dispose()


def _persona_row(engine: Engine, args: JobArgs) -> int:
    """The persona's id in the log, without overwriting what a real run recorded about it."""
    from orchestrator.core.config_files import ConfigError
    from orchestrator.plan.persona import load_persona

    with engine.connect() as connection:
        known = connection.execute(select(log.Persona.id).where(log.Persona.name == args.persona)).scalar()
    if known is not None:
        return known
    try:
        persona = load_persona(args.persona_file).persona
        interest, control = persona.interest, persona.control
    except (ConfigError, OSError):
        interest, control = None, False
    return log.upsert_persona(engine, name=args.persona, interest=interest, is_control=control,
                              file_path=args.persona_file)


def _device_row(engine: Engine, args: JobArgs) -> int | None:
    """The persona's Echo in the log, added from the lab file if needed; None if the files say nothing."""
    from orchestrator.core.config_files import ConfigError
    from orchestrator.lab.config import load_lab
    from orchestrator.plan.persona import load_persona

    try:
        echo_name = load_persona(args.persona_file).persona.echo
        with engine.connect() as connection:
            known = connection.execute(select(log.Device.id).where(log.Device.name == echo_name)).scalar()
        if known is not None:
            return known
        lab = load_lab(args.lab)
        echo = lab.echo(echo_name)
    except (ConfigError, OSError, KeyError):
        return None
    return log.upsert_device(engine, **lab.device_row(echo))
