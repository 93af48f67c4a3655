"""The runner's decisions, with the audio exchange replaced: retries, the failure budget, skips."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from orchestrator.asr import SpeechModel
from orchestrator.audio import AudioFormat, silence
from orchestrator.catalog import load_catalog
from orchestrator.lab import EchoConfig, LabConfig
from orchestrator.persona import load_persona
from orchestrator.run import FAILURE_BUDGET, STEP_RETRIES, PersonaRun, Prompt, RunRequest, RunSummary


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
