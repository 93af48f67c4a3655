"""The web view: Datasette serving the log read-only, with the reports as stored queries.

``orchestrator browse`` writes a Datasette metadata file and starts ``datasette serve`` on it:

* the reports of :mod:`orchestrator.analysis.reports` become stored ("canned") queries, so
  ``/orchestrator/night_summary`` is the night summary with a form for its filters;
* every table and view gets the column descriptions of ``docs/log.md``, read from the page at
  every start, so the web view says exactly what the documentation says;
* the server listens on 127.0.0.1 unless told otherwise: the log holds recordings' transcripts;
* a plugin of the project (:mod:`orchestrator.analysis.web_plugin`, loaded through ``--plugins-dir``) gives
  every connection the SQL allow-list of ``orchestrator query`` and keeps refused queries and
  missing pages out of the log as tracebacks;
* Datasette ends with the process that started it, however that one ends.

By default the file is opened *immutable* (``datasette -i``): SQLite then takes no locks and
never reads the ``-wal`` file, which also works on a read-only mount. Rows the lab wrote since
the last checkpoint are not shown then; ``live`` opens it read-only through SQLite's normal
locking instead, which shows them but needs the ``-wal`` and ``-shm`` files to exist or be
creatable beside the log.

Datasette is an optional dependency (``pip install 'echo-orchestrator[web]'``).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from orchestrator.analysis.reports import REPORTS
from orchestrator.core.processes import end_with_parent
from orchestrator.core.settings import project_home

WEB_EXTRA_HINT = "pip install 'echo-orchestrator[web]'"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001

# Datasette's defaults (1 s, 1000 rows) are too tight for reports over a season of nights.
DATASETTE_SETTINGS = {"sql_time_limit_ms": "10000", "max_returned_rows": "5000"}

#: How long a stopping server gets before it is killed.
STOP_TIMEOUT_S = 10.0


class WebError(Exception):
    """The web view cannot start: Datasette missing, or no log to serve."""


def require_datasette() -> None:
    if importlib.util.find_spec("datasette") is None:
        raise WebError(f"the web view needs Datasette, which is not installed: {WEB_EXTRA_HINT}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# Metadata from docs/log.md
# ---------------------------------------------------------------------------------------------


@dataclass
class DocumentedRelation:
    """A table or view as the log page describes it."""

    description: str = ""
    columns: dict[str, str] = field(default_factory=dict)


_HEADING = re.compile(r"#{2,3} `(\w+)`")
_COLUMN_ROW = re.compile(r"\| (\w+) \| [^|]+ \| ([^|]+) \|")


def _plain(markdown: str) -> str:
    return markdown.replace("`", "").strip()


def documented_relations(page: Path) -> dict[str, DocumentedRelation]:
    """Every ``### `name``` section of the page: its first paragraph and its column table."""
    relations: dict[str, DocumentedRelation] = {}
    current: DocumentedRelation | None = None
    for raw in page.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("#"):
            heading = _HEADING.fullmatch(line)
            current = relations.setdefault(heading.group(1), DocumentedRelation()) if heading else None
        elif current is None or not line:
            continue
        elif row := _COLUMN_ROW.fullmatch(line):
            if row.group(1) != "column":
                current.columns[row.group(1)] = _plain(row.group(2))
        elif not line.startswith("|") and not current.columns:
            current.description = f"{current.description} {_plain(line)}".strip()
    return relations


_POINTER = re.compile(r"(\w+)\.(\w+)(;.*)?")


def explained(relations: dict[str, DocumentedRelation]) -> dict[str, DocumentedRelation]:
    """View columns documented as a pointer to a table's column (``runs.status``, perhaps with ``; more``)
    get that column's own description: a web page cannot be read with the log page open beside it."""
    for relation in relations.values():
        for column, description in relation.columns.items():
            pointer = _POINTER.fullmatch(description)
            if pointer is None:
                continue
            target = relations.get(pointer.group(1))
            meaning = target.columns.get(pointer.group(2)) if target else None
            if meaning is None or _POINTER.fullmatch(meaning) is not None:
                continue
            meaning = meaning.removesuffix(", unique")  # unique in its table, repeated in a view
            more = pointer.group(3) or ""
            relation.columns[column] = meaning if more.strip("; ") in meaning else meaning + more
    return relations


def log_page() -> Path | None:
    """docs/log.md of the checkout this module runs from, else of the project folder; None if neither has it."""
    for root in (Path(__file__).resolve().parents[2], project_home()):
        if (page := root / "docs" / "log.md").is_file():
            return page
    return None


def canned_queries() -> dict[str, dict[str, Any]]:
    return {
        report.query_name: {
            "title": report.title,
            "description": f"{report.description} (orchestrator report {report.name})",
            "sql": report.sql.strip(),
            "params": list(report.params),
        }
        for report in REPORTS.values()
    }


def metadata(db_name: str, page: Path | None) -> dict[str, Any]:
    """Datasette metadata for a log served under ``db_name``; without the page, no descriptions."""
    tables: dict[str, dict[str, Any]] = {"alembic_version": {"hidden": True}}
    if page is not None:
        for name, relation in explained(documented_relations(page)).items():
            tables[name] = {"description": relation.description, "columns": relation.columns}
    return {
        "title": "Echo orchestrator: interaction log",
        "description": "Every run and step the personas attempted, read-only. Stored queries: the reports of "
                       "`orchestrator report`. Column meanings: docs/log.md.",
        "databases": {db_name: {
            "description_html": f'<a href="/-/night/{escape(db_name)}">The latest night\'s page</a> (what failed '
                                f"and why, installs, the rig self-test, the previous night); another night: "
                                f"<code>/-/night/{escape(db_name)}?night=YYYY-MM-DD</code>.",
            "tables": tables, "queries": canned_queries(),
        }},
    }


# ---------------------------------------------------------------------------------------------
# Launching
# ---------------------------------------------------------------------------------------------


def url(host: str, port: int, db_path: Path) -> str:
    """Where the log's page is served (IPv6 addresses in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/{db_name(db_path)}"


def db_name(db_path: Path) -> str:
    """The name Datasette gives a database file: its stem (``orchestrator.sqlite`` -> ``orchestrator``)."""
    return db_path.stem


def datasette_command(db_path: Path, metadata_path: Path, plugins_dir: Path, host: str, port: int,
                      immutable: bool) -> list[str]:
    files = ["--immutable", str(db_path)] if immutable else [str(db_path)]
    settings = [arg for name, value in DATASETTE_SETTINGS.items() for arg in ("--setting", name, value)]
    return [sys.executable, "-m", "datasette", "serve", *files, "--metadata", str(metadata_path),
            "--plugins-dir", str(plugins_dir), "--host", host, "--port", str(port), *settings]


#: The plugins folder's one file: Datasette loads every .py file there; this one brings in the project's.
PLUGIN_STUB = ("from orchestrator.analysis.web_plugin import (  # noqa: F401\n"
               "    extra_body_script, prepare_connection, register_routes, render_cell)\n")


def unseen_wal_bytes(db_path: Path) -> int:
    """Bytes in the log's ``-wal`` file: rows an immutable reader cannot see yet."""
    wal = db_path.with_name(db_path.name + "-wal")
    return wal.stat().st_size if wal.is_file() else 0


@contextmanager
def datasette_process(
    db_path: Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, immutable: bool = True,
) -> Iterator[subprocess.Popen[bytes]]:
    """A running ``datasette serve`` for the log, stopped when the block ends."""
    require_datasette()
    if not db_path.is_file():
        raise WebError(f"no database at {db_path}")
    with tempfile.TemporaryDirectory(prefix="orchestrator-web-") as scratch:
        metadata_path = Path(scratch) / "metadata.json"
        page = log_page()
        if page is None:
            print("warning: docs/log.md not found: the web view has no column descriptions", file=sys.stderr)
        metadata_path.write_text(json.dumps(metadata(db_name(db_path), page), indent=2), encoding="utf-8")
        plugins_dir = Path(scratch) / "plugins"
        plugins_dir.mkdir()
        (plugins_dir / "orchestrator_browse.py").write_text(PLUGIN_STUB, encoding="utf-8")
        command = datasette_command(db_path.resolve(), metadata_path, plugins_dir, host, port, immutable)
        # Its output is messages (the access log): to file descriptor 2, with its stderr, and unbuffered,
        # so they show as they come.
        process = subprocess.Popen(command, stdout=2, preexec_fn=end_with_parent,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            yield process
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
