"""Read-only querying of the log: what runs, what is refused, and the output formats."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from orchestrator import log
from orchestrator.analysis.query import (
    FORMATS,
    QueryError,
    QueryTimeout,
    Rows,
    connect_read_only,
    run_query,
    write_rows,
)

ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A log with one run of three steps, left open as the lab's writer would leave it."""
    engine = log.open_log(tmp_path / "orchestrator.sqlite")
    persona_id = log.upsert_persona(engine, name="fashion", interest="fashion & style")
    device_id = log.upsert_device(engine, name="echo-3")
    run_id = log.start_run(
        engine, persona_id=persona_id, device_id=device_id, audio_dir=tmp_path, config={"a": 1},
        asr_engine="vosk", asr_model="small", tts_engine="espeak-ng", tts_voice="en-us", tts_rate=170,
        audio_backend="pulse",
    )
    for step, (status, transcript) in enumerate(
        [("ok", "Welcome to Style, Inc."), ("no_response", None), ("ok", 'He said "hi", then left')]
    ):
        interaction_id = log.start_interaction(engine, run_id=run_id, step_index=step, kind="say")
        log.finish_interaction(
            engine, interaction_id, status, transcript=transcript, confidence=0.5 + step / 10
        )
    yield engine
    engine.dispose()


@pytest.fixture
def db_path(engine: Engine) -> Path:
    return Path(engine.url.database or "")


def snapshot(db_path: Path) -> tuple[str, list[str], Any, Any]:
    """The main file's bytes, plus everything readable through SQL (including uncheckpointed WAL)."""
    digest = hashlib.sha256(db_path.read_bytes()).hexdigest()
    connection = sqlite3.connect(db_path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        dump = list(connection.iterdump())
        journal_mode = connection.execute("PRAGMA journal_mode").fetchone()
        user_version = connection.execute("PRAGMA user_version").fetchone()
    finally:
        connection.close()
    return digest, dump, journal_mode, user_version


def test_select_returns_columns_and_rows(db_path: Path) -> None:
    columns, rows = run_query(
        db_path, "SELECT step_index, status FROM interactions WHERE status = ? ORDER BY step_index", ("ok",)
    )
    assert columns == ["step_index", "status"]
    assert list(rows) == [(0, "ok"), (2, "ok")]


def test_rows_stream_instead_of_being_fetched(db_path: Path) -> None:
    # An endless query can only return if rows are produced one at a time.
    endless = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT x FROM n"
    columns, rows = run_query(db_path, endless)
    assert isinstance(rows, Rows)
    with rows:
        assert list(islice(rows, 5)) == [(1,), (2,), (3,), (4,), (5,)]
    assert columns == ["x"]


def test_reads_see_the_writers_committed_rows(engine: Engine, db_path: Path, tmp_path: Path) -> None:
    persona_id = log.upsert_persona(engine, name="dating", interest="dating")
    _, rows = run_query(db_path, "SELECT id FROM personas WHERE name = 'dating'")
    assert list(rows) == [(persona_id,)]


def test_introspection_pragmas_are_allowed(db_path: Path) -> None:
    _, rows = run_query(db_path, "PRAGMA table_info(skills)")
    assert [row[1] for row in rows] == ["id", "name", "invocation_name", "category"]
    _, rows = run_query(db_path, "SELECT name FROM pragma_table_info('skills') ORDER BY cid")
    assert [row[0] for row in rows] == ["id", "name", "invocation_name", "category"]
    _, rows = run_query(db_path, "PRAGMA index_list(interactions)")
    assert "ix_interactions_status" in {row[1] for row in rows}
    for check in ("PRAGMA integrity_check", "PRAGMA quick_check"):
        _, rows = run_query(db_path, check)
        assert list(rows) == [("ok",)]
    _, rows = run_query(db_path, "PRAGMA user_version")
    assert list(rows) == [(0,)]


def test_json_table_functions_work(db_path: Path) -> None:
    _, rows = run_query(db_path, "SELECT key, value FROM json_each('{\"a\": 1, \"b\": [2, 3]}') ORDER BY key")
    assert list(rows) == [("a", 1), ("b", "[2,3]")]
    _, rows = run_query(db_path, "SELECT fullkey FROM json_tree('[1, [2]]') WHERE atom IS NOT NULL ORDER BY id")
    assert list(rows) == [("$[0]",), ("$[1][0]",)]
    # Over the log's rows too, with the JSON operators.
    _, rows = run_query(db_path, "SELECT count(*), sum(j.value) FROM interactions i, json_each(json_array(i.id)) j")
    assert list(rows) == [(3, 6)]
    _, rows = run_query(db_path, """SELECT '{"a": {"b": 7}}' -> '$.a' ->> 'b'""")
    assert list(rows) == [(7,)]


def test_named_parameters(db_path: Path) -> None:
    sql = "SELECT step_index FROM interactions WHERE status = :status AND step_index >= :first ORDER BY 1"
    _, rows = run_query(db_path, sql, {"status": "ok", "first": "1"})
    assert list(rows) == [(2,)]  # "1" is text, compared with the integer column as a number


def test_a_time_limit_counts_the_time_sqlite_works_only(db_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(QueryTimeout, match="query stopped after 0.5 s"):
        run_query(db_path, ENDLESS, timeout_s=0.5)
    assert time.monotonic() - started < 5
    # A reader slower than the limit is not stopped: waiting for it is not the query's time.
    _, rows = run_query(db_path, "SELECT id FROM interactions ORDER BY id", timeout_s=0.2)
    with rows:
        for _ in rows:
            time.sleep(0.1)


def sidecars(db_path: Path) -> set[str]:
    return {p.name for p in db_path.parent.iterdir() if p.name.startswith(db_path.name + "-")}


def test_a_query_on_a_closed_log_leaves_no_wal_or_shm_behind(engine: Engine, db_path: Path) -> None:
    engine.dispose()  # the writer's last connection closes: SQLite removes its -wal and -shm
    assert sidecars(db_path) == set()
    before = db_path.read_bytes()
    _, rows = run_query(db_path, "SELECT count(*) FROM interactions")
    assert list(rows) == [(3,)]
    assert sidecars(db_path) == set()
    connect_read_only(db_path).close()
    with pytest.raises(QueryError):
        run_query(db_path, "DELETE FROM interactions")
    assert sidecars(db_path) == set()
    assert db_path.read_bytes() == before


def test_a_writers_wal_and_shm_are_left_alone(engine: Engine, db_path: Path) -> None:
    assert sidecars(db_path) == {"orchestrator.sqlite-wal", "orchestrator.sqlite-shm"}
    _, rows = run_query(db_path, "SELECT count(*) FROM interactions")
    assert list(rows) == [(3,)]
    assert sidecars(db_path) == {"orchestrator.sqlite-wal", "orchestrator.sqlite-shm"}
    log.upsert_persona(engine, name="after", interest=None)  # the writer goes on writing
    _, rows = run_query(db_path, "SELECT count(*) FROM personas")
    assert list(rows) == [(2,)]


# --- the command, as a process: a time limit, and Ctrl-C ------------------------------------------


def start_query(db_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "orchestrator", "query", "--db", str(db_path), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def has_open(pid: int, path: Path) -> bool:
    target = str(path.resolve())
    try:
        return any(os.path.realpath(f"/proc/{pid}/fd/{fd}") == target for fd in os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:  # a descriptor closed while looked at
        return False


def test_the_command_stops_a_query_at_its_time_limit(db_path: Path) -> None:
    started = time.monotonic()
    process = start_query(db_path, ENDLESS, "--timeout", "1")
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1
    assert stderr == "Error: query stopped after 1 s (--timeout)\n"
    assert time.monotonic() - started < 15


def test_ctrl_c_stops_a_running_query(db_path: Path) -> None:
    process = start_query(db_path, ENDLESS, "--timeout", "0")
    try:
        deadline = time.monotonic() + 20
        while not has_open(process.pid, db_path):  # the query runs once the log is open
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        stdout, stderr = process.communicate(timeout=10)
    finally:
        process.kill()
    assert time.monotonic() - interrupted < 3
    assert (process.returncode, stdout, stderr) == (130, "", "Error: query interrupted\n")


REFUSED = [
    "UPDATE interactions SET status = 'ok'",
    "DELETE FROM interactions",
    "INSERT INTO skills (id) VALUES ('B0NEW')",
    "DROP TABLE interactions",
    "CREATE TABLE notes (x TEXT)",
    "CREATE INDEX ix_kind ON interactions (kind)",
    "ALTER TABLE skills ADD COLUMN rating REAL",
    "PRAGMA journal_mode=DELETE",
    "PRAGMA user_version=1",
    "PRAGMA query_only=OFF",
    "PRAGMA writable_schema=ON",
    "REPLACE INTO skills (id) VALUES ('B0NEW')",
    "BEGIN IMMEDIATE",
    "ANALYZE",
    "VACUUM",
    "SELECT * FROM pragma_query_only",
    "WITH gone AS (SELECT 1) DELETE FROM runs",
    "REINDEX",
    "PRAGMA wal_checkpoint(TRUNCATE)",
    "SELECT 1; DELETE FROM runs",
    "SELECT fts3_tokenizer('simple')",
    "SELECT fts3_tokenizer('simple', x'4141414141414141')",
    "SELECT load_extension('/tmp/evil.so')",
    "SELECT length(randomblob(1000000000))",
    "SELECT * FROM dbstat",
    "PRAGMA data_version = 2",
    "PRAGMA foreign_keys",
    "PRAGMA mmap_size = 1000000",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_statements_that_could_change_the_log_are_refused(db_path: Path, sql: str) -> None:
    before = snapshot(db_path)
    with pytest.raises(QueryError, match="not authorized|authorization denied|one statement|is read-only here"):
        _, rows = run_query(db_path, sql)
        list(rows)
    assert snapshot(db_path) == before


def test_read_only_holds_even_without_the_authorizer(db_path: Path) -> None:
    """The URI's mode=ro and query_only are guards of their own, not just the authorizer."""
    before = snapshot(db_path)
    connection = connect_read_only(db_path)
    try:
        connection.set_authorizer(None)
        with pytest.raises(sqlite3.OperationalError, match="readonly|query_only"):
            connection.execute("DELETE FROM interactions")
        connection.execute("PRAGMA query_only = OFF")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            connection.execute("DELETE FROM interactions")
    finally:
        connection.close()
    assert snapshot(db_path) == before


@pytest.mark.parametrize(
    "template", ["ATTACH DATABASE '{target}' AS other", "VACUUM INTO '{target}'"]
)
def test_statements_that_would_create_files_are_refused(db_path: Path, tmp_path: Path, template: str) -> None:
    target = tmp_path / "copy.sqlite"
    before = snapshot(db_path)
    with pytest.raises(QueryError, match="not authorized|authorization denied"):
        run_query(db_path, template.format(target=target))
    assert not target.exists()
    assert snapshot(db_path) == before


def test_missing_database_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "orchestrator.sqlite"
    with pytest.raises(QueryError, match=str(missing)):
        run_query(missing, "SELECT 1")
    assert not missing.exists()


def test_sql_errors_carry_sqlites_message(db_path: Path) -> None:
    with pytest.raises(QueryError, match="no such table: missing_table"):
        run_query(db_path, "SELECT * FROM missing_table")
    with pytest.raises(QueryError, match="syntax error"):
        run_query(db_path, "SELEC 1")


# --- output formats --------------------------------------------------------------------------

COLUMNS = ["id", "transcript", "confidence", "blob", "id"]
ROWS = [
    (1, 'He said "hi", then left', 0.5, None, 10),
    (2, None, None, b"\x00\xff", 20),
    (3, "naïve café, ünïcode\nsecond line", 1.25, None, 30),
]


def render(fmt: str, rows: list[tuple[Any, ...]] = ROWS) -> str:
    out = io.StringIO()
    write_rows(out, COLUMNS, iter(rows), fmt)  # type: ignore[arg-type]
    return out.getvalue()


def expected_objects() -> list[dict[str, Any]]:
    blob = {"$base64": True, "encoded": "AP8="}
    return [
        {"id": 1, "transcript": 'He said "hi", then left', "confidence": 0.5, "blob": None, "id_2": 10},
        {"id": 2, "transcript": None, "confidence": None, "blob": blob, "id_2": 20},
        {
            "id": 3, "transcript": "naïve café, ünïcode\nsecond line", "confidence": 1.25,
            "blob": None, "id_2": 30,
        },
    ]


def test_csv_round_trips() -> None:
    parsed = list(csv.reader(io.StringIO(render("csv"))))
    assert parsed == [
        COLUMNS,
        ["1", 'He said "hi", then left', "0.5", "", "10"],
        ["2", "", "", "AP8=", "20"],
        ["3", "naïve café, ünïcode\nsecond line", "1.25", "", "30"],
    ]


def test_json_round_trips() -> None:
    assert json.loads(render("json")) == expected_objects()
    assert json.loads(render("json", [])) == []


def test_jsonl_round_trips() -> None:
    lines = render("jsonl").splitlines()
    assert [json.loads(line) for line in lines] == expected_objects()


def test_table_is_aligned() -> None:
    rows = [(1, "ok", 0.5), (22, "no_response", None)]
    out = io.StringIO()
    write_rows(out, ["id", "status", "confidence"], rows, "table")
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["id", "status", "confidence"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert [line.split() for line in lines[2:]] == [["1", "ok", "0.5"], ["22", "no_response"]]
    # A column starts at the same offset on every line.
    assert lines[0].index("status") == lines[2].index("ok") == lines[3].index("no_response")
    assert lines[0].index("confidence") == lines[2].index("0.5")


def test_every_format_accepts_query_rows(db_path: Path) -> None:
    for fmt in FORMATS:
        columns, rows = run_query(db_path, "SELECT id, status, transcript FROM interactions ORDER BY id")
        out = io.StringIO()
        write_rows(out, columns, rows, fmt)  # type: ignore[arg-type]
        assert "no_response" in out.getvalue(), fmt
    with pytest.raises(ValueError):
        write_rows(io.StringIO(), ["a"], [], "xml")  # type: ignore[arg-type]


def test_a_query_cannot_build_values_that_exhaust_memory(tmp_path: Path) -> None:
    db = tmp_path / "log.sqlite"
    sqlite3.connect(db).close()
    _, rows = run_query(db, "SELECT length(printf('%.*c', 1000000, 'x')), printf('%.*c', 1000000000, 'x')")
    with rows:
        ((small, huge),) = list(rows)
    assert small == 1_000_000 and not huge  # SQLite gives up on the second instead of allocating 1 GB
