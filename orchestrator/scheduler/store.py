"""The job store: APScheduler 3's jobs in a SQLite file of their own (data/scheduler.sqlite).

At every start `serve` rebuilds them from the persona files, one job per persona with the id
``persona:<name>`` and ``replace_existing=True``, so an operator edits a schedule and restarts; a
persona whose file is gone loses its job. What must survive a restart survives it: a paused job
stays paused, and a run that fell due while the scheduler was down keeps its time, so it still runs
within the misfire grace or is recorded as missed. Other processes read and edit the store
(`schedule list|trigger|pause|resume`) without running anything.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# APScheduler 3 ships no type information.
from apscheduler.job import Job  # type: ignore[import-untyped]
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore  # type: ignore[import-untyped]
from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.date import DateTrigger  # type: ignore[import-untyped]
from apscheduler.util import ref_to_obj  # type: ignore[import-untyped]

from orchestrator import log
from orchestrator.core import settings
from orchestrator.plan.schedule import NightlyTrigger, fire_times
from orchestrator.scheduler.jobs import JOB_FUNC, PERSONA_PREFIX, TRIGGER_PREFIX, JobArgs, job_id, persona_of
from orchestrator.scheduler.runtime import RUNTIME, NightExecutor

#: A nightly run may start this late (a restart, a slow start) and still count; later is a miss.
DEFAULT_MISFIRE_GRACE = 3600


def default_jobs_db() -> Path:
    return settings.data_dir() / "scheduler.sqlite"


class NightScheduler(BackgroundScheduler):  # type: ignore[misc]  # BackgroundScheduler is untyped
    """The scheduler of `serve`.

    APScheduler 3 makes one more pass over the due jobs after `shutdown()`, with its executors gone:
    a job due at that moment would be dropped (its next run time advanced) without a trace. Here a
    stopped scheduler leaves due jobs alone, so the next start runs them or records them as missed.
    """

    def _process_jobs(self) -> float | None:
        if self.state == STATE_STOPPED:
            return None
        wait_seconds: float | None = super()._process_jobs()
        return wait_seconds


class StoreEditor(BaseScheduler):  # type: ignore[misc]  # BaseScheduler is untyped
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


# -- the persona jobs ------------------------------------------------------------------------------


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


# -- by hand: one-off runs, pauses ----------------------------------------------------------------


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
    outcome: str = ref_to_obj(job.func_ref)(*job.args, **job.kwargs)
    return outcome
