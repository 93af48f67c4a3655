"""The web view: Datasette metadata made from docs/log.md, and a real server on loopback."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from two_nights import NIGHT_1, NIGHT_2, build, two_nights_db  # noqa: F401 - the `db` fixture

from orchestrator.analysis import web
from orchestrator.analysis.reports import REPORTS
from orchestrator.cli.main import main

STARTUP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fetch_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def sql_url(base: str, sql: str) -> str:
    return f"{base}/orchestrator.json?" + urllib.parse.urlencode({"sql": sql, "_shape": "array"})


def wait_until_answering(base: str, process: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        assert process.poll() is None, f"exited with {process.returncode}"
        try:
            fetch_json(f"{base}/-/versions.json")
            return
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, "datasette did not answer in time"
            time.sleep(0.1)


@contextmanager
def serving(db: Path, *, immutable: bool = True) -> Iterator[str]:
    """A Datasette for ``db`` on a free loopback port; yields its base URL once it answers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with web.datasette_process(db, port=port, immutable=immutable) as process:
        wait_until_answering(base, process)
        yield base
    assert process.poll() is not None


def schema_columns(db: Path) -> dict[str, list[str]]:
    connection = sqlite3.connect(db)
    try:
        names = [r[0] for r in connection.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name <> 'alembic_version'")]
        return {n: [r[1] for r in connection.execute(f'PRAGMA table_info("{n}")')] for n in names}
    finally:
        connection.close()


# -- metadata ---------------------------------------------------------------------------------------------


def test_every_column_of_every_table_and_view_has_its_description_from_the_docs(db: Path) -> None:
    page = web.log_page()
    assert page is not None
    tables = web.metadata("orchestrator", page)["databases"]["orchestrator"]["tables"]
    for name, columns in schema_columns(db).items():
        described = tables[name]["columns"]
        assert list(described) == columns, name
        assert all(described.values()), name
    assert tables["interactions"]["columns"]["run_id"] == "→ runs.id"
    # A web page is read without docs/log.md beside it: no "see above", no view column that only points.
    for name, table in tables.items():
        for column, description in table.get("columns", {}).items():
            assert "see above" not in description and not re.fullmatch(r"\w+\.\w+(;.*)?", description), (name, column)
    assert tables["interaction_details"]["columns"]["status"] == tables["interactions"]["columns"]["status"]
    assert tables["run_details"]["columns"]["persona_interest"] == ("catalog category of the persona's interest; "
                                                                    "NULL for the control persona")
    assert tables["interaction_details"]["description"].startswith("Every step with its persona, Echo, skill")
    assert tables["alembic_version"] == {"hidden": True}


def test_every_report_is_a_stored_query() -> None:
    queries = web.metadata("orchestrator", None)["databases"]["orchestrator"]["queries"]
    assert set(queries) == {"night_summary", "install_outcomes", "reply_stats", "persona_vs_control", "skill_history",
                            "night_failures", "transcript_search", "skill_endpoints", "persona_only_endpoints",
                            "background_traffic"}
    for report in REPORTS.values():
        assert queries[report.query_name]["sql"] == report.sql.strip()
        assert queries[report.query_name]["params"] == list(report.params)


@pytest.mark.parametrize(
    "host, loopback",
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("192.168.1.20", False), ("lab-pc", False)],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert web.is_loopback(host) is loopback


# -- a real server -----------------------------------------------------------------------------------------


def test_served_stored_query_returns_the_reports_rows(db: Path) -> None:
    with serving(db) as base:
        latest = fetch_json(f"{base}/orchestrator/night_summary.json?_shape=array")
        chosen = fetch_json(f"{base}/orchestrator/night_summary.json?_shape=array&night={NIGHT_1}&persona=pets")
        search = fetch_json(f"{base}/orchestrator/transcript_search.json?_shape=array&grep=cat+sleep")
        served_metadata = fetch_json(f"{base}/-/metadata.json")
    assert [(r["night"], r["persona"], r["steps"], r["runs_failed"]) for r in latest] == [
        (NIGHT_2, "pets", 2, 1), (NIGHT_2, "vanilla", 0, 1),
    ]
    assert [(r["persona"], r["steps"], r["ok"], r["errors"], r["audio_minutes"]) for r in chosen] == [
        ("pets", 6, 4, 1, 3.0),
    ]
    assert [r["transcript"] for r in search] == ["here is a cat fact cats sleep a lot"]
    columns = served_metadata["databases"]["orchestrator"]["tables"]["interactions"]["columns"]
    assert columns["status"].startswith("ok (a reply, ended by itself), no_response (nothing heard")
    assert "skipped" in columns["status"]


def test_served_log_refuses_writes(db: Path) -> None:
    before = db.read_bytes()
    with serving(db) as base:
        with pytest.raises(urllib.error.HTTPError) as refused:
            fetch_json(f"{base}/orchestrator.json?sql=DELETE+FROM+runs")
        count = fetch_json(f"{base}/orchestrator.json?sql=SELECT+count(*)+AS+n+FROM+runs&_shape=array")
    assert refused.value.code == 400
    assert count == [{"n": 4}]
    assert db.read_bytes() == before


def test_served_log_has_the_sql_allow_list_of_query(db: Path) -> None:
    with serving(db) as base:
        with pytest.raises(urllib.error.HTTPError) as refused:
            fetch_json(sql_url(base, "SELECT hex(fts3_tokenizer('simple')) AS address"))
        keys = fetch_json(sql_url(base, "SELECT key FROM json_each('{\"a\": 1, \"b\": 2}') ORDER BY key"))
        leaves = fetch_json(sql_url(base, "SELECT count(*) AS n FROM json_tree('[1, [2, 3]]') WHERE atom IS NOT NULL"))
        columns = fetch_json(sql_url(base, "SELECT name FROM pragma_table_info('skills') ORDER BY cid"))
    assert refused.value.code == 400
    assert "not authorized to use function: fts3_tokenizer" in refused.value.read().decode()
    assert (keys, leaves) == ([{"key": "a"}, {"key": "b"}], [{"n": 3}])
    assert [c["name"] for c in columns] == ["id", "name", "invocation_name", "category"]


def test_a_refused_query_or_a_missing_page_is_logged_in_one_line(db: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with serving(db) as base:
        capfd.readouterr()
        for url in (sql_url(base, "DELETE FROM runs"), f"{base}/no-such-page"):
            with pytest.raises(urllib.error.HTTPError):
                fetch_json(url)
    log = capfd.readouterr()
    assert "Traceback" not in log.err + log.out
    delete, missing = [line for line in log.err.splitlines() if "DELETE" in line or "no-such-page" in line]
    assert '"GET /orchestrator.json?sql=DELETE+FROM+runs&_shape=array HTTP/1.1" 400' in delete
    assert '"GET /no-such-page HTTP/1.1" 404' in missing


def test_live_mode_shows_rows_still_in_the_wal(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.sqlite"
    engine = build(path, tmp_path)  # kept open: the last commits stay in the -wal file
    try:
        assert web.unseen_wal_bytes(path) > 0
        with serving(path, immutable=False) as base:
            rows = fetch_json(f"{base}/orchestrator/night_summary.json?_shape=array&since={NIGHT_1}")
        assert len(rows) == 4
    finally:
        engine.dispose()


# -- the command ---------------------------------------------------------------------------------------------


class FinishedServer:
    """Stands in for datasette_process: records how it was called and 'serves' nothing."""

    calls: list[dict[str, Any]] = []

    @classmethod
    @contextmanager
    def run(cls, db: Path, **options: Any) -> Iterator[subprocess.Popen[bytes]]:
        cls.calls.append({"db": db, **options})
        process = subprocess.Popen([sys.executable, "-c", "pass"])
        process.wait()
        yield process


@pytest.mark.parametrize(
    "args, warned",
    [([], False), (["--host", "0.0.0.0"], True), (["--host", "::1", "--port", "9000"], False)],
)
def test_browse_warns_when_not_on_loopback(db: Path, monkeypatch: pytest.MonkeyPatch, args: list[str],
                                           warned: bool) -> None:
    FinishedServer.calls.clear()
    monkeypatch.setattr(web, "datasette_process", FinishedServer.run)
    result = CliRunner().invoke(main, ["browse", "--db", str(db), *args])
    assert result.exit_code == 0, result.output
    assert ("not loopback" in result.stderr) is warned
    assert f"read-only at {web.url(call_host(args), call_port(args), db)}" in result.stderr
    (call,) = FinishedServer.calls
    assert (call["host"], call["port"], call["immutable"]) == (call_host(args), call_port(args), True)


def call_host(args: list[str]) -> str:
    return args[args.index("--host") + 1] if "--host" in args else "127.0.0.1"


def call_port(args: list[str]) -> int:
    return int(args[args.index("--port") + 1]) if "--port" in args else 8001


def test_url() -> None:
    assert web.url("::1", 9000, Path("data/orchestrator.sqlite")) == "http://[::1]:9000/orchestrator"
    assert web.url("127.0.0.1", 8001, Path("log.db")) == "http://127.0.0.1:8001/log"


def test_browse_warns_about_rows_an_immutable_view_cannot_see(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "orchestrator.sqlite"
    engine = build(path, tmp_path)
    monkeypatch.setattr(web, "datasette_process", FinishedServer.run)
    try:
        result = CliRunner().invoke(main, ["browse", "--db", str(path)])
        assert "still in its -wal file" in result.stderr
        result = CliRunner().invoke(main, ["browse", "--db", str(path), "--live"])
        assert "-wal" not in result.stderr
    finally:
        engine.dispose()


def test_browse_without_datasette_is_a_clear_error(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = web.importlib.util.find_spec
    monkeypatch.setattr(web.importlib.util, "find_spec",
                        lambda name, *a: None if name == "datasette" else real_find_spec(name, *a))
    result = CliRunner().invoke(main, ["browse", "--db", str(db)])
    assert result.exit_code == 1
    assert "pip install 'echo-orchestrator[web]'" in result.stderr


def test_browse_without_a_log(tmp_path: Path) -> None:
    missing = tmp_path / "orchestrator.sqlite"
    result = CliRunner().invoke(main, ["browse", "--db", str(missing)])
    assert result.exit_code == 1
    assert f"no database at {missing}" in result.stderr
    assert not missing.exists()


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):  # ended while looked at
            continue
        if stat.rsplit(")", 1)[1].split()[1] == str(pid):
            found.append(int(entry.name))
    return found


def test_sigterm_stops_browse_with_its_datasette_and_scratch_folder(db: Path, tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    port = free_port()
    browse = subprocess.Popen([sys.executable, "-m", "orchestrator", "browse", "--db", str(db), "--port", str(port)],
                              env={**os.environ, "TMPDIR": str(scratch)}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_until_answering(f"http://127.0.0.1:{port}", browse)
        (datasette,) = children(browse.pid)
        assert [p.name for p in scratch.iterdir()] != []
        browse.send_signal(signal.SIGTERM)
        assert browse.wait(timeout=STOP_TIMEOUT_S) == 0
    finally:
        browse.kill()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while Path(f"/proc/{datasette}").exists() or port_open(port):
        assert time.monotonic() < deadline, "datasette still running"
        time.sleep(0.1)
    assert list(scratch.iterdir()) == []


STOP_TIMEOUT_S = 5.0


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_every_audio_column_is_a_player_whose_sound_is_served_from_the_run_folder_only(tmp_path: Path) -> None:
    from test_step_audio import build_step

    db, step_id, _audio = build_step(tmp_path)
    db = db.rename(db.with_name("orchestrator.sqlite"))
    with serving(db) as base:
        with urllib.request.urlopen(f"{base}/orchestrator/interaction_details", timeout=10) as response:
            page = response.read().decode()
        players = sorted(set(re.findall(r'<audio controls preload="none" src="([^"]+)"', page)))
        assert players == [f"/-/audio/orchestrator/{step_id}/prompt.wav", f"/-/audio/orchestrator/{step_id}/reply.wav"]
        for player in players:
            with urllib.request.urlopen(base + player, timeout=10) as response:
                assert response.status == 200 and response.headers["Content-Type"] == "audio/wav"
                assert response.read(12)[8:] == b"WAVE"
        for escape in (f"/-/audio/orchestrator/{step_id}/../../../etc/passwd", "/-/audio/_internal/1/reply.wav",
                       "/-/audio/orchestrator/999/reply.wav"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(base + escape, timeout=10)
            assert refused.value.code == 404


def test_browse_help_names_every_stored_query():
    shown = " ".join(CliRunner().invoke(main, ["browse", "--help"]).output.split())
    assert all(name in shown for name in web.canned_queries()), shown
