"""The standing reports and the night's HTML page, over a log of two nights with known counts."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from full_disk import fill, small_disk  # noqa: F401 - the fixture
from two_nights import NIGHT_1, NIGHT_2, build, pick, rows_of, two_nights_db  # noqa: F401 - the `db` fixture

from orchestrator import log
from orchestrator.analysis.night_page import STATUS_COLOURS, html_table
from orchestrator.analysis.query import QueryError
from orchestrator.analysis.reports import REPORTS, Filters, ReportError, latest_night, run_report
from orchestrator.cli.main import main


def fingerprint(db: Path) -> str:
    """The log's data: the main file and its WAL. (Readers mark the -shm index; that is no change of data.)"""
    digest = hashlib.sha256()
    for path in (db, db.with_name(db.name + "-wal")):
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()


# -- night summary -----------------------------------------------------------------------------------------

SUMMARY = ("night", "persona", "echo", "runs", "runs_failed", "steps", "ok", "no_answer", "max_length", "errors",
           "interrupted", "retries", "audio_minutes")


def test_night_summary_defaults_to_the_latest_night(db: Path) -> None:
    assert latest_night(db) == NIGHT_2
    assert pick(rows_of(db, "night"), *SUMMARY) == [
        (NIGHT_2, "pets", "echo-1", 1, 1, 2, 1, 0, 0, 0, 1, 0, 1.0),
        (NIGHT_2, "vanilla", "echo-2", 1, 1, 0, 0, 0, 0, 0, 0, 0, 0.0),
    ]


def test_night_summary_of_a_chosen_night_counts_every_status(db: Path) -> None:
    # vanilla's run started after midnight UTC and still belongs to the night of the 4th.
    assert pick(rows_of(db, "night", night=NIGHT_1), *SUMMARY) == [
        (NIGHT_1, "pets", "echo-1", 1, 0, 6, 4, 1, 0, 1, 0, 1, 3.0),
        (NIGHT_1, "vanilla", "echo-2", 1, 0, 2, 1, 0, 0, 1, 0, 0, 1.0),
    ]


def test_night_summary_since_and_persona(db: Path) -> None:
    assert pick(rows_of(db, "night", since=NIGHT_1), "night", "persona") == [
        (NIGHT_1, "pets"), (NIGHT_1, "vanilla"), (NIGHT_2, "pets"), (NIGHT_2, "vanilla"),
    ]
    vanilla = rows_of(db, "night", since=NIGHT_1, persona="vanilla")
    assert pick(vanilla, "night", "steps") == [(NIGHT_1, 2), (NIGHT_2, 0)]
    assert rows_of(db, "night", since="2026-03-06") == []


# -- installs and replies --------------------------------------------------------------------------------------


def test_install_outcomes_per_persona_and_skill(db: Path) -> None:
    keys = ("persona", "skill_id", "skill_name", "action", "attempts", "enabled", "not_found", "other", "last_outcome")
    assert pick(rows_of(db, "installs"), *keys) == [
        ("pets", "B01", "Cat Facts", "enable", 1, 1, 0, 0, "enabled"),
        ("pets", "B02", "Dog Feeder", "enable", 2, 1, 1, 0, "enabled"),
    ]
    # Limited to the first night, the latest outcome of B02 is the failed one.
    assert pick(rows_of(db, "installs", night=NIGHT_1), "skill_id", "attempts", "last_outcome") == [
        ("B01", 1, "enabled"), ("B02", 1, "not_found"),
    ]
    assert rows_of(db, "installs", persona="vanilla") == []


def test_reply_statistics_per_skill(db: Path) -> None:
    keys = ("skill_id", "steps", "replies", "no_answer", "latency_mean_s", "latency_max_s", "length_mean_s",
            "length_max_s", "words_mean", "words_max")
    assert pick(rows_of(db, "replies"), *keys) == [
        ("B01", 5, 3, 1, 1.5, 2.0, 3.0, 4.0, 6.0, 9),
        ("B02", 3, 2, 0, 0.75, 1.0, 1.5, 2.0, 5.0, 5),
        (None, 2, 1, 0, 1.0, 1.0, 1.0, 1.0, 4.0, 4),  # the control's questions, answered by Alexa herself
    ]
    assert pick(rows_of(db, "replies", night=NIGHT_2), "skill_id", "steps", "replies") == [("B02", 2, 1)]


# -- failures and search ---------------------------------------------------------------------------------------


def test_failures_of_the_latest_night_include_runs_that_did_not_complete(db: Path) -> None:
    rows = rows_of(db, "failures")
    assert {(r["night"], r["echo"], r["kind"], r["status"]) for r in rows} == {
        (NIGHT_2, "echo-1", "run", "failed"),
        (NIGHT_2, "echo-1", "open", "interrupted"),
        (NIGHT_2, "echo-2", "run", "missed"),
    }
    errors = {r["status"]: r["error"] for r in rows}
    assert errors["missed"] == "the scheduler was down"
    assert errors["failed"] == "the Echo's microphone was unplugged"


def test_failures_of_a_chosen_night_carry_their_errors_and_audio(db: Path) -> None:
    rows = rows_of(db, "failures", night=NIGHT_1)
    assert pick(rows, "echo", "kind", "status") == [
        ("echo-1", "say", "no_response"), ("echo-1", "stop", "error"), ("echo-2", "ask", "timeout"),
    ]
    stop = rows[1]
    assert stop["error"] == "DeviceError: the microphone vanished at run.py:300"
    assert stop["response_audio_path"] == f"{db.parent.resolve()}/recordings/1/005-stop.wav"


@pytest.mark.parametrize(
    "words, expected",
    [
        ("cat fact", ["Cat Facts is now enabled", "welcome to cat facts", "here is a cat fact cats sleep a lot"]),
        ("SLEEP   cat ", ["here is a cat fact cats sleep a lot"]),
        ("dog enabled", ["Dog Feeder is now enabled"]),
        ("cat dog", []),
    ],
)
def test_transcript_search_needs_every_word_in_any_order_and_case(db: Path, words: str, expected: list[str]) -> None:
    assert [r["transcript"] for r in rows_of(db, "search", grep=words)] == expected


def test_transcript_search_with_filters(db: Path) -> None:
    assert rows_of(db, "search", grep="enabled", night=NIGHT_2, persona="pets")[0]["night"] == NIGHT_2
    assert len(rows_of(db, "search", grep="enabled")) == 2
    assert rows_of(db, "search", grep="enabled", persona="vanilla") == []


def test_misused_filters_are_refused(db: Path) -> None:
    with pytest.raises(ReportError, match="needs words"):
        run_report(db, "search", Filters(grep="  "))
    with pytest.raises(ReportError, match="search report only"):
        run_report(db, "night", Filters(grep="cat"))
    with pytest.raises(ReportError, match="unknown report"):
        run_report(db, "nightly")
    with pytest.raises(QueryError, match="no database"):
        run_report(db.parent / "missing.sqlite", "night")


def test_reports_leave_the_log_untouched(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.sqlite"
    engine = build(path, tmp_path)  # left open, its WAL in use, as during a night
    before = fingerprint(path)
    for name in REPORTS:
        rows_of(path, name, grep="cat" if name == "search" else None)
    assert fingerprint(path) == before
    engine.dispose()


# -- the command -----------------------------------------------------------------------------------------------


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def test_report_command_prints_json_on_stdout(db: Path) -> None:
    result = invoke("report", "night", "--db", str(db), "--night", NIGHT_1, "--format", "json")
    assert result.exit_code == 0, result.output
    assert [(r["persona"], r["steps"], r["errors"]) for r in json.loads(result.stdout)] == [
        ("pets", 6, 1), ("vanilla", 2, 1),
    ]
    assert result.stderr == ""


def test_report_command_formats(db: Path) -> None:
    csv_lines = invoke("report", "installs", "--db", str(db), "--format", "csv").stdout.splitlines()
    assert csv_lines[0].startswith("persona,skill_id,skill_name,action,attempts")
    assert len(csv_lines) == 3
    jsonl = invoke("report", "search", "--db", str(db), "--grep", "cat sleep", "--format", "jsonl").stdout
    assert [json.loads(line)["skill_id"] for line in jsonl.splitlines()] == ["B01"]
    table = invoke("report", "failures", "--db", str(db), "--persona", "vanilla").stdout.splitlines()
    assert table[0].split()[:4] == ["night", "night_round", "persona", "echo"]
    assert len(table) == 3 and "missed" in table[2]


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["search"], 1, "Error: the search report needs words"),
        (["night", "--grep", "cat"], 1, "Error: --grep applies to the search report only"),
        (["night", "--night", "2026-02-30"], 2, "'2026-02-30' is not a date"),
        (["weekly"], 2, "Invalid value for 'NAME'"),
        (["installs", "--html", "x.html"], 2, "--html makes the page of a night"),
        (["night", "--since", NIGHT_1, "--html", "x.html"], 2, "pick it with --night"),
    ],
)
def test_report_command_errors(db: Path, args: list[str], code: int, message: str) -> None:
    result = invoke("report", *args, "--db", str(db))
    assert result.exit_code == code
    assert message in result.stderr
    assert result.stdout == ""


def test_report_command_without_a_log(tmp_path: Path) -> None:
    missing = tmp_path / "none.sqlite"
    result = invoke("report", "night", "--db", str(missing))
    assert result.exit_code == 1
    assert f"no database at {missing}" in result.stderr
    assert not missing.exists()


# -- the night's page ------------------------------------------------------------------------------------------


def timeline_marks(page: str) -> list[tuple[str, str]]:
    """(colour, tooltip) of each step's mark in the page's timeline."""
    section = page.split("<h2>Timeline</h2>", 1)[1].split("<h2>", 1)[0]
    return re.findall(r'<rect [^>]*fill="(#[0-9a-f]{6})"><title>([^<]*)</title>', section)


def test_night_page_of_the_latest_night(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "night.html"
    result = invoke("report", "night", "--db", str(db), "--html", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert f"night {NIGHT_2}: 2 runs, 2 steps -> {out}" in result.stderr
    page = out.read_text()
    assert f"<h1>Night {NIGHT_2}</h1>" in page
    assert "2 of 2 runs did not complete" in page
    assert "the scheduler was down" in page and "the Echo&#x27;s microphone was unplugged" in page
    marks = timeline_marks(page)
    assert sorted(colour for colour, _ in marks) == sorted([STATUS_COLOURS["ok"], STATUS_COLOURS["interrupted"]])


def test_night_page_of_a_chosen_night_shows_each_step_coloured_by_status(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "night.html"
    assert invoke("report", "night", "--db", str(db), "--night", NIGHT_1, "--html", str(out)).exit_code == 0
    page = out.read_text()
    marks = timeline_marks(page)
    assert len(marks) == 8
    colours = [colour for colour, _ in marks]
    assert colours.count(STATUS_COLOURS["ok"]) == 5
    assert colours.count(STATUS_COLOURS["no_response"]) == 1
    assert colours.count(STATUS_COLOURS["timeout"]) == 1
    (error,) = [tooltip for colour, tooltip in marks if colour == STATUS_COLOURS["error"]]
    assert "pets step 6" in error and "DeviceError: the microphone vanished at run.py:300" in error
    assert "All 2 runs completed." in page
    assert "<h2>Failed steps (3)</h2>" in page


def test_night_page_is_self_contained(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "night.html"
    invoke("report", "night", "--db", str(db), "--html", str(out))
    page = out.read_text()
    assert "<script" not in page
    assert "http://" not in page and "https://" not in page
    assert "<style>" in page and "<svg" in page


def test_night_page_of_an_empty_log(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.sqlite"
    log.open_log(path).dispose()
    result = invoke("report", "night", "--db", str(path), "--html", str(tmp_path / "night.html"))
    assert result.exit_code == 1
    assert "no runs" in result.stderr
    assert not (tmp_path / "night.html").exists()


def test_night_page_refuses_a_fifo_a_device_a_link_and_a_missing_folder(db: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.html"
    os.mkfifo(fifo)
    real = tmp_path / "real.html"
    real.write_text("keep")
    link = tmp_path / "link.html"
    link.symlink_to(real)
    targets = {fifo: "is a FIFO, not a regular file", link: "is a symbolic link",
               tmp_path / "nowhere" / "night.html": "does not exist"}
    node = tmp_path / "null"
    try:  # a device node of our own, so that a writer that replaces it harms nothing else
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        targets[node] = "is a device"
    except PermissionError:
        pass
    for out, message in targets.items():
        result = invoke("report", "night", "--db", str(db), "--html", str(out))
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(f"Error: {out}: ") and message in result.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink() and real.read_text() == "keep"
    assert not node.exists() or stat.S_ISCHR(os.lstat(node).st_mode)
    assert not (tmp_path / "nowhere").exists()


def test_night_page_on_a_full_disk_keeps_the_earlier_page(db: Path, small_disk: Path) -> None:  # noqa: F811
    out = small_disk / "night.html"
    out.write_text("yesterday's page")
    fill(small_disk)
    result = invoke("report", "night", "--db", str(db), "--html", str(out))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {out}: disk full: the file was not written; any earlier version is")
    assert out.read_text() == "yesterday's page"
    assert sorted(os.listdir(small_disk)) == ["filler", "night.html"]


def test_html_values_are_escaped() -> None:
    table = html_table(["error"], [{"error": "<script>alert('x')</script> & more"}])
    assert "<script>" not in table
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in table
