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

import random
import re
import zoneinfo
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from orchestrator.catalog.skills import Catalog, Ranking, Skill
from orchestrator.catalog.utterances import clean_utterance, invocation_key, utterance_kind, words_of
from orchestrator.core import config_files
from orchestrator.core.config_files import CleanText, ConfigError, Document, Issue

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VoiceSetting(Strict):
    name: str = "gmw/en-us"
    rate: int = Field(160, ge=80, le=400)


class WakeSetting(Strict):
    word: CleanText = Field("Alexa", min_length=1)
    alone: bool = False  # say the wake word, pause, then the command (as the Mon(IoT)r testbed did)
    pause: float = Field(1.0, ge=0.2, le=8.0)


class Schedule(Strict):
    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    jitter_minutes: int = Field(0, ge=0, le=720)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from orchestrator.plan.schedule import NightlyTrigger  # the trigger the scheduler will use

        if len(value.split()) != 5:
            raise ValueError("cron needs five fields: minute hour day-of-month month day-of-week")
        try:
            NightlyTrigger.from_crontab(value)
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
    say: CleanText = Field(min_length=1)
    skill: str | None = None
    session: bool = False
    expect: list[str] = Field(default_factory=list)  # any of these phrases counts as the right reply


class DialogTurn(Strict):
    say: CleanText = Field(min_length=1)
    expect: list[str] = Field(default_factory=list)


class DialogStep(Strict):
    """Turns spoken inside the open session, without the wake word."""

    dialog: list[DialogTurn] = Field(min_length=1)
    skill: str | None = None
    max_turns: int = Field(25, ge=1, le=100)  # conversation trees are capped, as SkillDetective did
    on_mismatch: Literal["stop", "continue"] = "stop"

    @field_validator("dialog", mode="before")
    @classmethod
    def _bare_turns(cls, value: Any) -> Any:
        return [{"say": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value


class Generated(Strict):
    top: int = Field(ge=1, le=1000)
    category: str | None = None  # default: the persona's interest
    utterances: int | None = Field(None, ge=0)  # sample utterances per skill; default all
    disable: bool = False  # disable each skill after its session
    rank: Ranking = "reviews"  # most reviews first (then rating); "rating"; "catalog": curated order, then id


class GenerateStep(Strict):
    """The top N skills of a category, each enabled and used as its type is (see _skill_block)."""

    generate: Generated


class AskStep(Strict):
    ask: CleanText = Field(min_length=1)


class ListenStep(Strict):
    listen: CleanText = Field(min_length=1)
    seconds: float = Field(20.0, gt=0, le=3600)


class PauseStep(Strict):
    pause: float = Field(gt=0, le=3600)


class StopStep(Strict):
    stop: Literal[True] = True


STEP_KINDS = {
    "enable": EnableStep, "disable": DisableStep, "open": OpenStep, "say": SayStep, "dialog": DialogStep,
    "ask": AskStep, "listen": ListenStep, "pause": PauseStep, "stop": StopStep, "generate": GenerateStep,
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
    | Annotated[PauseStep, Tag("PauseStep")] | Annotated[StopStep, Tag("StopStep")]
    | Annotated[DialogStep, Tag("DialogStep")] | Annotated[GenerateStep, Tag("GenerateStep")],
    Discriminator(_step_kind, custom_error_type="unknown_step",
                  custom_error_message=f"a step is one of: {', '.join(STEP_KINDS)}"),
]


class Persona(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    interest: str | None = None
    control: bool = False
    echo: CleanText  # printed by a dry run
    voice: VoiceSetting = VoiceSetting()
    wake: WakeSetting = WakeSetting()
    schedule: Schedule = Schedule()
    seed: int = 0
    shuffle: bool = False  # shuffle the skills of generated steps, with `seed`
    jitter: tuple[float, float] = (0.0, 0.0)  # a random pause before each step, seconds, with `seed`
    plan: list[Step] = Field(default_factory=list)

    @field_validator("jitter")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= value[0] <= value[1] <= 600:
            raise ValueError("jitter is [min, max] seconds with 0 <= min <= max <= 600")
        return value

    @field_validator("plan", mode="before")
    @classmethod
    def _expand_bare_steps(cls, value: Any) -> Any:
        return [_bare_stop(v) for v in value] if isinstance(value, list) else value



config_files.UNION_TAGS.update(kind.__name__ for kind in STEP_KINDS.values())


@dataclass(frozen=True)
class PlannedStep:
    index: int  # position in the night's plan: the log's step_index
    kind: str
    text: str  # the words after the wake word (or the whole utterance inside a session)
    wake: bool  # spoken after the wake word
    skill_id: str | None = None
    listen_seconds: float | None = None
    pause_seconds: float | None = None
    expect: tuple[str, ...] = ()
    dialog: int | None = None  # index of the first turn of the dialog this turn belongs to
    on_mismatch: str = "continue"
    source: int = 0  # the step of the persona file it came from
    delay: float = 0.0  # seeded jitter: seconds to wait before the step
    note: str = ""  # for the operator, never spoken: a generated skill's rank and popularity

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
        kind = _kind_of(step)
        field, skill_id = _skill_reference(step, kind)
        if persona.control and (skill_id or kind in ("generate", "dialog")):
            issues.append(doc.issue(("plan", index, field or kind), "a control persona must not use skills"))
        elif skill_id is not None and skill_id not in catalog:
            issues.append(doc.issue(("plan", index, field), f"unknown skill {skill_id!r} (not in the catalog)"))
        elif isinstance(step, OpenStep) and catalog[step.open].invocation_name is None:
            issues.append(doc.issue(("plan", index, "open"), f"{step.open!r} is a {catalog[step.open].skill_type} "
                                                             f"skill: it has no invocation name to open"))
        elif isinstance(step, GenerateStep):
            issues.extend(_generate_issues(doc, index, step.generate, persona, catalog))
    return issues


def _kind_of(step: BaseModel) -> str:
    return type(step).__name__.removesuffix("Step").lower()


def _skill_reference(step: BaseModel, kind: str) -> tuple[str, str | None]:
    if kind in SKILL_KINDS:
        return kind, getattr(step, kind)
    return "skill", getattr(step, "skill", None)


def _generate_issues(doc: Document, index: int, wanted: Generated, persona: Persona, catalog: Catalog) -> list[Issue]:
    category = wanted.category or persona.interest or ""
    available = catalog.count_in(category)
    if wanted.category and wanted.category not in catalog.categories():
        return [doc.issue(("plan", index, "generate", "category"), f"unknown category {category!r}")]
    if available < wanted.top:
        return [doc.issue(("plan", index, "generate", "top"),
                          f"the catalog has {available} skill(s) in {category!r}, fewer than top: {wanted.top}")]
    return []


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
    """The night's steps in order, with the words to say; the same seed gives the same night."""
    rng = random.Random(persona.seed)
    # Alexa sends an invocation name to whichever enabled skill has it: one skill per name and night.
    invoked = {key for step in persona.plan if isinstance(step, EnableStep) and step.enable in catalog
               if (key := invocation_key(catalog[step.enable].invocation_name))}
    drafts: list[PlannedStep] = []
    for source, step in enumerate(persona.plan):
        drafts.extend(_expand(source, step, persona, catalog, rng, invoked))
    steps = []
    session: str | None = None
    first_turn: dict[int, int] = {}  # a dialog is known by the index of its first turn
    for index, draft in enumerate(drafts):
        planned, session = _in_session(draft, session)
        delay = rng.uniform(*persona.jitter) if persona.jitter[1] > 0 else 0.0
        dialog = first_turn.setdefault(draft.source, index) if draft.dialog is not None else None
        steps.append(replace(planned, index=index, delay=round(delay, 3), dialog=dialog))
    return steps


def _in_session(step: PlannedStep, session: str | None) -> tuple[PlannedStep, str | None]:
    """Attach in-session steps to the open skill; the wake word ends a session."""
    if step.kind == "open":
        return step, step.skill_id
    if step.kind == "stop":
        return replace(step, skill_id=step.skill_id or session), None
    if not step.wake:
        return replace(step, skill_id=step.skill_id or session), session
    return step, None


def _expand(source: int, step: BaseModel, persona: Persona, catalog: Catalog, rng: random.Random,
            invoked: set[str]) -> list[PlannedStep]:
    def planned(kind: str, text: str, wake: bool = True, **extra: Any) -> PlannedStep:
        return PlannedStep(-1, kind, text, wake, source=source, **extra)

    match step:
        case EnableStep(enable=skill_id):
            return [planned("enable", f"enable {catalog[skill_id].name}", skill_id=skill_id)]
        case DisableStep(disable=skill_id):
            return [planned("disable", f"disable {catalog[skill_id].name}", skill_id=skill_id)]
        case OpenStep(open=skill_id):
            return [planned("open", f"open {catalog[skill_id].invocation_name}", skill_id=skill_id)]
        case SayStep(say=text, skill=skill_id, session=session, expect=expect):
            return [planned("say", strip_wake_word(text), not session, skill_id=skill_id, expect=tuple(expect))]
        case DialogStep(dialog=turns, skill=skill_id, max_turns=cap, on_mismatch=on_mismatch):
            return [planned("dialog", strip_wake_word(t.say), False, skill_id=skill_id, expect=tuple(t.expect),
                            dialog=source, on_mismatch=on_mismatch) for t in turns[:cap]]
        case AskStep(ask=text):
            return [planned("ask", strip_wake_word(text))]
        case ListenStep(listen=text, seconds=seconds):
            return [planned("listen", strip_wake_word(text), listen_seconds=seconds)]
        case PauseStep(pause=seconds):
            return [planned("pause", "", False, pause_seconds=seconds)]
        case StopStep():
            return [planned("stop", "stop")]
        case GenerateStep(generate=wanted):
            return _generated(source, wanted, persona, catalog, rng, invoked)
    raise TypeError(f"unhandled step {step!r}")


def _generated(source: int, wanted: Generated, persona: Persona, catalog: Catalog,
               rng: random.Random, invoked: set[str]) -> list[PlannedStep]:
    """The category's best-ranked skills, none sharing an invocation name with a skill of the night."""
    category = wanted.category or persona.interest or ""
    blocks = []
    for rank, skill in enumerate(catalog.ranked(category, wanted.rank, page=max(2 * wanted.top, 50)), start=1):
        key = invocation_key(skill.invocation_name)
        if key is not None and key in invoked:
            continue
        if key is not None:
            invoked.add(key)
        blocks.append(_skill_block(source, skill, wanted, _rank_note(rank, category, skill)))
        if len(blocks) == wanted.top:
            break
    if persona.shuffle:
        rng.shuffle(blocks)
    return [step for block in blocks for step in block]


def _rank_note(rank: int, category: str, skill: Skill) -> str:
    reviews = "reviews unknown" if skill.review_count is None else f"{skill.review_count:,} reviews"
    rating = "" if skill.rating is None else f", rated {skill.rating:g}"
    return f"rank {rank} in {category}: {reviews}{rating}"


def _skill_block(source: int, skill: Skill, wanted: Generated, note: str) -> list[PlannedStep]:
    """One skill's part of the night, as its type is used.

    custom: enable, open, the in-session follow-ups (no wake word), stop, then the one-shot
    invocations ("ask cat facts for a fact"), each a session of its own. smart_home: enable, then
    the device commands of its samples (no "open": there is nothing to open). flash_briefing and
    music: enable, then a listen step ("what's my flash briefing", "play ..."), stop.
    """
    def step(kind: str, text: str, wake: bool = True, **extra: Any) -> PlannedStep:
        return PlannedStep(-1, kind, text, wake, skill.id, source=source, **extra)

    block = [step("enable", f"enable {skill.name}", note=note)]
    samples = [u for u in (clean_utterance(u) for u in skill.sample_utterances) if u is not None]
    kinds = [(u, utterance_kind(u, skill.invocation_name, skill.name)) for u in samples]
    # "open cat facts" only repeats the open step, and a listed "stop" the stop step.
    kinds = [(u, k) for u, k in kinds if k != "launch" and words_of(u) not in SESSION_ENDS]
    kinds = kinds[: wanted.utterances] if wanted.utterances is not None else kinds
    if skill.skill_type == "custom":
        block.append(step("open", f"open {skill.invocation_name}"))
        block.extend(step("say", u, False) for u, k in kinds if k == "follow-up")
        block.append(step("stop", "stop"))
        block.extend(step("say", u) for u, k in kinds if k == "one-shot")
    elif skill.skill_type == "smart_home":
        block.extend(step("say", u) for u, _ in kinds)
    else:
        # "play jazz radio" is what a music skill is for, even where it only names the skill.
        block.append(step("listen", _listen_words(skill, samples), listen_seconds=LISTEN_SECONDS))
        block.append(step("stop", "stop"))
    if wanted.disable:
        block.append(step("disable", f"disable {skill.name}"))
    return block


#: Seconds a generated flash briefing or stream is recorded for.
LISTEN_SECONDS = 20.0
SESSION_ENDS = frozenset({"stop", "cancel", "exit", "quit", "alexa stop"})


def _listen_words(skill: Skill, samples: list[str]) -> str:
    if skill.skill_type == "flash_briefing":
        return "what's my flash briefing"
    played = [u for u in samples if u.lower().startswith("play ")]
    return played[0] if played else f"play {skill.name}"


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
    """Two personas on one Echo, or two files with one persona name (the log would merge their runs)."""
    echos: dict[str, LoadedPersona] = {}
    names: dict[str, LoadedPersona] = {}
    issues = []
    for item in loaded:
        other = echos.setdefault(item.persona.echo, item)
        if other is not item:
            issues.append(item.document.issue(
                ("echo",), f"Echo {item.persona.echo!r} already belongs to persona {other.persona.name!r} "
                           f"({other.path})"))
        namesake = names.setdefault(item.persona.name, item)
        if namesake is not item:
            issues.append(item.document.issue(
                ("name",), f"persona name {item.persona.name!r} is also the name in {namesake.path}"))
    return issues
