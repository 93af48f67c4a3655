"""Text to speech for the prompts the lab speaks to its Echos.

pyttsx3 (espeak-ng driver) renders each prompt to a WAV file; the file is validated, trimmed of
espeak-ng's dead air and stored in a content-addressed cache, so what is cached is exactly what
is played, and a night's prompts can be rendered before the night starts.

The engine lives in a worker process, never in the caller's process:

* `runAndWait()` spins forever when the driver fails inside its audio callback (for example an
  unwritable target), so every request has a deadline, and a worker that misses it is killed and
  replaced;
* espeak-ng keeps global state per process, and voice/rate changes between utterances are
  unreliable, so each worker sets its voice and rate exactly once, at start.

Workers are started with multiprocessing's spawn method, so a program using this module needs
the usual `if __name__ == "__main__":` guard in its main script.

Usage::

    with Synthesizer(tts_cache_dir(), Voice("gmw/en-us", rate=160)) as tts:
        path = tts.render("Alexa, open pet facts")
"""

from __future__ import annotations

import ctypes
import difflib
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from orchestrator.audio.clip import Clip, InvalidAudio, read_wav, resample, trim_silence, validate_wav, write_wav_atomic
from orchestrator.core.processes import name_this_process

log = logging.getLogger(__name__)

DRIVER = "espeak"

#: espeak-ng clamps its speed to this range; a rate outside it would be logged but not heard.
MIN_RATE = 80
MAX_RATE = 450

#: Starting a worker imports pyttsx3 and numpy in a fresh interpreter; on a loaded lab machine
#: that can take far longer than one render, so it gets its own deadline.
START_TIMEOUT = 30.0

#: Changes whenever the way a cached file is produced changes, so old entries are not reused.
CACHE_SCHEMA = 2
#: Prompts are stored at the rate the lab records at: espeak-ng's speech has little above 8 kHz,
#: and a sink that need not resample every stream is what lets one machine hold many Echos.
OUTPUT_RATE = 16000
TRIM_THRESHOLD_DBFS = -45.0
TRIM_KEEP = 0.02

_WARMUP_TEXT = "ready"
_CONFIGURE_ATTEMPTS = 4
_SCRATCH_PREFIX = ".render-"


class SynthesisError(RuntimeError):
    """A prompt could not be turned into usable audio."""


class SynthesisTimeout(SynthesisError):
    """The engine did not finish in time; its worker was killed."""


@dataclass(frozen=True)
class Voice:
    name: str = "gmw/en-us"  # espeak-ng voice id, as listed by available_voices()
    rate: int = 160  # words per minute


# --------------------------------------------------------------------------------------------
# Worker process side
# --------------------------------------------------------------------------------------------


def _silence_stdout() -> None:
    # pyttsx3 prints "Audio saved to ..." after every file; at file-descriptor level so that
    # anything espeak-ng itself writes to stdout is dropped too. stderr stays: its tracebacks
    # are the only trace of why a worker hung.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def _probe_writable(target: Path) -> str | None:
    """Create the target file up front: the engine hangs instead of failing when it cannot."""
    try:
        with open(target, "wb"):
            pass
    except OSError as exc:
        return f"cannot write {target}: {exc}"
    return None


class _Engine:
    """pyttsx3 in the worker, with the espeak-ng calls needed to keep its settings honest.

    espeak-ng runs in asynchronous mode under pyttsx3: SetParameter is queued to espeak's own
    thread, and pyttsx3 cancels that queue whenever it looks busy at the end of a run loop. A
    rate set at start is therefore sometimes silently dropped (measured: 2 to 10 starts in 100),
    so settings are read back from espeak-ng itself and re-applied until they hold.
    """

    def __init__(self) -> None:
        import pyttsx3
        from pyttsx3.drivers import _espeak

        self._espeak = _espeak
        self.engine = pyttsx3.init(DRIVER)
        self.voice: Voice | None = None
        # pyttsx3's getProperty("rate") calls espeak_GetParameter without its `current`
        # argument and so reads an arbitrary value: bind the C function properly.
        self._get_parameter: Callable[[int, int], int] | None
        try:
            proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_int)
            self._get_parameter = proto(("espeak_GetParameter", _espeak.dll))
        except (AttributeError, OSError):
            self._get_parameter = None

    def voices(self) -> list[str]:
        return sorted(v.id for v in self.engine.getProperty("voices"))

    def identity(self) -> dict[str, str]:
        version = (self._espeak.Info() or b"unknown").decode("utf-8", "replace")
        return {"engine": "pyttsx3", "pyttsx3": metadata.version("pyttsx3"), "driver": DRIVER,
                "espeak_ng": version}

    def current_rate(self) -> int | None:
        if self._get_parameter is None:
            return None
        return int(self._get_parameter(self._espeak.RATE, 1))

    def settings_hold(self) -> bool:
        assert self.voice is not None
        rate = self.current_rate()
        return self.engine.getProperty("voice") == self.voice.name and rate in (None, self.voice.rate)

    def configure(self, voice: Voice, scratch: Path) -> dict[str, Any]:
        """Apply voice and rate, prove they hold, and return facts for the handshake."""
        self.voice = voice
        for attempt in range(1, _CONFIGURE_ATTEMPTS + 1):
            # pyttsx3 only queues property changes; the warm-up run loop is what applies them.
            self.engine.setProperty("voice", voice.name)
            self.engine.setProperty("rate", voice.rate)
            sample_rate = self._warm_up(scratch)
            if sample_rate is not None and self.settings_hold():
                return {"sample_rate": sample_rate, "rate_verified": self._get_parameter is not None,
                        "configure_attempts": attempt}
        raise SynthesisError(
            f"espeak-ng kept voice {self.engine.getProperty('voice')!r} at rate {self.current_rate()} "
            f"instead of {voice.name!r} at {voice.rate} after {_CONFIGURE_ATTEMPTS} attempts"
        )

    def _warm_up(self, scratch: Path) -> int | None:
        """Render a word; its sample rate, or None when the engine wrote an empty file (then retry)."""
        warmup = scratch / f".warmup-{os.getpid()}.wav"
        try:
            if problem := self.save(_WARMUP_TEXT, warmup):
                raise SynthesisError(f"warm-up render failed: {problem}")
            return read_wav(warmup).format.rate
        except InvalidAudio:
            return None  # pyttsx3 has been seen writing empty files on a loaded machine
        finally:
            warmup.unlink(missing_ok=True)

    def save(self, text: str, target: Path) -> str | None:
        """Render one text to one file (queued files get lost); returns a problem or None."""
        if problem := _probe_writable(target):
            return problem
        self._wait_idle()
        try:
            self.engine.save_to_file(text, str(target))
            self.engine.runAndWait()
        except Exception as exc:  # the engine's failures are data for the parent, not a crash
            return f"engine failed: {exc!r}"
        return None

    def _wait_idle(self, limit: float = 1.0) -> None:
        # A run loop started while espeak's thread is still finishing the previous command
        # makes pyttsx3 cancel that thread's queue, which is how settings and renders get lost.
        deadline = time.monotonic() + limit
        while self._espeak.IsPlaying() and time.monotonic() < deadline:
            time.sleep(0.002)


def _worker_main(conn: Connection, voice: Voice | None, scratch: str) -> None:
    """Entry point of the worker process. With `voice=None` it only lists the voices."""
    name_this_process()
    _silence_stdout()
    try:
        engine = _Engine()
        voices = engine.voices()
        identity = engine.identity()
    except Exception as exc:
        conn.send(("error", f"cannot start pyttsx3 with the {DRIVER} driver: {exc!r}"))
        return
    if voice is None:
        conn.send(("voices", voices))
        return
    if voice.name not in voices:
        conn.send(("unknown-voice", voices))
        return
    try:
        facts = engine.configure(voice, Path(scratch))
    except Exception as exc:
        conn.send(("error", str(exc)))
        return
    conn.send(("ready", {**identity, **facts}))
    _serve(conn, engine, Path(scratch))


def _serve(conn: Connection, engine: _Engine, scratch: Path) -> None:
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # parent went away
        if request is None:
            return
        text, target = request
        conn.send(_render_request(engine, text, Path(target), scratch))


def _render_request(engine: _Engine, text: str, target: Path, scratch: Path) -> tuple[str, str | None]:
    if not engine.settings_hold():
        # Never observed after a verified start, but a prompt in the wrong voice or rate would
        # be cached for good: restore the settings rather than render with whatever is left.
        assert engine.voice is not None
        try:
            engine.configure(engine.voice, scratch)
        except SynthesisError as exc:
            return ("error", str(exc))
    problem = engine.save(text, target)
    return ("error", problem) if problem else ("ok", None)


# --------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------


def _context() -> multiprocessing.context.SpawnContext:
    # spawn, not fork: a forked child would inherit the parent's threads, sound streams and
    # possibly an already initialised espeak-ng.
    return multiprocessing.get_context("spawn")


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection

    def stop(self) -> None:
        """Ask politely, then kill: a worker stuck in runAndWait never reads the request."""
        if self.process.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(2.0)
        self.kill()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5.0)
        self.conn.close()


def _spawn(voice: Voice | None, scratch: Path) -> tuple[_Worker, tuple[str, Any]]:
    """Start a worker and wait for its first message (handshake or voice list)."""
    ctx = _context()
    parent_conn, child_conn = ctx.Pipe()
    process = ctx.Process(
        target=_worker_main,
        args=(child_conn, voice, str(scratch)),
        name=f"tts-{voice.name if voice else 'voices'}",
        daemon=True,
    )
    process.start()
    child_conn.close()  # so a dead worker shows up as EOF instead of a silent wait
    worker = _Worker(process, parent_conn)
    try:
        if not parent_conn.poll(START_TIMEOUT):
            raise SynthesisTimeout(f"TTS worker did not start within {START_TIMEOUT:.0f} s")
        message = parent_conn.recv()
    except EOFError:
        worker.kill()
        raise SynthesisError(f"TTS worker exited during start (exit code {process.exitcode})") from None
    except BaseException:
        worker.kill()
        raise
    return worker, message


def available_voices() -> list[str]:
    """espeak-ng voice ids usable as `Voice.name`, asked of a short-lived worker."""
    with tempfile.TemporaryDirectory(prefix="orchestrator-voices-") as scratch:
        worker, (kind, payload) = _spawn(None, Path(scratch))
        worker.stop()
    if kind != "voices":
        raise SynthesisError(str(payload))
    return list(payload)


def _unknown_voice_message(name: str, voices: list[str]) -> str:
    suggestions = difflib.get_close_matches(name, voices, n=5, cutoff=0.5)
    english = [v for v in voices if v.startswith("gmw/en")]
    shown = list(dict.fromkeys(suggestions + english))[:8]
    return f"unknown TTS voice {name!r}; available include {', '.join(shown)} ({len(voices)} voices in all)"


def _check_text(text: str) -> None:
    if not isinstance(text, str):
        raise SynthesisError(f"text to speak must be a str, not {type(text).__name__}")
    if not text.strip():
        # pyttsx3 answers empty text with a bare AssertionError deep in the worker
        raise SynthesisError("nothing to say: the text is empty")


def _check_rate(rate: int) -> None:
    if not isinstance(rate, int) or not MIN_RATE <= rate <= MAX_RATE:
        raise SynthesisError(f"speech rate {rate!r} outside espeak-ng's range {MIN_RATE}-{MAX_RATE} wpm")


def _is_usable(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        clip = validate_wav(path)
    except InvalidAudio as exc:
        log.warning("discarding damaged TTS cache entry: %s", exc)
        return False
    return clip.format.channels == 1


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _remove_stale_scratch(cache_dir: Path) -> None:
    """Drop scratch folders of synthesizers whose process no longer exists (crashes, kills)."""
    for folder in cache_dir.glob(f"{_SCRATCH_PREFIX}*"):
        try:
            pid = int(folder.name[len(_SCRATCH_PREFIX) :].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Slot:
    """The replaceable worker and scratch folder, kept apart from Synthesizer for weakref.finalize."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.worker: _Worker | None = None

    def drop_worker(self, kill: bool) -> None:
        worker, self.worker = self.worker, None
        if worker is None:
            return
        if kill:
            worker.kill()
        else:
            worker.stop()

    def shutdown(self) -> None:
        self.drop_worker(kill=False)
        shutil.rmtree(self.scratch, ignore_errors=True)


class Synthesizer:
    """Renders prompts with one voice and rate into a cache of trimmed, validated WAV files.

    The worker is started by the constructor, so a bad voice fails here rather than in the
    middle of a night. `timeout` bounds each render (not the worker start) and may be changed
    on a live instance.
    """

    def __init__(self, cache_dir: Path, voice: Voice, timeout: float = 15.0) -> None:
        _check_rate(voice.rate)
        self.cache_dir = Path(cache_dir)
        self.voice = voice
        self.timeout = timeout
        self._lock = threading.Lock()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_scratch(self.cache_dir)
        # Scratch lives in the cache folder: same file system as the cache, and inside the lab.
        scratch = Path(tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{os.getpid()}-", dir=self.cache_dir))
        self._slot = _Slot(scratch)
        self._finalizer = weakref.finalize(self, self._slot.shutdown)
        try:
            self._identity: dict[str, Any] = self._start_worker()
        except BaseException:
            self._finalizer()
            raise

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Synthesizer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    @property
    def worker_pid(self) -> int | None:
        worker = self._slot.worker
        return worker.process.pid if worker is not None and worker.process.is_alive() else None

    def _start_worker(self) -> dict[str, Any]:
        worker, (kind, payload) = _spawn(self.voice, self._slot.scratch)
        if kind != "ready":
            worker.stop()
            if kind == "unknown-voice":
                raise SynthesisError(_unknown_voice_message(self.voice.name, payload))
            raise SynthesisError(f"TTS worker failed to start: {payload}")
        if payload.get("configure_attempts", 1) > 1:
            log.info("espeak-ng needed %s attempts to take voice %s at rate %s",
                     payload["configure_attempts"], self.voice.name, self.voice.rate)
        self._slot.worker = worker
        return dict(payload)

    def _live_worker(self) -> _Worker:
        worker = self._slot.worker
        if worker is not None and worker.process.is_alive():
            return worker
        if worker is not None:
            log.warning("TTS worker %s died (exit code %s); starting a new one", worker.process.pid,
                        worker.process.exitcode)
            self._slot.drop_worker(kill=True)
        self._start_worker()
        assert self._slot.worker is not None
        return self._slot.worker

    # -- provenance and cache keys -------------------------------------------------------------

    def engine_description(self) -> dict[str, Any]:
        """What produced the audio, for the run log."""
        return {
            "engine": self._identity["engine"],
            "pyttsx3": self._identity["pyttsx3"],
            "espeak_ng": self._identity["espeak_ng"],
            "driver": self._identity["driver"],
            "voice": self.voice.name,
            "rate": self.voice.rate,
            "sample_rate": self._identity["sample_rate"],
            "output_rate": OUTPUT_RATE,
            "trim_threshold_dbfs": TRIM_THRESHOLD_DBFS,
            "trim_keep_s": TRIM_KEEP,
        }

    def cache_key(self, text: str) -> str:
        payload = {
            "schema": CACHE_SCHEMA,
            "text": text,
            "voice": self.voice.name,
            "rate": self.voice.rate,
            "engine": {k: self._identity[k] for k in ("engine", "pyttsx3", "espeak_ng", "driver")},
            "trim": [TRIM_THRESHOLD_DBFS, TRIM_KEEP],
        }
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()

    def cache_path(self, text: str) -> Path:
        key = self.cache_key(text)
        return self.cache_dir / key[:2] / f"{key}.wav"

    # -- rendering -----------------------------------------------------------------------------

    def render(self, text: str) -> Path:
        """Path of a cached, trimmed, validated mono 16-bit WAV of `text`, rendering it if needed."""
        _check_text(text)
        if self.closed:
            raise SynthesisError("synthesizer is closed")
        path = self.cache_path(text)
        if _is_usable(path):
            return path
        with self._lock:
            if _is_usable(path):  # another thread rendered it while we waited
                return path
            raw = self._slot.scratch / f"{path.stem}.wav"
            raw.parent.mkdir(parents=True, exist_ok=True)  # clearing the cache by hand removes it
            try:
                write_wav_atomic(path, self._render_checked(text, raw))
            finally:
                raw.unlink(missing_ok=True)
        return path

    def _render_checked(self, text: str, raw: Path, attempts: int = 3) -> Clip:
        """Render until the engine writes usable audio: under load it sometimes writes an empty file."""
        for attempt in range(1, attempts + 1):
            self._synthesize(text, raw)
            try:
                return self._finish(text, raw)
            except SynthesisError:
                if attempt == attempts:
                    raise
                log.info("empty render of %r, trying again", _short(text))
        raise AssertionError("unreachable")

    def render_clip(self, text: str) -> Clip:
        return read_wav(self.render(text))

    def render_many(
        self, texts: Iterable[str], on_progress: Callable[[int, int], None] | None = None
    ) -> dict[str, Path]:
        """Render every distinct text (e.g. a night's prompts up front); fails on the first error."""
        unique = list(dict.fromkeys(texts))
        for text in unique:
            _check_text(text)  # reject a bad list before spending time on the good part of it
        paths: dict[str, Path] = {}
        for done, text in enumerate(unique, start=1):
            paths[text] = self.render(text)
            if on_progress is not None:
                on_progress(done, len(unique))
        return paths

    def _synthesize(self, text: str, raw: Path) -> None:
        """Have the worker write `raw`; kill it if it misses the deadline."""
        worker = self._live_worker()
        started = time.monotonic()
        try:
            worker.conn.send((text, str(raw)))
            if not worker.conn.poll(self.timeout):
                self._slot.drop_worker(kill=True)
                raise SynthesisTimeout(
                    f"TTS engine did not finish {_short(text)!r} within {self.timeout:g} s; worker restarted"
                )
            status, problem = worker.conn.recv()
        except (EOFError, OSError) as exc:
            self._slot.drop_worker(kill=True)
            raise SynthesisError(f"TTS worker died while rendering {_short(text)!r}: {exc!r}") from exc
        if status != "ok":
            raise SynthesisError(f"could not render {_short(text)!r}: {problem}")
        log.debug("rendered %r in %.3f s", _short(text), time.monotonic() - started)

    def _finish(self, text: str, raw: Path) -> Clip:
        try:
            clip = validate_wav(raw)
        except InvalidAudio as exc:
            raise SynthesisError(f"engine wrote unusable audio for {_short(text)!r}: {exc}") from exc
        if clip.format.channels != 1:
            raise SynthesisError(f"engine wrote {clip.format.channels} channels for {_short(text)!r}")
        trimmed = trim_silence(clip, threshold_dbfs=TRIM_THRESHOLD_DBFS, keep=TRIM_KEEP)
        if trimmed.duration == 0:
            raise SynthesisError(f"{_short(text)!r} rendered as silence")
        return resample(trimmed, OUTPUT_RATE)
