"""Clips, formats and WAV files: atomic writes and the checks on what is read back."""

from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np
import pytest

from orchestrator.audio.clip import (
    MIC_FORMAT,
    AudioFormat,
    Clip,
    InvalidAudio,
    concat,
    read_wav,
    rms_dbfs,
    silence,
    trim_silence,
    validate_wav,
    write_wav_atomic,
)
from orchestrator.core import durable


def tone(seconds: float, fmt: AudioFormat = MIC_FORMAT, amplitude: float = 8000.0, freq: float = 440.0) -> Clip:
    t = np.arange(round(seconds * fmt.rate)) / fmt.rate
    wave_ = amplitude * np.sin(2 * np.pi * freq * t)
    return Clip(np.repeat(wave_, fmt.channels).astype(np.int16).tobytes(), fmt)


def write_raw_wav(path: Path, pcm: bytes, rate: int = 16000, width: int = 2, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return path


# -- formats and clips ------------------------------------------------------------------------------


def test_audio_format_arithmetic():
    fmt = AudioFormat(rate=22050, channels=2)
    assert fmt.width == 2
    assert fmt.bytes_per_second == 22050 * 2 * 2
    assert fmt.nbytes(1.0) == 88200
    assert fmt.seconds(88200) == 1.0
    assert fmt.nbytes(0.5) == 44100
    assert fmt.nbytes(0.0) == 0
    assert MIC_FORMAT.nbytes(0.03) == 960


@pytest.mark.parametrize("fmt", [MIC_FORMAT, AudioFormat(22050), AudioFormat(44100, channels=2), AudioFormat(8000)])
@pytest.mark.parametrize("seconds", [0.001, 0.0301, 0.25, 1.7777])
def test_nbytes_is_whole_frames(fmt, seconds):
    nbytes = fmt.nbytes(seconds)
    assert nbytes % (fmt.width * fmt.channels) == 0
    assert abs(fmt.seconds(nbytes) - seconds) <= 0.5 / fmt.rate + 1e-12


def test_audio_format_is_a_value():
    assert AudioFormat(16000) == MIC_FORMAT
    assert AudioFormat(16000, channels=2) != MIC_FORMAT
    assert len({AudioFormat(16000), MIC_FORMAT, AudioFormat(48000)}) == 2


def test_clip_duration_and_samples():
    clip = Clip(np.array([0, 1, -1, 32767, -32768], dtype=np.int16).tobytes(), MIC_FORMAT)
    assert clip.duration == 5 / 16000
    assert clip.samples().tolist() == [0, 1, -1, 32767, -32768]


def test_silence():
    clip = silence(0.25, MIC_FORMAT)
    assert clip.duration == 0.25
    assert not any(clip.pcm)
    assert silence(0, MIC_FORMAT).pcm == b""


def test_concat_and_add():
    a, b = tone(0.1), silence(0.2, MIC_FORMAT)
    joined = concat([a, b, a])
    assert joined.pcm == a.pcm + b.pcm + a.pcm
    assert joined.duration == pytest.approx(0.4)
    assert (a + b).pcm == a.pcm + b.pcm


def test_concat_format_mismatch():
    with pytest.raises(ValueError, match="clips differ in format"):
        concat([tone(0.1), tone(0.1, AudioFormat(22050))])
    with pytest.raises(ValueError, match="cannot join"):
        tone(0.1) + tone(0.1, AudioFormat(16000, channels=2))
    with pytest.raises(ValueError, match="nothing to join"):
        concat([])


# -- levels and trimming --------------------------------------------------------------------------


def test_rms_dbfs():
    full = np.tile(np.array([32767, -32767], dtype=np.int16), 500).tobytes()
    assert rms_dbfs(full) == pytest.approx(0.0, abs=0.01)
    assert rms_dbfs(tone(0.5, amplitude=3276.8).pcm) == pytest.approx(-23.0, abs=0.1)  # -20 dB peak, sine -3 dB
    assert rms_dbfs(b"") == -120.0
    assert rms_dbfs(bytes(320)) < -140


def test_trim_silence_keeps_the_margin():
    fmt = MIC_FORMAT
    core = tone(0.2)
    clip = concat([silence(0.5, fmt), core, silence(0.7, fmt)])
    trimmed = trim_silence(clip, keep=0.02)
    assert trimmed.format == fmt
    assert trimmed.duration == pytest.approx(0.24, abs=2 / fmt.rate)
    start = clip.pcm.index(trimmed.pcm)
    assert fmt.seconds(start) == pytest.approx(0.48, abs=2 / fmt.rate)
    assert trim_silence(clip, keep=0.0).duration == pytest.approx(0.2, abs=2 / fmt.rate)


def test_trim_silence_margin_is_clamped_to_the_clip():
    clip = concat([silence(0.01, MIC_FORMAT), tone(0.1), silence(0.01, MIC_FORMAT)])
    assert trim_silence(clip, keep=0.5).pcm == clip.pcm


def test_trim_silence_of_silence_and_of_nothing():
    assert trim_silence(silence(1.0, MIC_FORMAT)).pcm == b""
    empty = Clip(b"", MIC_FORMAT)
    assert trim_silence(empty) == empty


def test_trim_silence_threshold():
    quiet = tone(0.3, amplitude=100)  # about -50 dBFS peak
    assert trim_silence(quiet, threshold_dbfs=-45.0).pcm == b""
    assert trim_silence(quiet, threshold_dbfs=-60.0).duration > 0.25


# -- WAV files --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [MIC_FORMAT, AudioFormat(22050), AudioFormat(48000, channels=2)])
def test_write_and_read_round_trip(tmp_path, fmt):
    clip = tone(0.3, fmt)
    path = tmp_path / "deep" / "er" / "clip.wav"
    assert write_wav_atomic(path, clip) == path
    assert read_wav(path) == clip
    assert validate_wav(path) == clip
    assert sorted(p.name for p in path.parent.iterdir()) == ["clip.wav"]


def test_write_replaces_an_existing_file(tmp_path):
    path = tmp_path / "clip.wav"
    write_wav_atomic(path, tone(0.5))
    write_wav_atomic(path, tone(0.1, freq=880))
    assert read_wav(path) == tone(0.1, freq=880)
    assert os.listdir(tmp_path) == ["clip.wav"]


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(durable.os, "replace", refuse)
    path = tmp_path / "clip.wav"
    with pytest.raises(OSError, match="disk full"):
        write_wav_atomic(path, tone(0.2))
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "clip.wav"
    old = tone(0.2)
    write_wav_atomic(path, old)

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(durable.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_wav_atomic(path, tone(1.0, freq=300))
    assert read_wav(path) == old
    assert os.listdir(tmp_path) == ["clip.wav"]


def test_validate_wav_rejects_an_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(InvalidAudio, match="not a readable WAV file") as info:
        validate_wav(path)
    assert str(path) in str(info.value)


def test_validate_wav_rejects_a_wav_without_frames(tmp_path):
    path = write_raw_wav(tmp_path / "header-only.wav", b"")
    with pytest.raises(InvalidAudio, match="0.000 s of audio, expected at least 0.05 s") as info:
        validate_wav(path)
    assert str(info.value).startswith(f"{path}: ")


def test_validate_wav_rejects_a_short_clip(tmp_path):
    path = write_wav_atomic(tmp_path / "short.wav", tone(0.02))
    with pytest.raises(InvalidAudio, match=r"0\.020 s of audio") as info:
        validate_wav(path)
    assert str(path) in str(info.value)
    assert validate_wav(path, min_duration=0.01).duration == pytest.approx(0.02)


def test_validate_wav_rejects_garbage(tmp_path):
    path = tmp_path / "garbage.wav"
    path.write_bytes(b"ID3\x04 this is an mp3, honest" * 40)
    with pytest.raises(InvalidAudio, match="not a readable WAV file") as info:
        validate_wav(path)
    assert str(info.value).startswith(f"{path}: ")


def test_validate_wav_rejects_8_bit_samples(tmp_path):
    path = write_raw_wav(tmp_path / "eight.wav", bytes([128]) * 8000, rate=8000, width=1)
    with pytest.raises(InvalidAudio, match="8-bit samples; only 16-bit PCM is supported") as info:
        validate_wav(path)
    assert str(info.value).startswith(f"{path}: ")


def test_read_wav_of_a_missing_file(tmp_path):
    path = tmp_path / "missing.wav"
    with pytest.raises(InvalidAudio) as info:
        read_wav(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_written_file_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_wav_atomic(tmp_path / "clip.wav", tone(0.1))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
