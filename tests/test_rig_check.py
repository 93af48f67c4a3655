"""The rig self-test: probe tones measured on real PortAudio streams of the virtual lab, and judged."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from orchestrator import log
from orchestrator.catalog.skills import load_catalog
from orchestrator.cli.main import main
from orchestrator.lab import rig_check
from orchestrator.lab.config import EchoConfig, LabConfig, RigCheck
from orchestrator.lab.rig_check import Heard, judge, probe_clip, probe_frequency, tone_level
from orchestrator.plan.persona import load_persona
from orchestrator.runner.night import Night
from orchestrator.runner.run import RunRequest
from orchestrator.sim.demo import DEMO_ENDPOINTING, render_sim_voice
from orchestrator.sim.echo import SCRIPT as SIM_SCRIPT
from orchestrator.sim.echo import SimScript, SimulatedEchos
from orchestrator.sim.lab import VirtualLab, acoustic_coupling

RATE = 16000
ROOMS = {"echo1": "a", "echo2": "a", "echo3": "b"}


def _lab(virtual_lab: Path | None = None) -> LabConfig:
    return LabConfig(echos=[EchoConfig(name=n, room=room, speaker=f"{n}_out", microphone=f"{n}_mic_mon")
                            for n, room in ROOMS.items()], virtual_lab=virtual_lab)


# -- measuring a tone ---------------------------------------------------------------------------


@pytest.mark.parametrize("level", [-6.0, -12.0, -40.0])
def test_a_probe_measures_at_the_level_it_was_made(level):
    clip = probe_clip(930.0, level)
    assert tone_level(clip.samples(), 930.0, RATE) == pytest.approx(level, abs=0.2)


def test_a_neighbouring_probe_frequency_does_not_leak_into_the_measurement():
    clip = probe_clip(930.0, -6.0)
    assert tone_level(clip.samples(), 700.0, RATE) < -70
    assert tone_level(clip.samples(), 1160.0, RATE) < -70


def test_a_quiet_probe_is_found_under_loud_broadband_noise():
    noise = np.random.default_rng(1).normal(0, 1000, RATE).astype(np.int16)  # -30 dBFS RMS, all frequencies
    probe = probe_clip(1160.0, -40.0).samples()
    mixed = noise.copy()
    mixed[4000:4000 + len(probe)] += probe
    assert tone_level(mixed, 1160.0, RATE) == pytest.approx(-40.0, abs=1.5)
    assert tone_level(noise, 1160.0, RATE) < -48


def test_silence_and_empty_input_are_the_floor():
    assert tone_level(np.zeros(RATE, dtype=np.int16), 700.0, RATE) == rig_check.SILENCE_DBFS
    assert tone_level(np.zeros(0, dtype=np.int16), 700.0, RATE) == rig_check.SILENCE_DBFS


def test_every_echo_of_a_large_lab_gets_its_own_probe_frequency():
    lab = LabConfig(echos=[EchoConfig(name=f"e{i}", speaker="s", microphone="m") for i in range(16)])
    frequencies = [probe_frequency(lab, f"e{i}") for i in range(16)]
    assert len(set(frequencies)) == 16
    assert min(frequencies) >= 700 and max(frequencies) <= rig_check.HIGHEST_PROBE_HZ
    assert min(np.diff(sorted(frequencies))) >= rig_check.PROBE_STEP_HZ


# -- judging ----------------------------------------------------------------------------------------


def _heard(levels: dict[tuple[str, str], float], noise: float = -90.0) -> list[Heard]:
    return [Heard(s, m, levels.get((s, m), -120.0), noise) for s in ROOMS for m in ROOMS]


def test_an_echo_that_hears_its_own_probe_and_no_other_room_passes():
    levels = {(n, n): -15.0 for n in ROOMS} | {("echo1", "echo2"): -20.0}  # one room: they may hear each other
    verdicts = judge(_lab(), RigCheck(), list(ROOMS), _heard(levels), {})
    assert [v.status for v in verdicts] == ["ok", "ok", "ok"]
    assert verdicts[0].level_dbfs == -15.0 and verdicts[0].noise_dbfs == -90.0


def test_a_probe_too_quiet_or_too_close_to_the_noise_is_silent():
    levels = {("echo1", "echo1"): -45.0, ("echo2", "echo2"): -30.0, ("echo3", "echo3"): -15.0}
    heard = _heard(levels)
    heard = [Heard(h.speaker, h.microphone, h.level_dbfs, -35.0) if h.speaker == "echo2" else h for h in heard]
    verdicts = {v.echo: v for v in judge(_lab(), RigCheck(), list(ROOMS), heard, {})}
    assert verdicts["echo1"].status == "silent" and "-45.0 dBFS" in verdicts["echo1"].error
    assert "echo1_mic_mon" in verdicts["echo1"].error and "echo1_out" in verdicts["echo1"].error
    assert verdicts["echo2"].status == "silent" and "5.0 dB above its noise" in verdicts["echo2"].error
    assert verdicts["echo3"].status == "ok"


def test_a_probe_heard_in_another_room_is_crosstalk_for_the_echo_that_played_it():
    levels = {(n, n): -15.0 for n in ROOMS} | {("echo1", "echo3"): -40.0, ("echo3", "echo1"): -60.0}
    verdicts = {v.echo: v for v in judge(_lab(), RigCheck(max_crosstalk=-50), list(ROOMS), _heard(levels), {})}
    assert verdicts["echo1"].status == "crosstalk"
    assert "echo3 (room b) at -40.0 dBFS" in verdicts["echo1"].error
    assert verdicts["echo3"].status == "ok"  # -60 dBFS in room a is below the limit
    assert verdicts["echo2"].status == "ok"


def test_a_device_that_cannot_be_opened_is_its_echos_verdict():
    heard = [h for h in _heard({("echo3", "echo3"): -15.0}) if h.speaker == "echo3"]
    errors = {"echo1": "speaker 'echo1_out' could not be opened"}
    verdicts = judge(_lab(), RigCheck(), ["echo1", "echo3"], heard, errors)
    assert [(v.echo, v.status) for v in verdicts] == [("echo1", "device_error"), ("echo3", "ok")]
    assert verdicts[0].level_dbfs is None and "echo1_out" in verdicts[0].error


# -- on the virtual lab ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vlab(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rig") / "lab"
    with VirtualLab(folder, list(ROOMS)) as lab:
        lab.activate()
        yield lab


@pytest.mark.lab
def test_a_healthy_virtual_rig_passes_and_is_stored(vlab, tmp_path):
    engine = log.open_log(tmp_path / "log.sqlite")
    report = rig_check.self_test(_lab(vlab.folder), engine, "manual")
    assert report.passed, report.failures()
    for verdict in report.verdicts:
        assert verdict.level_dbfs == pytest.approx(-12.0, abs=1.0)  # played at -12, coupled at unity gain
    others = [h for h in report.heard if h.speaker != h.microphone]
    assert len(others) == 6 and all(h.level_dbfs < -60 for h in others)
    db = sqlite3.connect(tmp_path / "log.sqlite")
    assert db.execute("SELECT trigger, passed, probe_level_dbfs FROM rig_checks").fetchall() == [("manual", 1, -12.0)]
    rows = db.execute("SELECT d.name, r.status, r.probe_hz FROM rig_check_results r "
                      "JOIN devices d ON d.id = r.device_id ORDER BY d.name").fetchall()
    assert rows == [("echo1", "ok", 700.0), ("echo2", "ok", 930.0), ("echo3", "ok", 1160.0)]
    assert db.execute("SELECT count(*), sum(same_room) FROM rig_check_levels").fetchone() == (9, 5)


@pytest.mark.lab
def test_a_muted_speaker_and_a_leak_between_rooms_fail_their_echos(vlab, tmp_path):
    vlab.mute_speaker("echo2")
    try:
        with acoustic_coupling(vlab.folder, [("echo1", "echo3")]):  # room a's speaker reaches room b's microphone
            report = rig_check.self_test(_lab(vlab.folder), None, "manual")
    finally:
        vlab.mute_speaker("echo2", muted=False)
    verdicts = {v.echo: v for v in report.verdicts}
    assert verdicts["echo1"].status == "crosstalk" and "echo3 (room b)" in verdicts["echo1"].error
    assert verdicts["echo2"].status == "silent" and "heard nothing" in verdicts["echo2"].error
    assert verdicts["echo3"].status == "ok"
    assert report.check_id is None


@pytest.mark.lab
def test_lab_check_prints_the_verdicts_and_exits_non_zero_on_a_failure(vlab, tmp_path):
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(f"virtual_lab: {vlab.folder}\nechos:\n" + "".join(
        f"  - {{name: {n}, room: {r}, speaker: {n}_out, microphone: {n}_mic_mon}}\n" for n, r in ROOMS.items()))
    db = tmp_path / "log.sqlite"
    runner = CliRunner()
    passed = runner.invoke(main, ["lab", "check", "--lab", str(lab_file), "--db", str(db), "--echo", "echo3"])
    assert passed.exit_code == 0, passed.output
    assert "echo3" in passed.stdout and "1160" in passed.stdout and "ok" in passed.stdout
    vlab.mute_speaker("echo3")
    try:
        failed = runner.invoke(main, ["lab", "check", "--lab", str(lab_file), "--db", str(db), "--echo", "echo3"])
    finally:
        vlab.mute_speaker("echo3", muted=False)
    assert failed.exit_code == 1
    assert "silent" in failed.stdout and "echo3_out" in failed.stdout
    unknown = runner.invoke(main, ["lab", "check", "--lab", str(lab_file), "--echo", "attic"])
    assert unknown.exit_code == 2 and "attic" in unknown.output
    checks = sqlite3.connect(db).execute("SELECT passed FROM rig_checks ORDER BY id").fetchall()
    assert checks == [(1,), (0,)]


@pytest.mark.lab
def test_a_persona_whose_rig_fails_is_not_started_and_says_why(vlab, tmp_path, english_model, catalog_dir):
    personas = {}
    for echo in ("echo1", "echo3"):
        path = tmp_path / f"asker-{echo}.yaml"
        path.write_text(f"name: asker-{echo}\ncontrol: true\necho: {echo}\nplan:\n  - ask: what time is it\n")
        personas[echo] = load_persona(path)
    lab = _lab(vlab.folder).model_copy(update={"endpointing": DEMO_ENDPOINTING})
    script = SimScript.load(SIM_SCRIPT)
    clips = render_sim_voice(script, tmp_path / "audio")
    catalog = load_catalog(catalog_dir)
    db = tmp_path / "log.sqlite"
    requests = [RunRequest(p, lab, catalog, db, tmp_path / "audio", english_model, asr_socket=Path(), asr_authkey=b"")
                for p in personas.values()]
    vlab.mute_speaker("echo3")
    try:
        with SimulatedEchos(vlab.folder, ["echo1", "echo3"], script, clips, "sounddevice"), \
                Night(english_model, tmp_path / "work") as night:
            started, refused = night.run(requests)
    finally:
        vlab.mute_speaker("echo3", muted=False)
    assert started.status == "completed" and started.ok == 1
    assert refused.status == "failed" and "silent" in (refused.error or "") and "echo3_out" in (refused.error or "")
    db_rows = sqlite3.connect(db).execute(
        "SELECT r.id, r.status, r.rig_check_id, r.error, (SELECT count(*) FROM interactions i WHERE i.run_id = r.id) "
        "FROM runs r ORDER BY r.id").fetchall()
    by_id = {row[0]: row for row in db_rows}
    check = sqlite3.connect(db).execute("SELECT id, trigger, passed FROM rig_checks").fetchall()
    assert check == [(by_id[started.run_id][2], "night", 0)]
    assert by_id[refused.run_id][1:3] == ("failed", check[0][0]) and by_id[refused.run_id][4] == 0
    assert by_id[started.run_id][1] == "completed" and by_id[started.run_id][4] == 1
