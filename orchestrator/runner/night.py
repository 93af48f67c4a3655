"""A night: several personas at once, each on its own Echo, each in a worker process of its own.

A PortAudio hang, a decoder abort or a synthesis hang in one worker cannot stop the others. The
parent owns the transcription servers (the speech model, for the replies the plan reacts to: one
server, or one per core for an engine that decodes on one core; asr/shards.py) and the background
transcriber (deferred.py: every other reply, from its recording, during the night and after its
last step until none is left), collects progress events from the workers, and closes the books of
a worker that died: its run is marked failed and its unfinished step interrupted, so the log
never shows a run that is still "running" forever.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from orchestrator import log
from orchestrator.asr import SpeechModel
from orchestrator.asr.shards import TranscriptionShards, default_count
from orchestrator.audio.clip import MIC_FORMAT
from orchestrator.audio.devices import DeviceError, check_devices, redirect_native_stderr
from orchestrator.catalog.skills import Catalog
from orchestrator.core import settings
from orchestrator.core.processes import die_with_parent, name_this_process
from orchestrator.lab.config import LabConfig
from orchestrator.lab.hooks import hooks_for
from orchestrator.lab.rig_check import Verdict, self_test
from orchestrator.plan.persona import LoadedPersona, compile_plan
from orchestrator.runner.deferred import BackgroundTranscriber
from orchestrator.runner.progress import Progress
from orchestrator.runner.run import (
    STEP_RETRIES,
    PersonaRun,
    RunControls,
    RunRequest,
    RunSummary,
    StepEvent,
    account_for_audio,
    endpoint_for,
    longest_recording,
    register,
)
from orchestrator.traffic.capture import CaptureError, NightCapture, night_capture

POLL_SECONDS = 0.2
#: How long past a step's own deadline the watchdog waits before it kills the worker.
WATCHDOG_GRACE = 10.0
#: A transcription server grown past this between nights is restarted (Vosk's memory creeps up).
ASR_RECYCLE_BYTES = 1536 * 2**20
#: An interrupted run this recent is resumed rather than started over: the same night.
RESUME_WINDOW = timedelta(hours=12)


@dataclass(frozen=True)
class RunStarted:
    persona: str
    run_id: int


@dataclass(frozen=True)
class WorkerDone:
    persona: str
    summary: RunSummary | None
    error: str | None = None


def _worker(request: RunRequest, events: Any, log_dir: Path, stop: Any, room_lock: Any) -> None:
    persona = request.persona.persona.name
    die_with_parent()
    name_this_process()
    redirect_native_stderr(log_dir / f"{persona}.log")
    hooks_for(request.lab.virtual_lab).in_process(request.persona.persona.echo, "persona")
    # Ctrl-C reaches the whole process group; the night decides, and asks through `stop`.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda _sig, _frame: stop.set())
    try:
        runner = PersonaRun(request, on_event=events.put,
                            on_start=lambda run_id: events.put(RunStarted(persona, run_id)),
                            controls=RunControls(stop, room_lock))
        events.put(WorkerDone(persona, runner.execute()))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which records it
        events.put(WorkerDone(persona, None, f"{type(exc).__name__}: {exc}"))
        raise


class Night:
    """Loads the speech model once (in each of its transcription servers), then runs every persona
    in a worker process of its own.

    `begin_loading()` may be called early, so the model loads while the lab is being set up.
    """

    def __init__(self, model: SpeechModel, work_dir: Path, on_event: Callable[[StepEvent], None] = lambda _e: None,
                 on_phase: Callable[[str], None] = lambda _m: None, servers: int | None = None) -> None:
        self.model = model
        self.work_dir = work_dir
        self.on_event = on_event
        self.on_phase = on_phase
        self.authkey = secrets.token_bytes(16)
        self._servers = TranscriptionShards(model, _socket_folder(work_dir), self.authkey,
                                            servers or default_count(model))
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="model-loader")
        self._loading: Future[Any] | None = None
        self._ctx = multiprocessing.get_context("spawn")
        self._stop = self._ctx.Event()
        self._background: BackgroundTranscriber | None = None
        self.worker_pids: Callable[[], dict[str, int | None]] = dict
        self.capture_pid: int | None = None  # tonight's tcpdump, while it runs

    def begin_loading(self) -> None:
        if self._loading is None:
            servers = f" in {len(self._servers)} transcription servers" if len(self._servers) > 1 else ""
            self.on_phase(f"loading the speech model {self.model}{servers}")
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self._loading = self._pool.submit(self._servers.start)

    def __enter__(self) -> Night:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, requests: list[RunRequest]) -> list[RunSummary]:
        """Run the personas to their end; the model stays loaded for another `run` until `close()`.

        A persona whose Echo fails the rig self-test (when the lab asks for one before nights) is
        not started: its run is recorded as failed, with the check's reason.
        """
        self.worker_pids = dict  # none yet: never report the previous night's workers
        self.begin_loading()
        assert self._loading is not None
        self._loading.result()  # a broken model raises here, before any persona starts
        if self._servers.ensure_running(max_rss_bytes=ASR_RECYCLE_BYTES):  # died, or grew (Vosk does)
            self.on_phase("restarted the transcription server")
        capture = self._start_capture(requests)
        try:
            cleared, refused = self._rig_check(requests)
            # One recognizer per Echo, made before anyone speaks rather than on every Echo's first reply at once.
            self._servers.warm(len(cleared))
            self.on_phase(f"starting {len(cleared)} persona(s)")
            version = self._servers.report.version if self._servers.report else None
            cleared = [replace(r, asr_socket=self._servers.socket_for(index), asr_authkey=self.authkey,
                               asr_version=version) for index, r in enumerate(cleared)]
            if cleared:
                self._start_background(cleared[0].db_path)
            started = {s.persona: s for s in self._run_workers(cleared)} if cleared else {}
        finally:
            self._finish_capture(capture, requests)  # the Echos are done; transcription may go on
        if self._background is not None:
            with self.stop_on_signals():
                self._background.finish(self._stop.is_set, self.on_phase)
        names = [r.persona.persona.name for r in requests]
        return [started.get(name) or refused[name] for name in names]

    def _start_capture(self, requests: list[RunRequest]) -> NightCapture | None:
        """The night's traffic capture, listening before any persona speaks (a CaptureError if it cannot)."""
        wanted = requests[0].lab.capture if requests else None
        if wanted is None:
            return None
        lab = requests[0].lab
        echos = [lab.echo(name) for name in sorted({r.persona.persona.echo for r in requests})]
        try:
            capture = night_capture(wanted, echos, requests[0].db_path)
            assert capture is not None
            capture.start()
        except CaptureError as exc:
            if not wanted.optional:
                raise CaptureError(f"{exc}; nothing was started (or mark the capture `optional: true`)") from None
            self.on_phase(f"no traffic capture tonight (it is optional): {exc}")
            return None
        self.capture_pid = capture.pid
        self.on_phase(f"capturing the Echos' traffic on {wanted.interface} into {capture.folder}")
        return capture

    def _finish_capture(self, capture: NightCapture | None, requests: list[RunRequest]) -> None:
        if capture is None:
            return
        engine = log.open_log(requests[0].db_path)
        try:
            ids = capture.finish(engine)
        finally:
            engine.dispose()
            self.capture_pid = None
        self.on_phase(f"traffic capture stopped: {len(ids)} file(s) recorded (`orchestrator traffic analyze`)")

    def _rig_check(self, requests: list[RunRequest]) -> tuple[list[RunRequest], dict[str, RunSummary]]:
        if not requests or not requests[0].lab.rig_check.before_night:
            return requests, {}
        lab, db = requests[0].lab, requests[0].db_path
        echos = sorted({r.persona.persona.echo for r in requests})
        self.on_phase(f"rig self-test: a probe tone on {len(echos)} Echo(s), every microphone listening")
        engine = log.open_log(db)
        try:
            report = self_test(lab, engine, "night", echos)
            failures = report.failures()
            refused = {r.persona.persona.name: _refuse(engine, r, failures[r.persona.persona.echo], report.check_id)
                       for r in requests if r.persona.persona.echo in failures}
        finally:
            engine.dispose()
        for summary in refused.values():
            self.on_phase(f"{summary.persona} not started: {summary.error}")
        cleared = [replace(r, rig_check_id=report.check_id) for r in requests if r.persona.persona.name not in refused]
        return cleared, refused

    def _start_background(self, db: Path) -> None:
        """The transcriber of the replies left for later; it also finishes what an earlier night left."""
        if self._background is None or self._background.db != db:
            self._background = BackgroundTranscriber(self._ctx, db, self.model,
                                                     self.work_dir / "logs" / "transcriber.log")
        self._background.night_over.clear()
        self._background.restarts = -1
        self._background.ensure_running()

    def close(self) -> None:
        if self._background is not None:
            self._background.stop()
        if self._loading is not None:
            self._loading.cancel()
            with contextlib.suppress(Exception):
                self._loading.result()
        self._servers.stop()
        self._pool.shutdown()
        self._loading = None

    def request_stop(self) -> None:
        """Let every worker finish its current utterance, mark its run interrupted, and exit."""
        self.on_phase("stopping: each Echo finishes its current step")
        self._stop.set()

    @contextlib.contextmanager
    def stop_on_signals(self) -> Iterator[None]:
        """SIGTERM or Ctrl-C ask for a clean stop; a second Ctrl-C does not wait for it."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        def first(_sig: int, _frame: Any) -> None:
            self.request_stop()
            signal.signal(signal.SIGINT, signal.default_int_handler)
        saved = {sig: signal.signal(sig, first) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)

    @property
    def transcription_pids(self) -> list[int | None]:
        """The transcription servers' process ids (for the operator, and for tests that kill one)."""
        return self._servers.pids

    @property
    def transcriber_pid(self) -> int | None:
        """The background transcriber's process id."""
        return self._background.pid if self._background is not None else None

    def _keep_transcribing(self) -> None:
        """Bring back a transcription server or the background transcriber if one died during the night."""
        if self._background is not None and not self._background.ensure_running():
            self.on_phase("the background transcriber died too often; its queue waits for "
                          "`orchestrator transcribe --pending`")
            self._background = None
        if self._servers.running:
            return
        self.on_phase("a transcription server stopped; restarting it")
        try:
            self._servers.ensure_running()
        except Exception as exc:  # noqa: BLE001 - the workers' steps fail and are recorded; the night goes on
            self.on_phase(f"the transcription server could not be restarted: {exc}")
            return
        self.on_phase("the transcription server is back")

    def _run_workers(self, requests: list[RunRequest]) -> list[RunSummary]:
        workers = _Workers(self._ctx, requests, self.work_dir / "logs", self._stop, self.on_event,
                           self._keep_transcribing)
        self.worker_pids = workers.pids
        with self.stop_on_signals():
            return workers.watch()


def _refuse(engine: Engine, request: RunRequest, verdict: Verdict, check_id: int | None) -> RunSummary:
    """The failed run of a persona whose Echo did not pass tonight's rig self-test."""
    persona_id, device_id = register(engine, request)
    error = f"rig check {check_id} failed for {verdict.echo} ({verdict.status}): {verdict.error}"
    run_id = log.record_unstarted_run(engine, persona_id=persona_id, device_id=device_id, status="failed",
                                      scheduled_for=request.scheduled_for, error=error, rig_check_id=check_id)
    return RunSummary(run_id, request.persona.persona.name, verdict.echo, status="failed", error=error)


def _socket_folder(work_dir: Path) -> Path:
    """A Unix socket path must fit in 108 bytes; a deep lab folder gets its sockets in /tmp instead."""
    folder = work_dir.resolve()
    if len(str(folder / "asr-00.sock")) < 100:
        return folder
    return Path(tempfile.mkdtemp(prefix="orch-asr-"))


class RoomLock:
    """Two Echos of one room never speak at once; a worker killed while holding it is let go."""

    def __init__(self, ctx: Any) -> None:
        self._lock = ctx.Lock()
        self._holder = ctx.Value("i", 0, lock=False)

    def __enter__(self) -> RoomLock:
        self._lock.acquire()
        self._holder.value = os.getpid()
        return self

    def __exit__(self, *exc: object) -> None:
        self._holder.value = 0
        self._lock.release()

    def release_if_held_by(self, pid: int | None) -> None:
        if pid is not None and self._holder.value == pid:
            self._holder.value = 0
            self._lock.release()


class _Workers:
    """The worker processes of one night, and the watchdog that keeps them honest."""

    def __init__(self, ctx: Any, requests: list[RunRequest], log_dir: Path, stop: Any,
                 on_event: Callable[[StepEvent], None], on_tick: Callable[[], None] = lambda: None) -> None:
        self.events = ctx.Queue()
        self.on_event = on_event
        self.on_tick = on_tick  # the night's own round of checks, a few times a second
        self.requests = {r.persona.persona.name: r for r in requests}
        rooms = {r.lab.echo(r.persona.persona.echo).room_key for r in requests}
        # Held here for the workers' lifetime: a spawned child rebuilds a lock from its name, which
        # vanishes when the parent's last reference does.
        self.room_locks = {room: RoomLock(ctx) for room in rooms}
        self.procs = {
            name: ctx.Process(target=_worker, name=f"persona-{name}",
                              args=(r, self.events, log_dir, stop, self._room_lock(r)))
            for name, r in self.requests.items()
        }
        self.run_ids: dict[str, int] = {}
        self.deadlines: dict[str, tuple[float, int]] = {}
        self.done: dict[str, RunSummary] = {}
        self.order = [r.persona.persona.name for r in requests]
        for proc in self.procs.values():
            proc.start()

    def _room_lock(self, request: RunRequest) -> Any:
        return self.room_locks[request.lab.echo(request.persona.persona.echo).room_key]

    def pids(self) -> dict[str, int | None]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def watch(self) -> list[RunSummary]:
        try:
            while len(self.done) < len(self.procs):
                self._drain()
                self._reap_dead()
                self._enforce_deadlines()
                self.on_tick()
        finally:
            for proc in self.procs.values():
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        return [self.done[name] for name in self.order]

    def _drain(self) -> None:
        try:
            event = self.events.get(timeout=POLL_SECONDS)
        except queue.Empty:
            return
        while True:
            self._handle(event)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return

    def _handle(self, event: Any) -> None:
        match event:
            case RunStarted(persona, run_id):
                self.run_ids[persona] = run_id
            case WorkerDone(persona, summary, error):
                self.done[persona] = summary or self._bury(persona, error or "unknown", resumable=False)
            case StepEvent():
                if event.status == "running" and event.deadline is not None:
                    self.deadlines[event.persona] = (event.deadline, event.index)
                self.on_event(event)

    def _reap_dead(self) -> None:
        for name, proc in self.procs.items():
            if name not in self.done and not proc.is_alive():
                self._drain()  # its last words may still be in the queue
                if name not in self.done:
                    self._room_lock(self.requests[name]).release_if_held_by(proc.pid)
                    killed = proc.exitcode is not None and proc.exitcode < 0
                    how = f"killed by signal {-proc.exitcode}" if killed else f"exited with code {proc.exitcode}"
                    self.done[name] = self._bury(name, f"worker {how}", resumable=killed)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for name, (deadline, step) in list(self.deadlines.items()):
            proc = self.procs[name]
            if name not in self.done and now > deadline + WATCHDOG_GRACE and proc.is_alive():
                proc.kill()
                proc.join()
                self._room_lock(self.requests[name]).release_if_held_by(proc.pid)
                self.done[name] = self._bury(name, f"watchdog: step {step} made no progress past its deadline; "
                                                   "worker killed", resumable=True)

    def _bury(self, persona: str, error: str, resumable: bool) -> RunSummary:
        """Close the log of a worker that died without reporting.

        A worker killed from outside (kill -9, the watchdog) leaves an `interrupted` run that the
        next start resumes; one that crashed on its own leaves a `failed` run.
        """
        request = self.requests[persona]
        status: log.RunStatus = "interrupted" if resumable else "failed"
        # A resumed run is known before its worker says so: a kill during its start interrupts it again.
        run_id = self.run_ids.get(persona) or request.resume_run_id
        engine = log.open_log(request.db_path)
        if run_id is None:  # it died before its run began: the attempt must still show in the log
            persona_id, device_id = register(engine, request)
            run_id = log.record_unstarted_run(engine, persona_id=persona_id, device_id=device_id, status="failed",
                                              scheduled_for=request.scheduled_for, error=f"could not start: {error}")
            return RunSummary(run_id, persona, request.persona.persona.echo, status="failed", error=error)
        log.mark_stale_started(engine, run_id, error=f"worker died: {error}")
        account_for_audio(engine, settings.recordings_dir(request.audio_dir), run_id)
        log.finish_run(engine, run_id, status, error=error)
        return RunSummary(run_id, persona, request.persona.persona.echo, status=status, error=error)


def run_personas(personas: list[LoadedPersona], catalog: Catalog, lab: LabConfig, db: Path, audio_dir: Path,
                 model: SpeechModel, progress: Progress | None = None, scheduled_for: datetime | None = None,
                 work_dir: Path | None = None, resume: bool = True,
                 resume_run_id: int | None = None) -> list[RunSummary]:
    """Run validated personas now, each on its Echo of the lab, and return how each run ended.

    A persona whose run was interrupted within the last `RESUME_WINDOW` continues that run
    instead of starting a new one (unless `resume` is false).
    """
    hooks_for(lab.virtual_lab).in_process(None, "persona")
    check_free_space(personas, catalog, lab, db, audio_dir)
    check_rig(lab, personas)
    engine = log.open_log(db)
    since = datetime.now(UTC) - RESUME_WINDOW
    requests = [RunRequest(p, lab, catalog, db, audio_dir, model, asr_socket=Path(), asr_authkey=b"",
                           scheduled_for=scheduled_for,
                           resume_run_id=resume_run_id or (log.resumable_run(engine, p.persona.name, since)
                                                           if resume else None))
                for p in personas]
    with Night(model, work_dir or settings.data_dir() / "run", on_event=progress or (lambda _event: None),
               on_phase=progress.phase if progress else lambda _m: None, servers=lab.transcription_servers) as night:
        return night.run(requests)


class NotEnoughSpace(RuntimeError):
    """The night's recordings would not fit on the disk: nothing was started."""


#: Kept free beyond a night's recordings: the log's growth, the speech caches, the rest of the system.
SPACE_RESERVE = 256 * 2**20


def night_audio_bytes(personas: list[LoadedPersona], catalog: Catalog, lab: LabConfig) -> int:
    """The most a night's recordings can take: every step recorded to its longest, and retried once."""
    seconds = sum(longest_recording(endpoint_for(step, lab.endpointing))
                  for loaded in personas for step in compile_plan(loaded.persona, catalog) if step.kind != "pause")
    return MIC_FORMAT.nbytes(seconds) * (STEP_RETRIES + 1)


def check_free_space(personas: list[LoadedPersona], catalog: Catalog, lab: LabConfig, db: Path,
                     audio_dir: Path) -> None:
    """Refuse to start a night whose recordings could fill the disk: a full disk mid-night costs the rest of it."""
    need = night_audio_bytes(personas, catalog, lab) + SPACE_RESERVE
    for folder in {_existing(audio_dir), _existing(db.parent)}:
        free = shutil.disk_usage(folder).free
        if free < need:
            raise NotEnoughSpace(
                f"{folder} has {free / 2**20:.0f} MB free; tonight's recordings may take up to "
                f"{(need - SPACE_RESERVE) / 2**20:.0f} MB, plus {SPACE_RESERVE // 2**20} MB kept free: "
                "free some space or point --audio-dir and --db elsewhere; nothing was started")


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def check_rig(lab: LabConfig, personas: list[LoadedPersona]) -> None:
    """Every persona's speaker and microphone must be there before the night begins."""
    wanted = []
    for loaded in personas:
        echo = lab.echo(loaded.persona.echo)
        wanted += [(lab.backend_of(echo), echo.speaker, "output"), (lab.backend_of(echo), echo.microphone, "input")]
    problems = check_devices(wanted)
    if problems:
        raise DeviceError("the lab is not ready, nothing was started:\n" + "\n".join(f"  {p}" for p in problems))
