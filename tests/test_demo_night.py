"""The whole chain on real parts: PulseAudio, pyttsx3, Festival, PortAudio (both bindings), webrtcvad,
pocketsphinx, SQLite.

One demo night runs four virtual Echos at once (the pet lover and the vanilla control, each once on
sounddevice and once on pyaudio), heard by the English recognizer; the tests then read the log and
the files, and compare every recorded reply, its transcript and what the log says it meant with what
the simulated Echo really said and meant (its truth log).

The night has a lab network (sim/network.py: a namespace per Echo, dnsmasq, TLS servers): while
answering, each Echo really resolves and connects to Alexa's and the skill's servers, the night's
tcpdump captures it on the host side, and the demo analyzes the capture; the traffic tests compare
each step's flows with the names the Echo says it reached.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import statistics
import subprocess
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from orchestrator.analysis.reports import Filters, run_report
from orchestrator.audio.clip import MIC_FORMAT, validate_wav
from orchestrator.catalog.skills import load_catalog
from orchestrator.core import settings
from orchestrator.core.clock import TIMESTAMP_ACCURACY_SECONDS
from orchestrator.plan.persona import compile_plan
from orchestrator.runner.progress import Progress
from orchestrator.sim.demo import DEMO_ENDPOINTING, DemoSettings, demo_personas, lab_beside, run_demo
from orchestrator.sim.echo import OUTCOME_OF_KIND, SimScript, read_truth, truth_path
from orchestrator.sim.network import NETWORK_FILE, PREFIX

pytestmark = pytest.mark.lab

BACKENDS = ("sounddevice", "sounddevice", "pyaudio", "pyaudio")
DURATION_TOLERANCE = 0.3


@pytest.fixture(scope="module")
def night(tmp_path_factory, english_model):
    root = tmp_path_factory.mktemp("night")
    # No lab folder named, as `orchestrator demo --db --audio-dir` asks: it goes beside the log.
    options = DemoSettings(db=root / "log.sqlite", audio_dir=root / "audio", model=english_model, echos=4,
                           backends=BACKENDS, network=True)
    before = _children()
    data_before = _files(settings.data_dir())
    summaries = run_demo(options, Progress())
    db = sqlite3.connect(options.db)
    db.row_factory = sqlite3.Row
    return {"options": replace(options, lab_dir=lab_beside(options.db)), "summaries": summaries, "db": db,
            "children_before": before, "root": root, "data_before": data_before}


def _files(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its modification time."""
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else {}


def _children() -> set[str]:
    """This process's children, except Python's own resource tracker (it ends with its parent)."""
    out = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(os.getpid())], capture_output=True, text=True)
    lines = {line.strip() for line in out.stdout.splitlines()}
    return {line for line in lines if "resource_tracker" not in line and not line.split(None, 1)[-1].startswith("ps ")}


def _spoken(db, echo):
    """The steps that were said aloud (a skipped step is not)."""
    return [r for r in _interactions(db, echo) if r["status"] != "skipped"]


def _interactions(db, echo):
    return db.execute(
        "SELECT i.* FROM interactions i JOIN devices d ON d.id = i.device_id WHERE d.name = ? ORDER BY step_index",
        (echo,),
    ).fetchall()


def test_every_run_completed_with_provenance(night, english_model):
    assert [s.status for s in night["summaries"]] == ["completed"] * 4
    runs = night["db"].execute("SELECT * FROM runs").fetchall()
    assert len(runs) == 4
    for run in runs:
        assert run["status"] == "completed" and run["finished_at"] >= run["started_at"]
        assert run["tool_version"] and run["config_sha256"] and json.loads(run["config_json"])["steps"]
        assert (run["asr_engine"], run["asr_model"]) == ("pocketsphinx", str(english_model.path))
        assert run["asr_version"].startswith("pocketsphinx ") and run["tts_voice"] == "gmw/en-us"
        assert Path(run["audio_dir"]) == night["options"].audio_dir.resolve()
    backends = {r["audio_backend"] for r in runs}
    assert backends == {"sounddevice", "pyaudio"}


def test_every_planned_step_has_a_row_with_a_final_status(night, catalog_dir):
    catalog = load_catalog(catalog_dir)
    personas = demo_personas(Path(__file__).parents[1] / "persona_scripts" / "demo", catalog, 4)
    for loaded in personas:
        planned = [s for s in compile_plan(loaded.persona, catalog) if s.kind != "pause"]
        rows = _interactions(night["db"], loaded.persona.echo)
        assert [(r["step_index"], r["kind"]) for r in rows] == [(s.index, s.kind) for s in planned]
        assert [r["prompt_text"] for r in rows] == [s.spoken("Alexa") for s in planned]
        assert all(r["status"] in ("ok", "no_response", "max_length", "skipped") for r in rows), \
            [dict(r) for r in rows]


def test_recorded_replies_match_what_the_echo_said(night):
    lab = night["options"].lab_dir
    compared = 0
    for echo in ("echo1", "echo2", "echo3", "echo4"):
        truth = read_truth(truth_path(lab, echo))
        rows = _spoken(night["db"], echo)
        assert [t.heard for t in truth] == [r["prompt_text"] for r in rows]
        for said, row in zip(truth, rows, strict=True):
            if row["status"] == "ok":
                assert said.duration > 0
                assert abs(row["response_seconds"] - said.duration) <= DURATION_TOLERANCE, (echo, dict(row))
                compared += 1
    assert compared >= 20


def test_replies_with_pauses_are_not_cut(night):
    lab = night["options"].lab_dir
    for echo in ("echo1", "echo3"):
        rows = _spoken(night["db"], echo)
        truth = read_truth(truth_path(lab, echo))
        multipart = [(said, row) for said, row in zip(truth, rows, strict=True) if len(said.text.split(". ")) > 1]
        assert len(multipart) >= 3  # welcomes and answers of two or three sentences, 0.5 s apart
        for said, row in multipart:
            assert row["status"] == "ok"
            assert row["response_seconds"] >= said.duration - DURATION_TOLERANCE, (said, dict(row))


def test_silence_is_no_response_and_the_stream_is_cut_at_max_length(night):
    for echo in ("echo1", "echo3"):
        rows = _interactions(night["db"], echo)
        silent = [r for r in rows if r["kind"] == "say" and r["skill_id"] == "B01DBH0L3Y"][0]
        assert silent["status"] == "no_response"
        assert silent["response_seconds"] is None
        assert silent["recorded_seconds"] == pytest.approx(DEMO_ENDPOINTING.no_answer_timeout, abs=0.1)
        radio = [r for r in rows if r["prompt_text"] == "Alexa, play lab radio"][0]
        assert radio["status"] == "max_length"
        assert radio["response_seconds"] == pytest.approx(DEMO_ENDPOINTING.max_reply, abs=0.1)
        after = rows[rows.index(radio) + 1]
        assert after["kind"] == "stop" and after["status"] == "no_response"  # "stop" silenced the stream


def _said_and_logged(night):
    """(what the Echo said, the row that logged it) for every step said aloud on every Echo."""
    lab = night["options"].lab_dir
    for echo in ("echo1", "echo2", "echo3", "echo4"):
        yield from zip(read_truth(truth_path(lab, echo)), _spoken(night["db"], echo), strict=True)


def test_what_each_reply_meant_is_what_the_echo_meant(night):
    """Verdicts come from the recognised words alone; the simulated Echo's truth log is the reference."""
    judged = [(OUTCOME_OF_KIND.get(said.kind), row) for said, row in _said_and_logged(night)
              if row["reply_outcome"] is not None and row["status"] == "ok"]
    wrong = [(meant, row["reply_outcome"], row["transcript"]) for meant, row in judged if row["reply_outcome"] != meant]
    assert len(wrong) <= len(judged) // 10, wrong
    right = {meant for meant, row in judged if row["reply_outcome"] == meant}
    assert {"enabled", "skill_opened", "other_skill", "not_found", "account_linking", "unreachable"} <= right, wrong


def test_the_plan_reacts_to_what_was_heard(night):
    for echo in ("echo1", "echo3"):
        rows = _interactions(night["db"], echo)
        other = next(r for r in rows if r["kind"] == "open" and r["skill_id"] == "B019NWDIAO")
        assert other["reply_outcome"] == "other_skill", dict(other)
        assert other["reply_heard_skill"] and "restaurant" in other["reply_heard_skill"], dict(other)
        after = rows[rows.index(other) + 1]
        assert (after["kind"], after["status"]) == ("say", "skipped") and "another skill answered" in after["error"]
        assert rows[rows.index(other) + 2]["kind"] == "stop"  # the wrong skill is still stopped
        turns = [r for r in rows if r["kind"] == "dialog"]
        assert [t["expectation_met"] for t in turns[:2]] == [1, 0], [dict(t) for t in turns]
        assert turns[2]["status"] == "skipped" and "expected reply" in turns[2]["error"]


def test_transcripts_are_the_english_that_was_said(night):
    overlaps = []
    for said, row in _said_and_logged(night):
        if row["status"] == "ok" and said.text:
            spoken = set(re.findall(r"[a-z']+", said.text.lower()))
            overlaps.append(len(spoken & set(row["transcript"].split())) / len(spoken))
    assert len(overlaps) >= 20
    assert statistics.median(overlaps) >= 0.7, overlaps


def test_transcripts_come_from_real_decoding(night):
    rows = night["db"].execute("SELECT * FROM interactions WHERE status IN ('ok', 'max_length')").fetchall()
    assert rows
    for row in rows:
        words = json.loads(row["words_json"])
        assert words, dict(row)
        assert row["transcript"].strip()
        for word in words:
            assert 0 <= word["start"] < word["end"] <= row["recorded_seconds"] + 0.05
            assert 0 <= word["conf"] <= 1
        assert row["transcript_state"] == "done"
        heard = night["db"].execute("SELECT * FROM transcripts WHERE interaction_id = ? AND is_current",
                                    (row["id"],)).fetchone()
        assert (heard["text"], heard["engine"]) == (row["transcript"], "pocketsphinx")
        assert heard["decode_seconds"] > 0  # real decoding took time; its speed is the benchmark's business
        if row["kind"] in ("enable", "open", "disable") or row["expectation_met"] is not None:
            assert row["transcript_ready_delay"] >= 0  # decoded while recorded; how soon is for the benchmark
        else:  # recorded, queued, and decoded by the background transcriber once the step was done
            assert row["transcript_ready_delay"] is None and heard["created_at"] >= row["finished_at"]


def test_every_referenced_audio_file_exists_and_is_valid(night):
    audio_dir = night["options"].audio_dir
    rows = night["db"].execute("SELECT prompt_audio, response_audio, recorded_seconds, status FROM interactions")
    for row in rows.fetchall():
        prompt = validate_wav(audio_dir / row["prompt_audio"])
        assert prompt.duration > 0.3
        if row["status"] == "skipped":  # never said, so nothing was recorded
            assert row["response_audio"] is None
            continue
        reply = validate_wav(audio_dir / row["response_audio"], min_duration=0.0)
        assert reply.format == MIC_FORMAT
        assert reply.duration == pytest.approx(row["recorded_seconds"], abs=0.001)
    leftovers = [p for p in audio_dir.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_installs_are_logged_with_the_interaction_they_came_from(night):
    installs = night["db"].execute(
        "SELECT s.*, i.kind, i.status FROM skill_installs s JOIN interactions i ON i.id = s.interaction_id"
    ).fetchall()
    assert len(installs) == 2 * 6  # six enable steps of the pet lover, on two Echos
    assert {r["kind"] for r in installs} == {"enable"}
    control = night["db"].execute(
        "SELECT count(*) FROM skill_installs s JOIN personas p ON p.id = s.persona_id WHERE p.is_control"
    ).fetchone()[0]
    assert control == 0


def test_nothing_is_left_running_or_lying_around(night):
    assert _children() - night["children_before"] == set()
    lab = night["options"].lab_dir
    assert not (lab / "pulse").exists()
    out = subprocess.run(["pgrep", "-f", str(lab)], capture_output=True, text=True)
    assert out.stdout.strip() == ""
    # The lab network is gone: no namespace, no bridge, no resolver, no capture.
    assert f"{PREFIX}-{os.getpid() % 0xFFFF:04x}-" not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                                         text=True).stdout
    assert f"{PREFIX}{os.getpid() % 0xFFFF:04x}" not in subprocess.run(["ip", "link"], capture_output=True,
                                                                        text=True).stdout
    assert not (lab / NETWORK_FILE).exists()


# -- the Echos' traffic -------------------------------------------------------------------------------


def _linked_names(db, interaction_id):
    rows = db.execute("SELECT name FROM flows WHERE interaction_id = ? AND name_source = 'tls_sni'", (interaction_id,))
    return {r["name"] for r in rows} - {SimScript.load().heartbeat_endpoint}


def test_the_nights_capture_is_recorded_with_its_facts(night):
    captures = night["db"].execute("SELECT * FROM captures").fetchall()
    assert len(captures) == 1
    capture = captures[0]
    path = Path(capture["path"])
    assert capture["source"] == "night" and capture["analyzed_at"] is not None and capture["error"] is None
    assert capture["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert capture["bytes"] == path.stat().st_size
    assert capture["packets_dropped"] == 0 and capture["packets"] > 100
    lab = yaml.safe_load((night["options"].lab_dir / "lab.yaml").read_text())
    assert capture["interface"] == lab["capture"]["interface"]
    for echo in lab["echos"]:
        assert f"ether host {echo['mac']}" in capture["filter"]
        device = night["db"].execute("SELECT mac, ip FROM devices WHERE name = ?", (echo["name"],)).fetchone()
        assert (device["mac"], device["ip"]) == (echo["mac"], echo["ip"])
    first, last = capture["first_packet_at"], capture["last_packet_at"]
    runs = night["db"].execute("SELECT min(started_at), max(finished_at) FROM runs").fetchone()
    assert capture["started_at"] <= first < runs[0] and first < last <= capture["finished_at"]


def test_each_step_is_linked_to_exactly_the_servers_its_echo_reached(night):
    """From the database alone: every spoken step's TLS flows name what the Echo reached for that reply."""
    checked = 0
    for echo in _echos(night):
        for said, row in zip(read_truth(truth_path(night["options"].lab_dir, echo)), _spoken(night["db"], echo),
                             strict=True):
            assert _linked_names(night["db"], row["id"]) == set(said.contacted), (echo, row["step_index"], said.text)
            checked += bool(said.contacted)
    assert checked >= 20


def test_each_skill_reaches_its_own_endpoints_and_the_control_none(night):
    script = SimScript.load()
    own = {s.name: set(s.endpoints) for s in script.skills}
    skill_servers = set().union(*own.values())
    reached = night["db"].execute(
        "SELECT s.name AS skill, group_concat(DISTINCT f.name) AS names FROM flows f "
        "JOIN interactions i ON i.id = f.interaction_id JOIN skills s ON s.id = i.skill_id "
        "WHERE f.name_source = 'tls_sni' GROUP BY s.name").fetchall()
    by_skill = {r["skill"]: set(r["names"].split(",")) & skill_servers for r in reached}
    assert by_skill["Cat Facts"] == own["Cat Facts"] and by_skill["Cat Genius"] == own["Cat Genius"]
    assert all(names <= own.get(skill, set()) for skill, names in by_skill.items())
    control = night["db"].execute(
        "SELECT DISTINCT f.name FROM flows f JOIN devices d ON d.id = f.device_id JOIN runs r ON r.device_id = d.id "
        "JOIN personas p ON p.id = r.persona_id WHERE p.is_control AND f.name IS NOT NULL").fetchall()
    assert {r["name"] for r in control} == {script.alexa_endpoint, script.heartbeat_endpoint}
    only = night["db"].execute("SELECT DISTINCT domain FROM flows f WHERE f.interaction_id IS NOT NULL").fetchall()
    assert {"catfacts.example", "adtrack.example", "amazon.example"} <= {r["domain"] for r in only}


def test_background_traffic_is_labelled(night):
    rows = night["db"].execute("SELECT d.name AS echo, f.* FROM flows f JOIN devices d ON d.id = f.device_id "
                               "WHERE f.link = 'background'").fetchall()
    assert {r["echo"] for r in rows} == set(_echos(night))  # every Echo reported during the rig check at least
    assert {r["name"] for r in rows} == {SimScript.load().heartbeat_endpoint}
    assert all(r["interaction_id"] is None for r in rows)
    report = run_report(night["options"].db, "background", Filters(since="2000-01-01"))[1]
    with report:
        assert {row[1] for row in report} == set(_echos(night))


def test_traffic_reports_on_the_night(night):
    columns, rows = run_report(night["options"].db, "endpoints", Filters(since="2000-01-01"))
    with rows:
        endpoints = [dict(zip(columns, row, strict=True)) for row in rows]
    assert {e["name"] for e in endpoints if e["skill"] == "Cat Facts"} >= set(SimScript.load().skills[0].endpoints)
    columns, rows = run_report(night["options"].db, "persona-endpoints", Filters(since="2000-01-01"))
    with rows:
        only = {(row[0], row[2]) for row in rows}
    assert ("pets-demo", "catfacts.example") in only and not any(domain == "amazon.example" for _, domain in only)


def test_logged_reply_starts_are_within_the_documented_accuracy(night):
    """The log's reply start against the moment the simulated Echo's sound began (its truth log)."""
    errors = []
    for echo in _echos(night):
        for said, row in zip(read_truth(truth_path(night["options"].lab_dir, echo)), _spoken(night["db"], echo),
                             strict=True):
            if row["response_started_at"] and said.duration > 0 and said.kind != "stream":
                logged = datetime.fromisoformat(row["response_started_at"]).timestamp()
                errors.append(abs(logged - said.wall_started))
    assert len(errors) >= 20
    within = sum(e <= TIMESTAMP_ACCURACY_SECONDS for e in errors) / len(errors)
    assert within >= 0.9 and max(errors) < 3 * TIMESTAMP_ACCURACY_SECONDS, sorted(errors)


def _echos(night):
    return [s.echo for s in night["summaries"]]


def test_the_demo_writes_only_under_the_folders_it_is_given(night):
    root = night["root"]
    assert (root / "lab" / "lab.yaml").is_file()  # the virtual lab, beside the log
    assert {p.name for p in root.iterdir()} <= {"log.sqlite", "log.sqlite-wal", "log.sqlite-shm", "audio", "lab"}
    assert _files(settings.data_dir()) == night["data_before"]  # nothing in the project's data folder
