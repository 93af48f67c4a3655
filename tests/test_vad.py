"""End-of-reply detection on real synthetic speech (espeak-ng, resampled to 16 kHz with sox)."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from orchestrator.audio.clip import (
    MIC_FORMAT,
    AudioFormat,
    Clip,
    concat,
    read_wav,
    rms_dbfs,
    silence,
    trim_silence,
)
from orchestrator.audio.vad import FRAME_SECONDS, EndpointConfig, EndpointDetector, Outcome, ReplyBounds

pytestmark = pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("sox")),
                                reason="needs espeak-ng and sox")

F = MIC_FORMAT
TOLERANCE = 0.1


def render(folder: Path, name: str, text: str) -> Clip:
    raw, wav = folder / f"{name}.raw.wav", folder / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "165", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)], check=True)
    clip = trim_silence(read_wav(wav), keep=0.0)
    assert clip.format == F
    return clip


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict[str, Clip]:
    folder = tmp_path_factory.mktemp("speech")
    return {
        "fact": render(folder, "fact", "Here is your cat fact."),
        "sleep": render(folder, "sleep", "Cats sleep for around thirteen to sixteen hours a day."),
    }


def detect(audio: Clip, **config: float) -> ReplyBounds:
    detector = EndpointDetector(F, EndpointConfig(**config))
    bounds = detector.push(audio.pcm)
    assert bounds is not None, "undecided"
    return bounds


def scaled(clip: Clip, gain_db: float) -> Clip:
    return Clip((clip.samples() * 10 ** (gain_db / 20)).astype(np.int16).tobytes(), clip.format)


def loudest_frame_dbfs(clip: Clip) -> float:
    size = F.nbytes(FRAME_SECONDS)
    return max(rms_dbfs(clip.pcm[i : i + size]) for i in range(0, len(clip.pcm) - size + 1, size))


def test_onset_and_end_of_one_sentence(speech):
    fact = speech["fact"]
    bounds = detect(concat([silence(1.0, F), fact, silence(2.0, F)]))
    assert bounds.outcome is Outcome.REPLY_ENDED
    assert bounds.onset == pytest.approx(1.0, abs=TOLERANCE)
    assert bounds.end == pytest.approx(1.0 + fact.duration, abs=TOLERANCE)
    assert bounds.duration == pytest.approx(fact.duration, abs=2 * TOLERANCE)


def test_decided_one_hangover_after_the_end(speech):
    for hangover in (0.4, 0.7, 1.5):
        bounds = detect(concat([silence(0.5, F), speech["fact"], silence(2.0, F)]), hangover=hangover)
        assert bounds.outcome is Outcome.REPLY_ENDED
        assert hangover <= bounds.decided_at - bounds.end < hangover + FRAME_SECONDS + 1e-9


def test_pause_of_0_6_s_inside_a_reply_does_not_end_it(speech):
    fact, sleep = speech["fact"], speech["sleep"]
    audio = concat([silence(1.0, F), fact, silence(0.6, F), sleep, silence(2.0, F)])
    bounds = detect(audio)
    assert bounds.outcome is Outcome.REPLY_ENDED
    assert bounds.onset == pytest.approx(1.0, abs=TOLERANCE)
    assert bounds.end == pytest.approx(1.0 + fact.duration + 0.6 + sleep.duration, abs=TOLERANCE)


def test_pause_longer_than_the_hangover_ends_the_reply(speech):
    fact, sleep = speech["fact"], speech["sleep"]
    audio = concat([silence(1.0, F), fact, silence(1.2, F), sleep, silence(2.0, F)])
    bounds = detect(audio, hangover=0.7)
    assert bounds.outcome is Outcome.REPLY_ENDED
    assert bounds.end == pytest.approx(1.0 + fact.duration, abs=TOLERANCE)
    assert bounds.decided_at < 1.0 + fact.duration + 1.2


def no_response_after(timeout: float) -> ReplyBounds:
    detector = EndpointDetector(F, EndpointConfig(no_answer_timeout=timeout))
    assert detector.push(silence(timeout - 0.1, F).pcm) is None
    bounds = detector.push(silence(10.0, F).pcm)
    assert bounds is not None
    assert bounds.outcome is Outcome.NO_RESPONSE
    assert (bounds.onset, bounds.end, bounds.duration) == (None, None, None)
    assert detector.elapsed == bounds.decided_at
    return bounds


@pytest.mark.parametrize("timeout", [0.6, 3.0])
def test_no_speech_is_no_response_exactly_at_the_timeout(timeout):
    assert no_response_after(timeout).decided_at == pytest.approx(timeout, abs=1e-9)


def test_no_response_at_the_frame_after_a_timeout_between_frames():
    assert no_response_after(8.0).decided_at == pytest.approx(8.01, abs=1e-9)


def test_no_response_at_0_9_s():
    assert no_response_after(0.9).decided_at == pytest.approx(0.9, abs=1e-9)


def test_endless_speech_is_cut_at_max_reply(speech):
    fact, sleep = speech["fact"], speech["sleep"]
    gap = silence(0.1, F)
    audio = concat([silence(0.5, F), sleep, gap, fact, gap, sleep, gap, fact, silence(1.0, F)])
    bounds = detect(audio, max_reply=3.0)
    assert bounds.outcome is Outcome.MAX_LENGTH
    assert bounds.onset == pytest.approx(0.5, abs=TOLERANCE)
    assert 3.0 <= bounds.decided_at - bounds.onset < 3.0 + FRAME_SECONDS
    assert bounds.end == bounds.decided_at


def test_result_is_final(speech):
    detector = EndpointDetector(F, EndpointConfig(no_answer_timeout=0.5))
    first = detector.push(silence(1.0, F).pcm)
    assert first is not None and first.outcome is Outcome.NO_RESPONSE
    assert detector.push(concat([speech["fact"], silence(1.0, F)]).pcm) is first
    assert detector.onset is None


def test_chunk_sizes_do_not_change_the_result(speech):
    audio = concat([silence(0.7, F), speech["fact"], silence(0.6, F), speech["sleep"], silence(1.5, F)]).pcm
    whole = detect(Clip(audio, F))
    detector = EndpointDetector(F)
    sizes = itertools.cycle([1, 3, 7, 480, 959, 961, 4097, 2])
    position, result = 0, None
    while result is None and position < len(audio):
        size = next(sizes)
        result = detector.push(audio[position : position + size])
        position += size
    assert result == whole
    assert whole.outcome is Outcome.REPLY_ENDED


def test_quiet_speech_below_the_level_floor_is_not_a_reply(speech):
    quiet = scaled(speech["fact"], -45.0)
    assert loudest_frame_dbfs(quiet) < EndpointConfig().min_level_dbfs
    audio = concat([silence(0.5, F), quiet, silence(3.0, F)])
    assert detect(audio, no_answer_timeout=3.0).outcome is Outcome.NO_RESPONSE
    assert detect(audio, no_answer_timeout=3.0, min_level_dbfs=-120.0).outcome is Outcome.REPLY_ENDED


def test_quiet_room_noise_does_not_trigger_onset():
    rng = np.random.default_rng(7)
    noise = Clip(rng.normal(0, 20, F.rate * 4).astype(np.int16).tobytes(), F)
    assert rms_dbfs(noise.pcm) < -60
    bounds = detect(noise, no_answer_timeout=3.0)
    assert bounds.outcome is Outcome.NO_RESPONSE
    assert detect(noise, no_answer_timeout=3.0, min_level_dbfs=-120.0).onset is not None


def test_a_click_is_not_an_onset():
    click = Clip(np.full(F.rate // 100, 20000, dtype=np.int16).tobytes(), F)  # 10 ms
    audio = concat([silence(0.5, F), click, silence(2.0, F)])
    assert detect(audio, no_answer_timeout=2.0).outcome is Outcome.NO_RESPONSE


@pytest.mark.parametrize("fmt", [
    AudioFormat(44100), AudioFormat(16000, channels=2), AudioFormat(16000, width=1), AudioFormat(22050),
])
def test_invalid_format(fmt):
    with pytest.raises(ValueError, match="webrtcvad needs 16-bit mono"):
        EndpointDetector(fmt)


@pytest.mark.parametrize("rate", [8000, 16000, 32000, 48000])
def test_supported_rates(rate):
    fmt = AudioFormat(rate)
    detector = EndpointDetector(fmt, EndpointConfig(no_answer_timeout=0.3))
    bounds = detector.push(silence(0.5, fmt).pcm)
    assert bounds is not None and bounds.outcome is Outcome.NO_RESPONSE


@pytest.mark.parametrize("values", [
    {"aggressiveness": 4}, {"aggressiveness": -1}, {"hangover": 0}, {"hangover": -0.5},
    {"no_answer_timeout": 0}, {"max_reply": -1},
])
def test_endpoint_config_validation(values):
    with pytest.raises(ValueError):
        EndpointConfig(**values)


def test_endpoint_config_defaults():
    config = EndpointConfig()
    assert (config.no_answer_timeout, config.max_reply, config.hangover, config.aggressiveness) == (8.0, 30.0, 0.7, 2)
    assert EndpointConfig(aggressiveness=0).aggressiveness == 0
