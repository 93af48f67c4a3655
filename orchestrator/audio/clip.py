"""Audio as data: a clip always carries its rate, sample width and channel count.

Everything that touches samples (speech, sound devices, VAD, transcription, the log) exchanges
`Clip` objects or raw PCM chunks described by an `AudioFormat`, so a wrong rate is caught where
it is made instead of being heard as chipmunks in a recording three weeks later.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.core.durable import replacing_file


class InvalidAudio(ValueError):
    """A WAV file that cannot be used: unreadable, empty or in an unexpected format."""


@dataclass(frozen=True)
class AudioFormat:
    rate: int
    width: int = 2  # bytes per sample; the whole project speaks 16-bit PCM
    channels: int = 1

    @property
    def bytes_per_second(self) -> int:
        return self.rate * self.width * self.channels

    def seconds(self, nbytes: int) -> float:
        return nbytes / self.bytes_per_second

    def nbytes(self, seconds: float) -> int:
        frames = int(round(seconds * self.rate))
        return frames * self.width * self.channels


#: What Vosk and webrtcvad expect, and what the lab records at.
MIC_FORMAT = AudioFormat(rate=16000)


@dataclass(frozen=True)
class Clip:
    pcm: bytes
    format: AudioFormat

    @property
    def duration(self) -> float:
        return self.format.seconds(len(self.pcm))

    def samples(self) -> np.ndarray:
        return np.frombuffer(self.pcm, dtype=np.int16)

    def __add__(self, other: Clip) -> Clip:
        if other.format != self.format:
            raise ValueError(f"cannot join {self.format} and {other.format}")
        return Clip(self.pcm + other.pcm, self.format)


def silence(seconds: float, fmt: AudioFormat) -> Clip:
    return Clip(bytes(fmt.nbytes(seconds)), fmt)


def concat(clips: list[Clip]) -> Clip:
    if not clips:
        raise ValueError("nothing to join")
    fmt = clips[0].format
    if any(c.format != fmt for c in clips):
        raise ValueError("clips differ in format")
    return Clip(b"".join(c.pcm for c in clips), fmt)


def trim_silence(clip: Clip, threshold_dbfs: float = -45.0, keep: float = 0.02) -> Clip:
    """Cut leading and trailing near-silence, keeping `keep` seconds of margin on each side.

    espeak-ng pads its renders with dead air; trimmed clips make prompt timing and the simulated
    Echo's "what I really said" durations describe speech, not padding.
    """
    samples = clip.samples()
    if samples.size == 0:
        return clip
    threshold = 32768.0 * 10 ** (threshold_dbfs / 20)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if loud.size == 0:
        return Clip(b"", clip.format)
    margin = int(keep * clip.format.rate)
    start = max(0, loud[0] - margin)
    end = min(samples.size, loud[-1] + 1 + margin)
    return Clip(samples[start:end].tobytes(), clip.format)


def resample(clip: Clip, rate: int) -> Clip:
    """The same sound at another sample rate (soxr, high quality)."""
    if clip.format.rate == rate:
        return clip
    import soxr

    samples = soxr.resample(clip.samples(), clip.format.rate, rate)
    return Clip(np.asarray(samples, dtype=np.int16).tobytes(), AudioFormat(rate, clip.format.width, 1))


def rms_dbfs(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    if samples.size == 0:
        return -120.0
    rms = np.sqrt(np.mean(samples**2))
    return float(20 * np.log10(max(rms, 1e-3) / 32768.0))


def read_wav(path: Path) -> Clip:
    try:
        with wave.open(str(path), "rb") as wav:
            fmt = AudioFormat(wav.getframerate(), wav.getsampwidth(), wav.getnchannels())
            pcm = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        raise InvalidAudio(f"{path}: not a readable WAV file ({exc})") from exc
    if fmt.width != 2:
        raise InvalidAudio(f"{path}: {8 * fmt.width}-bit samples; only 16-bit PCM is supported")
    return Clip(pcm, fmt)


def validate_wav(path: Path, min_duration: float = 0.05) -> Clip:
    """Read a WAV and insist it holds real audio (pyttsx3 has been seen writing empty files)."""
    clip = read_wav(path)
    if clip.duration < min_duration:
        raise InvalidAudio(f"{path}: {clip.duration:.3f} s of audio, expected at least {min_duration} s")
    return clip


def write_wav_atomic(path: Path, clip: Clip) -> Path:
    """Write `clip` so that `path` either does not exist or holds the whole file.

    Temp file in the same directory, fsync, rename, fsync the directory (durable.replacing): only
    after this returns may a database row point at `path`. Missing folders are made: recordings
    go to folders of their own per run.
    """
    with replacing_file(path, binary=True, make_folder=True) as raw:
        with wave.open(raw, "wb") as wav:
            wav.setnchannels(clip.format.channels)
            wav.setsampwidth(clip.format.width)
            wav.setframerate(clip.format.rate)
            wav.writeframes(clip.pcm)
    return path
