"""A night: several personas at once, each on its own Echo, each in a worker process of its own.

A PortAudio hang, a decoder abort or a synthesis hang in one worker cannot stop the others. The
parent owns the transcription server (one Vosk model shared by all Echos), collects progress
events from the workers, and closes the books of a worker that died: its run is marked failed and
its unfinished step interrupted, so the log never shows a run that is still "running" forever.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import secrets
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchestrator import log
from orchestrator.run import PersonaRun, RunRequest, RunSummary, StepEvent
from orchestrator.sound import redirect_native_stderr
from orchestrator.transcribe import TranscriptionServer

POLL_SECONDS = 0.2


@dataclass(frozen=True)
class RunStarted:
    persona: str
    run_id: int


@dataclass(frozen=True)
class WorkerDone:
    persona: str
    summary: RunSummary | None
    error: str | None = None


def _worker(request: RunRequest, events: Any, log_dir: Path) -> None:
    persona = request.persona.persona.name
    redirect_native_stderr(log_dir / f"{persona}.log")
    try:
        runner = PersonaRun(request, on_event=events.put,
                            on_start=lambda run_id: events.put(RunStarted(persona, run_id)))
        events.put(WorkerDone(persona, runner.execute()))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which records it
        events.put(WorkerDone(persona, None, f"{type(exc).__name__}: {exc}"))
        raise


class Night:
    """Loads the speech model once, then runs every persona in a worker process of its own.

    `begin_loading()` may be called early, so the model loads while the lab is being set up.
    """

    def __init__(self, model: Path, work_dir: Path, on_event: Callable[[StepEvent], None] = lambda _e: None,
                 on_phase: Callable[[str], None] = lambda _m: None) -> None:
        self.model = model
        self.work_dir = work_dir
        self.on_event = on_event
        self.on_phase = on_phase
        self.authkey = secrets.token_bytes(16)
        self.socket_path = _socket_path(work_dir)
        self._server = TranscriptionServer(model, self.socket_path, authkey=self.authkey)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="model-loader")
        self._loading: Future[Any] | None = None

    def begin_loading(self) -> None:
        if self._loading is None:
            self.on_phase(f"loading the speech model {self.model}")
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self._loading = self._pool.submit(self._server.start)

    def run(self, requests: list[RunRequest]) -> list[RunSummary]:
        self.begin_loading()
        assert self._loading is not None
        try:
            self._loading.result()  # a broken model raises here, before any persona starts
            self.on_phase(f"starting {len(requests)} persona(s)")
            requests = [replace(r, asr_socket=self.socket_path, asr_authkey=self.authkey) for r in requests]
            return self._run_workers(requests)
        finally:
            self.close()

    def close(self) -> None:
        if self._loading is not None:
            self._loading.cancel()
            with contextlib.suppress(Exception):
                self._loading.result()
        self._server.stop()
        self._pool.shutdown()

    def _run_workers(self, requests: list[RunRequest]) -> list[RunSummary]:
        ctx = multiprocessing.get_context("spawn")
        events = ctx.Queue()
        log_dir = self.work_dir / "logs"
        workers = {r.persona.persona.name: ctx.Process(target=_worker, args=(r, events, log_dir), daemon=False,
                                                         name=f"persona-{r.persona.persona.name}")
                   for r in requests}
        for proc in workers.values():
            proc.start()
        by_name = {r.persona.persona.name: r for r in requests}
        run_ids: dict[str, int] = {}
        done: dict[str, RunSummary] = {}
        try:
            while len(done) < len(workers):
                self._drain(events, run_ids, done, by_name)
                for name, proc in workers.items():
                    if name not in done and not proc.is_alive():
                        self._drain(events, run_ids, done, by_name)
                        if name not in done:
                            error = f"worker exited with code {proc.exitcode}"
                            done[name] = _bury(by_name[name], run_ids.get(name), error)
        finally:
            for proc in workers.values():
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        return [done[r.persona.persona.name] for r in requests]

    def _drain(self, events: Any, run_ids: dict[str, int], done: dict[str, RunSummary],
               by_name: dict[str, RunRequest]) -> None:
        try:
            event = events.get(timeout=POLL_SECONDS)
        except queue.Empty:
            return
        while True:
            match event:
                case RunStarted(persona, run_id):
                    run_ids[persona] = run_id
                case WorkerDone(persona, summary, error):
                    done[persona] = summary or _bury(by_name[persona], run_ids.get(persona), error or "unknown")
                case StepEvent():
                    self.on_event(event)
            try:
                event = events.get_nowait()
            except queue.Empty:
                return


def _socket_path(work_dir: Path) -> Path:
    """A Unix socket path must fit in 108 bytes; a deep lab folder gets one in /tmp instead."""
    path = work_dir.resolve() / "asr.sock"
    if len(str(path)) < 100:
        return path
    return Path(tempfile.mkdtemp(prefix="orch-asr-")) / "asr.sock"


def _bury(request: RunRequest, run_id: int | None, error: str) -> RunSummary:
    """Close the log of a worker that died without reporting."""
    persona = request.persona.persona
    summary = RunSummary(run_id or 0, persona.name, persona.echo, status="failed", error=error)
    if run_id is not None:
        engine = log.open_log(request.db_path)
        log.mark_stale_started(engine, run_id, error=f"worker died: {error}")
        log.finish_run(engine, run_id, "failed", error=error)
    return summary
