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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.catalog.utterances import invocation_key, words_of
from orchestrator.core import config_files
from orchestrator.core.config_files import CleanText, ConfigError, Issue

CATEGORIES = (
    "connected-car", "dating", "fashion-style", "pets-animals", "religion-spirituality",
    "smart-home", "wine-beverages", "health-fitness", "navigation-trip-planners",
)


SkillType = Literal["custom", "smart_home", "flash_briefing", "music"]
SKILL_TYPES: tuple[SkillType, ...] = ("custom", "smart_home", "flash_briefing", "music")


class Skill(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    asin: str | None = Field(None, pattern=r"^B[0-9A-Z]{9}$")
    name: CleanText = Field(min_length=1)  # spoken, as are the invocation name and sample utterances
    # Custom skills are opened by it; smart-home, flash-briefing and music skills have none (null),
    # which a curated file says as such rather than by leaving the key out.
    invocation_name: CleanText | None = Field(min_length=1)
    skill_type: SkillType = "custom"
    category: str
    store_category: str | None = None  # the store's own category, which differs from the study's
    store_subcategory: str | None = None
    developer: str | None = None
    sample_utterances: list[CleanText] = Field(default_factory=list)
    sample_utterances_raw: list[str] | None = None  # as the crawl wrote them, before cleaning
    account_linking: bool | None = None
    permissions: list[str] | None = None
    privacy_policy_url: str | None = None
    terms_url: str | None = None
    in_app_purchasing: bool | None = None
    rating: float | None = Field(None, ge=0, le=5)
    review_count: int | None = Field(None, ge=0)
    release_date: str | None = None
    description: str | None = None
    source: str | None = None
    retrieved: str | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _custom_skills_are_invoked(self) -> Skill:
        if self.skill_type == "custom" and self.invocation_name is None:
            raise ValueError("a custom skill needs an invocation_name (or give skill_type: smart_home, "
                             "flash_briefing or music)")
        return self

    def dedupe_key(self) -> str:
        """One skill listed twice (by two crawls, or curated and crawled): its name and developer."""
        return f"{words_of(self.name)}|{words_of(self.developer or '')}"


#: How `generate` and `catalog list --top` order a category's skills; ties go to the curated file's
#: order, then to the id, so a ranking is the same every night.
RANKINGS = ("reviews", "rating", "catalog")
Ranking = Literal["reviews", "rating", "catalog"]


def rank_key(skill: Skill, ranking: Ranking, position: int) -> tuple[Any, ...]:
    """`position` is the curated file order (imported skills come after every curated one)."""
    reviews = (skill.review_count is None, -(skill.review_count or 0))
    rating = (skill.rating is None, -(skill.rating or 0.0))
    if ranking == "reviews":
        return (*reviews, *rating, position, skill.id)
    if ranking == "rating":
        return (*rating, *reviews, position, skill.id)
    return (position, skill.id)


class CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: str
    store_category: str | None = None  # the store's own category, which differs from the study's
    skills: list[Skill] = Field(default_factory=list)


#: The imported store, inside the catalog folder. Its layout changes only with STORE_VERSION; an
#: import carries the records of an older layout over (crawl.StoredRecords).
IMPORTED_STORE = "imported.sqlite"
STORE_VERSION = 2
STORE_TABLE = """
CREATE TABLE skills (
    id TEXT PRIMARY KEY,
    category TEXT NOT NULL,
    review_count INTEGER,
    rating REAL,
    invocation TEXT,  -- utterances.invocation_key: the invocation name as Alexa hears it
    dedupe TEXT NOT NULL,  -- Skill.dedupe_key
    record TEXT NOT NULL  -- the Skill as a JSON object with every field, validated at import
) WITHOUT ROWID
"""
STORE_COLUMNS = ["id", "category", "review_count", "rating", "invocation", "dedupe", "record"]
# A category's top N is read from an index, not by loading the category (100,000 skills, 50 wanted).
STORE_INDEXES = (
    "CREATE INDEX skills_by_category ON skills (category, id)",
    "CREATE INDEX skills_by_reviews ON skills (category, review_count DESC, rating DESC, id)",
    "CREATE INDEX skills_by_rating ON skills (category, rating DESC, review_count DESC, id)",
    "CREATE INDEX skills_by_invocation ON skills (invocation)",
    "CREATE INDEX skills_by_dedupe ON skills (dedupe)",
)
_ORDER = {
    "reviews": "review_count DESC, rating DESC, id",
    "rating": "rating DESC, review_count DESC, id",
    "catalog": "id",
}


def store_row(record: dict[str, Any], text: str) -> tuple[Any, ...]:
    """A validated record (Skill.model_dump(mode="json")) as the store's row."""
    skill = Skill.model_construct(**record)
    return (record["id"], record["category"], record.get("review_count"), record.get("rating"),
            invocation_key(record.get("invocation_name")), skill.dedupe_key(), text)


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

    def top(self, category: str, limit: int, ranking: Ranking = "reviews", offset: int = 0) -> list[Skill]:
        rows = self._rows(f"SELECT id, record FROM skills WHERE category = ? ORDER BY {_ORDER[ranking]} "
                          f"LIMIT ? OFFSET ?", (category, limit, offset))
        return [self._skill(skill_id, record) for skill_id, record in rows]

    def count_in(self, category: str, hidden: Iterable[str] = ()) -> int:
        """Skills of a category, less those of `hidden` (curated ids, which the catalog takes instead)."""
        total = int(self._rows("SELECT count(*) FROM skills WHERE category = ?", (category,))[0][0])
        wanted = list(hidden)
        return total - sum(
            int(self._rows(f"SELECT count(*) FROM skills WHERE category = ? AND id IN ({','.join('?' * len(chunk))})",
                       (category, *chunk))[0][0])
            for chunk in _chunks(wanted, 500))

    def sharing_invocation(self, invocation_name: str | None) -> list[str]:
        """Ids of the skills Alexa would hear by this invocation name."""
        key = invocation_key(invocation_name)
        return [row[0] for row in self._rows("SELECT id FROM skills WHERE invocation = ? ORDER BY id", (key,))]

    def sharing_identity(self, skill: Skill) -> list[str]:
        return [row[0] for row in self._rows("SELECT id FROM skills WHERE dedupe = ? ORDER BY id",
                                             (skill.dedupe_key(),))]

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
    if version in OLD_LAYOUTS and columns == OLD_LAYOUTS[version]:
        db.close()
        raise ConfigError([Issue(path, None, "", f"the imported store has layout {version}, from an older "
                                                 f"orchestrator; `orchestrator catalog upgrade` carries its skills "
                                                 f"over to layout {STORE_VERSION} (as does the next import)")])
    if version != STORE_VERSION or columns != STORE_COLUMNS:
        db.close()
        raise ConfigError([Issue(path, None, "", problem)])
    return db


#: Layouts an import or `catalog upgrade` can read the records of, by version: their columns.
OLD_LAYOUTS = {1: ["id", "category", "record"]}


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

    def count_in(self, category: str) -> int:
        curated = sum(1 for s in self.curated.values() if s.category == category)
        return curated + (self.imported.count_in(category, self.curated) if self.imported is not None else 0)

    def ranked(self, category: str, ranking: Ranking = "reviews", page: int = 100) -> Iterator[Skill]:
        """A category's skills, best first; read from the store's index a page at a time."""
        positions = {skill_id: n for n, skill_id in enumerate(self.curated)}
        after = len(positions)
        pending = sorted((s for s in self.curated.values() if s.category == category),
                         key=lambda s: rank_key(s, ranking, positions[s.id]))
        offset = 0
        while True:
            batch: list[Skill] = []
            if self.imported is not None:
                batch = self.imported.top(category, page, ranking, offset)
                offset += len(batch)
            imported = [s for s in batch if s.id not in self.curated]
            # Every curated skill ranked above the page's last row is settled; the rest wait for later pages.
            merged = sorted([*pending, *imported], key=lambda s: rank_key(s, ranking, positions.get(s.id, after)))
            if len(batch) < page:
                yield from merged
                return
            last = rank_key(batch[-1], ranking, after)
            settled = [s for s in merged if rank_key(s, ranking, positions.get(s.id, after)) <= last]
            yield from settled
            pending = [s for s in pending if s not in settled]

    def top(self, category: str, limit: int, ranking: Ranking = "reviews") -> list[Skill]:
        found: list[Skill] = []
        for skill in self.ranked(category, ranking, page=max(limit, 1)):
            found.append(skill)
            if len(found) == limit:
                break
        return found

    def sharing_invocation(self, skill: Skill) -> list[str]:
        """Other skills of the catalog that Alexa would hear by this skill's invocation name."""
        key = invocation_key(skill.invocation_name)
        if key is None:
            return []
        curated = [s.id for s in self.curated.values() if invocation_key(s.invocation_name) == key]
        imported = self.imported.sharing_invocation(skill.invocation_name) if self.imported is not None else []
        return [i for i in dict.fromkeys([*curated, *imported]) if i != skill.id]

    def sharing_identity(self, skill: Skill) -> list[str]:
        """Other ids under which the catalog lists this skill (the same name and developer)."""
        key = skill.dedupe_key()
        curated = [s.id for s in self.curated.values() if s.dedupe_key() == key]
        imported = self.imported.sharing_identity(skill) if self.imported is not None else []
        return [i for i in dict.fromkeys([*curated, *imported]) if i != skill.id]


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
