"""The analysts' page about the log must describe exactly the tables, views and columns the schema has."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from orchestrator import log
from orchestrator.log import Base

PAGE = Path(__file__).resolve().parents[1] / "docs" / "log.md"


def documented(section: str | None = None) -> dict[str, list[str]]:
    """Column names of each ``### `name``` under the ``## section`` heading (None: before any such heading)."""
    relations: dict[str, list[str]] = {}
    current_section: str | None = None
    current = None
    for line in PAGE.read_text().splitlines():
        line = line.strip()
        if chapter := re.fullmatch(r"## (.+)", line):
            current_section, current = chapter.group(1).strip(), None
        elif heading := re.fullmatch(r"### `(\w+)`", line):
            current = relations.setdefault(heading.group(1), []) if current_section == section else None
        elif line.startswith("#"):
            current = None
        elif current is not None and (row := re.fullmatch(r"\| (\w+) \| [^|]+ \| [^|]+ \|", line)):
            if row.group(1) != "column":
                current.append(row.group(1))
    return relations


def documented_tables() -> dict[str, list[str]]:
    return documented(None)


def test_every_table_and_column_is_documented_in_order():
    defined = {name: [c.name for c in table.columns] for name, table in Base.metadata.tables.items()}
    assert documented_tables() == defined


def test_every_view_and_column_is_documented_in_order(tmp_path: Path):
    engine = log.open_log(tmp_path / "log.sqlite")
    engine.dispose()
    connection = sqlite3.connect(tmp_path / "log.sqlite")
    try:
        names = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'view'")]
        defined = {name: [row[1] for row in connection.execute(f'PRAGMA table_info("{name}")')] for name in names}
    finally:
        connection.close()
    assert set(defined) >= {"run_details", "interaction_details", "install_details"}
    assert documented("Views") == defined


def test_every_documented_column_has_a_meaning():
    for line in PAGE.read_text().splitlines():
        if line.startswith("| ") and not line.startswith("| column") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert len(cells) == 3 and all(cells), line
