"""The runner's decisions, with the audio exchange replaced: retries, the failure budget, skips."""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

import pytest

from orchestrator import log
from orchestrator.asr import SpeechModel
from orchestrator.audio.clip import MIC_FORMAT, AudioFormat, silence
from orchestrator.catalog.skills import load_catalog
from orchestrator.core.durable import DiskFull
from orchestrator.lab.config import EchoConfig, LabConfig
from orchestrator.plan.persona import load_persona
from orchestrator.runner.night import NotEnoughSpace, check_free_space, night_audio_bytes
from orchestrator.runner.run import FAILURE_BUDGET, STEP_RETRIES, PersonaRun, Prompt, RunRequest, RunSummary


@pytest.fixture
def make_run(tmp_path, catalog_dir):
    catalog = load_catalog(catalog_dir)
    lab = LabConfig(echos=[EchoConfig(name="echo1", speaker="s", microphone="m")])

    def make(plan: str) -> PersonaRun:
        path = tmp_path / "p.yaml"
        path.write_text(f"name: p\ninterest: pets-animals\necho: echo1\nplan:\n{plan}")
        request = RunRequest(load_persona(path), lab, catalog, tmp_path / "log.sqlite", tmp_path / "audio",
                             SpeechModel("vosk", Path("model"), "model"), asr_socket=Path(), asr_authkey=b"")
        return PersonaRun(request)

    return make


def _prompts(run: PersonaRun) -> dict[int, Prompt]:
    clip = silence(0.5, AudioFormat(22050))
    return {s.index: Prompt(s.spoken("Alexa"), clip, Path("prompt.wav")) for s in run.steps}


def _start(run: PersonaRun) -> RunSummary:
    run_id = run._start_run({"engine": "test"})
    return RunSummary(run_id, run.persona.name, run.echo.name)


def test_a_step_in_error_is_retried_once_then_left(make_run):
    run = make_run("  - ask: what time is it\n  - ask: how tall is mount everest\n")
    calls = []

    def step(_rig, step, _prompt, _run_id):
        calls.append((step.index, run.attempts[step.index]))
        return ("error", 0.0) if step.index == 0 else ("ok", 1.0)

    run._step = step
    summary = _start(run)
    run._steps(None, _prompts(run), summary)
    assert calls == [(0, 0), (0, 1), (1, 0)]
    assert (summary.errors, summary.ok, summary.status) == (STEP_RETRIES + 1, 1, "running")


def test_the_failure_budget_aborts_a_night_that_keeps_failing(make_run, tmp_path):
    run = make_run("  - ask: what time is it\n" * (FAILURE_BUDGET + 3))
    attempted = []
    run._step = lambda _rig, step, _prompt, _run_id: attempted.append(step.index) or ("error", 0.0)
    summary = _start(run)
    run._steps(None, _prompts(run), summary)
    assert summary.status == "failed" and "failure budget" in summary.error
    assert sorted(set(attempted)) == list(range(FAILURE_BUDGET))
    db = sqlite3.connect(tmp_path / "log.sqlite")
    assert db.execute("SELECT status, error FROM runs").fetchone()[0] == "failed"


def test_a_skill_that_was_not_enabled_is_not_opened(make_run, tmp_path):
    run = make_run("  - enable: B017OBJI46\n  - open: B017OBJI46\n  - say: tell me a fact\n    session: true\n"
                   "  - stop\n  - ask: what time is it\n")
    spoken = []

    def step(_rig, step, _prompt, _run_id):
        spoken.append(step.kind)
        if step.kind == "enable":
            run.reaction.judge(step, "To use Cat Facts, link your account in the Alexa app.", "ok")
        return "ok", 1.0

    run._step = step
    summary = _start(run)
    run._steps(None, _prompts(run), summary)
    assert spoken == ["enable", "ask"]
    assert summary.skipped == 3
    db = sqlite3.connect(tmp_path / "log.sqlite")
    rows = db.execute("SELECT kind, status, error FROM interactions ORDER BY step_index").fetchall()
    assert [(k, s) for k, s, _ in rows] == [("open", "skipped"), ("say", "skipped"), ("stop", "skipped")]
    assert all("account_linking" in e for _, _, e in rows)


@pytest.mark.parametrize("reply, reason", [
    ("Welcome to Smart Restaurant. What would you like to do?", "another skill answered (smart restaurant)"),
    ("Sorry, I'm having trouble accessing your Cat Facts skill right now.", "unreachable"),
])
def test_a_skill_whose_open_lands_elsewhere_is_not_talked_to(make_run, tmp_path, reply, reason):
    run = make_run("  - enable: B017OBJI46\n  - open: B017OBJI46\n  - say: tell me a fact\n    session: true\n"
                   "  - stop\n  - open: B017OBJI46\n  - say: tell me a fact\n    session: true\n")
    spoken = []
    opens = iter([reply, "Welcome to Cat Facts. Ask me for a fact."])

    def step(_rig, step, _prompt, _run_id):
        spoken.append(step.kind)
        text = next(opens) if step.kind == "open" else "Okay. Cat Facts is now enabled."
        run.reaction.judge(step, text, "ok")
        return "ok", 1.0

    run._step = step
    run._steps(None, _prompts(run), _start(run))
    # The wrong skill is still stopped; the next open lands in Cat Facts, so it is talked to again.
    assert spoken == ["enable", "open", "stop", "open", "say"]
    db = sqlite3.connect(tmp_path / "log.sqlite")
    (error,) = db.execute("SELECT error FROM interactions WHERE status = 'skipped'").fetchone()
    assert error == f"the session of skill B017OBJI46 did not open: {reason}"


def test_a_resumed_run_remembers_which_sessions_did_not_open(make_run):
    run = make_run("  - open: B017OBJI46\n  - say: tell me a fact\n    session: true\n")
    summary = _start(run)
    # The open step's row, as a worker killed right after it would have left it.
    interaction = log.start_interaction(run.engine, run_id=summary.run_id, step_index=0, kind="open",
                                        skill_id="B017OBJI46", prompt_text="Alexa, open cat facts")
    log.finish_interaction(run.engine, interaction, "ok", reply_outcome="other_skill",
                           reply_heard_skill="smart restaurant")
    log.finish_run(run.engine, summary.run_id, "interrupted")
    resumed = make_run("  - open: B017OBJI46\n  - say: tell me a fact\n    session: true\n")
    resumed._resume(summary.run_id)
    assert resumed.reaction.skip_reason(resumed.steps[1]) == (
        "the session of skill B017OBJI46 did not open: another skill answered (smart restaurant)")


def test_a_stop_request_ends_the_run_as_interrupted(make_run, tmp_path):
    run = make_run("  - ask: what time is it\n  - ask: how tall is mount everest\n")

    def step(_rig, step, _prompt, _run_id):
        run.controls.stop.set()  # SIGTERM arrives during the first step
        return "ok", 1.0

    run._step = step
    summary = _start(run)
    run._steps(None, _prompts(run), summary)
    assert summary.status == "interrupted" and summary.ok == 1
    db = sqlite3.connect(tmp_path / "log.sqlite")
    assert db.execute("SELECT status FROM runs").fetchone()[0] == "interrupted"


def test_a_full_disk_ends_the_run_with_the_step_it_hit(make_run, tmp_path):
    run = make_run("  - ask: what time is it\n  - ask: how tall is mount everest\n")

    class Rig:
        def exchange(self, *_args):
            return object()

    def record(*_args):
        raise DiskFull(tmp_path / "reply.wav", "disk full", errno.ENOSPC)

    run._record = record
    summary = _start(run)
    run._steps(Rig(), _prompts(run), summary)
    assert summary.status == "failed" and summary.error.startswith("disk full at step 0")
    assert (summary.steps, summary.errors) == (1, 1)
    db = sqlite3.connect(tmp_path / "log.sqlite")
    assert db.execute("SELECT step_index, status, error FROM interactions").fetchall() == [
        (0, "error", f"the recording was not stored: {tmp_path / 'reply.wav'}: disk full")]
    assert db.execute("SELECT status, error FROM runs").fetchone() == ("failed", summary.error)


def test_a_night_that_would_not_fit_on_the_disk_is_not_started(make_run, tmp_path, monkeypatch):
    run = make_run("  - ask: what time is it\n" * 10)
    personas, catalog, lab = [run.request.persona], run.request.catalog, run.request.lab
    need = night_audio_bytes(personas, catalog, lab)
    assert need == MIC_FORMAT.nbytes(10 * (8.0 + 30.0 + 0.7)) * 2  # ten steps, each at its longest, retried once
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: shutil._ntuple_diskusage(10**12, 10**12, 100 * 2**20))
    with pytest.raises(NotEnoughSpace, match=r"has 100 MB free; tonight's recordings may take up to 24 MB"):
        check_free_space(personas, catalog, lab, tmp_path / "log.sqlite", tmp_path / "audio")
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: shutil._ntuple_diskusage(10**12, 10**12, 10**9))
    check_free_space(personas, catalog, lab, tmp_path / "log.sqlite", tmp_path / "audio")
