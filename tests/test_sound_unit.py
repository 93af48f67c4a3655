"""Choosing devices by name, and the logic behind the speaker and microphone callbacks (no hardware)."""

from __future__ import annotations

import queue
import threading

import pytest

from orchestrator.audio import devices as sound
from orchestrator.audio.clip import MIC_FORMAT, AudioFormat, Clip
from orchestrator.audio.devices import (
    Chunk,
    DeviceError,
    DeviceInfo,
    Microphone,
    Speaker,
    _PlayQueue,
    _push_chunk,
    open_backend,
    resolve_device,
)

DEVICES = [
    DeviceInfo(0, "echo1_out", 0, 2, 48000.0),
    DeviceInfo(1, "echo1_out_mon", 0, 2, 48000.0),
    DeviceInfo(2, "echo1_mic", 1, 0, 16000.0),
    DeviceInfo(3, "Blue Yeti: USB Audio (hw:2,0)", 2, 0, 48000.0),
    DeviceInfo(4, "USB Audio Device: Speaker (hw:3,0)", 0, 2, 44100.0),
    DeviceInfo(5, "USB Audio Device: Speaker (hw:4,0)", 0, 2, 44100.0),
    DeviceInfo(6, "pulse", 32, 32, 44100.0),
]


def by_name(name: str) -> DeviceInfo:
    return next(d for d in DEVICES if d.name == name)


# -- resolve_device -----------------------------------------------------------------------------------


def test_exact_name_beats_a_longer_name_containing_it():
    assert resolve_device("echo1_out", DEVICES, "output").index == 0
    assert resolve_device("echo1_out_mon", DEVICES, "output").index == 1


def test_unique_substring():
    assert resolve_device("Blue Yeti", DEVICES, "input") == by_name("Blue Yeti: USB Audio (hw:2,0)")
    assert resolve_device("hw:4", DEVICES, "output").index == 5


def test_ambiguous_name_lists_the_candidates():
    with pytest.raises(DeviceError) as info:
        resolve_device("USB Audio Device", DEVICES, "output")
    message = str(info.value)
    assert "output device name 'USB Audio Device' is ambiguous" in message
    assert "USB Audio Device: Speaker (hw:3,0), USB Audio Device: Speaker (hw:4,0)" in message
    assert "echo1_out" not in message


def test_missing_name_lists_the_devices_of_that_kind():
    with pytest.raises(DeviceError) as info:
        resolve_device("echo9", DEVICES, "input")
    message = str(info.value)
    assert message.startswith("no input device named 'echo9'; input devices: ")
    assert message.endswith("echo1_mic, Blue Yeti: USB Audio (hw:2,0), pulse")


def test_kind_filters_devices():
    assert resolve_device("echo1", DEVICES, "input").index == 2
    with pytest.raises(DeviceError, match="ambiguous: echo1_out, echo1_out_mon$"):
        resolve_device("echo1", DEVICES, "output")
    with pytest.raises(DeviceError, match="no output device named 'Blue Yeti'"):
        resolve_device("Blue Yeti", DEVICES, "output")
    assert resolve_device("pulse", DEVICES, "input") == resolve_device("pulse", DEVICES, "output")


def test_no_devices_at_all():
    with pytest.raises(DeviceError, match="input devices: none$"):
        resolve_device("echo1_mic", [], "input")


def test_matching_is_case_sensitive():
    with pytest.raises(DeviceError, match="no input device named 'blue yeti'"):
        resolve_device("blue yeti", DEVICES, "input")


# -- the play queue -----------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(sound, "time", fake)
    return fake


def pcm(n: int, value: int = 7) -> bytes:
    return bytes([value]) * n


def test_fill_plays_queued_bytes_then_silence(clock):
    play = _PlayQueue(MIC_FORMAT, output_latency=0.05)
    job = play.submit(pcm(1000))
    out = play.fill(640, underflow=False)
    assert out == pcm(640)
    assert job.started == pytest.approx(100.05)
    assert not job.done.is_set()

    clock.now = 100.02
    out = play.fill(640, underflow=False)
    assert out == pcm(360) + bytes(280)
    assert job.done.is_set()
    assert job.ended == pytest.approx(100.02 + MIC_FORMAT.seconds(360) + 0.05)

    assert play.fill(640, underflow=False) == bytes(640)


def test_fill_plays_several_jobs_back_to_back(clock):
    play = _PlayQueue(MIC_FORMAT, output_latency=0.0)
    first, second = play.submit(pcm(100, 1)), play.submit(pcm(200, 2))
    out = play.fill(640, underflow=False)
    assert out == pcm(100, 1) + pcm(200, 2) + bytes(340)
    assert first.ended == pytest.approx(100.0 + MIC_FORMAT.seconds(100))
    assert second.started == pytest.approx(first.ended)
    assert second.ended == pytest.approx(100.0 + MIC_FORMAT.seconds(300))
    assert first.done.is_set() and second.done.is_set()


def test_fill_returns_exactly_the_bytes_asked_for(clock):
    play = _PlayQueue(AudioFormat(48000, channels=2), output_latency=0.0)
    play.submit(pcm(5000))
    sizes = [len(play.fill(n, underflow=False)) for n in (1920, 1920, 1920, 1920)]
    assert sizes == [1920] * 4


def test_underflows_are_counted_per_job(clock):
    play = _PlayQueue(MIC_FORMAT, output_latency=0.0)
    play.fill(320, underflow=True)  # idle: counted by the queue only
    assert play.underflows == 1
    job = play.submit(pcm(960))
    play.fill(320, underflow=False)
    play.fill(320, underflow=True)
    play.fill(320, underflow=True)
    assert job.done.is_set()
    assert job.underflows == 2
    assert play.underflows == 3
    later = play.submit(pcm(320))
    play.fill(320, underflow=False)
    assert later.underflows == 0


def test_empty_clip_finishes_at_once(clock):
    play = _PlayQueue(MIC_FORMAT, output_latency=0.0)
    job = play.submit(b"")
    assert play.fill(320, underflow=False) == bytes(320)
    assert job.done.is_set()
    assert job.started == job.ended == 100.0


def test_cancel_finishes_every_pending_job(clock):
    play = _PlayQueue(MIC_FORMAT, output_latency=0.0)
    jobs = [play.submit(pcm(1000)) for _ in range(3)]
    play.fill(320, underflow=False)
    clock.now = 101.0
    play.cancel()
    assert all(j.done.is_set() and j.ended == 101.0 for j in jobs)
    assert play.fill(320, underflow=False) == bytes(320)


# -- speaker and microphone around the queue ------------------------------------------------------------


class Stream:
    closed = False

    def close(self) -> None:
        self.closed = True


def test_speaker_plays_through_its_callback():
    play = _PlayQueue(MIC_FORMAT, output_latency=0.0)
    stream = Stream()
    speaker = Speaker(stream, play, "echo1_out")
    clip = Clip(pcm(3200), MIC_FORMAT)
    heard = bytearray()
    stop = threading.Event()

    def callback() -> None:
        while not stop.is_set():
            heard.extend(play.fill(640, underflow=False))
            stop.wait(0.002)

    driver = threading.Thread(target=callback)
    driver.start()
    try:
        playback = speaker.play(clip, timeout=2.0)
    finally:
        stop.set()
        driver.join()
    assert bytes(heard).lstrip(b"\0").startswith(clip.pcm)
    assert playback.started <= playback.ended
    assert playback.underflows == 0
    with speaker:
        pass
    assert stream.closed


def test_speaker_refuses_a_clip_in_another_format():
    speaker = Speaker(Stream(), _PlayQueue(MIC_FORMAT, 0.0), "echo1_out")
    with pytest.raises(ValueError, match="echo1_out plays"):
        speaker.play(Clip(pcm(100), AudioFormat(22050)))


def test_speaker_without_a_running_device_times_out():
    play = _PlayQueue(MIC_FORMAT, 0.0)
    speaker = Speaker(Stream(), play, "echo1_out")
    with pytest.raises(DeviceError, match=r"echo1_out: playback did not finish within 0\.1 s"):
        speaker.play(Clip(pcm(320), MIC_FORMAT), timeout=0.1)
    assert play.fill(320, underflow=False) == bytes(320)


def test_microphone_chunks_are_dated_at_their_first_sample(clock):
    chunks: queue.Queue[Chunk] = queue.Queue()
    state = {"format": MIC_FORMAT, "queue": chunks, "latency": 0.01}
    mic = Microphone(Stream(), MIC_FORMAT, "echo1_mic", chunks)
    state["mic"] = mic
    _push_chunk(state, pcm(640), overflow=False)
    _push_chunk(state, pcm(640), overflow=True)
    first, second = mic.read(timeout=0.1), mic.read(timeout=0.1)
    assert first.start == pytest.approx(100.0 - 0.02 - 0.01)
    assert first.end == pytest.approx(100.0 - 0.01)
    assert second.format == MIC_FORMAT
    assert mic.overflows == 1


def test_microphone_read_times_out_and_drain_empties():
    chunks: queue.Queue[Chunk] = queue.Queue()
    mic = Microphone(Stream(), MIC_FORMAT, "echo1_mic", chunks)
    for _ in range(3):
        chunks.put(Chunk(pcm(10), 0.0, MIC_FORMAT))
    mic.drain()
    with pytest.raises(DeviceError, match=r"echo1_mic: no audio for 0\.0 s"):
        mic.read(timeout=0.01)


# -- backends -----------------------------------------------------------------------------------------


def test_unknown_backend():
    with pytest.raises(DeviceError, match="unknown audio backend 'alsa'; choose one of sounddevice, pyaudio"):
        open_backend("alsa")
