"""Transcripts decoded after the step: the queue in the log, the background transcriber, a night heard again.

The recordings are real (the simulated Echo's Festival voice, stored as a night stores replies) and
so is the recognizer (pocketsphinx's bundled English model); recognition is not exact, so the
tests assert structure, provenance and that real decoding happened.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from orchestrator import log
from orchestrator.asr import SpeechModel
from orchestrator.audio.clip import MIC_FORMAT, Clip, read_wav, resample, write_wav_atomic
from orchestrator.cli.main import main
from orchestrator.runner.deferred import retranscribe, work_through_queue
from orchestrator.sim import voice

WELCOME = "Welcome to Smart Restaurant. What would you like to do?"
FACT = "Cats sleep for most of the day."


def queue_replies(engine: Engine, audio_dir: Path, count: int, kinds: tuple[str, ...] = ("say",)) -> list[int]:
    persona_id = log.upsert_persona(engine, name="pets", interest="pets & animals")
    device_id = log.upsert_device(engine, name="echo-1")
    run_id = log.start_run(engine, persona_id=persona_id, device_id=device_id, audio_dir=audio_dir, config={},
                           asr_engine="pocketsphinx", asr_model="en-us", tts_engine=None, tts_voice=None,
                           tts_rate=None, audio_backend=None)
    rows = []
    for index in range(count):
        row = log.start_interaction(engine, run_id=run_id, step_index=index, kind=kinds[index % len(kinds)])
        log.finish_interaction(engine, row, "ok", response_audio=f"r/{index}.wav", transcript_state="pending")
        rows.append(row)
    return rows


def _claim_all(db: Path, name: str, claimed: multiprocessing.Queue[list[int]]) -> None:
    engine = log.open_log(db)
    mine = []
    while (reply := log.claim_pending(engine, name)) is not None:
        mine.append(reply.interaction_id)
    engine.dispose()
    claimed.put(mine)


def test_transcribers_claiming_at_once_never_take_the_same_reply(tmp_path: Path) -> None:
    db = tmp_path / "log.sqlite"
    engine = log.open_log(db)
    rows = queue_replies(engine, tmp_path, 60)
    engine.dispose()  # a forked child must not share the parent's connections
    ctx = multiprocessing.get_context("fork")
    claimed: multiprocessing.Queue[list[int]] = ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(db, f"h:{n}", claimed)) for n in range(3)]
    for proc in procs:
        proc.start()
    taken = [claimed.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(10)
    assert sorted(sum(taken, [])) == rows  # each exactly once
    assert log.queued(engine) == 60  # all working, none done
    engine.dispose()


def test_a_reply_whose_transcriber_died_goes_back_to_the_queue_then_fails(tmp_path: Path) -> None:
    engine = log.open_log(tmp_path / "log.sqlite")
    [row] = queue_replies(engine, tmp_path, 1)
    for tries in (1, 2):
        assert log.claim_pending(engine, "lab:1") is not None
        assert log.release_dead_claims(engine, alive=lambda claimer: claimer != "lab:1") == 1
        state = sqlite3.connect(tmp_path / "log.sqlite").execute(
            "SELECT transcript_state, transcript_tries, transcript_error FROM interactions").fetchone()
        assert state[:2] == (("pending", 1) if tries == 1 else ("failed", 2))
    assert "died 2 times" in state[2]
    assert log.claim_pending(engine, "lab:2") is None
    assert log.release_dead_claims(engine) == 0  # a live claim (this process) is kept
    engine.dispose()


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    cache = tmp_path_factory.mktemp("voice")
    rendered = voice.render_many([WELCOME, FACT], cache)
    return {text: resample(read_wav(path), MIC_FORMAT.rate).pcm for text, path in rendered.items()}


def test_queued_replies_are_heard_judged_and_heard_again_by_another_model(
        tmp_path: Path, recordings: dict[str, bytes], english_model: SpeechModel) -> None:
    db, audio_dir = tmp_path / "log.sqlite", tmp_path / "audio"
    engine = log.open_log(db)
    opened, said = queue_replies(engine, audio_dir, 2, kinds=("open", "say"))
    for index, text in enumerate([WELCOME, FACT]):
        write_wav_atomic(audio_dir / "r" / f"{index}.wav", Clip(recordings[text], MIC_FORMAT))

    assert work_through_queue(db, english_model) == 2
    rows = {r[0]: r[1:] for r in sqlite3.connect(db).execute(
        "SELECT interaction_id, transcript_state, transcript, transcript_engine, reply_outcome "
        "FROM interaction_details")}
    assert {state for state, *_ in rows.values()} == {"done"}
    assert "restaurant" in rows[opened][1] and "sleep" in rows[said][1]
    assert rows[opened][2] == "pocketsphinx"
    assert rows[opened][3] is not None and rows[said][3] is None  # an open reply is judged when heard

    # The same recordings through another model folder: new transcripts, current; the first ones kept.
    other = SpeechModel("pocketsphinx", tmp_path / "other-en-us", "other-en-us")
    other.path.symlink_to(english_model.path)
    assert retranscribe(db, 1, other).added == 2
    assert retranscribe(db, 1, other).already == 2  # nothing decoded twice
    heard = sqlite3.connect(db).execute(
        "SELECT interaction_id, model, is_current FROM transcript_details ORDER BY transcript_id").fetchall()
    assert heard == [(opened, str(english_model.path), 0), (said, str(english_model.path), 0),
                     (opened, str(other.path), 1), (said, str(other.path), 1)]
    engine.dispose()


def test_transcribe_pending_finishes_what_a_night_left(tmp_path: Path, recordings: dict[str, bytes],
                                                      english_model: SpeechModel) -> None:
    db, audio_dir = tmp_path / "log.sqlite", tmp_path / "audio"
    engine = log.open_log(db)
    queue_replies(engine, audio_dir, 2)
    write_wav_atomic(audio_dir / "r" / "0.wav", Clip(recordings[FACT], MIC_FORMAT))  # the other was never written
    engine.dispose()
    result = CliRunner().invoke(main, ["transcribe", "--pending", "--db", str(db), "--model",
                                       f"pocketsphinx:{english_model.path}"])
    assert result.exit_code == 1, result.output
    assert "1 transcribed, 1 failed" in result.output
    states = sqlite3.connect(db).execute("SELECT transcript_state, transcript_error FROM interactions").fetchall()
    assert states[0] == ("done", None) and states[1][0] == "failed" and "1.wav" in states[1][1]
    again = CliRunner().invoke(main, ["transcribe", "--pending", "--db", str(db)])
    assert again.exit_code == 0 and "0 transcribed" in again.output
