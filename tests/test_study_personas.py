"""Two of the study's shipped personas, on a shortened plan, on the virtual lab.

The simulated Echos' world makes one skill need account linking and another impossible to find;
the log must record what each enable reply meant, as the Echo really said it, and the plan must
react: a skill that was not enabled is not opened.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.runner.progress import Progress
from orchestrator.sim.demo import DemoSettings, run_demo
from orchestrator.sim.echo import SCRIPT as SIM_SCRIPT
from orchestrator.sim.echo import read_truth

pytestmark = pytest.mark.lab

PROJECT = Path(__file__).resolve().parents[1]
TRUTH_TO_OUTCOME = {"enabled": "enabled", "account_linking": "account_linking", "not_found": "not_found"}


@pytest.fixture(scope="module")
def night(tmp_path_factory, english_model):
    root = tmp_path_factory.mktemp("study")
    personas = root / "personas"
    personas.mkdir()
    for name in ("pets-animals", "smart-home"):
        data = yaml.safe_load((PROJECT / "persona_scripts" / f"{name}.yaml").read_text())
        data["plan"] = [{"generate": {"top": 2, "utterances": 1}}]
        data["jitter"] = [0.0, 0.5]
        (personas / f"{name}.yaml").write_text(yaml.safe_dump(data))
    world = yaml.safe_load(SIM_SCRIPT.read_text())
    world["skills"] += [{"name": "abode", "invocation": "abode", "enable": "account_linking"},
                        {"name": "Dog Facts", "invocation": "me a dog fact", "enable": "not_found"}]
    script = root / "world.yaml"
    script.write_text(yaml.safe_dump(world))
    options = DemoSettings(db=root / "log.sqlite", audio_dir=root / "audio", model=english_model, echos=2,
                           lab_dir=root / "lab", personas_dir=personas, sim_script=script)
    summaries = run_demo(options, Progress())
    db = sqlite3.connect(options.db)
    db.row_factory = sqlite3.Row
    return {"options": options, "summaries": summaries, "db": db}


def test_both_personas_ran_their_shortened_plans(night):
    assert {s.persona for s in night["summaries"]} == {"pets-animals", "smart-home"}
    assert all(s.status == "completed" for s in night["summaries"])


def test_enable_outcomes_are_what_the_echo_said(night):
    db, lab = night["db"], night["options"].lab_dir
    rows = db.execute("SELECT i.*, d.name AS echo FROM interactions i JOIN devices d ON d.id = i.device_id "
                      "WHERE i.status != 'skipped' ORDER BY echo, step_index").fetchall()
    said = {echo: read_truth(lab / f"{echo}.truth.jsonl") for echo in {r["echo"] for r in rows}}
    checked = 0
    for echo, truth in said.items():
        mine = [r for r in rows if r["echo"] == echo]
        assert [t.heard for t in truth] == [r["prompt_text"] for r in mine]
        for reply, row in zip(truth, mine, strict=True):
            if row["kind"] == "enable":
                assert row["reply_outcome"] == TRUTH_TO_OUTCOME[reply.kind], (reply, dict(row))
                assert row["reply_outcome_score"] >= 80 and row["reply_outcome_rule"]
                checked += 1
    assert checked == 4
    outcomes = {r["reply_outcome"] for r in rows if r["kind"] == "enable"}
    assert outcomes == {"enabled", "account_linking", "not_found"}


def test_installs_record_the_outcome_and_failed_skills_are_not_opened(night):
    db = night["db"]
    installs = {r["skill_id"]: r["outcome"] for r in db.execute("SELECT * FROM skill_installs")}
    assert len(installs) == 4
    for skill_id, outcome in installs.items():
        later = db.execute("SELECT kind, status, error FROM interactions WHERE skill_id = ? AND kind != 'enable'",
                           (skill_id,)).fetchall()
        assert later
        if outcome == "enabled":
            assert all(r["status"] != "skipped" for r in later)
        else:
            assert all(r["status"] == "skipped" and outcome in r["error"] for r in later)


def test_run_virtual_rehearses_any_persona_file_on_simulated_echos(tmp_path):
    """`orchestrator run --virtual`: no lab file, one simulated Echo per persona, heard in English."""
    persona = tmp_path / "vanilla.yaml"
    data = yaml.safe_load((PROJECT / "persona_scripts" / "vanilla.yaml").read_text())
    data["plan"] = [{"ask": "what time is it"}]
    persona.write_text(yaml.safe_dump(data))
    db = tmp_path / "rehearsal.sqlite"
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(persona), "--virtual", "--db", str(db),
         "--audio-dir", str(tmp_path / "audio"), "--lab-dir", str(tmp_path / "lab"), "--lab", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "rehearsing on a virtual lab" in done.stderr
    connection = sqlite3.connect(db)
    assert connection.execute("SELECT r.status, r.asr_engine, d.name FROM runs r JOIN devices d ON d.id = r.device_id"
                              ).fetchall() == [("completed", "pocketsphinx", "echo-vanilla")]
    ((status, transcript),) = connection.execute("SELECT status, transcript FROM interactions").fetchall()
    assert status == "ok" and {"five", "past", "four"} & set(transcript.split()), transcript
