"""Importing a crawl of the Alexa skill store into the catalog (`orchestrator catalog import`).

A crawl is a CSV, JSON or JSON Lines file with one skill per row. Its columns are matched to the
`Skill` fields by common names (DEFAULT_COLUMNS), or as the operator maps them. Every row is
validated like a curated record; rows are merged by id into the imported store
(skills_catalog/imported.sqlite, read by catalog.ImportedStore):

* a new id is added; a known id is updated: the fields the file has a column for take the file's
  values (an empty cell included), the others keep their stored values;
* an id that a curated YAML file has is left alone: the curated record wins;
* a row that fails validation is rejected with its row number, field and reason.

The store is replaced whole or not at all: the new store is written beside it, synced and renamed
over it (durable.replacing), so a failed or refused import leaves the old file byte for byte as it
was. One import at a time: an import holds a lock on imported.sqlite.lock from reading the store to
renaming the new one over it, so a second import cannot merge into a store the first is replacing
(and lose the first one's rows). Holding the lock, an import removes the temporary files of earlier
imports that were killed.

A crawl is read within bounds (config_files.read_limited): a regular file of at most
MAX_CRAWL_BYTES; JSON nested deeper than Python's decoder allows is refused, not a traceback. A CSV
crawl is parsed a row at a time and the store is read a record at a time (StoredRecords): an
import holds the rows it adds or changes, never the whole store.
"""

from __future__ import annotations

import ast
import csv
import difflib
import errno
import fcntl
import json
import os
import re
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator.catalog.skills import (
    CATEGORIES,
    IMPORTED_STORE,
    OLD_LAYOUTS,
    STORE_COLUMNS,
    STORE_INDEXES,
    STORE_TABLE,
    STORE_VERSION,
    Skill,
    SkillType,
    load_curated,
    store_row,
)
from orchestrator.catalog.store_categories import StoreCategories, category_key, load_store_categories, slug
from orchestrator.catalog.utterances import clean_utterance
from orchestrator.core.config_files import ConfigError, Issue, UnreadableFile, format_loc, read_limited
from orchestrator.core.durable import OutputError, replacing, stale_temporaries

FORMATS = ("csv", "json", "jsonl")
#: Bytes a crawl may hold: a crawl of the whole store (100,000 skills) is about 30 MB of CSV.
MAX_CRAWL_BYTES = 512 * 1024 * 1024
#: The lock an import holds, beside the store.
IMPORT_LOCK = IMPORTED_STORE + ".lock"
#: Seconds an import waits for another import to finish before it gives up.
LOCK_WAIT_SECONDS = 10.0
#: A line of a CSV text with its ending: the csv module joins the lines of a quoted cell itself.
LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
SUFFIXES = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}

#: Column names looked for, most specific first. They match whatever their case and separators
#: ("Invocation Name", "invocationName" and "invocation_name" are one name).
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("asin", "skill_id", "id"),
    "asin": ("asin",),
    "name": ("name", "title", "skill_name"),
    "invocation_name": ("invocation_name", "invocation", "launch_phrase"),
    "skill_type": ("skill_type", "type"),
    "category": ("category",),
    "store_category": ("store_category",),
    "store_subcategory": ("store_subcategory", "sub_category", "subcategory"),
    "developer": ("developer", "vendor", "vendor_name", "developer_name", "author"),
    "sample_utterances": ("sample_utterances", "example_phrases", "example_interactions", "utterances"),
    "sample_utterances_raw": (),
    "account_linking": ("account_linking", "account_linking_required"),
    "permissions": ("permissions",),
    "privacy_policy_url": ("privacy_policy_url", "privacy_policy"),
    "terms_url": ("terms_url", "terms_of_use", "terms_of_use_url", "terms"),
    "in_app_purchasing": ("in_app_purchasing", "in_skill_purchasing", "in_app_purchases"),
    "rating": ("rating", "stars", "average_rating"),
    "review_count": ("review_count", "num_of_reviews", "number_of_reviews", "reviews", "num_reviews",
                     "ratings_count", "number_of_ratings"),
    "release_date": ("release_date", "released"),
    "description": ("description",),
    "source": ("source",),
    "retrieved": ("retrieved", "retrieved_at", "crawled", "crawl_date", "scraped_at"),
    "notes": ("notes",),
}
#: Crawls that give each example phrase its own column ("Example Interaction 1", "… 2", …).
NUMBERED_UTTERANCES = re.compile(r"(exampleinteraction|examplephrase|sampleutterance|utterance)(\d+)")

#: Without a column for these a file cannot be imported (category: unless --category is given, or
#: the store's category is there to map).
REQUIRED_COLUMNS = ("name",)
LIST_FIELDS = frozenset({"sample_utterances", "permissions"})
FLAG_FIELDS = frozenset({"account_linking", "in_app_purchasing"})
LIST_SEPARATOR = re.compile(r"\s*(?:\||\r\n|\r|\n)\s*")
TRUE_WORDS = frozenset({"true", "yes", "y", "1", "required", "available", "offered"})
FALSE_WORDS = frozenset({"false", "no", "n", "0", "none", "not required", "not available"})
#: Free text a crawl writes for account linking or in-skill purchases, read by its words.
NEGATIONS = re.compile(r"\b(no|not|none|without|never)\b")
#: Crawls of the store write a missing value as the literal text "null" (README, "Excluded").
MISSING_TEXT = frozenset({"", "null", "none", "n/a", "nan"})
#: How the store and crawls name skill types; a slug of the text is looked up.
TYPE_NAMES: dict[str, SkillType] = {
    "custom": "custom", "smarthome": "smart_home", "connectedhome": "smart_home", "flashbriefing": "flash_briefing",
    "music": "music", "audio": "music", "radio": "music", "musicandaudio": "music",
}
#: Skills without an invocation name are of these types, by their store category.
UNINVOKED_TYPES: dict[str, SkillType] = {
    "smarthome": "smart_home", "homeautomation": "smart_home", "connectedhome": "smart_home",
    "news": "flash_briefing", "flashbriefing": "flash_briefing", "musicandaudio": "music", "music": "music",
    "radio": "music",
}


class CrawlError(ValueError):
    """A file that cannot be imported at all (unreadable, not the format, a column missing)."""


class ImportBusy(RuntimeError):
    """Another import holds the catalog's lock, and did not finish while this one waited."""


@dataclass(frozen=True)
class Row:
    number: int  # as the operator finds it: spreadsheet row, JSON Lines line, JSON array item
    cells: dict[str, Any]
    problem: str | None = None  # the row could not be read (bad JSON line, wrong number of cells)


@dataclass(frozen=True)
class Crawl:
    path: Path
    columns: list[str]
    rows: Iterable[Row]  # read once, in order: a CSV crawl's rows are parsed as the import takes them


@dataclass(frozen=True)
class Rejection:
    row: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.field}: {self.message}" if self.field else f"row {self.row}: {self.message}"


@dataclass(frozen=True)
class CuratedConflict:
    row: int
    skill_id: str
    file: Path

    def __str__(self) -> str:
        return f"row {self.row}: id: {self.skill_id!r} is curated in {self.file.name}; the curated record is kept"


@dataclass(frozen=True)
class ImportOptions:
    mappings: Sequence[tuple[str, str]] = ()  # (field, column) from --map; an empty column unmaps the field
    category: str | None = None  # for rows without one
    source: str | None = None  # for rows without one; the file's name if not given
    fmt: str | None = None  # csv, json or jsonl; from the file's suffix if not given
    max_rejected: int = 0
    dry_run: bool = False


@dataclass
class ImportResult:
    path: Path
    store: Path
    rows: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    curated: list[CuratedConflict] = field(default_factory=list)
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)  # field -> the file's column(s)
    recategorised: list[Recategorised] = field(default_factory=list)  # stored skills the import moves
    mapping: Path | None = None  # the store-category mapping used
    carried_over: int | None = None  # the layout of an older store whose records were carried over
    stored: int = 0  # imported records in the store after the import
    written: bool = False
    removed: list[Path] = field(default_factory=list)  # temporary files of killed imports, removed

    @property
    def rejected(self) -> int:
        """Rejected rows (a row may have several reasons)."""
        return len({r.row for r in self.rejections})

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated)


class TooManyRejected(Exception):
    """More rows were rejected than allowed; nothing was written."""

    def __init__(self, result: ImportResult, allowed: int) -> None:
        self.result = result
        super().__init__(f"{result.rejected} row(s) rejected, more than the {allowed} allowed by --max-rejected; "
                         f"nothing was imported")


# -- reading the file -------------------------------------------------------------------------------


def read_crawl(path: Path, fmt: str | None = None) -> Crawl:
    fmt = fmt or SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise CrawlError(f"{path}: cannot tell the format from the name; give --format ({', '.join(FORMATS)})")
    try:
        # utf-8-sig: spreadsheet programs start their CSV exports with a byte-order mark.
        text = read_limited(path, MAX_CRAWL_BYTES).decode("utf-8-sig")
    except UnreadableFile as exc:
        raise CrawlError(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise CrawlError(f"{path}: not UTF-8 text, so not a {fmt.upper()} file ({exc.reason} at byte {exc.start})"
                         ) from None
    reader = {"csv": _read_csv, "json": _read_json, "jsonl": _read_jsonl}[fmt]
    columns, rows = reader(path, text)
    return Crawl(path, columns, rows)


def _read_csv(path: Path, text: str) -> tuple[list[str], Iterable[Row]]:
    if "\0" in text:
        raise CrawlError(f"{path}: not a CSV file (it contains NUL bytes)")
    records = csv.reader(_lines(text))
    try:
        header = next(records, None)
    except csv.Error as exc:
        raise CrawlError(f"{path}: not a valid CSV file (line {records.line_num}: {exc})") from None
    if not header or not any(name.strip() for name in header):
        raise CrawlError(f"{path}: no header row (a CSV crawl starts with its column names)")
    columns = [name.strip() for name in header]
    _check_unique(path, columns)
    return columns, _csv_rows(path, columns, records)


def _lines(text: str) -> Iterator[str]:
    """The text's lines with their endings, one at a time (a StringIO of a 30 MB crawl costs 120 MB).

    Only CR, LF and CRLF end a line, as the csv module expects of a file opened with newline="".
    """
    return (match.group() for match in LINE.finditer(text))


def _csv_rows(path: Path, columns: list[str], records: Any) -> Iterator[Row]:  # records: a csv.reader
    try:
        for number, cells in enumerate(records, start=2):
            if not any(cell.strip() for cell in cells):
                continue
            problem = None if len(cells) == len(columns) else f"has {len(cells)} cells, the header has {len(columns)}"
            yield Row(number, dict(zip(columns, cells, strict=False)), problem)
    except csv.Error as exc:
        raise CrawlError(f"{path}: not a valid CSV file (line {records.line_num}: {exc})") from None


def _check_unique(path: Path, columns: list[str]) -> None:
    seen: set[str] = set()
    for name in columns:
        if name in seen:
            raise CrawlError(f"{path}: the column {name!r} is given twice")
        seen.add(name)


def _read_json(path: Path, text: str) -> tuple[list[str], Iterable[Row]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CrawlError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except (ValueError, RecursionError) as exc:
        raise CrawlError(f"{path}: cannot read the JSON: {_json_problem(exc)}") from None
    if isinstance(data, dict) and isinstance(data.get("skills"), list):
        data = data["skills"]
    if not isinstance(data, list):
        raise CrawlError(f"{path}: expected a JSON array of skills (or an object with a \"skills\" array)")
    return _object_rows([(number, item, None) for number, item in enumerate(data, start=1)])


def _read_jsonl(path: Path, text: str) -> tuple[list[str], Iterable[Row]]:
    parsed: list[tuple[int, Any, str | None]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            parsed.append((number, json.loads(line), None))
        except json.JSONDecodeError as exc:
            parsed.append((number, None, f"not valid JSON ({exc.msg} at column {exc.colno})"))
        except (ValueError, RecursionError) as exc:
            parsed.append((number, None, f"cannot read the JSON: {_json_problem(exc)}"))
    if parsed and all(problem for _, _, problem in parsed):
        raise CrawlError(f"{path}: not a JSON Lines file (line {parsed[0][0]}: {parsed[0][2]})")
    return _object_rows(parsed)


def _json_problem(exc: ValueError | RecursionError) -> str:
    """JSON that parses but that Python will not hold: nested too deep, an integer too long."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)


def _object_rows(items: list[tuple[int, Any, str | None]]) -> tuple[list[str], list[Row]]:
    """Columns are every key any object has, in the order first met."""
    columns: dict[str, None] = {}
    rows = []
    for number, item, problem in items:
        if problem is None and not isinstance(item, dict):
            problem = f"not a JSON object but {type(item).__name__}"
        cells = item if problem is None else {}
        columns.update(dict.fromkeys(cells))
        rows.append(Row(number, cells, problem))
    return list(columns), rows


# -- which column feeds which field -----------------------------------------------------------------


def column_key(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def resolve_columns(crawl: Crawl, options: ImportOptions) -> dict[str, tuple[str, ...]]:
    """Each field's column(s) in the file: from --map, else the first default name the file has.

    Every column that is missing is reported at once, each with the --map that would name it.
    """
    explicit = _explicit_columns(crawl, options.mappings)
    chosen: dict[str, tuple[str, ...]] = {}
    for name in Skill.model_fields:
        columns = explicit[name] if name in explicit else _default_columns(crawl, name)
        if columns:
            chosen[name] = columns
    needed = list(REQUIRED_COLUMNS)
    if not options.category and "store_category" not in chosen and "store_subcategory" not in chosen:
        needed.append("category")
    missing = [name for name in needed if name not in chosen]
    if missing:
        raise CrawlError(_missing_columns(crawl, missing, chosen))
    return chosen


def _explicit_columns(crawl: Crawl, mappings: Sequence[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    explicit: dict[str, tuple[str, ...]] = {}
    for name, column in mappings:
        if name not in Skill.model_fields:
            raise CrawlError(f"--map {name}={column}: no field {name!r}; fields: {', '.join(Skill.model_fields)}")
        if name in explicit and name not in LIST_FIELDS:
            raise CrawlError(f"--map {name}=… given twice (only list fields take several columns)")
        found = (_find_column(crawl, column, f"--map {name}={column}"),) if column else ()
        explicit[name] = explicit.get(name, ()) + found
    return explicit


def _find_column(crawl: Crawl, column: str, option: str) -> str:
    if column in crawl.columns:
        return column
    similar = [c for c in crawl.columns if column_key(c) == column_key(column)]
    if len(similar) == 1:
        return similar[0]
    raise CrawlError(f"{crawl.path}: no column {column!r} (for {option}); {_columns_listing(crawl)}")


def _default_columns(crawl: Crawl, name: str) -> tuple[str, ...]:
    by_key: dict[str, list[str]] = defaultdict(list)
    for column in crawl.columns:
        by_key[column_key(column)].append(column)
    for candidate in DEFAULT_COLUMNS[name]:
        found = by_key.get(column_key(candidate), [])
        if len(found) > 1:
            raise CrawlError(f"{crawl.path}: the columns {' and '.join(map(repr, found))} could both be {name}; "
                             f"choose one with --map {name}=COLUMN")
        if found:
            return tuple(found)
    if name == "sample_utterances":
        numbered = [(m.group(1), int(m.group(2)), c) for c in crawl.columns
                    if (m := NUMBERED_UTTERANCES.fullmatch(column_key(c)))]
        return tuple(c for _, _, c in sorted(numbered))
    return ()


def _missing_columns(crawl: Crawl, missing: list[str], chosen: dict[str, tuple[str, ...]]) -> str:
    taken = {c for columns in chosen.values() for c in columns}
    free = [c for c in crawl.columns if c not in taken]
    lines = []
    for name in missing:
        hint = " (or give --category)" if name == "category" else ""
        guess = _closest(name, free)
        option = f"--map {name}={_quoted(guess)}" if guess else f"--map {name}=COLUMN"
        lines.append(f"no column for {name} (looked for {', '.join(DEFAULT_COLUMNS[name])}); {option}{hint}")
    return f"{crawl.path}: {'; '.join(lines)}; {_columns_listing(crawl)}"


def _closest(name: str, columns: list[str]) -> str | None:
    """The column most like the field's names, as a suggestion; None when nothing is close."""
    keys = {column_key(c): c for c in columns}
    for candidate in DEFAULT_COLUMNS[name]:
        found = difflib.get_close_matches(column_key(candidate), list(keys), n=1, cutoff=0.6)
        if found:
            return keys[found[0]]
    contains = [c for k, c in keys.items() if any(column_key(n) in k for n in DEFAULT_COLUMNS[name])]
    return contains[0] if contains else None


def _quoted(column: str) -> str:
    return column if re.fullmatch(r"[\w.-]+", column) else f"'{column}'"


def _columns_listing(crawl: Crawl) -> str:
    if not crawl.columns:
        return "the file has no columns"
    shown = ", ".join(map(repr, crawl.columns[:30]))
    more = f" and {len(crawl.columns) - 30} more" if len(crawl.columns) > 30 else ""
    return f"the file's columns are {shown}{more}"


# -- one row -----------------------------------------------------------------------------------------


def _text(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return None if value in MISSING_TEXT else value
    return value  # a JSON number or object: the Skill model rejects it with its own message


def _items(values: list[Any]) -> list[Any] | None:
    """A list field from one or more cells: JSON or Python-style lists, or text separated by `|` or lines."""
    items: list[Any] = []
    listed = False
    for value in values:
        if isinstance(value, str) and (parsed := _listed(value)) is not None:
            value = parsed
        if isinstance(value, list):
            listed, parts = True, value
        elif isinstance(value, str):
            parts = LIST_SEPARATOR.split(value)
        elif value is None:
            continue
        else:
            raise ValueError(f"expected a list or text, got {value!r}")
        items.extend(item for item in map(_text, parts) if item is not None)
    # An empty list says "none"; empty cells say nothing (unknown, null).
    return items if items or listed else None


def _listed(cell: str) -> list[Any] | None:
    """A cell holding a list: `["a", "b"]` as JSON writes it, or `['a', 'b']` as Python prints it."""
    text = cell.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        try:
            # literal_eval only builds literals; a crawl's cell is small (the file is size-limited).
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    if isinstance(value, list) and all(isinstance(v, str | None) for v in value):
        return value
    return None


def _flag(value: Any) -> bool | None:
    """true/false, yes/no, 1/0, or a crawl's sentence: "Account linking required", "No in-skill purchases"."""
    if value is None or isinstance(value, bool):
        return value
    word = " ".join(str(value).strip().lower().split())
    if word in MISSING_TEXT:
        return None
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    if re.search(r"\b(requires?|required|needs?|link|linking|offers?|purchases?|available)\b", word):
        return NEGATIONS.search(word) is None
    raise ValueError(f"{value!r} is neither true nor false (yes/no, 1/0)")


def _number(value: Any, integer: bool) -> float | int | None:
    """"4.5", "4.5 out of 5 stars", "1,234", "1.2K" as a crawl writes a rating or a count."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if value is None:
        return None
    if isinstance(value, int | float):
        return int(value) if integer else float(value)
    text = str(value).strip().lower().replace(",", "")
    if text in MISSING_TEXT:
        return None
    found = re.match(r"^\(?([0-9]+(?:\.[0-9]+)?)\s*(k|m)?\b", text)
    if found is None:
        raise ValueError(f"{value!r} is not a number")
    number = float(found.group(1)) * {"k": 1000, "m": 1_000_000, None: 1}[found.group(2)]
    return round(number) if integer else number


def _skill_type(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = _text(value)
    return None if text is None else TYPE_NAMES.get(category_key(text), text)


def row_fields(row: Row, columns: dict[str, tuple[str, ...]]) -> tuple[dict[str, Any], list[Rejection]]:
    """The fields a row gives (those whose column it has), converted for the Skill model."""
    given: dict[str, Any] = {}
    rejections = []
    for name, names in columns.items():
        present = [row.cells[c] for c in names if c in row.cells]
        if not present:
            continue
        try:
            if name in LIST_FIELDS:
                given[name] = _items(present)
            elif name in FLAG_FIELDS:
                given[name] = _flag(present[0])
            elif name in ("rating", "review_count"):
                given[name] = _number(present[0], integer=name == "review_count")
            elif name == "skill_type":
                given[name] = _skill_type(present[0])
            else:
                given[name] = _text(present[0])
        except ValueError as exc:
            rejections.append(Rejection(row.number, name, str(exc)))
    if "sample_utterances" in given:
        raw = given["sample_utterances"] or []
        cleaned = [c for c in (clean_utterance(u) if isinstance(u, str) else u for u in raw) if c is not None]
        given["sample_utterances"] = list(dict.fromkeys(cleaned))
        given["sample_utterances_raw"] = raw if raw != given["sample_utterances"] else None
    return given, rejections


def skill_slug(category: str | None, developer: str | None, name: str) -> str:
    """The id of a skill the crawl gives no ASIN for: stable across crawls, distinct for namesakes."""
    parts = [slug(p) or "-" for p in (category or "", developer or "", name)]
    return "slug:" + "/".join(parts)


@dataclass(frozen=True)
class Recategorised:
    row: int
    skill_id: str
    old: str
    new: str

    def __str__(self) -> str:
        return f"row {self.row}: category: {self.skill_id!r} moves from {self.old} to {self.new}"


@dataclass
class _Merge:
    """What one import knows while it goes through the rows."""

    crawl: Crawl
    options: ImportOptions
    columns: dict[str, tuple[str, ...]]
    stored: StoredRecords
    curated_files: dict[str, Path]
    known_categories: set[str]
    mapping: StoreCategories
    result: ImportResult
    changes: StoreChanges
    first_row: dict[str, int] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        if row.problem is not None:
            self.result.rejections.append(Rejection(row.number, "", row.problem))
            return
        given, rejections = row_fields(row, self.columns)
        self._categorise(given)
        skill_id = self._identify(given)
        if skill_id in self.curated_files:
            self.result.curated.append(CuratedConflict(row.number, skill_id, self.curated_files[skill_id]))
            return
        if skill_id in self.first_row:
            rejections.append(Rejection(row.number, "id", f"{skill_id!r} is also on row {self.first_row[skill_id]}"))
        elif skill_id is not None:
            self.first_row[skill_id] = row.number
        old = self.stored.record(skill_id) if skill_id is not None else None
        record, problems = self._validate(row, self._record(given, old))
        reported = {r.field for r in rejections}
        rejections += [p for p in problems if p.field not in reported]
        if rejections:
            self.result.rejections.extend(rejections)
            return
        if old is not None and old.get("category") != record["category"]:
            self.result.recategorised.append(Recategorised(row.number, record["id"], old.get("category", "?"),
                                                           record["category"]))
        self._count(record, old)

    def _identify(self, given: dict[str, Any]) -> str | None:
        skill_id = given.get("id")
        if isinstance(skill_id, str):
            return skill_id
        if isinstance(given.get("asin"), str):
            given["id"] = given["asin"]
        elif isinstance(given.get("name"), str):
            where = given.get("store_category") or given.get("category")
            given["id"] = skill_slug(where if isinstance(where, str) else None,
                                     given.get("developer") if isinstance(given.get("developer"), str) else None,
                                     given["name"])
        return given.get("id") if isinstance(given.get("id"), str) else None

    def _categorise(self, given: dict[str, Any]) -> None:
        """The study category from the crawl's category: a study category as it is, a store one mapped."""
        category = given.get("category")
        if isinstance(category, str) and category not in self.known_categories:
            if given.get("store_category") is None:
                given["store_category"] = category
            del given["category"]
        store, sub = given.get("store_category"), given.get("store_subcategory")
        if given.get("category") is None and (isinstance(store, str) or isinstance(sub, str)):
            mapped = self.mapping.study_category(store if isinstance(store, str) else None,
                                                 sub if isinstance(sub, str) else None)
            if mapped is not None:
                given["category"] = mapped
            elif self.options.category:
                given["category"] = self.options.category
            else:
                given["category"] = slug(store if isinstance(store, str) else str(sub))
        elif given.get("category") is None and self.options.category:
            given["category"] = self.options.category
        if given.get("category") is None:
            given.pop("category", None)  # the stored category stays, if there is one

    def _record(self, given: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        record = {"invocation_name": None, **(old or {}), **given}
        if given.get("source") is None:
            record["source"] = self.options.source or self.crawl.path.name
        if record.get("invocation_name") is None and "skill_type" not in given and record.get("skill_type") in (
                None, "custom"):
            store = category_key(record.get("store_category")) or category_key(record.get("store_subcategory"))
            if store in UNINVOKED_TYPES:
                record["skill_type"] = UNINVOKED_TYPES[store]
        return record

    def _validate(self, row: Row, record: dict[str, Any]) -> tuple[dict[str, Any], list[Rejection]]:
        """The record as the store keeps it (every field, JSON types), or why the row is rejected."""
        required = [*REQUIRED_COLUMNS, "category"]
        if record.get("skill_type") in (None, "custom"):
            required.insert(1, "invocation_name")
        problems = [Rejection(row.number, name, self._missing(row, name)) for name in required
                    if record.get(name) is None]
        try:
            skill = Skill.model_validate(record)
        except ValidationError as exc:
            reported = {r.field for r in problems} | ({"id"} if record.get("name") is None else set())
            invalid = [Rejection(row.number, format_loc(tuple(e["loc"])), e["msg"].removeprefix("Value error, "))
                       for e in exc.errors()]
            # The model's own "needs an invocation_name" repeats a missing invocation name.
            return record, problems + [r for r in invalid if r.field not in reported and (
                r.field or "invocation_name" not in reported)]
        return skill.model_dump(mode="json"), problems

    def _missing(self, row: Row, name: str) -> str:
        column = next((c for c in self.columns.get(name, ()) if c in row.cells), None)
        where = f"column {column!r} is empty" if column else f"the row has no {self.columns.get(name, (name,))[0]!r}"
        return f"missing ({where} and there is no --category)" if name == "category" else f"missing ({where})"

    def _count(self, record: dict[str, Any], old: dict[str, Any] | None) -> None:
        if old is None:
            self.result.added += 1
        elif record == old:
            self.result.unchanged += 1
            return
        else:
            self.result.updated += 1
        self.changes.rows.append(store_row(record, json.dumps(record, ensure_ascii=False)))


# -- the import ----------------------------------------------------------------------------------------


@dataclass
class StoreChanges:
    """What an import writes: the rows it adds or changes, and the store whose other rows it keeps."""

    old: Path | None  # the store before the import, if there is one
    old_layout: int | None
    rows: list[tuple[Any, ...]] = field(default_factory=list)  # store rows (store_row), added or changed


class StoredRecords:
    """The store an import merges into, read a record at a time.

    A whole-store crawl is 100,000 records: held as dicts they would be half a gigabyte, and an
    import only ever asks for the ones its rows name.
    """

    def __init__(self, store: Path) -> None:
        self.path = store
        self.layout: int | None = None
        self.count = 0
        self._db: sqlite3.Connection | None = None
        if store.is_file():
            self._db, self.layout = _open_records(store)
            self.count = self._read(lambda db: db.execute("SELECT count(*) FROM skills").fetchone()[0])

    def record(self, skill_id: str) -> dict[str, Any] | None:
        if self._db is None:
            return None
        found = self._read(lambda db: db.execute("SELECT record FROM skills WHERE id = ?", (skill_id,)).fetchone())
        if found is None:
            return None
        try:
            record: dict[str, Any] = json.loads(found[0])
        except ValueError:
            raise ConfigError([Issue(self.path, None, f"skills[{skill_id!r}]", f"{_NOT_A_STORE} (a damaged record)"
                                     )]) from None
        return record

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def _read(self, query: Callable[[sqlite3.Connection], Any]) -> Any:
        assert self._db is not None
        try:
            return query(self._db)
        except sqlite3.Error as exc:
            raise ConfigError([Issue(self.path, None, "", f"{_NOT_A_STORE} ({exc})")]) from None


_NOT_A_STORE = f"not an imported-skills store (version {STORE_VERSION}); delete it and import the crawl again"


def _open_records(store: Path) -> tuple[sqlite3.Connection, int]:
    """A read-only connection to a store of the current layout or one an import carries over."""
    try:
        db = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True)
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        columns = [row[1] for row in db.execute("PRAGMA table_info(skills)")]
    except sqlite3.Error as exc:
        raise ConfigError([Issue(store, None, "", f"{_NOT_A_STORE} ({exc})")]) from None
    if (version, columns) != (STORE_VERSION, STORE_COLUMNS) and OLD_LAYOUTS.get(version) != columns:
        db.close()
        raise ConfigError([Issue(store, None, "", _NOT_A_STORE)])
    return db, version


def plan_import(folder: Path, path: Path, options: ImportOptions) -> tuple[ImportResult, StoreChanges]:
    """Read and check the file against the catalog; return the report and what the store would get."""
    curated = load_curated(folder)
    known = set(CATEGORIES) | {s.category for s in curated.skills.values()}
    if options.category and options.category not in known:
        raise CrawlError(f"--category {options.category}: not a catalog category ({', '.join(sorted(known))})")
    mapping = load_store_categories(folder, known)
    crawl = read_crawl(path, options.fmt)
    columns = resolve_columns(crawl, options)
    store = folder / IMPORTED_STORE
    stored = StoredRecords(store)
    try:
        result = ImportResult(path, store, columns=columns, mapping=mapping.path,
                              carried_over=stored.layout if stored.layout not in (None, STORE_VERSION) else None)
        changes = StoreChanges(store if stored.layout is not None else None, stored.layout)
        merge = _Merge(crawl, options, columns, stored, curated.files, known, mapping, result, changes)
        for row in crawl.rows:
            result.rows += 1
            merge.add(row)
        result.stored = stored.count + result.added
    finally:
        stored.close()
    return result, changes


def upgrade_store(folder: Path, *, lock_wait: float | None = None) -> tuple[int | None, int]:
    """Rewrite a store of an older layout in the current one; its layout before, and its skills."""
    with import_lock(folder, LOCK_WAIT_SECONDS if lock_wait is None else lock_wait):
        store = folder / IMPORTED_STORE
        stored = StoredRecords(store)
        stored.close()
        if stored.layout is not None and stored.layout != STORE_VERSION:
            write_store(store, StoreChanges(store, stored.layout))
        return stored.layout, stored.count


def import_crawl(folder: Path, path: Path, options: ImportOptions, *, lock_wait: float | None = None) -> ImportResult:
    """Import a crawl file into the catalog folder's store, all or nothing, one import at a time.

    Raises TooManyRejected (nothing written) when more rows are rejected than options.max_rejected,
    ImportBusy when another import holds the lock for longer than `lock_wait` seconds (default
    LOCK_WAIT_SECONDS).
    """
    if options.dry_run:  # reads a snapshot of the store (it is only ever renamed over), writes nothing
        return plan_import(folder, path, options)[0]
    with import_lock(folder, LOCK_WAIT_SECONDS if lock_wait is None else lock_wait):
        removed = remove_stale_temporaries(folder / IMPORTED_STORE)
        result, changes = plan_import(folder, path, options)
        result.removed = removed
        if result.rejected > options.max_rejected:
            raise TooManyRejected(result, options.max_rejected)
        if result.changed or result.carried_over is not None:
            write_store(result.store, changes)
            result.written = True
    return result


@contextmanager
def import_lock(folder: Path, wait: float) -> Iterator[None]:
    """Hold the catalog folder's import lock; ImportBusy, naming the holder, after `wait` seconds.

    flock is released by the kernel when its holder exits, however it exits: a killed import never
    leaves the catalog locked. The holder's pid is written into the file for the message.
    """
    lock = folder / IMPORT_LOCK
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except FileNotFoundError:
        raise ConfigError([Issue(folder, None, "", "catalog folder not found")]) from None
    except OSError as exc:
        raise OutputError(lock, f"cannot open the import lock: {exc.strerror or exc}", exc.errno) from None
    try:
        _acquire(fd, wait)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _acquire(fd: int, wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise ImportBusy(f"another catalog import is running (pid {_holder(fd)}); nothing was imported, "
                                 f"try again when it has finished") from None
            time.sleep(0.1)


def _holder(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else "unknown"


def remove_stale_temporaries(store: Path) -> list[Path]:
    """Remove the temporary stores of imports that were killed; the caller holds the import lock."""
    removed = []
    for stale in stale_temporaries(store):
        stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


def write_store(store: Path, changes: StoreChanges) -> None:
    """Replace the store at once: a new file is written beside it, synced, and renamed over it."""
    with replacing(store) as temporary:
        _write_database(temporary, changes)


def _write_database(path: Path, changes: StoreChanges) -> None:
    db = sqlite3.connect(path.resolve().as_uri(), uri=True)  # a URI connection may attach the old store read-only
    try:
        # Nobody reads this file before the rename, which is what makes the import atomic; a journal
        # would only slow the writing down.
        db.execute("PRAGMA journal_mode = OFF")
        db.execute(STORE_TABLE)
        db.executemany(INSERT_ROW, sorted(changes.rows))
        if changes.old is not None:
            _keep_untouched(db, changes)
        for index in STORE_INDEXES:
            db.execute(index)
        db.execute(f"PRAGMA user_version = {STORE_VERSION}")
        db.commit()
    except sqlite3.Error as exc:
        # As the OSError a full disk gives any other writer, so that durable.replacing reports it.
        full = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        raise OSError(errno.ENOSPC if full else errno.EIO, f"SQLite: {exc}") from None
    finally:
        db.close()


INSERT_ROW = f"INSERT INTO skills ({', '.join(STORE_COLUMNS)}) VALUES ({', '.join('?' * len(STORE_COLUMNS))})"


def _keep_untouched(db: sqlite3.Connection, changes: StoreChanges) -> None:
    """Copy the old store's rows the import did not change: by SQL, or record by record from an older layout."""
    assert changes.old is not None
    db.execute("ATTACH DATABASE ? AS old", (f"{changes.old.resolve().as_uri()}?mode=ro",))
    untouched = "FROM old.skills WHERE id NOT IN (SELECT id FROM main.skills)"
    if changes.old_layout == STORE_VERSION:
        db.execute(f"INSERT INTO skills ({', '.join(STORE_COLUMNS)}) SELECT {', '.join(STORE_COLUMNS)} {untouched}")
    else:
        # Read whole before writing: the query reads the table being written. Only layout 1 comes
        # this way, from stores written before review counts were kept.
        upgraded = (_upgraded(changes.old, skill_id, record)
                    for skill_id, record in db.execute(f"SELECT id, record {untouched}").fetchall())
        db.executemany(INSERT_ROW, upgraded)
    db.commit()
    db.execute("DETACH DATABASE old")


def _upgraded(store: Path, skill_id: str, text: str) -> tuple[Any, ...]:
    try:
        record = Skill.model_validate_json(text).model_dump(mode="json")
    except ValidationError as exc:
        raise ConfigError([Issue(store, None, f"skills[{skill_id!r}]", f"damaged record ({exc.error_count()} "
                                                                         f"error(s)); import the crawl again")]
                          ) from None
    return store_row(record, json.dumps(record, ensure_ascii=False))
