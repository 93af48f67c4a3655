"""Speakers and microphones, chosen by device name, through sounddevice or pyaudio.

Both directions use PortAudio's callback streams that run for as long as the device is open:

* a `Speaker` plays silence when idle, so `play()` never pays for opening a stream, its first
  samples are never cut, and an idle gap is not an underflow;
* a `Microphone` is always recording into a queue of timestamped chunks, so recording has
  started long before a prompt ends and a quick reply is never missed.

Device indices change across replugs and reboots; names do not. `resolve_device` picks the device
whose name equals the query, else the only one containing it, and otherwise fails naming the
devices it saw.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from orchestrator.audio.clip import AudioFormat, Clip

T = TypeVar("T")

BACKENDS = ("sounddevice", "pyaudio")
BLOCK_SECONDS = 0.02
#: Output buffering asked of PortAudio. Playback end times are corrected for it; less of it lets
#: a busy two-core machine underrun, and an underrun stretches what the Echo hears.
SPEAKER_LATENCY = 0.06
#: Input buffering: every millisecond here is a millisecond later that a reply's end is noticed.
#: PortAudio's "low" (9 ms on PulseAudio) drives the sound server at a period of 2 ms, which
#: costs more CPU across many Echos than the 20 ms saved is worth.
MICROPHONE_LATENCY = 0.03


class DeviceError(RuntimeError):
    """A named device is missing, ambiguous, or stopped working."""


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    max_input_channels: int
    max_output_channels: int
    default_rate: float


@dataclass(frozen=True)
class Chunk:
    """Recorded samples and the monotonic time at which the first of them was captured."""

    pcm: bytes
    start: float
    format: AudioFormat

    @property
    def end(self) -> float:
        return self.start + self.format.seconds(len(self.pcm))


@dataclass(frozen=True)
class Playback:
    """When a clip left the speaker (monotonic seconds) and what went wrong while it played."""

    started: float
    ended: float
    underflows: int


def resolve_device(query: str, devices: list[DeviceInfo], kind: str) -> DeviceInfo:
    usable = [d for d in devices if (d.max_input_channels if kind == "input" else d.max_output_channels) > 0]
    exact = [d for d in usable if d.name == query]
    if len(exact) == 1:
        return exact[0]
    partial = [d for d in usable if query in d.name]
    if len(partial) == 1:
        return partial[0]
    names = ", ".join(d.name for d in usable) or "none"
    if not partial:
        raise DeviceError(f"no {kind} device named {query!r}; {kind} devices: {names}")
    raise DeviceError(f"{kind} device name {query!r} is ambiguous: {', '.join(d.name for d in partial)}")


# -- the shared callback logic ------------------------------------------------------------------


class _PlayQueue:
    """Feeds a speaker's callback: queued clip bytes, then silence."""

    def __init__(self, fmt: AudioFormat, output_latency: float) -> None:
        self.format = fmt
        self.output_latency = output_latency
        self._lock = threading.Lock()
        self._pending: deque[_Job] = deque()
        self.underflows = 0

    def submit(self, pcm: bytes) -> _Job:
        job = _Job(pcm)
        with self._lock:
            self._pending.append(job)
        return job

    def cancel(self) -> None:
        with self._lock:
            for job in self._pending:
                job.finish(time.monotonic())
            self._pending.clear()

    def fill(self, nbytes: int, underflow: bool) -> bytes:
        if underflow:
            self.underflows += 1
        out = bytearray()
        now = time.monotonic()
        with self._lock:
            while len(out) < nbytes and self._pending:
                job = self._pending[0]
                if job.started is None:
                    job.started = now + self.format.seconds(len(out)) + self.output_latency
                    job.underflows_at_start = self.underflows
                take = job.pcm[job.offset : job.offset + nbytes - len(out)]
                out += take
                job.offset += len(take)
                if job.offset >= len(job.pcm):
                    self._pending.popleft()
                    job.underflows = self.underflows - job.underflows_at_start
                    job.finish(now + self.format.seconds(len(out)) + self.output_latency)
        out += bytes(nbytes - len(out))
        return bytes(out)


class _Job:
    def __init__(self, pcm: bytes) -> None:
        self.pcm = pcm
        self.offset = 0
        self.started: float | None = None
        self.ended: float | None = None
        self.underflows = 0
        self.underflows_at_start = 0
        self.done = threading.Event()

    def finish(self, when: float) -> None:
        self.ended = when
        self.done.set()


class Speaker:
    """An output device that is always running; `play()` blocks until the clip has been heard."""

    def __init__(self, stream: Any, play_queue: _PlayQueue, name: str) -> None:
        self._stream = stream
        self._queue = play_queue
        self.name = name

    @property
    def format(self) -> AudioFormat:
        return self._queue.format

    def play(self, clip: Clip, timeout: float | None = None) -> Playback:
        if clip.format != self.format:
            raise ValueError(f"{self.name} plays {self.format}, got a clip in {clip.format}")
        job = self._queue.submit(clip.pcm)
        limit = timeout if timeout is not None else clip.duration + 5.0
        if not job.done.wait(limit):
            self._queue.cancel()
            raise DeviceError(f"{self.name}: playback did not finish within {limit:.1f} s (device gone?)")
        # Wait out the output latency so "ended" is when the last sample left the speaker.
        delay = (job.ended or 0.0) - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return Playback(job.started or job.ended or time.monotonic(), job.ended or time.monotonic(), job.underflows)

    def stop(self) -> None:
        """Drop whatever is queued, e.g. to cut a stream short."""
        self._queue.cancel()

    @property
    def underflows(self) -> int:
        return self._queue.underflows

    def close(self) -> None:
        self._queue.cancel()
        self._stream.close()

    def __enter__(self) -> Speaker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Microphone:
    """An input device that is always recording into a queue of `Chunk`s."""

    def __init__(self, stream: Any, fmt: AudioFormat, name: str, chunks: queue.Queue[Chunk]) -> None:
        self._stream = stream
        self.format = fmt
        self.name = name
        self._chunks = chunks
        self.overflows = 0
        self.last_chunk_at = time.monotonic()

    def read(self, timeout: float = 1.0) -> Chunk:
        try:
            chunk = self._chunks.get(timeout=timeout)
        except queue.Empty:
            raise DeviceError(f"{self.name}: no audio for {timeout:.1f} s (device gone?)") from None
        self.last_chunk_at = time.monotonic()
        return chunk

    def drain(self) -> None:
        self.take_all()

    def take_all(self) -> list[Chunk]:
        """Every chunk recorded since the last read, without waiting for more."""
        chunks = []
        while True:
            try:
                chunks.append(self._chunks.get_nowait())
            except queue.Empty:
                return chunks

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> Microphone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _push_chunk(mic_state: dict[str, Any], pcm: bytes, overflow: bool) -> None:
    fmt: AudioFormat = mic_state["format"]
    now = time.monotonic()
    mic = mic_state.get("mic")
    if overflow and mic is not None:
        mic.overflows += 1
    mic_state["queue"].put(Chunk(pcm, now - fmt.seconds(len(pcm)) - mic_state["latency"], fmt))


def redirect_native_stderr(path: Path) -> None:
    """Send this process's C-level stderr (ALSA, JACK, Kaldi) to a log file, for good.

    Worker processes call this first: what the native libraries print is evidence for the
    operator's log folder, not noise for the progress display.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence what ALSA and JACK print from C while PortAudio probes every host API.

    Those lines ("ALSA lib pcm.c: Unknown PCM cards.pcm.rear", "jack server is not running")
    describe devices the lab never uses and would bury the operator's progress output.
    """
    os.environ.setdefault("JACK_NO_START_SERVER", "1")
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# -- backends -----------------------------------------------------------------------------------


class AudioBackend(Protocol):
    name: str

    def devices(self) -> list[DeviceInfo]: ...

    def open_speaker(self, device: str, fmt: AudioFormat, latency: float = SPEAKER_LATENCY) -> Speaker: ...

    def open_microphone(self, device: str, fmt: AudioFormat, latency: float = MICROPHONE_LATENCY) -> Microphone: ...


class SoundDeviceBackend:
    name = "sounddevice"

    def __init__(self) -> None:
        with quiet_native_stderr():
            import sounddevice  # lazily: PortAudio reads the ALSA config once, at initialisation

        self._sd = sounddevice

    def devices(self) -> list[DeviceInfo]:
        return [
            DeviceInfo(i, d["name"], d["max_input_channels"], d["max_output_channels"], d["default_samplerate"])
            for i, d in enumerate(self._sd.query_devices())
        ]

    def open_speaker(self, device: str, fmt: AudioFormat, latency: float = SPEAKER_LATENCY) -> Speaker:
        info = resolve_device(device, self.devices(), "output")
        play_queue = _PlayQueue(fmt, 0.0)

        def callback(outdata: Any, frames: int, _time: Any, status: Any) -> None:
            outdata[:] = play_queue.fill(frames * fmt.width * fmt.channels, bool(status.output_underflow))

        stream = self._sd.RawOutputStream(
            device=info.index, samplerate=fmt.rate, channels=fmt.channels, dtype="int16",
            blocksize=int(fmt.rate * BLOCK_SECONDS), latency=latency, callback=callback,
        )
        play_queue.output_latency = float(stream.latency)
        stream.start()
        return Speaker(stream, play_queue, info.name)

    def open_microphone(self, device: str, fmt: AudioFormat, latency: float = MICROPHONE_LATENCY) -> Microphone:
        info = resolve_device(device, self.devices(), "input")
        chunks: queue.Queue[Chunk] = queue.Queue()
        state: dict[str, Any] = {"format": fmt, "queue": chunks, "latency": 0.0}

        def callback(indata: Any, _frames: int, _time: Any, status: Any) -> None:
            _push_chunk(state, bytes(indata), bool(status.input_overflow))

        stream = self._sd.RawInputStream(
            device=info.index, samplerate=fmt.rate, channels=fmt.channels, dtype="int16",
            blocksize=int(fmt.rate * BLOCK_SECONDS), latency=latency, callback=callback,
        )
        state["latency"] = float(stream.latency)
        mic = Microphone(stream, fmt, info.name, chunks)
        state["mic"] = mic
        stream.start()
        return mic


class PyAudioBackend:
    name = "pyaudio"

    def __init__(self) -> None:
        import pyaudio

        self._pa_module = pyaudio
        with quiet_native_stderr():
            self._pa = pyaudio.PyAudio()

    def devices(self) -> list[DeviceInfo]:
        infos = (self._pa.get_device_info_by_index(i) for i in range(self._pa.get_device_count()))
        return [
            DeviceInfo(int(d["index"]), d["name"], int(d["maxInputChannels"]), int(d["maxOutputChannels"]),
                       float(d["defaultSampleRate"]))
            for d in infos
        ]

    def open_speaker(self, device: str, fmt: AudioFormat, latency: float = SPEAKER_LATENCY) -> Speaker:
        del latency  # pyaudio has no way to ask for it; PortAudio picks its default
        pa = self._pa_module
        info = resolve_device(device, self.devices(), "output")
        play_queue = _PlayQueue(fmt, 0.0)

        def callback(_in: Any, frames: int, _time: Any, status: int) -> tuple[bytes, int]:
            data = play_queue.fill(frames * fmt.width * fmt.channels, bool(status & pa.paOutputUnderflow))
            return data, pa.paContinue

        stream = self._pa.open(
            format=pa.paInt16, channels=fmt.channels, rate=fmt.rate, output=True,
            output_device_index=info.index, frames_per_buffer=int(fmt.rate * BLOCK_SECONDS),
            stream_callback=callback,
        )
        play_queue.output_latency = float(stream.get_output_latency())
        return Speaker(_PyAudioStream(stream), play_queue, info.name)

    def open_microphone(self, device: str, fmt: AudioFormat, latency: float = MICROPHONE_LATENCY) -> Microphone:
        del latency  # as for the speaker: pyaudio cannot ask for it
        pa = self._pa_module
        info = resolve_device(device, self.devices(), "input")
        chunks: queue.Queue[Chunk] = queue.Queue()
        state: dict[str, Any] = {"format": fmt, "queue": chunks, "latency": 0.0}

        def callback(in_data: bytes, _frames: int, _time: Any, status: int) -> tuple[None, int]:
            _push_chunk(state, in_data, bool(status & pa.paInputOverflow))
            return None, pa.paContinue

        stream = self._pa.open(
            format=pa.paInt16, channels=fmt.channels, rate=fmt.rate, input=True,
            input_device_index=info.index, frames_per_buffer=int(fmt.rate * BLOCK_SECONDS),
            stream_callback=callback,
        )
        state["latency"] = float(stream.get_input_latency())
        mic = Microphone(_PyAudioStream(stream), fmt, info.name, chunks)
        state["mic"] = mic
        return mic

    def terminate(self) -> None:
        self._pa.terminate()


class _PyAudioStream:
    """Gives a pyaudio stream the `close()` that sounddevice streams have."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def close(self) -> None:
        self._stream.stop_stream()
        self._stream.close()


def open_backend(name: str) -> AudioBackend:
    if name == "sounddevice":
        return SoundDeviceBackend()
    if name == "pyaudio":
        return PyAudioBackend()
    raise DeviceError(f"unknown audio backend {name!r}; choose one of {', '.join(BACKENDS)}")



def in_fresh_portaudio(func: Callable[..., T], *args: Any) -> T:
    """`func(*args)` in a short-lived child process, and its result.

    PortAudio fixes its device list when it initialises: a long-running scheduler must see
    tonight's devices, not those of the day it started.
    """
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(func, args)


def check_devices(wanted: Sequence[tuple[str, str, str]]) -> list[str]:
    """Which of (backend, device name, "input"|"output") cannot be opened by name, and why."""
    return in_fresh_portaudio(_device_problems, wanted)


def _device_problems(wanted: list[tuple[str, str, str]]) -> list[str]:
    problems = []
    listings: dict[str, list[DeviceInfo]] = {}
    for backend, name, kind in wanted:
        if backend not in listings:
            listings[backend] = open_backend(backend).devices()
        try:
            resolve_device(name, listings[backend], kind)
        except DeviceError as exc:
            problems.append(str(exc))
    return problems
