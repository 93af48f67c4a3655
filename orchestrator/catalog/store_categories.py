"""From the skill store's categories to the study's: a data file the operator edits.

The store files a skill under its own categories ("Pets & Animals", "Food & Drink" with the
sub-category "Wine & Beverages"); the study's personas are interested in nine categories of their
own (skills.CATEGORIES). `store_categories.csv` says which is which. The catalog folder's own copy
wins; without one, the file shipped in the project's skills_catalog/ is used.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.core.config_files import ConfigError, Issue, UnreadableFile, read_limited

MAPPING_FILE = "store_categories.csv"
SHIPPED = Path(__file__).resolve().parents[2] / "skills_catalog" / MAPPING_FILE
COLUMNS = ["store_category", "sub_category", "category"]
MAX_MAPPING_BYTES = 1024 * 1024


def category_key(name: str | None) -> str:
    """"Health & Fitness", "health-and-fitness" and "Health and Fitness" are one category."""
    return re.sub(r"[^0-9a-z]", "", (name or "").lower().replace("&", "and"))


def slug(name: str) -> str:
    """A store category as a catalog category name: "Games & Trivia" -> "games-trivia"."""
    return re.sub(r"[^0-9a-z]+", "-", name.lower().replace("&", " ")).strip("-")


@dataclass(frozen=True)
class StoreCategories:
    path: Path | None
    rows: dict[tuple[str, str], str] = field(default_factory=dict)  # (store key, sub key) -> category or ""

    def study_category(self, store: str | None, sub: str | None) -> str | None:
        """The study category of a store category and sub-category; None when no row maps them."""
        store_key, sub_key = category_key(store), category_key(sub)
        for key in ((store_key, sub_key), ("", sub_key), (store_key, "")):
            if key in self.rows and (key[0] or key[1]):
                return self.rows[key] or None
        return None

    def categories(self) -> set[str]:
        return {c for c in self.rows.values() if c}


def load_store_categories(folder: Path, known: set[str]) -> StoreCategories:
    """The catalog folder's mapping, else the shipped one, else none; its categories must be known."""
    for path in (folder / MAPPING_FILE, SHIPPED):
        if path.is_file():
            return _read(path, known)
    return StoreCategories(None)


def _read(path: Path, known: set[str]) -> StoreCategories:
    try:
        text = read_limited(path, MAX_MAPPING_BYTES).decode("utf-8-sig")
    except (UnreadableFile, UnicodeDecodeError) as exc:
        raise ConfigError([Issue(path, None, "", f"cannot read the store-category mapping: {exc}")]) from None
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    records = list(csv.reader(io.StringIO("\n".join(line for _, line in lines))))
    issues: list[Issue] = []
    if not records or [c.strip() for c in records[0]] != COLUMNS:
        raise ConfigError([Issue(path, lines[0][0] if lines else None, "",
                                 f"the header must be {','.join(COLUMNS)}")])
    rows: dict[tuple[str, str], str] = {}
    for (number, _), cells in zip(lines[1:], records[1:], strict=True):
        if len(cells) != 3:
            issues.append(Issue(path, number, "", f"has {len(cells)} cells, expected 3 ({','.join(COLUMNS)})"))
            continue
        store, sub, category = (c.strip() for c in cells)
        key = (category_key(store), category_key(sub))
        if not any(key):
            issues.append(Issue(path, number, "", "give a store_category, a sub_category or both"))
        elif category and category not in known:
            issues.append(Issue(path, number, "category", f"{category!r} is not a study category "
                                                          f"({', '.join(sorted(known))})"))
        elif key in rows and rows[key] != category:
            issues.append(Issue(path, number, "", f"{store}/{sub} is mapped twice"))
        rows[key] = category
    if issues:
        raise ConfigError(issues)
    return StoreCategories(path, rows)
