"""One scheduler per job store, and what the running jobs of this process share.

A lock file beside the job store admits one `serve` (or one foreground `schedule trigger`) at a
time and names its holder for `status`.

Echos of one room must never speak at the same time: jobs of one room take turns (a lock per room
inside this process); different rooms run in parallel. Stopping (SIGTERM, Ctrl-C): no new job
starts, a job still waiting for its room gives up, and every persona worker gets one SIGTERM, on
which night.py's workers finish their current step and mark their run interrupted; workers still
running after the stop timeout are killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

# APScheduler 3 ships no type information.
from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent  # type: ignore[import-untyped]
from apscheduler.executors.base import run_job  # type: ignore[import-untyped]
from apscheduler.executors.pool import ThreadPoolExecutor  # type: ignore[import-untyped]
from apscheduler.job import Job  # type: ignore[import-untyped]

from orchestrator import log

WORKER_PREFIX = "persona-"  # night.py names each persona's worker process "persona-<name>"


# -- one scheduler per job store ------------------------------------------------------------------


class SchedulerBusy(RuntimeError):
    """Another process holds the job store's lock."""


def lock_path(jobs_db: Path) -> Path:
    return jobs_db.with_name(jobs_db.name + ".lock")


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
        holder: dict[str, Any] = json.loads(handle.read() or "{}")
    except json.JSONDecodeError:
        return {}
    return holder


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
        pid = child.pid  # set: active children have started
        if child.name.startswith(WORKER_PREFIX) and pid is not None and pid not in asked:
            asked.add(pid)
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
    due: datetime | None = getattr(_current, "scheduled_for", None)
    return due or log.utcnow()


class NightExecutor(ThreadPoolExecutor):  # type: ignore[misc]  # ThreadPoolExecutor is untyped
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

    def _finished(self, job_id_: str, done: Future[list[JobExecutionEvent]]) -> None:
        error = done.exception()
        if error is not None:
            self._run_job_error(job_id_, error, error.__traceback__)
        else:
            self._run_job_success(job_id_, done.result())


def _run_job_at(job: Job, store: str, run_times: list[datetime], logger_name: str) -> list[JobExecutionEvent]:
    events: list[JobExecutionEvent] = []
    for run_time in run_times:
        _current.scheduled_for = run_time
        try:
            events.extend(run_job(job, store, [run_time], logger_name))
        finally:
            _current.scheduled_for = None
    return events
