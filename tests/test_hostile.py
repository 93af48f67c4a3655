"""The hostile-input corpus (tests/hostile/cases.yaml): every case is refused cleanly.

Each case runs the real command in a process of its own, with 3 GB of address space and a minute
of time (a YAML bomb or a read of /dev/zero would take more), and must: exit with the code the
case names, print one clear message naming the file (and its line, where there is one), print no
traceback, and write nothing: the log, the catalog and an export's target are as they were.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

CORPUS = Path(__file__).parent / "hostile"
PROJECT = CORPUS.parents[1]
CATALOG = PROJECT / "skills_catalog"
CASES: list[dict[str, Any]] = yaml.safe_load((CORPUS / "cases.yaml").read_text())["cases"]
MEMORY_LIMIT = 3 << 30
TIME_LIMIT = 60


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _special(name: str, folder: Path) -> Path:
    """The inputs that cannot live in the repository: FIFOs, devices, links, missing things."""
    kind, _, suffix = name[1:].partition(".")
    path = folder / f"{kind}.{suffix or 'yaml'}"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "devzero":
        return Path("/dev/zero")
    elif kind == "large":
        path.write_text("name: hostile\n" + "# padding\n" * 220_000)
    elif kind == "symlink":
        (folder / "elsewhere.csv").write_text("precious\n")
        path.symlink_to(folder / "elsewhere.csv")
    elif kind == "device":
        os.mknod(path, 0o600 | 0o020000, os.makedev(1, 7))  # a character device like /dev/full
    elif kind == "missing-folder":
        return folder / "no-such-folder" / "out.csv"
    return path


def _log(folder: Path) -> Path:
    """A small real log to query and export."""
    from orchestrator import log

    db = folder / "log.sqlite"
    engine = log.open_log(db)
    persona = log.upsert_persona(engine, name="p", interest=None, is_control=True)
    device = log.upsert_device(engine, name="echo1")
    log.start_run(engine, persona_id=persona, device_id=device, audio_dir=folder, config={}, asr_engine=None,
                  asr_model=None, tts_engine=None, tts_voice=None, tts_rate=None, audio_backend=None)
    engine.dispose()
    connection = sqlite3.connect(db)
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    return db


def _command(case: dict[str, Any], target: Path, folder: Path) -> list[str]:
    good = CORPUS / "good"
    command = case["command"]
    if command == "validate":
        return ["validate", str(target), "--lab", str(good / "lab.yaml"), "--catalog", str(CATALOG)]
    if command == "validate-lab":
        return ["validate", str(good / "persona.yaml"), "--lab", str(target), "--catalog", str(CATALOG)]
    if command == "dry-run":
        return ["run", "--dry-run", str(target), "--lab", str(good / "lab.yaml"), "--catalog", str(CATALOG)]
    if command == "dry-run-lab":
        return ["run", "--dry-run", str(good / "persona.yaml"), "--lab", str(target), "--catalog", str(CATALOG)]
    if command == "import":
        return ["catalog", "import", str(target), "--catalog", str(folder / "catalog"), *case.get("args", [])]
    if command == "export":
        return ["export", "runs", "--db", str(_log(folder)), "--out", str(target), "--format", "csv"]
    if command == "export-table":
        return ["export", case["input"], "--db", str(_log(folder)), "--out", str(folder / "out.csv")]
    if command == "query":
        return ["query", case["input"], "--db", str(_log(folder)), *case.get("args", [])]
    raise ValueError(f"unknown command {command!r} in the corpus")


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (links and devices by what they are), to tell whether anything was written."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.is_file():
            found[str(path)] = "link" if path.is_symlink() else "other"
        else:
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_hostile_input_is_refused_cleanly(case: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "catalog").mkdir()
    shutil.copy(CATALOG / "pets-animals.yaml", tmp_path / "catalog")
    name = case["input"]
    if name.startswith("@"):
        target = _special(name, tmp_path)
    elif case["command"] in ("export-table", "query"):
        target = tmp_path
    else:
        target = CORPUS / name
    command = _command(case, target, tmp_path)
    before = _snapshot(tmp_path)
    done = subprocess.run([sys.executable, "-m", "orchestrator", *command], capture_output=True, text=True,
                          timeout=TIME_LIMIT, preexec_fn=_limits, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert done.returncode == case["exit"], done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, done.stderr  # one message, after any report of what was read
    assert case["says"] in done.stderr, done.stderr
    if case["command"] not in ("export-table", "query"):
        where = f"{target}:{case['line']}:" if "line" in case else str(target)
        assert where in done.stderr, done.stderr
    after = _snapshot(tmp_path)
    # The import lock file may be made (it is the lock, not data); nothing else may change.
    assert {k: v for k, v in after.items() if not k.endswith(".lock")} == before


def test_the_corpus_is_large_and_every_file_is_used() -> None:
    used = {c["input"] for c in CASES}
    files = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file() and p.parent != CORPUS}
    assert len(CASES) >= 40
    assert files - {"good/lab.yaml", "good/persona.yaml"} <= used
