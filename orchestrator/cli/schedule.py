"""The scheduler's commands: `serve`, `schedule list|trigger|pause|resume`, and `status`.

Registered on the main group in cli.py. Data goes to stdout, messages to stderr, errors as `Error: …`.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from orchestrator.cli.options import (
    CONTEXT_SETTINGS,
    audio_dir_option,
    catalog_option,
    db_option,
    lab_option,
    model_option,
    reports_errors,
    resolve_model_setting,
    stderr,
)
from orchestrator.core import settings
from orchestrator.plan.schedule import NightlyTrigger, nightly_trigger
from orchestrator.scheduler.jobs import TRIGGER_PREFIX, persona_of
from orchestrator.scheduler.runtime import SchedulerBusy, StoreLock, describe_holder, kill_workers, lock_holder
from orchestrator.scheduler.service import (
    STOP_TIMEOUT,
    WAKEUP_SECONDS,
    SchedulerService,
    ServeConfig,
    load_persona_jobs,
)
from orchestrator.scheduler.status import RunningRun, running_runs
from orchestrator.scheduler.store import (
    DEFAULT_MISFIRE_GRACE,
    RebuildReport,
    default_jobs_db,
    nightly_job,
    open_store,
    pause,
    queue_trigger,
    resume,
    run_in_foreground,
)


def jobs_db_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--jobs-db", type=click.Path(dir_okay=False, path_type=Path), default=default_jobs_db,
        show_default="data/scheduler.sqlite",
        help="The scheduler's job store (a SQLite file of its own; its lock file sits beside it).",
    )(func)


@contextmanager
def job_store(jobs_db: Path) -> Iterator[Any]:
    try:
        with open_store(jobs_db) as scheduler:
            yield scheduler
    except (FileNotFoundError, LookupError) as exc:
        raise click.ClickException(str(exc.args[0] if exc.args else exc)) from None


# -- serve ------------------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--personas", "personas_dir", type=click.Path(file_okay=False, path_type=Path),
              default=lambda: settings.project_home() / "persona_scripts", show_default="persona_scripts/",
              help="Folder whose *.yaml persona files are scheduled (subfolders are not).")
@lab_option
@catalog_option
@db_option
@audio_dir_option
@model_option
@jobs_db_option
@click.option("--misfire-grace", type=click.IntRange(1), default=DEFAULT_MISFIRE_GRACE, show_default=True,
              metavar="SECONDS", help="A run may start this late and still run; later, it is recorded as missed.")
@click.option("--wakeup", "wakeup_seconds", type=click.FloatRange(0.5, 3600), default=WAKEUP_SECONDS,
              show_default=True, metavar="SECONDS",
              help="How often the job store is re-read for runs queued, paused or resumed by other commands.")
@click.option("--stop-timeout", type=click.FloatRange(0), default=STOP_TIMEOUT, show_default=True,
              metavar="SECONDS", help="On SIGTERM or Ctrl-C, how long running nights may take to finish their "
                                      "current step before they are ended.")
@reports_errors
def serve(personas_dir: Path, lab_path: Path, catalog_dir: Path, db: Path, audio_dir: Path, model_setting: str | None,
          jobs_db: Path, misfire_grace: int, wakeup_seconds: float, stop_timeout: float) -> None:
    """Run every persona at the time its file's `schedule` asks for, until stopped.

    At every start the jobs are rebuilt from the persona files: edit a schedule, then restart. Paused
    personas stay paused. Runs that were missed (the scheduler was down, or a persona's previous
    run was still going) are recorded in the log with status 'missed'. SIGTERM or Ctrl-C lets
    running nights finish their current step; a second one ends them at once.

    \b
    orchestrator serve --lab lab.yaml
    orchestrator schedule list
    """
    from orchestrator.lab.config import load_lab

    model = resolve_model_setting(model_setting, load_lab(lab_path).speech_model, audio_dir)
    jobs = load_persona_jobs(personas_dir, lab_path, catalog_dir, db, audio_dir, model)
    config = ServeConfig(jobs, jobs_db, misfire_grace, wakeup_seconds, stop_timeout)
    _log_to_stderr()
    service = SchedulerService(config)
    stop = threading.Event()
    previous = _on_stop_signals(stop)  # before the start: a SIGTERM during it still stops cleanly
    try:
        try:
            report = service.start()
        except SchedulerBusy as exc:
            raise click.ClickException(str(exc)) from None
        _print_rebuild(report, service)
        try:
            service.serve_forever(stop)
        finally:
            stderr.print("stopping: no new runs; running nights finish their current step")
            clean = service.stop()
    finally:
        _restore_signals(previous)
    stderr.print("stopped" if clean else "stopped; nights that did not finish in time were ended")


def _log_to_stderr() -> None:
    """Every run, miss and error with a timestamp, for the operator's log file."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # a no-op when configured
    for name in ("orchestrator", "apscheduler"):
        logging.getLogger(name).setLevel(logging.INFO)


def _print_rebuild(report: RebuildReport, service: SchedulerService) -> None:
    for label, names in (("new", report.added), ("updated", report.replaced), ("paused", report.paused),
                         ("removed", report.removed)):
        if names:
            stderr.print(f"{label}: {', '.join(names)}")
    upcoming = [(when, persona_of(job_id)) for job_id, when in service.next_runs().items() if when]
    if upcoming:
        when, name = min(upcoming)
        stderr.print(f"scheduler running ({len(report.added) + len(report.replaced)} personas); "
                     f"next: {name} at {_local(when)}")


def _on_stop_signals(stop: threading.Event) -> dict[int, Any]:
    """First SIGTERM/SIGINT: stop gracefully; a second one: end the nights' workers at once."""

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set():
            kill_workers()
        stop.set()

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}


def _restore_signals(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


# -- schedule ---------------------------------------------------------------------------------------


@click.group("schedule", context_settings=CONTEXT_SETTINGS)
def schedule_group() -> None:
    """See and change what `serve` runs: next run times, runs by hand, pauses."""


@schedule_group.command("list")
@jobs_db_option
@click.option("--personas", "personas_dir", type=click.Path(file_okay=False, path_type=Path),
              default=lambda: settings.project_home() / "persona_scripts", show_default="persona_scripts/",
              help="Before `serve` has ever run: the persona files whose next runs are shown.")
@reports_errors
def schedule_list(jobs_db: Path, personas_dir: Path) -> None:
    """Each persona's next run, its schedule and whether it is paused; runs queued by hand.

    Before `serve` has ever run there is no job store yet: the next runs are then computed from
    the persona files, as `serve` would schedule them.
    """
    if not jobs_db.exists():
        _list_from_persona_files(personas_dir)
        stderr.print(f"note: no job store at {jobs_db}: `orchestrator serve` has not run yet; these are the runs "
                     "the persona files ask for, and nothing runs until it starts")
        return
    with job_store(jobs_db) as scheduler:
        jobs = scheduler.get_jobs()
    click.echo(f"{'PERSONA':<28} {'STATE':<9} {'NEXT RUN':<26} SCHEDULE")
    for job in sorted(jobs, key=lambda j: (persona_of(j.id), j.id)):
        state = "queued" if job.id.startswith(TRIGGER_PREFIX) else (
            "paused" if job.next_run_time is None else "scheduled")
        next_run = _local(job.next_run_time, getattr(job.trigger, "timezone", UTC)) if job.next_run_time else "-"
        click.echo(f"{persona_of(job.id):<28} {state:<9} {next_run:<26} {_describe_trigger(job.trigger)}")
    if lock_holder(jobs_db) is None:
        stderr.print("note: `orchestrator serve` is not running; nothing runs until it starts")


def _list_from_persona_files(personas_dir: Path) -> None:
    from orchestrator.plan.persona import load_persona

    click.echo(f"{'PERSONA':<28} {'STATE':<9} {'NEXT RUN':<26} SCHEDULE")
    now = datetime.now(UTC)
    for path in sorted(personas_dir.glob("*.yaml")):
        persona = load_persona(path).persona
        trigger = nightly_trigger(persona.schedule)
        exact = nightly_trigger(persona.schedule.model_copy(update={"jitter_minutes": 0}))
        next_run = exact.get_next_fire_time(None, now)
        shown = _local(next_run, trigger.timezone) if next_run else "-"
        click.echo(f"{persona.name:<28} {'not yet':<9} {shown:<26} {_describe_trigger(trigger)}")


def _describe_trigger(trigger: Any) -> str:
    if isinstance(trigger, NightlyTrigger):
        fields = {f.name: str(f) for f in trigger.fields}
        cron = " ".join(fields[n] for n in ("minute", "hour", "day", "month", "day_of_week"))
        jitter = f" +0..{trigger.jitter // 60} min" if trigger.jitter else ""
        return f"{cron} {trigger.timezone}{jitter}"
    return "once, by hand"


def _local(moment: datetime, zone: Any = None) -> str:
    """A moment in the persona's own time zone, as the operator wrote its schedule."""
    return (moment.astimezone(zone) if zone else moment).strftime("%Y-%m-%d %H:%M:%S %Z")


@schedule_group.command("trigger")
@click.argument("persona")
@jobs_db_option
@reports_errors
def schedule_trigger(persona: str, jobs_db: Path) -> None:
    """Run a persona now, with the settings `serve` scheduled it with.

    With `serve` running, the run is queued in the job store and starts within its wakeup interval
    (after any night running in the same room). Without it, the run happens here, in the foreground.
    """
    try:
        with StoreLock(jobs_db, f"schedule trigger {persona}"):
            with job_store(jobs_db) as scheduler:
                job = nightly_job(scheduler, persona)
            stderr.print(f"no scheduler is running: running {persona} here")
            click.echo(run_in_foreground(job))
            return
    except SchedulerBusy:
        pass
    with job_store(jobs_db) as scheduler:
        queued = queue_trigger(scheduler, persona)
    holder = lock_holder(jobs_db)
    when = "within seconds" if holder and holder.get("role") == "serve" else "when `orchestrator serve` runs"
    stderr.print(f"queued {persona} ({queued.id}); it starts {when}, after any night in its room")


@schedule_group.command("pause")
@click.argument("persona")
@jobs_db_option
def schedule_pause(persona: str, jobs_db: Path) -> None:
    """Stop running a persona at its times (kept across restarts) until `schedule resume`."""
    with job_store(jobs_db) as scheduler:
        pause(scheduler, persona)
    stderr.print(f"paused {persona}")


@schedule_group.command("resume")
@click.argument("persona")
@jobs_db_option
def schedule_resume(persona: str, jobs_db: Path) -> None:
    """Run a paused persona at its times again."""
    with job_store(jobs_db) as scheduler:
        job = resume(scheduler, persona)
    next_run = _local(job.next_run_time, job.trigger.timezone) if job.next_run_time else "never"
    stderr.print(f"{persona} is scheduled; next run {next_run}")


# -- status -----------------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT_SETTINGS)
@db_option
@jobs_db_option
def status(db: Path, jobs_db: Path) -> None:
    """Whether `serve` is up, and what runs now: each run's Echo, room, step and since when."""
    click.echo(f"scheduler: {_scheduler_state(lock_holder(jobs_db))}")
    runs = running_runs(db)
    if not runs:
        click.echo("no run is running")
        return
    for run in runs:
        click.echo(_describe_run(run))


def _scheduler_state(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "not running"
    if holder.get("role") == "serve":
        return f"up: {describe_holder(holder)}"
    return f"not running; the job store is held by {describe_holder(holder)}"


def _describe_run(run: RunningRun) -> str:
    where = f"{run.echo or '?'}" + (f" (room {run.room})" if run.room else "")
    head = f"run {run.run_id}: {run.persona} on {where}, running since {run.started_at}"
    if run.step_index is None:
        return f"{head}; preparing (no step yet)"
    of = f"/{run.steps}" if run.steps else ""
    text = f": {run.prompt_text}" if run.prompt_text else ""
    return f"{head}; step {run.step_index + 1}{of} {run.kind} {run.step_status} since {run.step_started_at}{text}"
