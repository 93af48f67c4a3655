"""The skills catalog: what each Alexa skill is called, how it is invoked, and where we learnt it.

The curated skills are one YAML file per category under skills_catalog/ (see skills_catalog/README.md
for the schema):

    category: pets-animals
    skills:
      - id: B01N2Z1YDJ
        asin: B01N2Z1YDJ
        name: Cat Facts
        invocation_name: cat facts
        sample_utterances: ["Alexa, open Cat Facts", ...]
        ...

Skills imported from a crawl of the skill store (`orchestrator catalog import`, see catalog_import.py)
live beside them in skills_catalog/imported.sqlite. A crawl holds about 100,000 skills and a run
speaks a few dozen, so that store is opened, not read: each record is read and validated when it is
looked up. A curated record wins over an imported one with the same id.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import ItemsView, Iterable, Iterator, Mapping, ValuesView
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.core import config_files
from orchestrator.core.config_files import CleanText, ConfigError, Issue

CATEGORIES = (
    "connected-car", "dating", "fashion-style", "pets-animals", "religion-spirituality",
    "smart-home", "wine-beverages", "health-fitness", "navigation-trip-planners",
)


class Skill(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    asin: str | None = Field(None, pattern=r"^B[0-9A-Z]{9}$")
    name: CleanText = Field(min_length=1)  # spoken, as are the invocation name and sample utterances
    invocation_name: CleanText = Field(min_length=1)
    category: str
    store_category: str | None = None  # the store's own category, which differs from the study's
    developer: str | None = None
    sample_utterances: list[CleanText] = Field(default_factory=list)
    account_linking: bool | None = None
    permissions: list[str] | None = None
    privacy_policy_url: str | None = None
    source: str | None = None
    retrieved: str | None = None
    notes: str | None = None


class CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: str
    store_category: str | None = None  # the store's own category, which differs from the study's
    skills: list[Skill] = Field(default_factory=list)


#: The imported store, inside the catalog folder. Its layout changes only with STORE_VERSION.
IMPORTED_STORE = "imported.sqlite"
STORE_VERSION = 1
STORE_TABLE = """
CREATE TABLE skills (
    id TEXT PRIMARY KEY,
    category TEXT NOT NULL,
    record TEXT NOT NULL  -- the Skill as a JSON object with every field, validated at import
) WITHOUT ROWID
"""
STORE_INDEX = "CREATE INDEX skills_by_category ON skills (category, id)"


class ImportedStore:
    """The imported skills, read on demand from a SQLite file that is only ever replaced whole.

    The import renames a new file over the old one, so an open store keeps reading the snapshot it
    opened. Pickling keeps only the path (runs cross process boundaries); the copy reopens the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = _open_store(path)
        self._lock = threading.Lock()  # one connection, shared by a run's threads
        self._categories: set[str] | None = None

    def __reduce__(self) -> tuple[type[ImportedStore], tuple[Path]]:
        return ImportedStore, (self.path,)

    def close(self) -> None:
        self._db.close()

    def _rows(self, sql: str, parameters: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(parameters)).fetchall()
            except sqlite3.Error as exc:
                raise ConfigError([Issue(self.path, None, "", f"cannot read the imported skills: {exc}")]) from None

    def count(self) -> int:
        return int(self._rows("SELECT count(*) FROM skills")[0][0])

    def count_of(self, ids: Iterable[str]) -> int:
        """How many of these ids are stored (a curated file may hide some imported records)."""
        wanted = list(ids)
        # Bound parameters are capped (32,766 in current SQLite); the curated catalog is far smaller.
        return sum(self._rows(f"SELECT count(*) FROM skills WHERE id IN ({','.join('?' * len(chunk))})", chunk)[0][0]
                   for chunk in _chunks(wanted, 500))

    def categories(self) -> set[str]:
        if self._categories is None:
            self._categories = {row[0] for row in self._rows("SELECT DISTINCT category FROM skills")}
        return self._categories

    def __contains__(self, skill_id: object) -> bool:
        return bool(self._rows("SELECT 1 FROM skills WHERE id = ?", (skill_id,)))

    def get(self, skill_id: str) -> Skill | None:
        rows = self._rows("SELECT record FROM skills WHERE id = ?", (skill_id,))
        return self._skill(skill_id, rows[0][0]) if rows else None

    def ids(self) -> list[str]:
        return [row[0] for row in self._rows("SELECT id FROM skills ORDER BY id")]

    def in_category(self, category: str) -> list[Skill]:
        rows = self._rows("SELECT id, record FROM skills WHERE category = ? ORDER BY id", (category,))
        return [self._skill(skill_id, record) for skill_id, record in rows]

    def skills(self) -> Iterator[Skill]:
        for skill_id, record in self._rows("SELECT id, record FROM skills ORDER BY id"):
            yield self._skill(skill_id, record)

    def records(self) -> dict[str, str]:
        """Every stored record as its JSON text, by id (for an import to merge into)."""
        return dict(self._rows("SELECT id, record FROM skills"))

    def _skill(self, skill_id: str, record: str) -> Skill:
        try:
            return Skill.model_validate_json(record)
        except ValidationError as exc:
            problem = f"damaged record ({exc.error_count()} error(s)); import the crawl again"
            raise ConfigError([Issue(self.path, None, f"skills[{skill_id!r}]", problem)]) from None


def _open_store(path: Path) -> sqlite3.Connection:
    problem = f"not an imported-skills store (version {STORE_VERSION}); delete it and import the crawl again"
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        columns = [row[1] for row in db.execute("PRAGMA table_info(skills)")]
    except sqlite3.Error as exc:
        raise ConfigError([Issue(path, None, "", f"{problem} ({exc})")]) from None
    if version != STORE_VERSION or columns != ["id", "category", "record"]:
        db.close()
        raise ConfigError([Issue(path, None, "", problem)])
    return db


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Catalog:
    """The curated skills and, when there is a store, the imported ones; curated records win on ids."""

    def __init__(self, skills: dict[str, Skill], imported: ImportedStore | None = None) -> None:
        self.curated = skills
        self.imported = imported
        self.skills: Mapping[str, Skill] = skills if imported is None else _CombinedSkills(self)
        hidden = imported.count_of(skills) if imported is not None else 0
        self._size = len(skills) + (imported.count() - hidden if imported is not None else 0)

    def __contains__(self, skill_id: str) -> bool:
        return skill_id in self.curated or (self.imported is not None and skill_id in self.imported)

    def __getitem__(self, skill_id: str) -> Skill:
        if skill_id in self.curated:
            return self.curated[skill_id]
        skill = self.imported.get(skill_id) if self.imported is not None else None
        if skill is None:
            raise KeyError(skill_id)
        return skill

    def __len__(self) -> int:
        return self._size

    def categories(self) -> set[str]:
        imported = self.imported.categories() if self.imported is not None else set()
        return {s.category for s in self.curated.values()} | imported | set(CATEGORIES)

    def in_category(self, category: str) -> list[Skill]:
        """Curated skills in file order, then imported ones by id."""
        curated = [s for s in self.curated.values() if s.category == category]
        if self.imported is None:
            return curated
        return curated + [s for s in self.imported.in_category(category) if s.id not in self.curated]


class _CombinedSkills(Mapping[str, Skill]):
    """`Catalog.skills` when there is an imported store: every skill by id, read on demand."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def __getitem__(self, skill_id: str) -> Skill:
        return self._catalog[skill_id]

    def __contains__(self, skill_id: object) -> bool:
        return isinstance(skill_id, str) and skill_id in self._catalog

    def __len__(self) -> int:
        return len(self._catalog)

    def __iter__(self) -> Iterator[str]:
        curated, imported = self._catalog.curated, self._catalog.imported
        yield from curated
        if imported is not None:
            yield from (skill_id for skill_id in imported.ids() if skill_id not in curated)

    def _all(self) -> Iterator[Skill]:
        curated, imported = self._catalog.curated, self._catalog.imported
        yield from curated.values()
        if imported is not None:
            yield from (skill for skill in imported.skills() if skill.id not in curated)

    # One query for the whole store rather than one lookup per id.
    def values(self) -> ValuesView[Skill]:
        return _Values(self)

    def items(self) -> ItemsView[str, Skill]:
        return _Items(self)


class _Values(ValuesView[Skill]):
    _mapping: _CombinedSkills

    def __iter__(self) -> Iterator[Skill]:
        return self._mapping._all()


class _Items(ItemsView[str, Skill]):
    _mapping: _CombinedSkills

    def __iter__(self) -> Iterator[tuple[str, Skill]]:
        return ((skill.id, skill) for skill in self._mapping._all())


@dataclass(frozen=True)
class Curated:
    """The curated skills, and the file each one is written in."""

    skills: dict[str, Skill]
    files: dict[str, Path]


def load_curated(folder: Path) -> Curated:
    """Load every *.yaml file of a catalog folder; all problems are reported together."""
    if not folder.is_dir():
        raise ConfigError([Issue(folder, None, "", "catalog folder not found")])
    skills: dict[str, Skill] = {}
    files: dict[str, Path] = {}
    issues: list[Issue] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            document = config_files.read_document(path)
            data = config_files.validate(document, CatalogFile)
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        for index, skill in enumerate(data.skills):
            loc = ("skills", index)
            if skill.category != data.category:
                issues.append(document.issue((*loc, "category"),
                                             f"{skill.category!r} differs from the file's {data.category!r}"))
            if skill.id in skills:
                issues.append(document.issue((*loc, "id"), f"duplicate skill id {skill.id!r}"))
            skills[skill.id] = skill
            files.setdefault(skill.id, path)
    if issues:
        raise ConfigError(issues)
    return Curated(skills, files)


def load_catalog(folder: Path) -> Catalog:
    """The curated YAML files of a catalog folder and its imported store, if it has one."""
    issues: list[Issue] = []
    curated: Curated | None = None
    imported: ImportedStore | None = None
    try:
        curated = load_curated(folder)
    except ConfigError as exc:
        issues.extend(exc.issues)
    store = folder / IMPORTED_STORE
    if store.is_file():
        try:
            imported = ImportedStore(store)
        except ConfigError as exc:
            issues.extend(exc.issues)
    if issues or curated is None:
        raise ConfigError(issues)
    return Catalog(curated.skills, imported)
