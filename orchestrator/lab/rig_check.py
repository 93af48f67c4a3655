"""The rig self-test: does each Echo's microphone hear its own speaker, and no other room's?

Each probed Echo's speaker plays a short tone at a frequency of its own while every microphone of
the lab listens. A tone of known frequency is measured by correlation, far below the level of
speech or fan noise, and distinct frequencies keep two checks that overlap (two rooms starting
their nights at once) from taking each other's probes for their own.

The verdict on a probed Echo is

    ok            its own microphone heard the probe at `min_level` dBFS or louder, `min_snr` dB
                  above that microphone's noise, and no microphone of another room heard it at
                  `max_crosstalk` dBFS or louder;
    silent        its own microphone did not hear it (speaker off, muted, turned away, unplugged);
    crosstalk     a microphone of another room did: that room's recordings, and its Echo, would
                  hear this Echo's prompts;
    device_error  its speaker or microphone could not be opened.

Echos of one room hear each other by design (they never speak at once); their levels are stored
but judge nothing. The measuring happens in a short-lived child process (`in_fresh_portaudio`): a
scheduler running for weeks sees tonight's devices.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy.engine import Engine

from orchestrator import log
from orchestrator.audio.clip import MIC_FORMAT, AudioFormat, Clip
from orchestrator.audio.devices import (
    AudioBackend,
    Chunk,
    Microphone,
    Speaker,
    in_fresh_portaudio,
    open_backend,
    quiet_native_stderr,
)
from orchestrator.lab.config import EchoConfig, LabConfig, RigCheck
from orchestrator.lab.hooks import hooks_for

PROBE_FORMAT = MIC_FORMAT
PROBE_SECONDS = 0.4
FADE_SECONDS = 0.01
#: Probe frequencies: distinct per Echo, inside what a small speaker and a 16 kHz microphone carry.
FIRST_PROBE_HZ = 700.0
PROBE_STEP_HZ = 230.0
HIGHEST_PROBE_HZ = 6500.0
#: Correlation frames: 10 Hz wide, so neighbouring probes (230 Hz apart) do not leak into each other.
FRAME_SECONDS = 0.1
NOISE_SECONDS = 0.3
#: After the last sample has left the speaker: room echo, the loopback and the microphone's buffer.
TAIL_SECONDS = 0.5
SETTLE_SECONDS = 0.3
#: Nothing here needs a quick reaction: deep buffers spare a busy machine underruns.
DEVICE_LATENCY = 0.2
SILENCE_DBFS = -120.0
FULL_SCALE = 32767.0


@dataclass(frozen=True)
class Heard:
    """How loud the probe of `speaker`'s Echo was on `microphone`'s, against that microphone's noise."""

    speaker: str
    microphone: str
    level_dbfs: float
    noise_dbfs: float

    @property
    def snr_db(self) -> float:
        return self.level_dbfs - self.noise_dbfs


@dataclass(frozen=True)
class Verdict:
    echo: str
    probe_hz: float
    status: log.RigVerdict
    level_dbfs: float | None = None
    noise_dbfs: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class RigReport:
    check_id: int | None
    verdicts: list[Verdict]
    heard: list[Heard]

    @property
    def passed(self) -> bool:
        return all(v.ok for v in self.verdicts)

    def failures(self) -> dict[str, Verdict]:
        return {v.echo: v for v in self.verdicts if not v.ok}


# -- the probe and its measurement ----------------------------------------------------------------


def probe_frequency(lab: LabConfig, echo: str) -> float:
    """The probe of the n-th Echo of the lab file: 700 Hz, 930 Hz, …, wrapping below 6.5 kHz."""
    index = [e.name for e in lab.echos].index(echo)
    steps = int((HIGHEST_PROBE_HZ - FIRST_PROBE_HZ) // PROBE_STEP_HZ) + 1
    return FIRST_PROBE_HZ + PROBE_STEP_HZ * (index % steps)


def probe_clip(frequency: float, level_dbfs: float, fmt: AudioFormat = PROBE_FORMAT) -> Clip:
    """A sine burst with short raised-cosine edges (no click to spread it across the spectrum)."""
    n = int(fmt.rate * PROBE_SECONDS)
    t = np.arange(n) / fmt.rate
    tone = FULL_SCALE * 10 ** (level_dbfs / 20) * np.sin(2 * np.pi * frequency * t)
    fade = int(fmt.rate * FADE_SECONDS)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade))
    tone[:fade] *= ramp
    tone[-fade:] *= ramp[::-1]
    return Clip(np.round(tone).astype("<i2").tobytes(), fmt)


def tone_level(samples: np.ndarray, frequency: float, rate: int) -> float:
    """The loudest 0.1 s of a sine at `frequency` in `samples`, in dBFS (a full-scale sine is 0)."""
    frame = int(rate * FRAME_SECONDS)
    if len(samples) < frame:
        samples = np.pad(samples, (0, frame - len(samples)))
    window = np.hanning(frame)
    reference = window * np.exp(-2j * np.pi * frequency * np.arange(frame) / rate)
    frames = np.lib.stride_tricks.sliding_window_view(samples.astype(np.float64), frame)[:: frame // 2]
    amplitude = 2 * np.abs(frames @ reference).max() / window.sum()
    return max(SILENCE_DBFS, 20 * float(np.log10(max(amplitude, 1e-9) / FULL_SCALE)))


def _samples(chunks: Sequence[Chunk]) -> np.ndarray:
    parts = [np.frombuffer(c.pcm, dtype="<i2") for c in chunks]
    return np.concatenate(parts) if parts else np.zeros(0, dtype="<i2")


# -- judging ---------------------------------------------------------------------------------------


def judge(lab: LabConfig, settings: RigCheck, probed: Sequence[str], heard: Sequence[Heard],
          device_errors: dict[str, str]) -> list[Verdict]:
    """Each probed Echo's verdict from the levels measured (pure: no devices here)."""
    levels = {(h.speaker, h.microphone): h for h in heard}
    verdicts = []
    for name in probed:
        hz = probe_frequency(lab, name)
        if name in device_errors:
            verdicts.append(Verdict(name, hz, "device_error", error=device_errors[name]))
            continue
        own = levels[(name, name)]
        level, noise = own.level_dbfs, own.noise_dbfs
        if own.level_dbfs < settings.min_level or own.snr_db < settings.min_snr:
            verdicts.append(Verdict(name, hz, "silent", level, noise, _silent(lab.echo(name), hz, own, settings)))
        elif leaks := _leaks(lab, settings, name, heard):
            verdicts.append(Verdict(name, hz, "crosstalk", level, noise, leaks))
        else:
            verdicts.append(Verdict(name, hz, "ok", level, noise))
    return verdicts


def _silent(echo: EchoConfig, hz: float, own: Heard, settings: RigCheck) -> str:
    probe = f"the {hz:.0f} Hz probe of speaker {echo.speaker!r}"
    if own.level_dbfs <= SILENCE_DBFS:
        heard = f"heard nothing of {probe}"
    else:
        heard = f"heard {probe} at {own.level_dbfs:.1f} dBFS, {own.snr_db:.1f} dB above its noise"
    return (f"microphone {echo.microphone!r} {heard}; it must reach {settings.min_level:.1f} dBFS and "
            f"{settings.min_snr:.0f} dB above its noise (is the speaker on, loud enough and beside the microphone?)")


def _leaks(lab: LabConfig, settings: RigCheck, name: str, heard: Sequence[Heard]) -> str | None:
    room = lab.echo(name).room_key
    leaks = [h for h in heard
             if h.speaker == name and lab.echo(h.microphone).room_key != room
             and h.level_dbfs >= settings.max_crosstalk and h.snr_db >= settings.min_snr]
    if not leaks:
        return None
    where = ", ".join(f"{h.microphone} (room {lab.echo(h.microphone).room or '-'}) at {h.level_dbfs:.1f} dBFS"
                      for h in leaks)
    return (f"its probe was heard by the microphone of {where}; Echos of different rooms must stay below "
            f"{settings.max_crosstalk:.1f} dBFS on each other's microphones")


# -- measuring, in a child process -------------------------------------------------------------------


def measure(lab: LabConfig, probed: Sequence[str]) -> tuple[list[Heard], dict[str, str]]:
    """Play each probed Echo's probe and listen on every microphone of the lab, in a fresh process."""
    return in_fresh_portaudio(_measure, lab, list(probed))


def _measure(lab: LabConfig, probed: list[str]) -> tuple[list[Heard], dict[str, str]]:
    hooks_for(lab.virtual_lab).in_process(None, "persona")
    # PortAudio's probe and ALSA's underrun notices are not the operator's business.
    with quiet_native_stderr(), contextlib.ExitStack() as stack:
        backends: dict[str, AudioBackend] = {}
        microphones, errors = _open_microphones(lab, backends, stack)
        time.sleep(SETTLE_SECONDS)
        heard = []
        for name in probed:
            if name in errors:
                continue
            echo = lab.echo(name)
            try:
                speaker = _backend(lab, echo, backends).open_speaker(echo.speaker, PROBE_FORMAT, DEVICE_LATENCY)
            except Exception as exc:  # noqa: BLE001 - any failure to open is the verdict, not a crash
                errors[name] = f"speaker {echo.speaker!r} could not be opened: {exc}"
                continue
            with speaker:  # one speaker at a time: the others stay silent, and the machine is spared
                heard += _probe(lab, name, speaker, microphones)
        # Only a probed Echo's own devices decide its verdict; another room's missing microphone
        # is reported when that Echo is probed.
        return heard, {n: e for n, e in errors.items() if n in probed}


def _backend(lab: LabConfig, echo: EchoConfig, backends: dict[str, AudioBackend]) -> AudioBackend:
    name = lab.backend_of(echo)
    if name not in backends:
        backends[name] = open_backend(name)
    return backends[name]


def _open_microphones(lab: LabConfig, backends: dict[str, AudioBackend],
                      stack: contextlib.ExitStack) -> tuple[dict[str, Microphone], dict[str, str]]:
    microphones: dict[str, Microphone] = {}
    errors: dict[str, str] = {}
    for echo in lab.echos:
        try:
            mic = _backend(lab, echo, backends).open_microphone(echo.microphone, MIC_FORMAT, DEVICE_LATENCY)
        except Exception as exc:  # noqa: BLE001 - any failure to open is the verdict, not a crash
            errors[echo.name] = f"microphone {echo.microphone!r} could not be opened: {exc}"
            continue
        microphones[echo.name] = stack.enter_context(mic)
    return microphones, errors


def _probe(lab: LabConfig, name: str, speaker: Speaker, microphones: dict[str, Microphone]) -> list[Heard]:
    """Noise is what the microphones delivered before the probe was queued; the probe is in what came after."""
    hz = probe_frequency(lab, name)
    for mic in microphones.values():
        mic.drain()
    time.sleep(NOISE_SECONDS)
    before = {mic_name: _samples(mic.take_all()) for mic_name, mic in microphones.items()}
    speaker.play(probe_clip(hz, lab.rig_check.probe_level))
    time.sleep(TAIL_SECONDS)
    return [Heard(name, mic_name, tone_level(_samples(mic.take_all()), hz, MIC_FORMAT.rate),
                  tone_level(before[mic_name], hz, MIC_FORMAT.rate))
            for mic_name, mic in microphones.items()]


# -- the whole check ---------------------------------------------------------------------------------


def self_test(lab: LabConfig, engine: Engine | None, trigger: str, echos: Sequence[str] | None = None) -> RigReport:
    """Probe `echos` (default: all of the lab), judge them, and store the check when `engine` is given.

    A physical lab has air between each speaker and its microphone; a virtual lab lays it for as
    long as the check runs (the lab hooks' `air`).
    """
    probed = list(echos) if echos is not None else [e.name for e in lab.echos]
    started = log.utcnow()
    with hooks_for(lab.virtual_lab).air(probed):
        heard, errors = measure(lab, probed)
    verdicts = judge(lab, lab.rig_check, probed, heard, errors)
    check_id = store(engine, lab, trigger, started, verdicts, heard) if engine is not None else None
    return RigReport(check_id, verdicts, heard)


def store(engine: Engine, lab: LabConfig, trigger: str, started: datetime, verdicts: Sequence[Verdict],
          heard: Sequence[Heard]) -> int:
    devices = {echo.name: log.upsert_device(engine, **lab.device_row(echo)) for echo in lab.echos}
    settings = lab.rig_check
    check = log.RigCheck(started_at=started, finished_at=log.utcnow(), host=socket.gethostname(), trigger=trigger,
                         probe_level_dbfs=settings.probe_level, min_level_dbfs=settings.min_level,
                         max_crosstalk_dbfs=settings.max_crosstalk, min_snr_db=settings.min_snr,
                         passed=all(v.ok for v in verdicts))
    results = [log.RigCheckResult(device_id=devices[v.echo], probe_hz=v.probe_hz, status=v.status,
                                  level_dbfs=v.level_dbfs, noise_dbfs=v.noise_dbfs, error=v.error)
               for v in verdicts]
    levels = [log.RigCheckLevel(speaker_device_id=devices[h.speaker], microphone_device_id=devices[h.microphone],
                                same_room=lab.echo(h.speaker).room_key == lab.echo(h.microphone).room_key,
                                level_dbfs=h.level_dbfs, noise_dbfs=h.noise_dbfs)
              for h in heard]
    return log.record_rig_check(engine, check, results, levels)
