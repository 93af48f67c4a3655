"""pocketsphinx behind the engine seam: its model check, and English heard through the real server.

The speech is the simulated Echo's (Festival's HTS voice). Recognition is not exact, so the tests
assert structure (word timings inside the audio), meaning with tolerance (most of the words that
were said come back) and that real decoding happened, never the exact transcript.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.asr import ModelError, SpeechModel, TranscriptionServer, load_check
from orchestrator.asr.engine import engine_for, engine_of_folder
from orchestrator.asr.sphinx import bundled_model, check_model
from orchestrator.audio.clip import MIC_FORMAT, Clip, concat, read_wav, silence
from orchestrator.sim import voice

SAID = {
    "Okay. Cat Facts is now enabled.": {"okay", "cat", "facts", "now", "enabled"},
    "Sorry, I couldn't find that skill.": {"sorry", "couldn't", "find", "that"},
    "Welcome to Smart Restaurant. What would you like to do?": {"welcome", "smart", "restaurant", "what", "like"},
}
CHUNK = MIC_FORMAT.nbytes(0.02)


def sphinx(path: Path) -> SpeechModel:
    return SpeechModel("pocketsphinx", path, path.name)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Clip]:
    cache = tmp_path_factory.mktemp("voice")
    return {text: read_wav(path) for text, path in voice.render_many(SAID, cache).items()}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, english_model: SpeechModel):
    with TranscriptionServer(english_model, tmp_path_factory.mktemp("asr") / "asr.sock") as srv:
        yield srv


def _copy_model(tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundled_model(), tmp_path / "en-us"))


def test_the_bundled_model_passes_its_check_and_is_told_apart_from_vosk(english_model: SpeechModel) -> None:
    check_model(english_model.path)
    assert engine_of_folder(english_model.path) == "pocketsphinx"
    assert engine_for(english_model).version().startswith("pocketsphinx ")


def test_check_names_what_is_missing(tmp_path: Path) -> None:
    model = _copy_model(tmp_path)
    (model / "en-us" / "means").unlink()
    next(model.glob("*.dict")).unlink()
    with pytest.raises(ModelError, match=r"lacks means.*no pronunciation dictionary"):
        check_model(model)
    with pytest.raises(ModelError, match="does not exist"):
        check_model(tmp_path / "nowhere")


def test_a_corrupt_acoustic_model_is_caught_by_the_load_check(tmp_path: Path) -> None:
    model = _copy_model(tmp_path)
    (model / "en-us" / "mdef").write_bytes(b"this is not a model definition\n")
    with pytest.raises(ModelError, match="could not load|died"):
        load_check(sphinx(model), timeout=60)


def test_the_server_reports_the_engine_it_loaded(server: TranscriptionServer) -> None:
    assert server.report is not None
    assert server.report.version.startswith("pocketsphinx ") and server.report.load_seconds > 0


def test_english_replies_come_back_as_timed_words(server: TranscriptionServer, speech: dict[str, Clip]) -> None:
    client = server.client()
    for text, clip in speech.items():
        padded = concat([silence(0.3, MIC_FORMAT), clip, silence(0.3, MIC_FORMAT)])
        stream = client.stream()
        for i in range(0, len(padded.pcm), CHUNK):
            stream.feed(padded.pcm[i : i + CHUNK])
        transcript = stream.finish(timeout=30)
        heard = {w.word for w in transcript.words}
        assert len(heard & SAID[text]) >= len(SAID[text]) - 1, (text, transcript.text)
        assert transcript.text == " ".join(w.word for w in transcript.words)
        starts = [w.start for w in transcript.words]
        assert starts == sorted(starts) and starts[0] >= 0.25  # the leading silence holds no word
        assert all(0 <= w.start < w.end <= padded.duration + 0.02 and 0 <= w.conf <= 1 for w in transcript.words)
        assert transcript.audio_seconds == pytest.approx(padded.duration, abs=0.001)
        assert transcript.decode_seconds > 0


def test_silence_is_heard_as_nothing(server: TranscriptionServer) -> None:
    stream = server.client().stream()
    stream.feed(silence(1.0, MIC_FORMAT).pcm)
    transcript = stream.finish(timeout=30)
    assert transcript.words == [] and transcript.text == "" and transcript.confidence is None


def test_one_recognizer_serves_utterance_after_utterance(server: TranscriptionServer, speech: dict[str, Clip]) -> None:
    """Word times restart with each utterance, and nothing of the previous one leaks into the next."""
    client = server.client()
    first, second = list(speech)[:2]
    transcripts = []
    for text in (first, second, first):
        stream = client.stream()  # the same connection, hence the same recognizer, each time
        stream.feed(speech[text].pcm)
        transcripts.append(stream.finish(timeout=30))
    assert transcripts[0].text == transcripts[2].text  # the same audio decodes alike on a reused recognizer
    assert transcripts[1].words[0].start < 1.0  # its own start, not after the first utterance
    assert not {w.word for w in transcripts[1].words} >= SAID[first]


def test_recognizers_warmed_before_the_night_serve_the_first_replies(server: TranscriptionServer,
                                                                     speech: dict[str, Clip]) -> None:
    server.warm(3)
    clients = [server.client() for _ in range(3)]
    streams = [client.stream() for client in clients]  # three Echos' first replies at once
    text = next(iter(speech))
    for stream in streams:
        stream.feed(speech[text].pcm)
    transcripts = [stream.finish(timeout=30) for stream in streams]
    assert all(SAID[text] & set(t.text.split()) for t in transcripts)
