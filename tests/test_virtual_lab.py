"""The virtual lab's own guarantees: it goes when its owner goes, and air between devices is temporary."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.sim.lab import LabError, VirtualLab, acoustic_coupling, server_env

OWNER = """
import sys, time
from pathlib import Path
from orchestrator.sim.lab import VirtualLab
VirtualLab(Path(sys.argv[1]), ["echo1"]).start()
print("ready", flush=True)
time.sleep(120)
"""


def _lab_processes(folder: Path) -> str:
    return subprocess.run(["pgrep", "-af", str(folder)], capture_output=True, text=True).stdout.strip()


@pytest.mark.lab
def test_a_lab_whose_owner_is_killed_stops_with_it(tmp_path):
    folder = tmp_path / "lab"
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None and owner.stdout.readline().strip() == "ready"
    assert "pulseaudio" in _lab_processes(folder)
    owner.send_signal(signal.SIGKILL)  # no cleanup runs
    owner.wait()
    owner.stdout.close()
    deadline = time.monotonic() + 10
    while _lab_processes(folder) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _lab_processes(folder) == ""


@pytest.mark.lab
def test_air_between_devices_lasts_only_as_long_as_asked(tmp_path):
    with VirtualLab(tmp_path / "lab", ["echo1", "echo2"]) as lab:
        assert server_env(lab.folder)["PULSE_SERVER"] == lab.client_env()["PULSE_SERVER"]
        before = lab.pactl("list", "short", "modules").count("module-loopback")
        with acoustic_coupling(lab.folder, [("echo1", "echo1"), ("echo1", "echo2")]):
            assert lab.pactl("list", "short", "modules").count("module-loopback") == before + 2
        assert lab.pactl("list", "short", "modules").count("module-loopback") == before
    with pytest.raises(LabError, match="no virtual lab is running"):
        server_env(tmp_path / "lab")


@pytest.mark.lab
def test_a_lab_larger_than_one_sound_server_spreads_its_echos_and_every_device_works(tmp_path):
    from orchestrator.lab import rig_check
    from orchestrator.lab.config import EchoConfig, LabConfig
    from orchestrator.sim.lab import ECHOS_PER_SERVER

    names = [f"echo{i + 1}" for i in range(ECHOS_PER_SERVER + 1)]
    with VirtualLab(tmp_path / "lab", names) as lab:
        lab.activate()
        first, last = server_env(lab.folder, names[0]), server_env(lab.folder, names[-1])
        assert first["PULSE_SERVER"] != last["PULSE_SERVER"]
        with pytest.raises(LabError, match="different sound servers"), \
                acoustic_coupling(lab.folder, [(names[0], names[-1])]):
            pass
        config = LabConfig(echos=[EchoConfig(name=n, room=n, speaker=f"{n}_out", microphone=f"{n}_mic_mon")
                                  for n in names], virtual_lab=lab.folder)
        report = rig_check.self_test(config, None, "manual")  # every speaker heard by its own microphone
    assert report.passed, report.failures()
