"""Read-only querying of the log: what runs, what is refused, and the output formats."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from orchestrator import log
from orchestrator.query import FORMATS, QueryError, Rows, connect_read_only, run_query, write_rows


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A log with one run of three steps, left open as the lab's writer would leave it."""
    engine = log.open_log(tmp_path / "orchestrator.sqlite")
    persona_id = log.upsert_persona(engine, name="fashion", interest="fashion & style")
    device_id = log.upsert_device(engine, name="echo-3")
    run_id = log.start_run(
        engine, persona_id=persona_id, device_id=device_id, audio_dir=tmp_path, config={"a": 1},
        asr_engine="vosk", asr_model="small", tts_engine="espeak-ng", tts_voice="en-us", tts_rate=170, audio_backend="pulse",
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
    _, rows = run_query(db_path, "PRAGMA index_list(interactions)")
    assert "ix_interactions_status" in {row[1] for row in rows}


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
    "SELECT * FROM pragma_table_info('skills')",
    "WITH gone AS (SELECT 1) DELETE FROM runs",
    "REINDEX",
    "PRAGMA wal_checkpoint(TRUNCATE)",
    "SELECT 1; DELETE FROM runs",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_statements_that_could_change_the_log_are_refused(db_path: Path, sql: str) -> None:
    before = snapshot(db_path)
    with pytest.raises(QueryError, match="not authorized|authorization denied|one statement"):
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
