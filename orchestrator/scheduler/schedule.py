"""The nightly scheduler: one `serve` process runs each persona at the time its file asks for.

APScheduler 3 keeps the jobs in a SQLite job store of their own (data/scheduler.sqlite). At every
start `serve` rebuilds them from the persona files, one job per persona with the id
``persona:<name>`` and ``replace_existing=True``, so an operator edits a schedule and restarts; a
persona whose file is gone loses its job. What must survive a restart survives it: a paused job
stays paused, and a run that fell due while the scheduler was down keeps its time, so it still runs
within the misfire grace or is recorded as missed.

Nothing is skipped silently: a run that was missed (scheduler down, busy, stopping) or skipped
(the persona's previous run still going) gets a ``runs`` row with status ``'missed'``, the time it
was due and the reason; a job that failed before its run could start gets a ``'failed'`` row.

The job function is found by its text reference (``orchestrator.scheduler.schedule:run_persona_job``) and
takes plain strings only, so stored jobs unpickle after restarts and upgrades. This module imports
nothing heavy at load time: a job store that cannot import its job function deletes the job.

Echos of one room must never speak at the same time: jobs of one room take turns (a lock per room
inside this process); different rooms run in parallel.

Stopping (SIGTERM, Ctrl-C): no new job starts, a job still waiting for its room gives up and is
recorded as missed, and every persona worker gets one SIGTERM, on which night.py's workers finish
their current step and mark their run interrupted; workers still running after the stop timeout
are killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.executors.base import run_job
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.util import ref_to_obj
from sqlalchemy import Engine, select

from orchestrator import log
from orchestrator.asr.engine import SpeechModel
from orchestrator.core import settings

if TYPE_CHECKING:
    from orchestrator.catalog.skills import Catalog
    from orchestrator.lab.config import LabConfig
    from orchestrator.plan.persona import LoadedPersona, Schedule
    from orchestrator.runner.run import RunSummary

logger = logging.getLogger(__name__)

JOB_FUNC = "orchestrator.scheduler.schedule:run_persona_job"
PERSONA_PREFIX = "persona:"
TRIGGER_PREFIX = "trigger:"
#: A nightly run may start this late (a restart, a slow start) and still count; later is a miss.
DEFAULT_MISFIRE_GRACE = 3600
#: How often `serve` re-reads the job store: APScheduler 3 does not notice jobs written by another
#: process (`schedule trigger`, `pause`, `resume`) until its next wakeup.
WAKEUP_SECONDS = 5.0
#: How long a stopping `serve` lets running nights finish their current step before ending them.
STOP_TIMEOUT = 30.0
#: Bounds the missed runs recorded for one persona after a long outage (a year of nights).
MAX_RECORDED_MISSES = 366
WORKER_PREFIX = "persona-"  # night.py names each persona's worker process "persona-<name>"


def default_jobs_db() -> Path:
    return settings.data_dir() / "scheduler.sqlite"


def lock_path(jobs_db: Path) -> Path:
    return jobs_db.with_name(jobs_db.name + ".lock")


# -- when a persona runs --------------------------------------------------------------------------

_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class NightlyTrigger(CronTrigger):
    """A crontab schedule in a persona's time zone that fires once per wall-clock time.

    When clocks go back, a wall time such as 01:25 happens twice; APScheduler 3 fires at both, which
    would run a persona's night twice. The second occurrence is skipped, as cron does. A wall time
    that does not exist when clocks go forward fires once, at the same distance after the change.
    """

    __slots__ = ()

    @classmethod
    def from_crontab(cls, expr: str, timezone: tzinfo | str | None = None, jitter: int | None = None) -> Any:
        """Crontab semantics, unlike APScheduler's own from_crontab (which counts weekdays from Monday)."""
        minute, hour, day, month, weekdays = _crontab_fields(expr)
        if day != "*" and weekdays != "*":
            # crontab runs when either field matches, APScheduler only when both do.
            raise ValueError("restrict the day of the month or the day of the week, not both")
        return cls(minute=minute, hour=hour, day=day, month=month, day_of_week=crontab_weekdays(weekdays),
                   timezone=timezone, jitter=jitter or None)

    def _apply_jitter(self, next_fire_time: datetime | None, jitter: int | None, now: datetime) -> datetime | None:
        # The one hook that sees each fire time before jitter is added.
        if next_fire_time is not None and repeated_wall_time(next_fire_time, self.timezone):
            return self.get_next_fire_time(next_fire_time, next_fire_time)
        return super()._apply_jitter(next_fire_time, jitter, now)


def _crontab_fields(expr: str) -> list[str]:
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError("cron needs five fields: minute hour day-of-month month day-of-week")
    return fields


def crontab_weekdays(spec: str) -> str:
    """A crontab day-of-week field (Sunday = 0 or 7) as APScheduler day names.

    APScheduler 3 numbers weekdays from Monday = 0, so "0 1 * * 0" would run on Mondays; names mean
    the same to both.
    """
    if spec == "*":
        return "*"
    days: set[int] = set()
    for part in spec.split(","):
        days |= _weekday_set(part)
    return ",".join(_CRON_DAYS[d] for d in sorted(days, key=lambda d: (d - 1) % 7))


def _weekday_set(part: str) -> set[int]:
    base, _, step_text = part.partition("/")
    step = int(step_text) if step_text else 1
    if step < 1:
        raise ValueError(f"bad step in day of week {part!r}")
    if base == "*":
        first, last = 0, 6
    else:
        start, _, end = base.partition("-")
        first = _weekday_number(start)
        last = _weekday_number(end) if end else (6 if step_text else first)
        if end and last == 0 and first > 0:
            last = 7  # "fri-sun": Sunday closes the week
    if first > last:
        raise ValueError(f"day-of-week range {part!r} runs backwards")
    return {day % 7 for day in range(first, last + 1, step)}


def _weekday_number(text: str) -> int:
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text)
    if text.lower() in _CRON_DAYS:
        return _CRON_DAYS.index(text.lower())
    raise ValueError(f"unknown day of week {text!r} (0-7 or sun..sat)")


def repeated_wall_time(moment: datetime, zone: tzinfo) -> bool:
    """True for the second occurrence of a wall time that clocks going back repeat."""
    wall = moment.astimezone(zone).replace(tzinfo=None)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    same_wall = first.astimezone(zone).replace(tzinfo=None) == wall
    return same_wall and first < moment.astimezone(UTC)


def nightly_trigger(schedule: Schedule) -> NightlyTrigger:
    return NightlyTrigger.from_crontab(schedule.cron, timezone=ZoneInfo(schedule.timezone),
                                       jitter=schedule.jitter_minutes * 60)


def fire_times(trigger: CronTrigger, first: datetime, now: datetime,
               limit: int = MAX_RECORDED_MISSES) -> list[datetime]:
    """The fire times from `first` up to `now`, as the scheduler would have met them."""
    times: list[datetime] = []
    moment: datetime | None = first
    while moment is not None and moment <= now and len(times) < limit:
        times.append(moment)
        moment = trigger.get_next_fire_time(moment, now)
    return times


# -- what a job needs ---------------------------------------------------------------------------


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
    def from_args(cls, args: tuple[Any, ...] | list[Any]) -> JobArgs:
        from orchestrator.asr.models import resolve

        name, *paths, model = args
        return cls(name, *(Path(p) for p in paths), resolve(model))


def job_id(persona: str) -> str:
    return PERSONA_PREFIX + persona


def persona_of(job_id_: str) -> str:
    """The persona of a job id: ``persona:<name>`` or a one-off ``trigger:<name>:<time>``."""
    kind, _, rest = job_id_.partition(":")
    return rest.split(":", 1)[0] if kind == "trigger" else rest


# -- one scheduler per job store ------------------------------------------------------------------


class SchedulerBusy(RuntimeError):
    """Another process holds the job store's lock."""


class StoreLock:
    """An exclusive flock next to the job store: one `serve` (or foreground trigger) at a time.

    The file names its holder for `status`; it is never deleted, since removing a lock file that
    another process is about to lock is a race.
    """

    def __init__(self, jobs_db: Path, role: str) -> None:
        self.path = lock_path(jobs_db)
        self.role = role
        self._file: IO[str] | None = None

    def acquire(self, patience: float = 1.0) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        deadline = time.monotonic() + patience
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # `status` probes the lock for an instant; only a lasting holder is a conflict.
                if time.monotonic() > deadline:
                    holder = _read_holder(handle)
                    handle.close()
                    raise SchedulerBusy(f"the job store {self.path.with_suffix('')} is in use by "
                                        f"{describe_holder(holder)}; only one scheduler may use it") from None
                time.sleep(0.05)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "role": self.role,
                                 "since": log.utcnow_iso()}))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.truncate(0)
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(handle: IO[str]) -> dict[str, Any]:
    handle.seek(0)
    try:
        return json.loads(handle.read() or "{}")
    except json.JSONDecodeError:
        return {}


def lock_holder(jobs_db: Path) -> dict[str, Any] | None:
    """Who holds the job store's lock (pid, host, role, since), or None when nobody does."""
    path = lock_path(jobs_db)
    if not path.exists():
        return None
    with path.open() as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(handle)
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


def describe_holder(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process"
    what = "`orchestrator serve`" if holder.get("role") == "serve" else f"a foreground `{holder.get('role')}`"
    return f"{what} (pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')})"


# -- the state of this process's running jobs ------------------------------------------------------


class Stopping(Exception):
    """The scheduler is stopping; a job that has not started its night gives up."""


@dataclass
class Runtime:
    """What the jobs of one `serve` process share: room turns, the count of running jobs, the stop flag."""

    stopping: threading.Event = field(default_factory=threading.Event)
    _rooms: dict[str, threading.Lock] = field(default_factory=dict)
    _active: int = 0
    _guard: threading.Condition = field(default_factory=threading.Condition)

    def reset(self) -> None:
        self.stopping.clear()

    @contextlib.contextmanager
    def job(self) -> Iterator[None]:
        with self._guard:
            self._active += 1
        try:
            yield
        finally:
            with self._guard:
                self._active -= 1
                self._guard.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._guard:
            return self._guard.wait_for(lambda: self._active == 0, timeout)

    @contextlib.contextmanager
    def room_turn(self, room: str) -> Iterator[None]:
        """Wait for the room to be free; give up with `Stopping` when the scheduler stops."""
        with self._guard:
            lock = self._rooms.setdefault(room, threading.Lock())
        while not lock.acquire(timeout=0.2):
            if self.stopping.is_set():
                raise Stopping(room)
        try:
            yield
        finally:
            lock.release()


def ask_workers_to_stop(asked: set[int]) -> None:
    """SIGTERM each persona worker of this process not yet in `asked`, once.

    night.py's workers then finish their current step, mark their run interrupted and exit (as
    `Night.request_stop()` makes them do). Once only: a signal that arrives while a worker's
    interpreter shuts down meets the default handler again and kills it.
    """
    for child in multiprocessing.active_children():
        if child.name.startswith(WORKER_PREFIX) and child.pid not in asked:
            asked.add(child.pid)
            child.terminate()


def kill_workers() -> None:
    """SIGKILL every persona worker; each night then records its run as failed."""
    for child in multiprocessing.active_children():
        if child.name.startswith(WORKER_PREFIX):
            child.kill()


RUNTIME = Runtime()
_current = threading.local()


def scheduled_time() -> datetime:
    """The time the running job was due (see NightExecutor); now, for a run started by hand."""
    return getattr(_current, "scheduled_for", None) or log.utcnow()


class NightExecutor(ThreadPoolExecutor):
    """A thread pool whose jobs know the time they were due, for ``runs.scheduled_for``.

    APScheduler 3 does not pass the scheduled run time to a job function.
    """

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        try:
            future = self._pool.submit(_run_job_at, job, job._jobstore_alias, run_times, self._logger.name)
        except RuntimeError:  # the pool is shut down: the scheduler stopped as the job fell due
            for run_time in run_times:
                self._scheduler._dispatch_event(
                    JobExecutionEvent(EVENT_JOB_MISSED, job.id, job._jobstore_alias, run_time))
            return
        future.add_done_callback(lambda done: self._finished(job.id, done))

    def _finished(self, job_id_: str, done: Any) -> None:
        error = done.exception()
        if error is not None:
            self._run_job_error(job_id_, error, error.__traceback__)
        else:
            self._run_job_success(job_id_, done.result())


def _run_job_at(job: Job, store: str, run_times: list[datetime], logger_name: str) -> list[Any]:
    events: list[Any] = []
    for run_time in run_times:
        _current.scheduled_for = run_time
        try:
            events.extend(run_job(job, store, [run_time], logger_name))
        finally:
            _current.scheduled_for = None
    return events


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


# -- the job store --------------------------------------------------------------------------------


class NightScheduler(BackgroundScheduler):
    """The scheduler of `serve`.

    APScheduler 3 makes one more pass over the due jobs after `shutdown()`, with its executors gone:
    a job due at that moment would be dropped (its next run time advanced) without a trace. Here a
    stopped scheduler leaves due jobs alone, so the next start runs them or records them as missed.
    """

    def _process_jobs(self) -> float | None:
        if self.state == STATE_STOPPED:
            return None
        return super()._process_jobs()


class StoreEditor(BaseScheduler):
    """Reads and edits the job store from another process without ever running a job.

    It has no main loop (a paused BackgroundScheduler still processes due jobs once when shut down).
    """

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)

    def wakeup(self) -> None:
        pass  # nothing runs here; `serve` re-reads the store on its own wakeups


def _job_store(jobs_db: Path) -> SQLAlchemyJobStore:
    jobs_db.parent.mkdir(parents=True, exist_ok=True)
    # The log's engine: WAL, a busy timeout and BEGIN IMMEDIATE, since CLI commands write while serve runs.
    return SQLAlchemyJobStore(engine=log.make_engine(jobs_db))


def _job_defaults(misfire_grace: int) -> dict[str, Any]:
    return {"misfire_grace_time": misfire_grace, "coalesce": True, "max_instances": 1}


def make_scheduler(jobs_db: Path, misfire_grace: int = DEFAULT_MISFIRE_GRACE, workers: int = 10) -> NightScheduler:
    """A scheduler on the SQLite job store, with defaults for nightly work (not APScheduler's 1 s grace)."""
    return NightScheduler(jobstores={"default": _job_store(jobs_db)}, executors={"default": NightExecutor(workers)},
                          job_defaults=_job_defaults(misfire_grace), timezone=UTC)


@contextlib.contextmanager
def open_store(jobs_db: Path) -> Iterator[BaseScheduler]:
    """The job store, to read and edit from a process that is not `serve`."""
    if not jobs_db.exists():
        raise FileNotFoundError(f"no job store at {jobs_db}: start `orchestrator serve` once to create it")
    editor = StoreEditor(jobstores={"default": _job_store(jobs_db)}, job_defaults=_job_defaults(DEFAULT_MISFIRE_GRACE),
                         timezone=UTC)
    editor.start(paused=True)
    try:
        yield editor
    finally:
        editor.shutdown(wait=False)


@dataclass(frozen=True)
class PersonaJob:
    """What `serve` schedules for one persona."""

    args: JobArgs
    trigger: NightlyTrigger
    func: str = JOB_FUNC

    @property
    def id(self) -> str:
        return job_id(self.args.persona)


@dataclass
class RebuildReport:
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


Recorder = Callable[[JobArgs, datetime, str], Any]


def rebuild_jobs(scheduler: BaseScheduler, wanted: list[PersonaJob], misfire_grace: int,
                 record_missed: Recorder, now: datetime | None = None) -> RebuildReport:
    """Make the job store hold exactly one job per persona, from the persona files.

    A paused job stays paused. A job that fell due while the scheduler was down keeps its due time
    (when its schedule is unchanged), so the scheduler still runs it within the grace or reports it
    missed; earlier due times, which coalescing would drop without a word, are recorded as missed.
    """
    now = now or datetime.now(UTC)
    existing = {job.id: job for job in scheduler.get_jobs()}
    report = RebuildReport()
    for job in wanted:
        old = existing.get(job.id)
        extra = _carried_over(old, job, now, record_missed)
        scheduler.add_job(job.func, trigger=job.trigger, id=job.id, name=job.args.persona, args=job.args.as_args(),
                          replace_existing=True, misfire_grace_time=misfire_grace, coalesce=True, max_instances=1,
                          **extra)
        (report.replaced if old else report.added).append(job.args.persona)
        if old is not None and old.next_run_time is None:
            report.paused.append(job.args.persona)
    names = {job.args.persona for job in wanted}
    for old in existing.values():
        if persona_of(old.id) not in names:
            scheduler.remove_job(old.id)
            report.removed.append(old.id)
    return report


def _carried_over(old: Job | None, job: PersonaJob, now: datetime, record_missed: Recorder) -> dict[str, Any]:
    """The next_run_time to keep from the stored job, as add_job keywords (none: computed afresh)."""
    if old is None:
        return {}
    if old.next_run_time is None:
        return {"next_run_time": None}  # paused
    if old.next_run_time > now:
        return {}
    due = fire_times(old.trigger, old.next_run_time, now)
    if repr(old.trigger) != repr(job.trigger):
        for moment in due:
            record_missed(job.args, moment, "the scheduler was not running (the schedule has changed since)")
        return {}
    for moment in due[:-1]:
        record_missed(job.args, moment, "the scheduler was not running")
    return {"next_run_time": due[-1]}


def queue_trigger(scheduler: BaseScheduler, persona: str, when: datetime | None = None) -> Job:
    """Add a one-off run of a persona to the store, with the arguments of its nightly job."""
    nightly = scheduler.get_job(job_id(persona))
    if nightly is None:
        raise LookupError(unknown_persona(scheduler, persona))
    when = when or datetime.now(UTC)
    return scheduler.add_job(nightly.func_ref, trigger=DateTrigger(run_date=when, timezone=UTC),
                             id=f"{TRIGGER_PREFIX}{persona}:{when.strftime('%Y%m%dT%H%M%S.%fZ')}",
                             name=f"{persona} (by hand)", args=list(nightly.args),
                             misfire_grace_time=nightly.misfire_grace_time, coalesce=True, max_instances=1)


def nightly_job(scheduler: BaseScheduler, persona: str) -> Job:
    job = scheduler.get_job(job_id(persona))
    if job is None:
        raise LookupError(unknown_persona(scheduler, persona))
    return job


def unknown_persona(scheduler: BaseScheduler, persona: str) -> str:
    known = sorted(persona_of(j.id) for j in scheduler.get_jobs() if j.id.startswith(PERSONA_PREFIX))
    return (f"no scheduled persona {persona!r} (known: {', '.join(known) or 'none'}); "
            "`orchestrator serve` schedules the personas it finds when it starts")


def pause(scheduler: BaseScheduler, persona: str) -> Job:
    return scheduler.pause_job(nightly_job(scheduler, persona).id)


def resume(scheduler: BaseScheduler, persona: str) -> Job:
    job = nightly_job(scheduler, persona)
    return scheduler.resume_job(job.id) if job.next_run_time is None else job


def run_in_foreground(job: Job) -> str:
    """Run a stored job's function here and now (no scheduler is running to do it)."""
    RUNTIME.reset()
    return ref_to_obj(job.func_ref)(*job.args, **job.kwargs)


# -- serve ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServeConfig:
    jobs: list[PersonaJob]
    jobs_db: Path
    misfire_grace: int = DEFAULT_MISFIRE_GRACE
    wakeup_seconds: float = WAKEUP_SECONDS
    stop_timeout: float = STOP_TIMEOUT


def load_persona_jobs(personas_dir: Path, lab_path: Path, catalog_dir: Path, db: Path, audio_dir: Path,
                      model: SpeechModel, func: str = JOB_FUNC) -> list[PersonaJob]:
    """Every persona file of the folder, checked like `validate` does; every problem is raised at once."""
    from orchestrator.catalog.skills import load_catalog
    from orchestrator.core.config_files import ConfigError, Issue
    from orchestrator.lab.config import load_lab
    from orchestrator.plan.persona import load_personas
    from orchestrator.plan.validate import check_lab_bindings

    paths = sorted(personas_dir.glob("*.yaml"))
    if not paths:
        raise ConfigError([Issue(personas_dir, None, "", "no persona files (*.yaml) to schedule")])
    loaded = load_personas(paths, load_catalog(catalog_dir))
    check_lab_bindings(load_lab(lab_path), lab_path, loaded)
    jobs, issues = [], []
    for item in loaded:
        try:
            trigger = nightly_trigger(item.persona.schedule)
        except ValueError as exc:
            issues.append(item.document.issue(("schedule", "cron"), str(exc)))
            continue
        args = JobArgs(item.persona.name, item.path, lab_path, catalog_dir, db, audio_dir, model)
        jobs.append(PersonaJob(args, trigger, func))
    if issues:
        raise ConfigError(issues)
    return jobs


class SchedulerService:
    """`orchestrator serve`: lock the job store, rebuild the jobs, run them, record what did not run."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.lock = StoreLock(config.jobs_db, "serve")
        self.args = {job.args.persona: job.args for job in config.jobs}
        self.scheduler: NightScheduler | None = None

    def start(self) -> RebuildReport:
        self.lock.acquire()
        try:
            RUNTIME.reset()
            for db in {job.args.db for job in self.config.jobs}:
                log_engine(db).dispose()  # migrate the log now, before any job or listener thread exists
            # Jobs waiting for their room hold a thread: enough threads that no due job queues behind them.
            workers = max(10, 2 * len(self.config.jobs) + 2)
            self.scheduler = make_scheduler(self.config.jobs_db, self.config.misfire_grace, workers)
            self.scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
            self.scheduler.add_listener(self._on_max_instances, EVENT_JOB_MAX_INSTANCES)
            self.scheduler.add_listener(self._on_error, EVENT_JOB_ERROR)
            self.scheduler.add_listener(self._on_executed, EVENT_JOB_EXECUTED)
            self.scheduler.start(paused=True)
            report = rebuild_jobs(self.scheduler, self.config.jobs, self.config.misfire_grace, self._record)
            self.scheduler.resume()
        except BaseException:
            self._shutdown_scheduler()
            self.lock.release()
            raise
        return report

    def serve_forever(self, stop: threading.Event) -> None:
        """Until `stop` is set, wake the scheduler often enough to see jobs other processes wrote."""
        assert self.scheduler is not None
        while not stop.wait(self.config.wakeup_seconds):
            self.scheduler.wakeup()

    def wakeup(self) -> None:
        assert self.scheduler is not None
        self.scheduler.wakeup()

    def stop(self) -> bool:
        """Start no new job, let running nights finish their step, and release the store.

        Returns False when nights had to be ended because they did not stop within the timeout.
        """
        RUNTIME.stopping.set()
        self._shutdown_scheduler()
        deadline = time.monotonic() + self.config.stop_timeout
        asked: set[int] = set()
        clean = True
        while not RUNTIME.wait_idle(0.2):
            if time.monotonic() > deadline:
                kill_workers()
                RUNTIME.wait_idle(10)
                clean = False
                break
            # Every round: a night still loading its speech model starts its workers later.
            ask_workers_to_stop(asked)
        self.lock.release()
        return clean

    def next_runs(self) -> dict[str, datetime | None]:
        assert self.scheduler is not None
        return {job.id: job.next_run_time for job in self.scheduler.get_jobs()}

    def _shutdown_scheduler(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def _record(self, args: JobArgs, scheduled_for: datetime, reason: str,
                status: Literal["missed", "failed"] = "missed") -> None:
        try:
            record_not_run(args, scheduled_for, reason, status)
        except Exception:  # noqa: BLE001 - the scheduler must go on; the failure is in its log
            logger.exception("could not record the %s run of %s due %s", status, args.persona, scheduled_for)

    def _args_of(self, job_id_: str) -> JobArgs | None:
        args = self.args.get(persona_of(job_id_))
        if args is None:
            logger.error("job %s belongs to no persona this scheduler knows", job_id_)
        return args

    def _on_missed(self, event: JobExecutionEvent) -> None:
        if args := self._args_of(event.job_id):
            late = datetime.now(UTC) - event.scheduled_run_time
            self._record(args, event.scheduled_run_time,
                         f"due {_duration(late)} ago, beyond the misfire grace of {self.config.misfire_grace} s "
                         "(the scheduler was not running or was busy)")

    def _on_max_instances(self, event: JobSubmissionEvent) -> None:
        if args := self._args_of(event.job_id):
            for moment in event.scheduled_run_times:
                self._record(args, moment, "skipped: the persona's previous run was still going")

    def _on_error(self, event: JobExecutionEvent) -> None:
        args = self._args_of(event.job_id)
        if args is None:
            return
        error = f"{type(event.exception).__name__}: {event.exception}"
        logger.error("job %s failed: %s\n%s", event.job_id, error, event.traceback or "")
        try:
            recorded = has_run(args.db, args.persona, event.scheduled_run_time)
        except Exception:  # noqa: BLE001 - an unreadable log still deserves the attempt to record
            recorded = False
        if not recorded:
            self._record(args, event.scheduled_run_time, f"the run could not start: {error}", "failed")

    def _on_executed(self, event: JobExecutionEvent) -> None:
        logger.info("job %s due %s ended: %s", event.job_id, log.to_iso(event.scheduled_run_time), event.retval)


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


# -- what runs now ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunningRun:
    run_id: int
    persona: str
    echo: str | None
    room: str | None
    started_at: str
    scheduled_for: str | None
    steps: int | None
    step_index: int | None
    kind: str | None
    step_status: str | None
    step_started_at: str | None
    prompt_text: str | None


RUNNING_SQL = """
SELECT r.id, p.name, d.name, d.room, r.started_at, r.scheduled_for, r.config_json,
       i.step_index, i.kind, i.status, i.started_at, i.prompt_text
FROM runs r
JOIN personas p ON p.id = r.persona_id
LEFT JOIN devices d ON d.id = r.device_id
LEFT JOIN interactions i ON i.id = (SELECT max(id) FROM interactions WHERE run_id = r.id)
WHERE r.status = 'running'
ORDER BY r.started_at
"""


def running_runs(db: Path) -> list[RunningRun]:
    """Runs the log says are running, each with its latest step (read-only; the log is not migrated)."""
    import sqlite3

    if not db.exists():
        return []
    connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=log.BUSY_TIMEOUT_S)
    try:
        rows = connection.execute(RUNNING_SQL).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        connection.close()
    return [RunningRun(row[0], row[1], row[2], row[3], row[4], row[5], _step_count(row[6]), *row[7:]) for row in rows]


def _step_count(config_json: str | None) -> int | None:
    try:
        return len(json.loads(config_json or "")["steps"])
    except (ValueError, KeyError, TypeError):
        return None
