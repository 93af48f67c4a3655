"""The one reader of input files, the one writer of output files, and text made safe for where it goes."""

from __future__ import annotations

import errno
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from full_disk import fill, small_disk  # noqa: F401 - the fixture

from orchestrator.core import durable
from orchestrator.core.config_files import UnreadableFile, read_limited
from orchestrator.core.durable import (
    DiskFull,
    OutputError,
    OutputRefused,
    replacing,
    replacing_file,
    stale_temporaries,
    write_text_atomic,
)
from orchestrator.core.safe_text import check_clean, csv_cell, csv_columns, csv_rows, for_output, for_terminal

# -- reading ----------------------------------------------------------------------------------------


def test_read_limited_reads_a_regular_file_and_a_link_to_one(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_bytes(b"x" * 10)
    link = tmp_path / "link.yaml"
    link.symlink_to(path)
    assert read_limited(path, 10) == b"x" * 10
    assert read_limited(link, 10) == b"x" * 10


def test_read_limited_refuses_a_file_over_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_bytes(b"x" * 11)
    with pytest.raises(UnreadableFile, match="larger than 10 bytes"):
        read_limited(path, 10)


@pytest.mark.parametrize("path, kind", [("/dev/zero", "a device"), ("/dev/null", "a device"), ("/", "a folder")])
def test_read_limited_refuses_what_is_not_a_file(path: str, kind: str) -> None:
    with pytest.raises(UnreadableFile, match=f"not a regular file \\({kind}\\)"):
        read_limited(Path(path), 1 << 20)


def test_read_limited_does_not_wait_on_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "persona.yaml"
    os.mkfifo(fifo)
    # In a child, so that a reader that blocks fails the test instead of hanging it.
    code = ("from pathlib import Path; from orchestrator.core.config_files import read_limited; "
            f"read_limited(Path({str(fifo)!r}), 100)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "not a regular file (a FIFO)" in done.stderr


# -- writing ----------------------------------------------------------------------------------------


def test_replacing_writes_the_new_file_whole_and_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    target.chmod(0o640)
    with replacing_file(target) as handle:
        handle.write("new")
        assert target.read_text() == "old"  # not before the block ends
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # the mode the file had
    assert sorted(os.listdir(tmp_path)) == ["out.txt"]


def test_a_failed_block_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = write_text_atomic(tmp_path / "out.txt", "old")
    with pytest.raises(RuntimeError), replacing_file(target) as handle:
        handle.write("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["out.txt"]


def test_the_rename_and_its_folder_are_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real = durable.fsync_path
    monkeypatch.setattr(durable, "fsync_path", lambda path: (synced.append(Path(path).name), real(path)))
    write_text_atomic(tmp_path / "out.txt", "new")
    assert synced[0].startswith(".out.txt.") and synced[0].endswith(".tmp")
    assert synced[1:] == [tmp_path.name]


def test_a_symbolic_link_is_refused_and_left_alone(tmp_path: Path) -> None:
    real = tmp_path / "real.txt"
    real.write_text("keep")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    with pytest.raises(OutputRefused, match="symbolic link"):
        write_text_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "keep"


def test_a_fifo_is_refused_and_left_alone(tmp_path: Path) -> None:
    fifo = tmp_path / "out.csv"
    os.mkfifo(fifo)
    with pytest.raises(OutputRefused, match="is a FIFO, not a regular file"):
        write_text_atomic(fifo, "new")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(os.listdir(tmp_path)) == ["out.csv"]


def test_a_device_is_refused_and_left_alone(tmp_path: Path) -> None:
    node = tmp_path / "null"
    try:  # a device node of our own, so that a writer that replaces it harms nothing else
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs CAP_MKNOD")
    with pytest.raises(OutputRefused, match="is a device"):
        write_text_atomic(node, "new")
    assert stat.S_ISCHR(os.lstat(node).st_mode)


def test_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OutputRefused, match="is a folder"):
        write_text_atomic(tmp_path, "new")


def test_a_missing_folder_is_refused_not_made(tmp_path: Path) -> None:
    with pytest.raises(OutputRefused, match="the folder .*missing does not exist"):
        write_text_atomic(tmp_path / "missing" / "out.txt", "new")
    assert not (tmp_path / "missing").exists()
    assert write_text_atomic(tmp_path / "made" / "out.txt", "new", make_folder=True).read_text() == "new"


def test_refusals_and_failures_are_os_errors_naming_the_file(tmp_path: Path) -> None:
    error = OutputRefused(tmp_path / "x", "is a FIFO")
    assert isinstance(error, OSError) and str(error) == f"{tmp_path / 'x'}: is a FIFO"


def test_no_room_while_writing_is_a_disk_full_error(tmp_path: Path) -> None:
    target = write_text_atomic(tmp_path / "out.txt", "old")
    with pytest.raises(DiskFull, match="disk full") as caught, replacing_file(target) as handle:
        handle.write("new")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.errno == errno.ENOSPC
    assert target.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["out.txt"]


def test_a_really_full_disk(small_disk: Path) -> None:  # noqa: F811 - the fixture
    target = write_text_atomic(small_disk / "page.html", "old")
    fill(small_disk)
    with pytest.raises(DiskFull):
        write_text_atomic(target, "new " * 100_000)
    assert target.read_text() == "old"
    assert sorted(os.listdir(small_disk)) == ["filler", "page.html"]


def test_other_write_errors_name_the_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(OutputError, match="cannot write: Input/output error"), replacing(target):
        raise OSError(errno.EIO, "Input/output error")
    assert os.listdir(tmp_path) == []


def test_stale_temporaries_are_found_beside_their_target(tmp_path: Path) -> None:
    target = tmp_path / "imported.sqlite"
    left = [tmp_path / ".imported.sqlite.k2j3h4.tmp", tmp_path / ".imported.sqlite.4711.tmp"]
    for path in left:
        path.write_bytes(b"")
    (tmp_path / ".other.sqlite.x.tmp").write_bytes(b"")
    (tmp_path / "imported.sqlite.lock").write_bytes(b"")
    assert stale_temporaries(target) == sorted(left)


# -- text -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, named", [
    ("cat\x1b[2Jfacts", "U+001B (a control character)"),
    ("cat\u202efacts", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    ("cat\u2066facts", "U+2066 (LEFT-TO-RIGHT ISOLATE)"),
    ("cat\u200bfacts", "U+200B (ZERO WIDTH SPACE)"),
    ("cat\ufefffacts", "U+FEFF (ZERO WIDTH NO-BREAK SPACE)"),
    ("cat\x9bfacts", "U+009B (a control character)"),
    ("cat\rfacts", "U+000D (a control character)"),
])
def test_check_clean_names_the_character(text: str, named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"contains {named} at character 4")):
        check_clean(text)


def test_check_clean_keeps_ordinary_text() -> None:
    for text in ("Cat Facts", "Café Ünïcödé — “quotes”", "line one\nline two", "a\tb", "日本語"):
        assert check_clean(text) == text


def test_for_terminal_escapes_what_a_terminal_would_act_on() -> None:
    assert for_terminal("a\x1b]0;owned\x07b") == "a\\x1b]0;owned\\x07b"
    assert for_terminal("evil\u202etxt.exe") == "evil\\u202etxt.exe"
    assert for_terminal("two\nlines") == "two\\x0alines"
    assert for_terminal(None) == "" and for_terminal(3.5) == "3.5"
    assert for_terminal("Café") == "Café"


@pytest.mark.parametrize("cell, written", [
    ("=HYPERLINK(\"http://x\",\"y\")", "'=HYPERLINK(\"http://x\",\"y\")"),
    ("+1", "'+1"), ("-1+2", "'-1+2"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("Cat Facts", "Cat Facts"), ("a=b", "a=b"), (-5, -5), (1.5, 1.5), (None, None),
])
def test_csv_cells_that_a_spreadsheet_would_run_get_a_quote(cell: object, written: object) -> None:
    assert csv_cell(cell) == written


def test_for_output_per_format() -> None:
    rows = [("=1+1", -2, "\x1b[31m")]
    assert csv_columns(["=x", "y"]) == ["'=x", "y"]
    assert list(csv_rows(rows)) == [("'=1+1", -2, "\x1b[31m")]
    columns, table = for_output(["a\x1b"], rows, "table")
    assert columns == ["a\\x1b"] and list(table) == [("=1+1", -2, "\\x1b[31m")]
    columns, same = for_output(["a"], rows, "json")
    assert same is rows
