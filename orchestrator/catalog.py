"""The skills catalog: what each Alexa skill is called, how it is invoked, and where we learnt it.

One YAML file per category under skills_catalog/ (see skills_catalog/README.md for the schema):

    category: pets-animals
    skills:
      - id: B01N2Z1YDJ
        asin: B01N2Z1YDJ
        name: Cat Facts
        invocation_name: cat facts
        sample_utterances: ["Alexa, open Cat Facts", ...]
        ...
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import config_files
from orchestrator.config_files import ConfigError, Issue

CATEGORIES = (
    "connected-car", "dating", "fashion-style", "pets-animals", "religion-spirituality",
    "smart-home", "wine-beverages", "health-fitness", "navigation-trip-planners",
)


class Skill(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    asin: str | None = Field(None, pattern=r"^B[0-9A-Z]{9}$")
    name: str = Field(min_length=1)
    invocation_name: str = Field(min_length=1)
    category: str
    store_category: str | None = None  # the store's own category, which differs from the study's
    developer: str | None = None
    sample_utterances: list[str] = Field(default_factory=list)
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


class Catalog:
    def __init__(self, skills: dict[str, Skill]) -> None:
        self.skills = skills

    def __contains__(self, skill_id: str) -> bool:
        return skill_id in self.skills

    def __getitem__(self, skill_id: str) -> Skill:
        return self.skills[skill_id]

    def __len__(self) -> int:
        return len(self.skills)

    def categories(self) -> set[str]:
        return {s.category for s in self.skills.values()} | set(CATEGORIES)

    def in_category(self, category: str) -> list[Skill]:
        return [s for s in self.skills.values() if s.category == category]


def load_catalog(folder: Path) -> Catalog:
    """Load every *.yaml file of a catalog folder; all problems are reported together."""
    if not folder.is_dir():
        raise ConfigError([Issue(folder, None, "", "catalog folder not found")])
    skills: dict[str, Skill] = {}
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
    if issues:
        raise ConfigError(issues)
    return Catalog(skills)
