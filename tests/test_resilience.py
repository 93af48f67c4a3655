"""Faults during a night on the virtual lab: killed workers, a killed night, a device that disappears.

The kill test SIGKILLs a persona's worker again and again, at random moments, right after a
recording lands on disk and early in a step, and checks after each kill that nothing recorded is
lost; each next start resumes the run until its plan is done. Another SIGKILLs the night itself
(`orchestrator run` in a process of its own): nothing it started may go on speaking to the Echo,
and the next `orchestrator run`, from another shell, resumes the run.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.asr.shards import default_count
from orchestrator.audio.clip import validate_wav
from orchestrator.catalog.skills import load_catalog
from orchestrator.lab.config import EchoConfig, LabConfig, RigCheck
from orchestrator.plan.persona import compile_plan, load_persona
from orchestrator.runner.night import Night
from orchestrator.runner.run import RunRequest
from orchestrator.sim.demo import DEMO_ENDPOINTING, render_sim_voice
from orchestrator.sim.echo import SCRIPT as SIM_SCRIPT
from orchestrator.sim.echo import SimScript, SimulatedEchos
from orchestrator.sim.lab import VirtualLab

pytestmark = pytest.mark.lab

#: Kills in the killed-workers test: four at each of its three moments.
KILLS = 12
QUESTIONS = ["what time is it", "how tall is mount everest"]
FINAL = ("ok", "no_response", "max_length", "error", "skipped")


@pytest.fixture(scope="module")
def rig(tmp_path_factory, english_model, catalog_dir):
    root = tmp_path_factory.mktemp("faults")
    lab_dir = root / "lab"
    persona_path = root / "asker.yaml"
    plan = "\n".join(f"  - ask: {QUESTIONS[i % 2]}" for i in range(12))
    persona_path.write_text(f"name: asker\ncontrol: true\necho: echo1\nplan:\n{plan}\n")
    other_path = root / "other.yaml"
    other_path.write_text("name: other\ncontrol: true\necho: echo2\nplan:\n" + "  - ask: what time is it\n" * 3)
    # Replies with an expectation are decoded while recorded, on the transcription server.
    listener_path = root / "listener.yaml"
    listener_path.write_text("name: listener\ncontrol: true\necho: echo2\nplan:\n"
                             + "  - say: what time is it\n    expect: [past, o'clock]\n" * 3)
    catalog = load_catalog(catalog_dir)
    script = SimScript.load(SIM_SCRIPT)
    clips = render_sim_voice(script, root / "audio")
    events: queue.Queue = queue.Queue()
    with VirtualLab(lab_dir, ["echo1", "echo2"]) as vlab:
        vlab.activate()
        lab = LabConfig(echos=[EchoConfig(name=n, room=n, speaker=f"{n}_out", microphone=f"{n}_mic_mon")
                               for n in ("echo1", "echo2")],
                        endpointing=DEMO_ENDPOINTING, virtual_lab=lab_dir,
                        # the self-test has tests of its own (test_rig_check.py); 20 restarts need not probe 20 times
                        rig_check=RigCheck(before_night=False))
        with SimulatedEchos(lab_dir, ["echo1", "echo2"], script, clips, "sounddevice"):
            with Night(english_model, lab_dir, on_event=events.put) as night:
                yield {"root": root, "vlab": vlab, "lab": lab, "catalog": catalog, "night": night, "events": events,
                       "persona": load_persona(persona_path), "other": load_persona(other_path),
                       "listener": load_persona(listener_path),
                       "db": root / "log.sqlite", "audio": root / "audio", "model": english_model}


def _request(rig, loaded, resume_run_id=None):
    return RunRequest(loaded, rig["lab"], rig["catalog"], rig["db"], rig["audio"], rig["model"],
                      asr_socket=Path(), asr_authkey=b"", resume_run_id=resume_run_id)


def _start(rig, requests):
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(summaries=rig["night"].run(requests)))
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = rig["night"].worker_pids()
        if pids and all(pids.values()):
            return thread, result, pids
        time.sleep(0.01)
    raise AssertionError("workers did not start")


def _wait_for_new_audio(folder: Path, known: set[str], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if folder.is_dir() and {p.name for p in folder.glob("*.wav")} - known:
            return True
        time.sleep(0.001)
    return False


def _wait_for_step_start(events: queue.Queue, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            event = events.get(timeout=0.05)
        except queue.Empty:
            continue
        if event.status == "running":
            return


def _kill_somewhere(rig, mode: int, rng: random.Random, run_id: int | None, pid: int) -> bool:
    folder = rig["audio"] / "recordings" / str(run_id)
    known = {p.name for p in folder.glob("*.wav")} if run_id else set()
    if mode == 0:
        time.sleep(rng.uniform(0.5, 9.0))
    elif mode == 1 and run_id is not None:
        _wait_for_new_audio(folder, known, 20.0)  # right after a recording lands: mid-write
    else:
        _drain(rig["events"])
        _wait_for_step_start(rig["events"], 20.0)
        time.sleep(rng.uniform(0.0, 2.5))  # mid-prompt or early in the recording
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False  # the run reached its end first
    return True


def _drain(events: queue.Queue) -> None:
    while True:
        try:
            events.get_nowait()
        except queue.Empty:
            return


def _run_error(rig, summary) -> str:
    db = sqlite3.connect(rig["db"])
    return db.execute("SELECT error FROM runs WHERE id = ?", (summary.run_id,)).fetchone()[0] or ""


def _check_nothing_lost(db_path: Path, audio: Path, before: dict[tuple[int, int], str]) -> dict[tuple[int, int], str]:
    db = sqlite3.connect(db_path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = db.execute(
        "SELECT i.run_id, i.step_index, i.attempt, i.status, i.prompt_audio, i.response_audio "
        "FROM interactions i").fetchall()
    referenced = set()
    for _run, _step, _attempt, status, prompt, response in rows:
        assert status != "started"  # a dead worker's step is closed as interrupted
        validate_wav(audio / prompt)
        if response is not None:
            validate_wav(audio / response, min_duration=0.0)
            referenced.add(response)
    on_disk = {str(p.relative_to(audio)) for p in (audio / "recordings").rglob("*.wav")}
    assert on_disk <= referenced, f"unaccounted audio: {on_disk - referenced}"
    assert not list((audio / "recordings").rglob("*.tmp"))
    finished = {(r[0], r[1]): r[3] for r in rows if r[3] in FINAL}
    for key, status in before.items():
        assert finished.get(key) == status, f"step {key} was {status}, now {finished.get(key)}"
    db.close()
    return finished


def test_killed_workers_lose_nothing_and_every_run_resumes_to_its_end(rig):
    rng = random.Random(20261122)
    run_id, kills, finished = None, 0, {}
    completed_runs: list[int] = []
    while kills < KILLS or run_id is not None:
        thread, result, pids = _start(rig, [_request(rig, rig["persona"], run_id)])
        if kills < KILLS and _kill_somewhere(rig, kills % 3, rng, run_id, pids["asker"]):
            kills += 1
        thread.join(timeout=120)
        assert not thread.is_alive()
        [summary] = result["summaries"]
        began = run_id is not None or summary.status != "failed"
        assert summary.status in ("interrupted", "completed") or "could not start" in _run_error(rig, summary), summary
        finished = _check_nothing_lost(rig["db"], rig["audio"], finished)
        if summary.status == "completed":
            completed_runs.append(summary.run_id)
            run_id = None
        else:
            run_id = summary.run_id if began else None  # killed before its run began: logged, nothing to resume
    assert completed_runs
    db = sqlite3.connect(rig["db"])
    planned = len(compile_plan(rig["persona"].persona, rig["catalog"]))
    for run in completed_runs:
        steps = db.execute("SELECT step_index, attempt, status FROM interactions WHERE run_id = ?", (run,)).fetchall()
        for index in range(planned):
            mine = [s for s in steps if s[0] == index]
            # done, or interrupted on its first try and again on its one retry
            assert any(s[2] in FINAL for s in mine) or [s[2] for s in mine] == ["interrupted", "interrupted"], mine
    interrupted = db.execute("SELECT count(*) FROM interactions WHERE status = 'interrupted'").fetchone()[0]
    assert interrupted >= 1


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _final_steps(db: Path) -> int:
    try:
        with sqlite3.connect(db) as connection:
            return connection.execute("SELECT count(*) FROM interactions WHERE status = 'ok'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # the log is not made yet


def test_a_killed_night_leaves_nothing_speaking_and_the_next_run_resumes_it(rig, catalog_dir, tmp_path):
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(yaml.safe_dump(rig["lab"].model_dump(mode="json")))
    persona = tmp_path / "asker.yaml"  # five questions: two before the kill, three for the resumed run
    persona.write_text("name: asker\ncontrol: true\necho: echo1\nplan:\n" + "  - ask: what time is it\n" * 5)
    db = tmp_path / "log.sqlite"
    command = [sys.executable, "-m", "orchestrator", "run", str(persona), "--lab", str(lab_file),
               "--catalog", str(catalog_dir), "--db", str(db), "--audio-dir", str(tmp_path / "audio"),
               "--model", str(rig["model"])]
    night = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _final_steps(db) < 2 and night.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert night.poll() is None, night.stderr.read().decode() if night.stderr else ""
    started = _descendants(night.pid)
    assert started  # its persona worker and transcription server, at least
    night.kill()
    night.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in started if _alive(pid)]
    connection = sqlite3.connect(db)
    ((run_id, status),) = connection.execute("SELECT id, status FROM runs").fetchall()
    assert status == "running"  # what the next start resumes
    # Another shell: nothing of the first one's environment, only the lab folder the lab file names.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "ALSA_", "XDG_RUNTIME"))}
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr
    runs = connection.execute("SELECT id, status FROM runs").fetchall()
    assert runs == [(run_id, "completed")]
    planned = 5
    done = connection.execute("SELECT count(DISTINCT step_index) FROM interactions WHERE run_id = ? AND status IN "
                              "('ok', 'no_response', 'max_length')", (run_id,)).fetchone()[0]
    assert done == planned


def test_a_transcription_server_that_dies_mid_night_is_brought_back(rig):
    events = rig["events"]
    _drain(events)
    thread, result, _pids = _start(rig, [_request(rig, rig["listener"])])
    _wait_for_step_start(events, 30.0)
    time.sleep(1.0)  # the prompt plays; its reply's transcription stream is open
    before = rig["night"].transcription_pids
    assert len(before) == default_count(rig["night"].model) and None not in before
    dead = before[0]  # the server of the night's only Echo
    os.kill(dead, signal.SIGKILL)
    thread.join(timeout=180)
    assert not thread.is_alive()
    [summary] = result["summaries"]
    assert summary.status == "completed", summary
    after = rig["night"].transcription_pids
    assert after[0] not in (None, dead) and after[1:] == before[1:]  # the others were left alone
    db = sqlite3.connect(rig["db"])
    rows = db.execute("SELECT step_index, attempt, status, error FROM interactions WHERE run_id = ? "
                      "ORDER BY step_index, attempt", (summary.run_id,)).fetchall()
    assert rows[0][:3] == (0, 0, "error") and "transcription" in rows[0][3], rows
    assert rows[1][:3] == (0, 1, "ok"), rows  # the step in flight, tried again on the new server
    assert [r[2] for r in rows[2:]] == ["ok", "ok"], rows


def test_a_device_that_disappears_fails_its_echo_and_the_others_finish(rig):
    events = rig["events"]
    _drain(events)
    thread, result, _pids = _start(rig, [_request(rig, rig["persona"]), _request(rig, rig["other"])])
    _wait_for_step_start(events, 30.0)
    started = time.monotonic()
    rig["vlab"].remove_echo("echo1")  # its speaker and microphone vanish, as an unplugged USB card
    thread.join(timeout=120)
    assert not thread.is_alive()
    asker, other = result["summaries"]
    assert asker.status == "failed" and "device" in (asker.error or "")
    assert time.monotonic() - started < 60
    assert other.status == "completed" and other.ok == 3
    db = sqlite3.connect(rig["db"])
    error = db.execute("SELECT error FROM runs WHERE id = ?", (asker.run_id,)).fetchone()[0]
    assert "echo1" in error or "no audio" in error
