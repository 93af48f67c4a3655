"""The analysts' page about the log must describe exactly the tables and columns the models define."""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.log import Base

PAGE = Path(__file__).resolve().parents[1] / "docs" / "log.md"


def documented_tables() -> dict[str, list[str]]:
    tables: dict[str, list[str]] = {}
    current = None
    for line in PAGE.read_text().splitlines():
        if heading := re.fullmatch(r"### `(\w+)`", line.strip()):
            current = tables.setdefault(heading.group(1), [])
        elif current is not None and (row := re.fullmatch(r"\| (\w+) \| [^|]+ \| [^|]+ \|", line.strip())):
            if row.group(1) != "column":
                current.append(row.group(1))
    return tables


def test_every_table_and_column_is_documented_in_order():
    documented = documented_tables()
    defined = {name: [c.name for c in table.columns] for name, table in Base.metadata.tables.items()}
    assert documented == defined


def test_every_documented_column_has_a_meaning():
    for line in PAGE.read_text().splitlines():
        if line.startswith("| ") and not line.startswith("| column") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert len(cells) == 3 and all(cells), line
