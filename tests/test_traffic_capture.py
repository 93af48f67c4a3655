"""The night's tcpdump on a real (namespaced) lab network: it captures the Echo's packets, its files are
recorded in the log, a capture that cannot start is a clear error, and it never outlives its owner.

Needs root (network namespaces, veth pairs, tcpdump); every address is inside namespaces made here.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator import log
from orchestrator.lab.config import Capture, EchoConfig
from orchestrator.sim.network import EchoNetwork, VirtualNetwork, plan
from orchestrator.traffic.capture import CaptureError, NightCapture, capture_filter
from orchestrator.traffic.store import analyze

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and tcpdump need root")

NAMES = ["api.catfacts.example", "avs-alexa-na.amazon.example"]


def _echo(network) -> EchoConfig:
    address = network.plan.echos["echo1"]
    return EchoConfig(name="echo1", speaker="s", microphone="m", mac=address.mac, ip=address.ip)


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    folder = tmp_path_factory.mktemp("net")
    with VirtualNetwork(folder, plan(["echo1"], NAMES, tag=f"t{os.getpid() % 0xFFF:03x}")) as net:
        yield net
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert net.plan.cloud not in listed and net.plan.echos["echo1"].namespace not in listed


def test_a_missing_interface_is_a_clear_error_before_anything_runs(tmp_path):
    echo = EchoConfig(name="echo1", speaker="s", microphone="m", ip="10.203.1.1")
    capture = NightCapture(Capture(interface="orchnope0"), [echo], tmp_path)
    started = time.monotonic()
    with pytest.raises(CaptureError, match=r"the capture on orchnope0 could not start: .*orchnope0"):
        capture.start()
    assert time.monotonic() - started < 5
    assert capture.pid is None or not _alive(capture.pid)


def test_the_filter_names_every_echo_by_mac_and_ip():
    echos = [EchoConfig(name="a", speaker="s", microphone="m", mac="02:0e:c0:00:00:01"),
             EchoConfig(name="b", speaker="t", microphone="n", ip="10.203.1.2"),
             EchoConfig(name="c", speaker="u", microphone="o")]
    assert capture_filter(echos) == "ether host 02:0e:c0:00:00:01 or host 10.203.1.2"
    with pytest.raises(CaptureError, match="none of the night.s Echos has a `mac` or `ip`"):
        capture_filter(echos[2:])


def test_the_capture_holds_the_echos_traffic_and_is_recorded_in_the_log(network, tmp_path):
    capture = NightCapture(Capture(interface=network.plan.bridge), [_echo(network)], tmp_path / "captures")
    capture.start()
    echo = EchoNetwork(network.plan, "echo1")
    try:
        assert echo.contact(tuple(NAMES)).result(10) == NAMES
    finally:
        echo.close()
    engine = log.open_log(tmp_path / "log.sqlite")
    log.upsert_device(engine, name="echo1", mac=network.plan.echos["echo1"].mac)
    [capture_id] = capture.finish(engine)
    assert capture.pid is None
    [result] = analyze(engine)
    engine.dispose()
    db = sqlite3.connect(tmp_path / "log.sqlite")
    source, path, packets, dropped, interface, flt = db.execute(
        "SELECT source, path, packets, packets_dropped, interface, filter FROM captures WHERE id = ?",
        (capture_id,)).fetchone()
    assert (source, dropped, interface) == ("night", 0, network.plan.bridge)
    assert flt == f"ether host {network.plan.echos['echo1'].mac} or host {network.plan.echos['echo1'].ip}"
    assert Path(path).parent == tmp_path / "captures" and packets >= 20
    names = db.execute("SELECT name, link, remote_port FROM flows WHERE name_source = 'tls_sni' ORDER BY name")
    assert names.fetchall() == [(name, "background", 443) for name in sorted(NAMES)]
    assert result.flows == 4  # two DNS exchanges, two TLS connections


def test_a_capture_never_outlives_the_night_that_started_it(network, tmp_path):
    """A night killed outright (SIGKILL, no cleanup) takes its tcpdump with it."""
    echo = _echo(network)
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from orchestrator.lab.config import Capture, EchoConfig\n"
        "from orchestrator.traffic.capture import NightCapture\n"
        f"echo = EchoConfig.model_validate({echo.model_dump()!r})\n"
        f"capture = NightCapture(Capture(interface={network.plan.bridge!r}), [echo], Path({str(tmp_path)!r}))\n"
        "capture.start()\n"
        "print(capture.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    night = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert night.stdout is not None
        tcpdump = int(night.stdout.readline())
        assert _alive(tcpdump)
    finally:
        night.send_signal(signal.SIGKILL)
        night.wait()
    deadline = time.monotonic() + 5
    while _alive(tcpdump) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(tcpdump)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_night_whose_capture_cannot_start_starts_nothing_unless_the_capture_is_optional(tmp_path):
    from types import SimpleNamespace

    from orchestrator.asr import SpeechModel
    from orchestrator.lab.config import LabConfig
    from orchestrator.runner.night import Night

    echo = EchoConfig(name="echo1", speaker="s", microphone="m", ip="10.203.1.1")
    phases: list[str] = []
    night = Night(SpeechModel("pocketsphinx", tmp_path, "none"), tmp_path, on_phase=phases.append)
    for optional in (False, True):
        lab = LabConfig(echos=[echo], capture=Capture(interface="orchnope0", optional=optional))
        request = SimpleNamespace(lab=lab, persona=SimpleNamespace(persona=SimpleNamespace(echo="echo1")),
                                  db_path=tmp_path / "log.sqlite")
        if not optional:
            with pytest.raises(CaptureError, match="orchnope0.*nothing was started .or mark the capture `optional"):
                night._start_capture([request])  # type: ignore[list-item]
        else:
            assert night._start_capture([request]) is None  # type: ignore[list-item]
    assert phases[-1].startswith("no traffic capture tonight (it is optional): the capture on orchnope0")
    night.close()
