"""Local speech-to-text for the Echo's replies, isolated in a server process.

Why a separate process: Kaldi (inside Vosk) reports some failures by aborting the whole process
(a bit-rotted graph file trips an assertion on the first decode), and recognizers' memory grows
over long runs. A night of recordings must survive both, so one spawned *server process* owns the
model and the decoding; the orchestrator talks to it over a Unix socket and, if it dies, gets a
`TranscriptionError`, calls `TranscriptionServer.ensure_running()` and carries on.

The server knows its recognizer only through the engine seam (engine.py): Vosk or pocketsphinx,
whichever `SpeechModel` names. Each connection gets its own recognizer, kept for the life of the
connection and reused across utterances (a fresh one is slower on its first utterances); idle warm
ones are kept for reconnecting clients.

Audio flows while it is recorded: `Stream.feed()` hands 16 kHz 16-bit mono chunks to a sender
thread and returns at once, the server decodes them as they arrive, and `Stream.finish()` only
waits for the tail. `Transcript.ready_delay` measures that wait; `Transcript.rtf` the decoding
cost (decode seconds per audio second).

Typical use::

    check(model)                           # cheap: files present, before the night starts
    with TranscriptionServer(model, sock) as server:
        client = server.client()
        client.prepare()                   # warm a recognizer while the Echo is still talking
        stream = client.stream()
        for chunk in recorder: stream.feed(chunk)
        transcript = stream.finish()

`load_check(model)` goes further than `check`: it really loads the model, creates a recognizer and
decodes a probe in a throw-away server, so a corrupt model is a `ModelError` instead of a dead
orchestrator.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any, Self

import numpy as np

from orchestrator.asr.engine import ModelError, Recognizer, SpeechModel, check, engine_for
from orchestrator.audio.clip import MIC_FORMAT, Clip
from orchestrator.core.processes import name_this_process

#: The only rate the server decodes at; the recorder delivers exactly this (see `audio.MIC_FORMAT`).
SAMPLE_RATE = MIC_FORMAT.rate

# Wire protocol: every message is a bytes frame whose first byte says what it is. Plain bytes and
# JSON, never pickles, so a peer can at worst send bad audio, not code.
_AUDIO = b"A"  # followed by PCM
_FINISH = b"F"  # end of utterance: reply with one JSON transcript
_CLOSE = object()  # client-internal sentinel: stop the sender thread

#: Coalesce queued chunks up to this size when the sender falls behind (fewer, larger writes).
_MAX_FRAME = 256 * 1024

#: Unix socket paths are limited to 108 bytes on Linux (sun_path); longer ones fail obscurely.
_MAX_SOCKET_PATH = 107

#: Seconds of noise decoded by every new recognizer before it serves audio (unless the server was
#: given real speech for that): pays part of the lazy graph construction up front, while the
#: orchestrator is still busy speaking to the Echo.
_WARMUP_SECONDS = 1.0

#: How often a client waiting for a restarted server tries to connect again.
_RECONNECT_POLL = 0.2


class TranscriptionError(RuntimeError):
    """No transcript: the server died, timed out or failed on this utterance. Retry on a new stream."""


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Word:
    word: str
    start: float  # seconds from the start of this utterance's audio
    end: float
    conf: float  # 0..1, Kaldi MBR posterior of the word


@dataclass(frozen=True)
class Transcript:
    text: str
    words: list[Word]
    confidence: float | None  # mean word confidence; None when nothing was recognised
    audio_seconds: float
    decode_seconds: float  # server time spent inside the recognizer for this utterance
    ready_delay: float  # seconds from finish() being called to this transcript arriving

    @property
    def rtf(self) -> float | None:
        """Real-time factor: decode seconds per audio second (below 1 keeps up with recording)."""
        if self.audio_seconds <= 0:
            return None
        return self.decode_seconds / self.audio_seconds

    def words_json(self) -> str:
        """Word timings and confidences as JSON for the interaction log."""
        return json.dumps([asdict(w) for w in self.words], ensure_ascii=False)


def _mean_confidence(words: list[Word]) -> float | None:
    return sum(w.conf for w in words) / len(words) if words else None


# --------------------------------------------------------------------------------------------
# Model checks
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelLoadReport:
    model: SpeechModel
    version: str  # the engine library's name and version, for the log
    load_seconds: float  # Model() plus one recognizer and a probe decode
    rss_bytes: int | None  # resident memory of the process holding the loaded model


def load_check(model: SpeechModel, timeout: float = 180.0) -> ModelLoadReport:
    """Really load the model, create a recognizer and decode a probe, in a throw-away process.

    Catches what `check` cannot: for Vosk a corrupt final.mdl ("Failed to create a model"), a
    truncated HCLr.fst (fails only when a recognizer is created) and graph corruption that makes
    Kaldi abort the process on the first decode. All become ModelError here; the caller's process
    is never at risk. Costs a full model load (seconds, hundreds of MB).
    """
    with (
        tempfile.TemporaryDirectory(prefix="asr-check-") as tmp,
        TranscriptionServer(model, Path(tmp) / "s.sock", start_timeout=timeout) as server,
    ):
        assert server.report is not None
        return server.report


# --------------------------------------------------------------------------------------------
# Server process
# --------------------------------------------------------------------------------------------


def _rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None  # not Linux, or the process is gone


@contextmanager
def _stderr_into(path: str) -> Iterator[None]:
    """Send fd 2 to a file: Kaldi writes its reasons to stderr, also right before an abort."""
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _noise_warmup() -> bytes:
    # Fixed-seed noise: expands part of the graph (speech expands more), identical on every run.
    samples = np.random.default_rng(0).normal(0, 2000, int(_WARMUP_SECONDS * SAMPLE_RATE))
    return samples.clip(-32768, 32767).astype(np.int16).tobytes()


class _Decoder:
    """One engine recognizer and the bookkeeping every utterance gets: audio length, decode time, errors."""

    def __init__(self, recognizer: Recognizer) -> None:
        self.recognizer = recognizer
        self.samples = 0
        self.decode_seconds = 0.0
        self.error: str | None = None

    def warm_up(self, pcm: bytes) -> None:
        self.accept(pcm)
        self.finish()

    def accept(self, pcm: bytes) -> None:
        if self.error:
            return  # this utterance is lost; keep draining its audio until finish
        started = time.perf_counter()
        try:
            self.recognizer.accept(pcm)
        except Exception as exc:  # noqa: BLE001 - vosk raises a bare Exception("Failed to process waveform")
            self.error = f"decoding failed: {exc}"
        self.decode_seconds += time.perf_counter() - started
        self.samples += len(pcm) // MIC_FORMAT.width

    def finish(self) -> dict[str, Any]:
        started = time.perf_counter()
        reply: dict[str, Any] = {"audio_seconds": self.samples / SAMPLE_RATE}
        try:
            decoded = self.recognizer.finish()
            reply |= {"text": decoded.text, "words": [list(w) for w in decoded.words]}
        except Exception as exc:  # noqa: BLE001 - an engine's failure is this utterance's, not the server's
            self.error = self.error or f"decoding failed: {exc}"
        reply["decode_seconds"] = self.decode_seconds + time.perf_counter() - started
        if self.error:
            reply = {k: v for k, v in reply.items() if k not in ("text", "words")} | {"error": self.error}
        self.samples, self.decode_seconds = 0, 0.0
        return reply


class _RecognizerPool:
    """Warm recognizers handed to connections and taken back when they close.

    A recognizer is made only when every one is busy, and kept while it is healthy, so the pool
    holds as many as the most replies ever decoded at once (about one per Echo). A pocketsphinx
    decoder is about 80 MB, and the C heap keeps most of a freed one: dropping the recognizers
    over a fixed number and making them again each night let the server creep up night after
    night in a soak.
    """

    def __init__(self, model: Any, grammar: list[str] | None, warmup_pcm: bytes | None) -> None:
        self.model = model
        self.grammar = grammar
        self.warmup_pcm = warmup_pcm or _noise_warmup()
        self.spares: list[_Decoder] = []
        self.lock = threading.Lock()

    def new(self) -> _Decoder:
        decoder = _Decoder(self.model.recognizer(self.grammar))
        decoder.warm_up(self.warmup_pcm)
        return decoder

    def take(self) -> _Decoder:
        with self.lock:
            if self.spares:
                return self.spares.pop()
        return self.new()

    def give_back(self, decoder: _Decoder) -> None:
        decoder.finish()  # drop a half utterance left by a client that went away
        if decoder.error:
            return  # state unknown: let it go rather than reuse it
        with self.lock:
            self.spares.append(decoder)


def _serve_connection(conn: Connection, pool: _RecognizerPool) -> None:
    try:
        decoder = pool.take()
    except Exception:  # the client sees EOF and reports a TranscriptionError
        conn.close()
        raise
    try:
        while True:
            try:
                frame = conn.recv_bytes()
            except (EOFError, OSError):
                break  # client closed or died
            kind, payload = frame[:1], frame[1:]
            if kind == _AUDIO:
                decoder.accept(payload)
            elif kind == _FINISH:
                reply = decoder.finish()
                if "error" in reply:
                    decoder = pool.new()  # don't trust a failed one
                try:
                    conn.send_bytes(json.dumps(reply, ensure_ascii=False).encode())
                except OSError:
                    break
    finally:
        conn.close()
        pool.give_back(decoder)


def _watch_parent(control: Connection, socket_path: str) -> None:
    """Exit when told to, or when the orchestrator is gone (its end of the pipe closes).

    Without this a killed orchestrator would leave a 500 MB server behind every night.
    """
    try:
        control.recv()
    except (EOFError, OSError):
        pass
    try:
        os.unlink(socket_path)
    except OSError:
        pass
    # _exit: decoding threads may still be inside Kaldi; a normal interpreter shutdown would
    # free the model under them.
    os._exit(0)


def _server_main(
    model: SpeechModel,
    socket_path: str,
    authkey: bytes,
    grammar: list[str] | None,
    warmup_pcm: bytes | None,
    load_log: str,
    control: Connection,
) -> None:
    """Entry point of the spawned server process."""
    name_this_process()
    started = time.perf_counter()
    with _stderr_into(load_log):
        try:
            engine = engine_for(model)
            pool = _RecognizerPool(engine.load(model.path), grammar, warmup_pcm)
            # A probe recognizer: truncated graphs fail here, bit-rotted ones abort here, before
            # the orchestrator is told the server is ready. It becomes the first spare.
            pool.give_back(pool.take())
        except Exception as exc:  # noqa: BLE001 - vosk raises bare Exceptions ("Failed to create a model")
            control.send(("error", str(exc)))
            return
    load_seconds = time.perf_counter() - started
    version = engine.version()
    if os.path.exists(socket_path):
        os.unlink(socket_path)  # left by a server that was killed
    # Backlog: several persona workers may connect at once at the start of a night.
    listener = Listener(socket_path, family="AF_UNIX", backlog=16, authkey=authkey)
    threading.Thread(target=_watch_parent, args=(control, socket_path), daemon=True).start()
    control.send(("ready", {"load_seconds": load_seconds, "rss_bytes": _rss_bytes(os.getpid()), "version": version}))
    while True:
        try:
            conn = listener.accept()
        except (multiprocessing.AuthenticationError, OSError):
            continue  # a peer without the key, or one that hung up during the handshake
        threading.Thread(target=_serve_connection, args=(conn, pool), daemon=True).start()


def _tail(path: str, limit: int = 1500) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip()
    except OSError:
        return ""
    return text[-limit:]


class TranscriptionServer:
    """A spawned process holding one speech model and decoding for any number of clients."""

    def __init__(
        self,
        model: SpeechModel,
        socket_path: Path,
        grammar: list[str] | None = None,
        authkey: bytes | None = None,
        start_timeout: float = 180.0,
        warmup: Clip | None = None,
    ) -> None:
        self.model = model
        self.socket_path = Path(socket_path)
        # A grammar restricts decoding to the words of these phrases (lookahead models only); where
        # the model knows "[unk]", adding it lets other speech through as [unk] instead of forcing
        # it onto a phrase. Words missing from the model's vocabulary are dropped with a warning.
        self.grammar = grammar
        self.authkey = authkey if authkey is not None else os.urandom(32)
        # Speech like what will be decoded (e.g. a rendered command) warms a new recognizer's
        # graph far better than the default noise: its first utterances decode faster.
        if warmup is not None and warmup.format != MIC_FORMAT:
            raise ValueError(f"warm-up audio must be {MIC_FORMAT}, not {warmup.format}")
        self.warmup = warmup
        self.start_timeout = start_timeout
        self.report: ModelLoadReport | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._control: Connection | None = None
        self._lock = threading.Lock()

    # ---- lifecycle

    def start(self) -> ModelLoadReport:
        """Start the server and return once the model is loaded and probed; ModelError otherwise."""
        with self._lock:
            if self.running:
                raise RuntimeError("transcription server already running")
            return self._start()

    def _start(self) -> ModelLoadReport:
        check(self.model)
        if len(os.fsencode(self.socket_path)) > _MAX_SOCKET_PATH:
            raise ValueError(
                f"socket path too long for a Unix socket ({_MAX_SOCKET_PATH} bytes max): {self.socket_path}"
            )
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        ctx = multiprocessing.get_context("spawn")  # fork would copy the caller's threads and locks
        control, child_end = ctx.Pipe()
        fd, load_log = tempfile.mkstemp(prefix="asr-load-", suffix=".log")
        os.close(fd)
        args = (
            self.model,
            str(self.socket_path),
            self.authkey,
            self.grammar,
            self.warmup.pcm if self.warmup else None,
            load_log,
            child_end,
        )
        process = ctx.Process(target=_server_main, args=args, name="asr-server", daemon=True)
        process.start()
        child_end.close()  # so our end sees EOF if the child dies
        try:
            kind, info = self._wait_ready(process, control, load_log)
            if kind == "error":
                detail = _tail(load_log)
                raise ModelError(
                    f"{self.model.engine} could not load model {self.model.path}: {info}"
                    + (f"\n{detail}" if detail else "")
                )
        except BaseException:
            control.close()
            _end_process(process)
            raise
        finally:
            os.unlink(load_log)
        self._process, self._control = process, control
        self.report = ModelLoadReport(self.model, info["version"], info["load_seconds"], info["rss_bytes"])
        return self.report

    def _wait_ready(
        self, process: multiprocessing.process.BaseProcess, control: Connection, load_log: str
    ) -> tuple[str, Any]:
        if not control.poll(self.start_timeout):
            raise ModelError(f"speech model {self.model} did not load within {self.start_timeout:.0f} s")
        try:
            kind, info = control.recv()
            return str(kind), info
        except (EOFError, OSError):
            process.join(2)
            detail = _tail(load_log)
            raise ModelError(
                f"the process loading speech model {self.model} died (exit code {process.exitcode}); "
                "the model files are probably corrupt" + (f":\n{detail}" if detail else "")
            ) from None

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stop(timeout)

    def _stop(self, timeout: float) -> None:
        process, control = self._process, self._control
        self._process = self._control = None
        if control is not None:
            try:
                control.send("stop")
            except OSError:
                pass  # already dead
            control.close()
        if process is not None:
            _end_process(process, timeout)
        if process is not None and self.socket_path.exists():
            self.socket_path.unlink(missing_ok=True)

    def restart(self) -> ModelLoadReport:
        """Stop and start again: for a server that is alive but hung (finish() keeps timing out)."""
        with self._lock:
            self._stop(5.0)
            return self._start()

    def ensure_running(self, max_rss_bytes: int | None = None) -> bool:
        """(Re)start the server if it died, or if it grew beyond `max_rss_bytes`. True if it started.

        Clients need no restart: their next `stream()` connects to the new server.
        """
        with self._lock:
            if self.running:
                rss = self.rss_bytes()
                if max_rss_bytes is None or rss is None or rss <= max_rss_bytes:
                    return False
            self._stop(5.0)
            self._start()
            return True

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def rss_bytes(self) -> int | None:
        """Resident memory of the server now (recognizers grow over long runs: see ensure_running)."""
        pid = self.pid
        return _rss_bytes(pid) if pid is not None and self.running else None

    def client(self) -> TranscriptionClient:
        return TranscriptionClient(self.socket_path, self.authkey)

    def warm(self, count: int, timeout: float = 300.0) -> None:
        """Have `count` recognizers made and warmed now, then kept as spares for the clients to come.

        Each connection gets a recognizer of its own, made when it connects; pocketsphinx makes
        them one after another under the GIL. Without this, every Echo of a night would wait for
        its recognizer on its first reply, all at the same moment.
        """
        with self.client() as client:
            streams = [client.stream() for _ in range(count)]  # all open at once: one recognizer each
            for stream in streams:
                stream.finish(timeout=timeout)  # an empty utterance: answered once its recognizer is ready

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _end_process(process: multiprocessing.process.BaseProcess, timeout: float = 5.0) -> None:
    process.join(timeout)
    if process.is_alive():
        process.terminate()
        process.join(2)
    if process.is_alive():
        process.kill()
        process.join(2)


# --------------------------------------------------------------------------------------------
# Client side
# --------------------------------------------------------------------------------------------


class _Link:
    """One connection to the server (one recognizer there) plus the thread that writes to it.

    Writing happens on the sender thread so `feed()` never blocks the recording loop, even when
    the server is slow or stopped; reading happens in the caller's thread, in `finish()`.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.sender = threading.Thread(target=self._send_loop, name="transcribe-sender", daemon=True)
        self.sender.start()

    def post(self, frame: bytes) -> None:
        self.outbox.put(frame)

    def _send_loop(self) -> None:
        held: Any = None
        while True:
            frame = held if held is not None else self.outbox.get()
            held = None
            if frame is _CLOSE:
                break
            if frame[:1] == _AUDIO:
                frame, held = self._coalesce(frame)
            if self.error is None:
                try:
                    self.conn.send_bytes(frame)
                except (OSError, ValueError) as exc:  # broken pipe, reset: the server is gone
                    self.error = exc
        self.conn.close()  # only this thread writes, so only this thread may close

    def _coalesce(self, first: bytes) -> tuple[bytes, Any]:
        """Join audio frames already queued, returning the joined frame and any non-audio one."""
        parts, size = [first], len(first)
        while size < _MAX_FRAME:
            try:
                frame = self.outbox.get_nowait()
            except queue.Empty:
                return b"".join(parts), None
            if frame is _CLOSE or frame[:1] != _AUDIO:
                return b"".join(parts), frame
            parts.append(frame[1:])
            size += len(frame) - 1
        return b"".join(parts), None

    def healthy(self) -> bool:
        # An idle connection has nothing to read; readable means EOF (the server went away).
        try:
            return self.error is None and not self.conn.poll(0)
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        self.outbox.put(_CLOSE)


class Stream:
    """One utterance on its way to the server. Feed chunks as they are recorded, then finish()."""

    def __init__(self, link: _Link, release: Callable[[_Link], None]) -> None:
        self._link: _Link | None = link
        self._release = release
        self._bytes = 0

    def feed(self, pcm: bytes) -> None:
        """Queue a chunk of 16 kHz 16-bit mono PCM; returns immediately.

        Never raises for server trouble: the recording must go on (the WAV is the record), and
        the error surfaces in finish(). `error` tells a caller who wants to know earlier.
        """
        if self._link is None:
            raise RuntimeError("stream already finished")
        if len(pcm) % MIC_FORMAT.width:
            raise ValueError(f"PCM chunk of {len(pcm)} bytes is not whole 16-bit samples")
        if pcm:
            self._link.post(_AUDIO + bytes(pcm))
            self._bytes += len(pcm)

    @property
    def audio_seconds(self) -> float:
        return MIC_FORMAT.seconds(self._bytes)

    @property
    def error(self) -> BaseException | None:
        return self._link.error if self._link is not None else None

    def finish(self, timeout: float = 10.0) -> Transcript:
        """Wait for the transcript of everything fed; TranscriptionError if there is none."""
        link = self._take_link()
        asked = time.monotonic()
        link.post(_FINISH)
        try:
            reply = self._receive(link, timeout)
        except BaseException:
            link.close()  # state unknown: never reuse this connection
            raise
        ready_delay = time.monotonic() - asked
        self._release(link)
        if "error" in reply:
            raise TranscriptionError(f"transcription failed: {reply['error']}")
        words = [Word(w, float(s), float(e), float(c)) for w, s, e, c in reply["words"]]
        return Transcript(
            text=reply["text"],
            words=words,
            confidence=_mean_confidence(words),
            audio_seconds=reply["audio_seconds"],
            decode_seconds=reply["decode_seconds"],
            ready_delay=ready_delay,
        )

    def abort(self) -> None:
        """Give up on this utterance (no transcript wanted); the connection is dropped."""
        if self._link is not None:
            self._take_link().close()

    def _take_link(self) -> _Link:
        if self._link is None:
            raise RuntimeError("stream already finished")
        link, self._link = self._link, None
        return link

    @staticmethod
    def _receive(link: _Link, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        # Poll in short steps so a send failure (the server died) is reported promptly.
        while True:
            if link.error is not None:
                raise TranscriptionError(f"transcription server connection lost: {link.error!r}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TranscriptionError(f"no transcript within {timeout:.1f} s")
            try:
                if link.conn.poll(min(remaining, 0.05)):
                    reply: dict[str, Any] = json.loads(link.conn.recv_bytes())
                    return reply
            except (EOFError, OSError) as exc:
                raise TranscriptionError(f"transcription server connection lost: {exc!r}") from exc

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._link is not None:
            self.abort()


class TranscriptionClient:
    """Opens streams to a TranscriptionServer; thread-safe, keeps finished connections warm."""

    def __init__(self, socket_path: Path, authkey: bytes, reconnect_seconds: float = 0.0) -> None:
        self.socket_path = Path(socket_path)
        self.authkey = authkey
        # How long a new connection waits for a server that is down: its owner may be restarting it.
        self.reconnect_seconds = reconnect_seconds
        self._idle: list[_Link] = []
        self._lock = threading.Lock()

    def prepare(self, count: int = 1) -> None:
        """Open connections now so the server warms their recognizers before audio arrives."""
        links = [self._connect() for _ in range(count)]
        with self._lock:
            self._idle.extend(links)

    def stream(self) -> Stream:
        """A new utterance; reuses an idle connection, else connects (TranscriptionError if down)."""
        return Stream(self._take_idle() or self._connect(), self._release)

    def _take_idle(self) -> _Link | None:
        with self._lock:
            while self._idle:
                link = self._idle.pop()
                if link.healthy():
                    return link
                link.close()  # its server died or was restarted since
        return None

    def _release(self, link: _Link) -> None:
        with self._lock:
            self._idle.append(link)

    def _connect(self) -> _Link:
        deadline = time.monotonic() + self.reconnect_seconds
        while True:
            try:
                return _Link(Client(str(self.socket_path), family="AF_UNIX", authkey=self.authkey))
            except (OSError, EOFError, multiprocessing.AuthenticationError) as exc:
                if time.monotonic() >= deadline:
                    raise TranscriptionError(
                        f"transcription server not reachable at {self.socket_path}: {exc!r}"
                    ) from exc
            time.sleep(_RECONNECT_POLL)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for link in idle:
            link.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
