"""Speech synthesis against the real pyttsx3 + espeak-ng engine (no mocks).

Renders of one text differ slightly between runs, so audio is judged by format, duration and
loudness at its edges, never by hash.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from orchestrator.audio import clip as audio
from orchestrator.audio.speech import (
    TRIM_KEEP,
    TRIM_THRESHOLD_DBFS,
    SynthesisError,
    SynthesisTimeout,
    Synthesizer,
    Voice,
    available_voices,
)
from orchestrator.core import durable

SENTENCE = "Alexa, what is the weather today?"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tts-cache")


@pytest.fixture(scope="module")
def synth(cache_dir: Path) -> Iterator[Synthesizer]:
    with Synthesizer(cache_dir, Voice()) as tts:
        yield tts


@pytest.fixture
def restore_timeout(synth: Synthesizer) -> Iterator[None]:
    original = synth.timeout
    yield
    synth.timeout = original


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _quiet_edges(clip: audio.Clip) -> tuple[float, float]:
    """Seconds below the trim threshold at the start and at the end of the clip."""
    samples = np.abs(clip.samples().astype(np.int32))
    loud = np.flatnonzero(samples > 32768.0 * 10 ** (TRIM_THRESHOLD_DBFS / 20))
    assert loud.size, "clip holds no speech at all"
    rate = clip.format.rate
    return loud[0] / rate, (samples.size - 1 - loud[-1]) / rate


def test_render_gives_trimmed_mono_16bit_wav(synth: Synthesizer, cache_dir: Path) -> None:
    path = synth.render(SENTENCE)

    key = synth.cache_key(SENTENCE)
    assert path == cache_dir / key[:2] / f"{key}.wav"
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
    clip = synth.render_clip(SENTENCE)
    assert 0.5 < clip.duration < 5.0
    lead, tail = _quiet_edges(clip)
    assert lead <= TRIM_KEEP + 0.005
    assert tail <= TRIM_KEEP + 0.005


def test_cache_hit_returns_same_file_without_the_engine(
    synth: Synthesizer, restore_timeout: None
) -> None:
    text = "Alexa, open pet facts."
    path = synth.render(text)
    mtime = path.stat().st_mtime_ns
    pid = synth.worker_pid

    # With a deadline no render can meet, only a cache hit can succeed.
    synth.timeout = 1e-6
    started = time.perf_counter()
    again = synth.render(text)
    elapsed = time.perf_counter() - started

    assert again == path
    assert path.stat().st_mtime_ns == mtime
    assert elapsed < 0.1
    assert synth.worker_pid == pid


def test_damaged_cache_entry_is_rendered_again(synth: Synthesizer) -> None:
    text = "Alexa, ask dog trainer for a tip."
    path = synth.render(text)
    path.write_bytes(b"RIFF\x00\x00garbage")

    assert synth.render(text) == path
    assert audio.validate_wav(path).duration > 0.5


def test_rate_gives_own_cache_entry_and_faster_speech(synth: Synthesizer, cache_dir: Path) -> None:
    normal_path = synth.render(SENTENCE)
    with Synthesizer(cache_dir, Voice(rate=300)) as fast:
        fast_path = fast.render(SENTENCE)
        assert fast.engine_description()["rate"] == 300

    assert fast_path != normal_path
    normal = audio.read_wav(normal_path).duration
    quick = audio.read_wav(fast_path).duration
    assert quick < 0.8 * normal


def test_unknown_voice_fails_at_construction(tmp_path: Path) -> None:
    before = set(multiprocessing.active_children())
    with pytest.raises(SynthesisError) as err:
        Synthesizer(tmp_path, Voice(name="gmw/en-xx-nowhere"))

    message = str(err.value)
    assert "gmw/en-xx-nowhere" in message
    assert "gmw/en-us" in message
    assert set(multiprocessing.active_children()) <= before
    assert not list(tmp_path.glob(".render-*")), "scratch folder left behind"


def test_rate_outside_espeak_range_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SynthesisError, match="rate"):
        Synthesizer(tmp_path, Voice(rate=20))


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_text_never_reaches_the_engine(synth: Synthesizer, text: str) -> None:
    pid = synth.worker_pid
    with pytest.raises(SynthesisError, match="empty"):
        synth.render(text)
    assert synth.worker_pid == pid


def test_timeout_kills_worker_and_next_call_restarts_it(
    synth: Synthesizer, restore_timeout: None
) -> None:
    text = "Alexa, this render cannot finish in a millisecond."
    old_pid = synth.worker_pid
    assert old_pid is not None

    synth.timeout = 0.001
    with pytest.raises(SynthesisTimeout, match="cannot finish in a millisecond"):
        synth.render(text)
    assert not _alive(old_pid)
    assert synth.worker_pid is None

    synth.timeout = 15.0
    path = synth.render(text)
    assert audio.validate_wav(path).duration > 0.5
    assert synth.worker_pid not in (None, old_pid)


def test_unwritable_target_fails_fast_instead_of_hanging(synth: Synthesizer, tmp_path: Path) -> None:
    # espeak-ng's callback cannot report a failed write and runAndWait spins forever; the
    # worker must refuse such a target itself. A file used as a folder is unwritable even for root.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    pid = synth.worker_pid

    started = time.perf_counter()
    with pytest.raises(SynthesisError, match="cannot write") as err:
        synth._synthesize("Alexa, stop.", blocker / "out.wav")
    assert not isinstance(err.value, SynthesisTimeout)
    assert time.perf_counter() - started < 1.0
    assert synth.worker_pid == pid
    assert audio.validate_wav(synth.render("Alexa, stop.")).duration > 0.2


def test_cache_write_is_atomic(
    synth: Synthesizer, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "Alexa, play the news."

    def crash(src: object, dst: object) -> None:
        raise OSError("simulated crash before rename")

    with monkeypatch.context() as patch:
        patch.setattr(durable.os, "replace", crash)
        with pytest.raises(OSError, match="simulated crash"):
            synth.render(text)
    assert not synth.cache_path(text).exists()

    assert audio.validate_wav(synth.render(text)).duration > 0.5
    assert not list(cache_dir.rglob("*.tmp"))
    scratch = [p for p in cache_dir.glob(".render-*/*")]
    assert scratch == [], f"raw renders left behind: {scratch}"


def test_render_many_deduplicates_and_reports_progress(synth: Synthesizer) -> None:
    texts = ["Alexa, open wine guide.", "Alexa, stop.", "Alexa, open wine guide."]
    progress: list[tuple[int, int]] = []

    paths = synth.render_many(texts, on_progress=lambda done, total: progress.append((done, total)))

    assert list(paths) == ["Alexa, open wine guide.", "Alexa, stop."]
    assert all(audio.validate_wav(p).duration > 0.2 for p in paths.values())
    assert progress == [(1, 2), (2, 2)]


def test_render_many_rejects_bad_list_up_front(synth: Synthesizer) -> None:
    text = "Alexa, open fashion tips."
    with pytest.raises(SynthesisError):
        synth.render_many([text, "  "])
    assert not synth.cache_path(text).exists()


def test_engine_description_names_engine_voice_and_rate(synth: Synthesizer) -> None:
    description = synth.engine_description()
    assert description["engine"] == "pyttsx3"
    assert description["driver"] == "espeak"
    assert description["pyttsx3"]
    assert description["espeak_ng"] != ""
    assert (description["voice"], description["rate"], description["sample_rate"]) == (
        "gmw/en-us",
        160,
        22050,
    )
    assert description["output_rate"] == 16000


def test_available_voices_lists_espeak_ids() -> None:
    voices = available_voices()
    assert "gmw/en-us" in voices
    assert len(voices) > 10


def test_close_stops_worker_and_removes_scratch(tmp_path: Path) -> None:
    tts = Synthesizer(tmp_path, Voice())
    pid = tts.worker_pid
    assert pid is not None and list(tmp_path.glob(".render-*"))

    tts.close()
    tts.close()  # idempotent

    assert tts.closed
    assert not _alive(pid)
    assert not list(tmp_path.glob(".render-*"))
    with pytest.raises(SynthesisError, match="closed"):
        tts.render(SENTENCE)
