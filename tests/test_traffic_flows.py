"""Flows from captures written packet by packet: names, directions, domains, trackers and links to steps."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from traffic_pcap import OTHER_MAC, PcapWriter, client_hello

from orchestrator import log
from orchestrator.traffic.domains import TrackerListError, is_tracker, load_tracker_list, registrable_domain
from orchestrator.traffic.flows import Identity, read_flows, server_name
from orchestrator.traffic.link import Window, Windows
from orchestrator.traffic.store import TrafficError, analyze, import_capture

T0 = datetime(2026, 3, 4, 21, 0, tzinfo=UTC).timestamp()
RESOLVER = "10.77.0.53"


def night_pcap(path: Path, pcapng: bool = False) -> Path:
    """One step's traffic at T0+10..T0+12, background at T0+1 and T0+40, another host's packets ignored."""
    w = PcapWriter(path)
    w.dns(T0 + 1, RESOLVER, 40001, "device-metrics-us.amazon.com", "10.77.1.1")
    w.tls(T0 + 1.1, "10.77.1.1", 50001, "device-metrics-us.amazon.com")
    w.dns(T0 + 10, RESOLVER, 40002, "api.catfacts.example.co.uk", "10.77.1.2")
    w.tls(T0 + 10.1, "10.77.1.2", 50002, "api.catfacts.example.co.uk", replies=3)
    w.tcp(T0 + 11, "10.77.1.3", 50003, 80, b"GET /ad.mp3 HTTP/1.1\r\nHost: ads.tracker.example:80\r\n\r\n")
    w.dns(T0 + 11.5, RESOLVER, 40003, "cdn.catfacts.example.co.uk", "10.77.1.4")
    w.tls(T0 + 12, "10.77.1.4", 50004, None)  # no SNI: named from the DNS answer
    w.tls(T0 + 40, "10.77.1.1", 50005, "device-metrics-us.amazon.com")
    other = PcapWriter(path, echo_ip="10.77.0.3", echo_mac=OTHER_MAC, frames=w.frames)
    other.tcp(T0 + 11, "10.77.1.9", 50009, 443, b"x")  # another device: not the Echo's
    return w.write(pcapng)


def test_real_client_hello_gives_its_server_name():
    assert server_name(client_hello("skill.example.com")) == "skill.example.com"
    assert server_name(b"\x16\x03\x01\x00") is None
    assert server_name(b"GET / HTTP/1.1\r\n") is None


@pytest.mark.parametrize("pcapng", [False, True], ids=["pcap", "pcapng"])
def test_flows_per_echo_with_the_names_behind_them(tmp_path, pcapng):
    flows, summary = read_flows(night_pcap(tmp_path / "night.cap", pcapng), [Identity.of(7, "02:00:00:00:0a:01", None)])
    assert summary.packets == 21 and summary.error is None
    assert summary.first == pytest.approx(T0 + 1) and summary.last == pytest.approx(T0 + 40.04)
    named = {(f.remote_address, f.remote_port, f.echo_port): (f.protocol, f.name, f.name_source) for f in flows}
    assert named == {
        (RESOLVER, 53, 40001): ("udp", "device-metrics-us.amazon.com", "dns_query"),
        ("10.77.1.1", 443, 50001): ("tcp", "device-metrics-us.amazon.com", "tls_sni"),
        (RESOLVER, 53, 40002): ("udp", "api.catfacts.example.co.uk", "dns_query"),
        ("10.77.1.2", 443, 50002): ("tcp", "api.catfacts.example.co.uk", "tls_sni"),
        ("10.77.1.3", 80, 50003): ("tcp", "ads.tracker.example", "http_host"),
        (RESOLVER, 53, 40003): ("udp", "cdn.catfacts.example.co.uk", "dns_query"),
        ("10.77.1.4", 443, 50004): ("tcp", "cdn.catfacts.example.co.uk", "dns_answer"),
        ("10.77.1.1", 443, 50005): ("tcp", "device-metrics-us.amazon.com", "tls_sni"),
    }
    skill = next(f for f in flows if f.echo_port == 50002)
    assert (skill.packets_out, skill.packets_in, skill.bytes_in) == (1, 3, 3 * (20 + 20 + 100))
    assert skill.bytes_out > 200  # a ClientHello
    assert all(f.device_id == 7 and f.echo_address == "10.77.0.2" for f in flows)


def test_an_echo_known_by_its_address_only(tmp_path):
    flows, _ = read_flows(night_pcap(tmp_path / "night.pcap"), [Identity.of(3, None, "10.77.0.2")])
    assert len(flows) == 8 and {f.device_id for f in flows} == {3}


def test_a_file_cut_inside_a_packet_keeps_what_came_before(tmp_path):
    path = night_pcap(tmp_path / "night.pcap")
    path.write_bytes(path.read_bytes()[:-30])  # a capture killed while writing its last packet
    flows, summary = read_flows(path, [Identity.of(1, "02:00:00:00:0a:01", None)])
    assert summary.packets == 21 and len(flows) == 8


def test_domains_and_trackers(tmp_path):
    assert registrable_domain("device-metrics-us.amazon.com") == "amazon.com"
    assert registrable_domain("api.catfacts.example.co.uk") == "example.co.uk"
    assert registrable_domain("co.uk") is None and registrable_domain("10.0.0.1") is None
    listed = tmp_path / "trackers.txt"
    listed.write_text("# ads\n0.0.0.0 tracker.example\n||doubleclick.net^\nmetrics.example.org\n")
    trackers = load_tracker_list(listed)
    assert trackers == {"tracker.example", "doubleclick.net", "metrics.example.org"}
    assert is_tracker("ads.tracker.example", trackers) and not is_tracker("example.org", trackers)
    listed.write_text("good.example\nnot a domain\n")
    with pytest.raises(TrackerListError, match=r"trackers.txt:2: 'not a domain'"):
        load_tracker_list(listed)


def test_windows_pick_the_latest_step_whose_window_with_tail_holds_the_moment():
    windows = Windows([Window(1, 10, 100.0, 110.0), Window(1, 11, 112.0, 120.0), Window(2, 20, 100.0, 200.0)],
                      tail=5.0)
    assert [windows.step_at(1, t) for t in (99.9, 100.0, 111.0, 113.0, 125.0, 125.1)] == [None, 10, 10, 11, 11, None]
    assert windows.step_at(2, 150.0) == 20 and windows.step_at(3, 150.0) is None


def _log_with_one_step(tmp_path: Path) -> tuple[Path, int]:
    db = tmp_path / "log.sqlite"
    engine = log.open_log(db)
    persona = log.upsert_persona(engine, name="pets", interest="pets-animals")
    device = log.upsert_device(engine, name="echo-1", mac="02:00:00:00:0a:01", ip="10.77.0.2")
    log.upsert_device(engine, name="echo-2")
    log.upsert_skill(engine, id="B01", name="Cat Facts")
    run = log.start_run(engine, persona_id=persona, device_id=device, audio_dir=tmp_path, config={},
                        asr_engine=None, asr_model=None, tts_engine=None, tts_voice=None, tts_rate=None,
                        audio_backend=None)
    step = log.start_interaction(engine, run_id=run, step_index=0, kind="open", skill_id="B01")
    at = lambda s: datetime.fromtimestamp(T0 + s, UTC)  # noqa: E731
    log.finish_interaction(engine, step, "ok", prompt_started_at=at(9.5), prompt_ended_at=at(10.5),
                           response_started_at=at(11), response_ended_at=at(12.5), finished_at=at(13))
    engine.dispose()
    return db, step


def test_import_and_analyze_link_each_flow_to_its_step_or_background(tmp_path):
    db, step = _log_with_one_step(tmp_path)
    trackers = tmp_path / "trackers.txt"
    trackers.write_text("tracker.example\n")
    engine = log.open_log(db)
    capture = import_capture(engine, night_pcap(tmp_path / "ap.pcap"), echo="echo-1", clock_offset=1.0)
    with pytest.raises(TrafficError, match="has no network identity"):
        import_capture(engine, tmp_path / "ap.pcap", echo="echo-2")
    with pytest.raises(TrafficError, match="no Echo called 'echo-9'"):
        import_capture(engine, tmp_path / "ap.pcap", echo="echo-9")
    bad = tmp_path / "notes.pcap"
    bad.write_text("not a capture")
    with pytest.raises(TrafficError, match="not a pcap or pcapng capture"):
        import_capture(engine, bad)
    [result] = analyze(engine, tail=1.0, trackers=load_tracker_list(trackers))
    engine.dispose()
    assert (result.capture_id, result.flows, result.error) == (capture, 8, None)
    db_rows = sqlite3.connect(db)
    row = db_rows.execute("SELECT source, packets, first_packet_at, clock_offset_seconds, length(sha256) "
                          "FROM captures").fetchone()
    assert row == ("import", 21, "2026-03-04T21:00:02.000Z", 1.0, 64)
    # The access point's clock is 1 s behind the log's: its T0+12 packet is the log's T0+13, inside the tail.
    links = db_rows.execute("SELECT echo_port, interaction_id, link, domain, tracker FROM flows ORDER BY echo_port")
    assert links.fetchall() == [
        (40001, None, "background", "amazon.com", 0),
        (40002, step, "interaction", "example.co.uk", 0),
        (40003, step, "interaction", "example.co.uk", 0),
        (50001, None, "background", "amazon.com", 0),
        (50002, step, "interaction", "example.co.uk", 0),
        (50003, step, "interaction", "tracker.example", 1),
        (50004, step, "interaction", "example.co.uk", 0),
        (50005, None, "background", "amazon.com", 0),
    ]
    # A shorter tail leaves the flow that began 0.5 s after the reply's end to the background.
    engine = log.open_log(db)
    analyze(engine, again=True, tail=0.4)
    engine.dispose()
    assert db_rows.execute("SELECT link FROM flows WHERE echo_port = 50004").fetchone() == ("background",)


def test_traffic_commands(tmp_path):
    from orchestrator.cli.traffic import traffic

    db, _step = _log_with_one_step(tmp_path)
    pcap = night_pcap(tmp_path / "ap.pcap")
    runner = CliRunner()
    done = runner.invoke(traffic, ["import", str(pcap), "--echo", "echo-1", "--db", str(db)])
    assert done.exit_code == 0, done.output
    assert "capture 1" in done.output
    done = runner.invoke(traffic, ["analyze", "--db", str(db)])
    assert done.exit_code == 0, done.output
    assert "8 flows: 5 during steps, 3 background" in done.output
    done = runner.invoke(traffic, ["import", str(tmp_path / "missing.pcap"), "--db", str(db)])
    assert done.exit_code == 2 and "missing.pcap: not a file" in done.output
