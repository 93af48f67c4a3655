"""`orchestrator audio STEP_ID`: the prompt and the reply of one step, found, joined and guarded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator import log
from orchestrator.audio.clip import MIC_FORMAT, AudioFormat, Clip, read_wav, silence, write_wav_atomic
from orchestrator.cli.main import main

PROMPT_RATE = 22050


def _tone(seconds: float, fmt: AudioFormat) -> Clip:
    import numpy as np

    t = np.arange(int(seconds * fmt.rate)) / fmt.rate
    return Clip((np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).tobytes(), fmt)


@pytest.fixture
def step(tmp_path: Path) -> tuple[Path, int, Path]:
    return build_step(tmp_path)


def build_step(tmp_path: Path) -> tuple[Path, int, Path]:
    """A log with one run and one step whose prompt (22.05 kHz, 1 s) and reply (16 kHz, 2 s) are on disk."""
    audio = tmp_path / "audio"
    prompt = write_wav_atomic(audio / "tts-cache" / "prompt.wav", _tone(1.0, AudioFormat(PROMPT_RATE)))
    reply = write_wav_atomic(audio / "recordings" / "1" / "000-0-open.wav", _tone(2.0, MIC_FORMAT))
    db = tmp_path / "log.sqlite"
    engine = log.open_log(db)
    run = log.start_run(engine, persona_id=log.upsert_persona(engine, name="p", interest=None),
                        device_id=log.upsert_device(engine, name="echo1"), audio_dir=audio, config={},
                        asr_engine="pocketsphinx", asr_model=None, tts_engine=None, tts_voice=None, tts_rate=None,
                        audio_backend=None)
    row = log.start_interaction(engine, run_id=run, step_index=0, kind="open", prompt_text="Alexa, open cat facts",
                                prompt_audio=prompt)
    log.finish_interaction(engine, row, "ok", response_audio=reply, transcript="welcome to cat facts")
    engine.dispose()
    return db, row, audio


def _audio(*args: str):
    return CliRunner().invoke(main, ["audio", *args])


def test_the_step_names_what_was_said_heard_and_where_both_files_are(step):
    db, row, audio = step
    result = _audio(str(row), "--db", str(db))
    assert result.exit_code == 0, result.output
    assert "said:   Alexa, open cat facts" in result.stdout and "heard:  welcome to cat facts" in result.stdout
    assert str(audio.resolve() / "tts-cache" / "prompt.wav") in result.stdout
    assert str(audio.resolve() / "recordings" / "1" / "000-0-open.wav") in result.stdout


def test_out_joins_prompt_pause_and_reply_at_the_microphones_rate(step, tmp_path):
    db, row, _audio_dir = step
    out = tmp_path / "step.wav"
    result = _audio(str(row), "--db", str(db), "--out", str(out))
    assert result.exit_code == 0, result.output
    joined = read_wav(out)
    assert joined.format == MIC_FORMAT
    assert joined.duration == pytest.approx(1.0 + 0.5 + 2.0, abs=0.01)
    pause = joined.pcm[MIC_FORMAT.nbytes(1.05):MIC_FORMAT.nbytes(1.45)]
    assert pause == silence(0.4, MIC_FORMAT).pcm  # the gap between prompt and reply is silent


def test_unknown_steps_and_audio_outside_the_run_folder_are_refused(step, tmp_path):
    db, row, _audio_dir = step
    result = _audio("999", "--db", str(db))
    assert result.exit_code == 2 and "no step (interaction) with id 999" in result.stderr
    connection = sqlite3.connect(db)
    connection.execute("UPDATE interactions SET response_audio = '../../../etc/passwd' WHERE id = ?", (row,))
    connection.commit()
    connection.close()
    result = _audio(str(row), "--db", str(db), "--out", str(tmp_path / "x.wav"))
    assert result.exit_code == 2 and "leaves the run's audio folder" in result.stderr
    assert not (tmp_path / "x.wav").exists()
