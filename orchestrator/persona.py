"""Persona files: a scripted user, the Echo it owns, and the plan it follows every night.

    name: pets
    interest: pets-animals          # or `control: true` for the vanilla persona
    echo: echo1                     # a name from the lab file
    voice: {name: gmw/en-us, rate: 160}
    wake: {word: Alexa, alone: false, pause: 1.0}
    schedule: {cron: "30 1 * * *", timezone: Europe/London, jitter_minutes: 20}
    seed: 7
    plan:
      - enable: cat-facts           # a skill id from the catalog
      - open: cat-facts
      - say: tell me a cat fact     # a sample utterance, inside the open session
        session: true               # spoken without the wake word
      - ask: what time is it        # a question to Alexa herself
      - listen: play lab radio      # ask for a stream and record it
        seconds: 20
      - pause: 2
      - stop
      - disable: cat-facts

`compile_plan` turns the plan into `PlannedStep`s: the exact words to say, with or without the wake
word, and the skill each step concerns. The runner speaks exactly those; `run --dry-run` prints them.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from orchestrator import config_files
from orchestrator.catalog import Catalog, Skill
from orchestrator.config_files import ConfigError, Document, Issue

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VoiceSetting(Strict):
    name: str = "gmw/en-us"
    rate: int = Field(160, ge=80, le=400)


class WakeSetting(Strict):
    word: str = Field("Alexa", min_length=1)
    alone: bool = False  # say the wake word, pause, then the command (as the Mon(IoT)r testbed did)
    pause: float = Field(1.0, ge=0.2, le=8.0)


class Schedule(Strict):
    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    jitter_minutes: int = Field(0, ge=0, le=720)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        if len(value.split()) != 5:
            raise ValueError("cron needs five fields: minute hour day-of-month month day-of-week")
        try:
            CronTrigger.from_crontab(value)
        except ValueError as exc:
            raise ValueError(f"not a valid cron expression: {exc}") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like Europe/London)") from None
        return value


class EnableStep(Strict):
    enable: str


class DisableStep(Strict):
    disable: str


class OpenStep(Strict):
    open: str


class SayStep(Strict):
    say: str = Field(min_length=1)
    skill: str | None = None
    session: bool = False


class AskStep(Strict):
    ask: str = Field(min_length=1)


class ListenStep(Strict):
    listen: str = Field(min_length=1)
    seconds: float = Field(20.0, gt=0, le=3600)


class PauseStep(Strict):
    pause: float = Field(gt=0, le=3600)


class StopStep(Strict):
    stop: Literal[True] = True


STEP_KINDS = {
    "enable": EnableStep, "disable": DisableStep, "open": OpenStep, "say": SayStep,
    "ask": AskStep, "listen": ListenStep, "pause": PauseStep, "stop": StopStep,
}
SKILL_KINDS = ("enable", "disable", "open")


def _step_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):  # serialising a validated plan
        return type(value).__name__
    if value == "stop":
        return "StopStep"
    if isinstance(value, dict):
        kinds = [k for k in STEP_KINDS if k in value]
        if len(kinds) == 1:
            return STEP_KINDS[kinds[0]].__name__
    return None


def _bare_stop(value: Any) -> Any:
    return {"stop": True} if value == "stop" else value


Step = Annotated[
    Annotated[EnableStep, Tag("EnableStep")] | Annotated[DisableStep, Tag("DisableStep")]
    | Annotated[OpenStep, Tag("OpenStep")] | Annotated[SayStep, Tag("SayStep")]
    | Annotated[AskStep, Tag("AskStep")] | Annotated[ListenStep, Tag("ListenStep")]
    | Annotated[PauseStep, Tag("PauseStep")] | Annotated[StopStep, Tag("StopStep")],
    Discriminator(_step_kind, custom_error_type="unknown_step",
                  custom_error_message=f"a step is one of: {', '.join(STEP_KINDS)}"),
]


class Persona(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    interest: str | None = None
    control: bool = False
    echo: str
    voice: VoiceSetting = VoiceSetting()
    wake: WakeSetting = WakeSetting()
    schedule: Schedule = Schedule()
    seed: int = 0
    plan: list[Step] = Field(default_factory=list)

    @field_validator("plan", mode="before")
    @classmethod
    def _expand_bare_steps(cls, value: Any) -> Any:
        return [_bare_stop(v) for v in value] if isinstance(value, list) else value



config_files.UNION_TAGS.update(kind.__name__ for kind in STEP_KINDS.values())


@dataclass(frozen=True)
class PlannedStep:
    index: int
    kind: str
    text: str  # the words after the wake word (or the whole utterance inside a session)
    wake: bool  # spoken after the wake word
    skill_id: str | None = None
    listen_seconds: float | None = None
    pause_seconds: float | None = None

    def spoken(self, wake_word: str) -> str:
        return f"{wake_word}, {self.text}" if self.wake else self.text


@dataclass(frozen=True)
class LoadedPersona:
    persona: Persona
    path: Path
    document: Document


def load_persona(path: Path) -> LoadedPersona:
    document = config_files.read_document(path)
    return LoadedPersona(config_files.validate(document, Persona), path, document)


def check_persona(loaded: LoadedPersona, catalog: Catalog) -> list[Issue]:
    """What a persona gets wrong about the catalog: unknown skills, skills on a control persona."""
    persona, doc = loaded.persona, loaded.document
    issues = _interest_issues(loaded, catalog)
    for index, step in enumerate(persona.plan):
        kind = type(step).__name__.removesuffix("Step").lower()
        skill_id = getattr(step, kind, None) if kind in SKILL_KINDS else getattr(step, "skill", None)
        field = kind if kind in SKILL_KINDS else "skill"
        if persona.control and (kind in SKILL_KINDS or skill_id):
            issues.append(doc.issue(("plan", index, field), "a control persona must not use skills"))
        elif skill_id is not None and skill_id not in catalog:
            issues.append(doc.issue(("plan", index, field), f"unknown skill {skill_id!r} (not in the catalog)"))
    return issues


def _interest_issues(loaded: LoadedPersona, catalog: Catalog) -> list[Issue]:
    persona, doc = loaded.persona, loaded.document
    if persona.control and persona.interest:
        return [doc.issue(("interest",), "a control persona has no interest")]
    if not persona.control and not persona.interest:
        return [doc.issue(("interest",), "set `interest` (a catalog category) or `control: true`")]
    categories = catalog.categories()
    if persona.interest and persona.interest not in categories:
        return [doc.issue(("interest",), f"unknown category {persona.interest!r}; the catalog has: "
                                         f"{', '.join(sorted(categories))}")]
    return []


def compile_plan(persona: Persona, catalog: Catalog) -> list[PlannedStep]:
    steps: list[PlannedStep] = []
    session_skill: str | None = None
    for index, step in enumerate(persona.plan):
        planned = _plan_step(index, step, catalog, session_skill)
        if planned.kind == "open":
            session_skill = planned.skill_id
        elif planned.wake:
            session_skill = None
        steps.append(planned)
    return steps


def _plan_step(index: int, step: BaseModel, catalog: Catalog, session_skill: str | None) -> PlannedStep:
    match step:
        case EnableStep(enable=skill_id):
            return PlannedStep(index, "enable", f"enable {catalog[skill_id].name}", True, skill_id)
        case DisableStep(disable=skill_id):
            return PlannedStep(index, "disable", f"disable {catalog[skill_id].name}", True, skill_id)
        case OpenStep(open=skill_id):
            return PlannedStep(index, "open", f"open {catalog[skill_id].invocation_name}", True, skill_id)
        case SayStep(say=text, skill=skill_id, session=session):
            return PlannedStep(index, "say", strip_wake_word(text), not session, skill_id or session_skill)
        case AskStep(ask=text):
            return PlannedStep(index, "ask", strip_wake_word(text), True)
        case ListenStep(listen=text, seconds=seconds):
            return PlannedStep(index, "listen", strip_wake_word(text), True, listen_seconds=seconds)
        case PauseStep(pause=seconds):
            return PlannedStep(index, "pause", "", False, pause_seconds=seconds)
        case StopStep():
            return PlannedStep(index, "stop", "stop", True, session_skill)
    raise TypeError(f"unhandled step {step!r}")


def strip_wake_word(text: str) -> str:
    """Catalog sample utterances start with "Alexa, ..."; the persona's wake word replaces it.

    "Alexa" is a wake word with or without a comma; the other wake words (which are also ordinary
    words: "amazon music", "echo show") only when a comma marks them as such.
    """
    text = re.sub(r"^\s*(echo|computer|amazon|ziggy)\s*,\s*", "", text, flags=re.IGNORECASE)
    return re.sub(r"^\s*alexa\b\s*[,.]?\s*", "", text, flags=re.IGNORECASE).strip()


def skill_of(step: PlannedStep, catalog: Catalog) -> Skill | None:
    return catalog[step.skill_id] if step.skill_id else None


def load_personas(paths: list[Path], catalog: Catalog) -> list[LoadedPersona]:
    """Load and check many personas; every problem in every file is reported at once."""
    loaded: list[LoadedPersona] = []
    issues: list[Issue] = []
    for path in paths:
        try:
            persona = load_persona(path)
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        issues.extend(check_persona(persona, catalog))
        loaded.append(persona)
    issues.extend(_echo_conflicts(loaded))
    if issues:
        raise ConfigError(issues)
    return loaded


def _echo_conflicts(loaded: list[LoadedPersona]) -> list[Issue]:
    owners: dict[str, LoadedPersona] = {}
    issues = []
    for item in loaded:
        other = owners.setdefault(item.persona.echo, item)
        if other is not item:
            issues.append(item.document.issue(
                ("echo",), f"Echo {item.persona.echo!r} already belongs to persona {other.persona.name!r} "
                           f"({other.path})"))
    return issues
