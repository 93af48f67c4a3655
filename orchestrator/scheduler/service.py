"""`orchestrator serve`: the one process that runs each persona at the time its file asks for.

It locks the job store, rebuilds the jobs from the persona files, runs them, and records every run
that did not happen (missed, skipped, failed before it started) in the log. Stopping lets running
nights finish their current step (see runtime.py).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

# APScheduler 3 ships no type information.
from apscheduler.events import (  # type: ignore[import-untyped]
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
    JobSubmissionEvent,
)

from orchestrator import log
from orchestrator.asr.engine import SpeechModel
from orchestrator.plan.schedule import nightly_trigger
from orchestrator.scheduler.jobs import JOB_FUNC, JobArgs, has_run, log_engine, persona_of, record_not_run
from orchestrator.scheduler.runtime import RUNTIME, StoreLock, ask_workers_to_stop, kill_workers
from orchestrator.scheduler.store import (
    DEFAULT_MISFIRE_GRACE,
    NightScheduler,
    PersonaJob,
    RebuildReport,
    make_scheduler,
    rebuild_jobs,
)

logger = logging.getLogger(__name__)

#: How often `serve` re-reads the job store: APScheduler 3 does not notice jobs written by another
#: process (`schedule trigger`, `pause`, `resume`) until its next wakeup.
WAKEUP_SECONDS = 5.0
#: How long a stopping `serve` lets running nights finish their current step before ending them.
STOP_TIMEOUT = 30.0


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
    jobs: list[PersonaJob] = []
    issues: list[Issue] = []
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
