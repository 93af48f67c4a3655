"""What did the Echo mean? The outcome of an enable, open or disable step, read from its transcript.

    >>> classify("okay cat facts is now enabled", "enable", skill_name="Cat Facts")
    Verdict(outcome='enabled', score=100.0, rule='enabled: {skill} is now enabled')

The rules are data (`reply_rules.yaml` beside this module, documented at its top): phrase patterns
per outcome, each limited to the step kinds whose replies can mean it. Transcripts come from Vosk
and carry recognition errors, so every pattern is matched fuzzily (rapidfuzz) and scored 0-100.
Outcomes scoring below `threshold` are out; of the rest, the best wins, and outcomes within
`tie_margin` points of it count as a tie, won by the most specific pattern (the most text of its
own, placeholders not counted), because a short generic phrase ("you can say") matches by chance
far more often than a long one that was slightly misheard. With no outcome left, it is `other`.

`no_response` comes from the runner's status, not from text: a silent Echo has no transcript.
The verdict, its score and the rule that matched are returned for storage, so an analyst can
re-judge borderline rows later. An operator may pass their own rules file (`rules=`).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, NamedTuple, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from rapidfuzz import fuzz

from orchestrator import config_files

#: Outcomes a rule can name; `no_response` and `other` are decided here, not by rules.
RuleOutcome = Literal[
    "enabled", "already_enabled", "disabled", "not_found", "account_linking", "permission_required",
    "not_available", "skill_opened", "not_understood", "error",
]
NO_RESPONSE = "no_response"
OTHER = "other"
OUTCOMES: tuple[str, ...] = (*get_args(RuleOutcome), NO_RESPONSE, OTHER)
PLACEHOLDERS = ("skill", "invocation")
DEFAULT_RULES = "reply_rules.yaml"


class Verdict(NamedTuple):
    """What a reply meant, how well it matched (0-100), and which rule said so.

    For `other`, `score` is the best any rule reached (below the threshold) and `rule` is None.
    """

    outcome: str
    score: float
    rule: str | None


# -- the rules file --------------------------------------------------------------------------------


def _check_pattern(pattern: str) -> str:
    """Placeholders must be known and a pattern must have two words: one word matches anything."""
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise ValueError(f"bad braces in pattern {pattern!r}: {exc}") from None
    words = 0
    for literal, name, spec, conversion in parsed:
        words += len(normalise(literal).split())
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            raise ValueError(f"unknown placeholder {{{name}}} in {pattern!r}; use {{skill}} or {{invocation}}")
        words += 1
    if words < 2:
        raise ValueError(f"pattern {pattern!r} needs at least two words")
    return pattern


Pattern = Annotated[str, AfterValidator(_check_pattern)]
Scorer = Literal["hybrid", "partial", "token_set", "wratio"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OutcomeRules(_Strict):
    kinds: list[Annotated[str, Field(pattern=r"^[a-z_]+$")]] = Field(min_length=1)
    patterns: list[Pattern] = Field(min_length=1)


class RulesFile(_Strict):
    version: Literal[1]
    scorer: Scorer = "hybrid"
    threshold: float = Field(80.0, ge=0, le=100)
    tie_margin: float = Field(6.0, ge=0, le=50)
    outcomes: dict[RuleOutcome, OutcomeRules] = Field(min_length=1)


@dataclass(frozen=True)
class Rule:
    """One pattern of one outcome, split into literal text and placeholders once, at load."""

    outcome: str
    pattern: str
    kinds: frozenset[str]
    parts: tuple[tuple[str, str | None], ...]  # (normalised literal, placeholder name or None)
    literal: str = field(init=False)  # the pattern's own words, placeholders left out
    has_placeholders: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "literal", " ".join(" ".join(literal for literal, _ in self.parts).split()))
        object.__setattr__(self, "has_placeholders", any(name is not None for _, name in self.parts))

    @property
    def name(self) -> str:
        return f"{self.outcome}: {self.pattern}"

    def fill(self, values: dict[str, str]) -> str:
        if not self.has_placeholders:
            return self.literal
        pieces: list[str] = []
        for literal, placeholder in self.parts:
            pieces.append(literal)
            if placeholder is not None:
                pieces.append(values.get(placeholder, ""))
        return " ".join(" ".join(pieces).split())


def _compile(outcome: str, kinds: frozenset[str], pattern: str) -> Rule:
    parts = tuple((normalise(literal), name) for literal, name, _, _ in string.Formatter().parse(pattern))
    return Rule(outcome, pattern, kinds, parts)


# -- matching --------------------------------------------------------------------------------------

_APOSTROPHES = re.compile(r"['\u2018\u2019`]")
_NOT_WORD = re.compile(r"[^a-z0-9]+")


def normalise(text: str) -> str:
    """Lower case, no punctuation, apostrophes dropped: Vosk writes "couldn't" or "couldnt" alike."""
    return " ".join(_NOT_WORD.sub(" ", _APOSTROPHES.sub("", text.lower())).split())


def _contained(measure: Callable[[str, str], float]) -> Callable[[str, str], float]:
    """Score how well the pattern appears inside the reply.

    Both rapidfuzz measures used here are symmetric: a reply much shorter than the pattern ("sorry",
    or just the skill's name) would score 100 against any pattern containing it. Such a reply must
    instead cover the whole pattern, so it is compared with the pattern as a whole.
    """

    def score(pattern: str, text: str) -> float:
        return measure(pattern, text) if len(pattern) <= len(text) else fuzz.ratio(pattern, text)

    return score


_partial = _contained(fuzz.partial_ratio)
_token_set = _contained(fuzz.token_set_ratio)


def _hybrid(pattern: str, text: str) -> float:
    # Character alignment forgives misheard and split words ("well come"); word sets forgive words
    # inserted inside a phrase ("link your Google account"): take the kinder of the two.
    return max(_partial(pattern, text), _token_set(pattern, text))


SCORERS: dict[str, Callable[[str, str], float]] = {
    "hybrid": _hybrid,
    "partial": _partial,
    "token_set": _token_set,
    "wratio": fuzz.WRatio,
}


@dataclass(frozen=True)
class _Candidate:
    score: float
    rule: Rule
    specificity: int


@dataclass(frozen=True)
class Rules:
    """A loaded, validated rules file, ready to classify replies."""

    source: str
    threshold: float
    tie_margin: float
    scorer: str
    rules: tuple[Rule, ...]
    kinds: frozenset[str] = field(init=False)
    _by_kind: dict[str, tuple[Rule, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kinds = frozenset(k for rule in self.rules for k in rule.kinds)
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "_by_kind", {k: tuple(r for r in self.rules if k in r.kinds) for k in kinds})

    def with_scorer(self, scorer: str) -> Rules:
        if scorer not in SCORERS:
            raise ValueError(f"unknown scorer {scorer!r}; known: {', '.join(SCORERS)}")
        return replace(self, scorer=scorer)

    def classify(self, transcript: str | None, kind: str, skill_name: str | None = None,
                 invocation: str | None = None, status: str = "ok") -> Verdict:
        self._check_kind(kind)
        if status == NO_RESPONSE:
            return Verdict(NO_RESPONSE, 100.0, f"status: {NO_RESPONSE}")
        text = normalise(transcript or "")
        if not text:
            return Verdict(OTHER, 0.0, None)
        candidates = self._candidates(text, kind, _placeholder_values(skill_name, invocation))
        return self._decide(candidates)

    def expectation_met(self, transcript: str | None, expected: Sequence[str]) -> tuple[bool, float]:
        if not expected:
            raise ValueError("expectation_met needs at least one expected reply")
        text = normalise(transcript or "")
        if not text:
            return False, 0.0
        score = max(self._score(normalise(phrase), text) for phrase in expected)
        return score >= self.threshold, round(score, 1)

    def _check_kind(self, kind: str) -> None:
        if kind not in self.kinds:
            raise ValueError(f"no rule in {self.source} applies to {kind!r} steps; "
                             f"known kinds: {', '.join(sorted(self.kinds))}")

    def _score(self, pattern: str, text: str) -> float:
        return float(SCORERS[self.scorer](pattern, text)) if pattern else 0.0

    def _rule_score(self, rule: Rule, text: str, values: dict[str, str]) -> float:
        score = self._score(rule.fill(values), text)
        if rule.has_placeholders:
            # The skill's name is in the reply whatever it means ("Getting Google from Fire TV"
            # against "opening {skill}"): the pattern's own words must match on their own too.
            score = min(score, self._score(rule.literal, text))
        return score

    def _candidates(self, text: str, kind: str, values: dict[str, str]) -> dict[str, _Candidate]:
        """The best pattern of each outcome plausible for this kind of step."""
        best: dict[str, _Candidate] = {}
        for rule in self._by_kind[kind]:
            candidate = _Candidate(self._rule_score(rule, text, values), rule, len(rule.literal))
            current = best.get(rule.outcome)
            if current is None or _ranks_above(candidate, current):
                best[rule.outcome] = candidate
        return best

    def _decide(self, candidates: dict[str, _Candidate]) -> Verdict:
        qualified = [c for c in candidates.values() if c.score >= self.threshold]
        if not qualified:
            return Verdict(OTHER, round(max((c.score for c in candidates.values()), default=0.0), 1), None)
        top = max(c.score for c in qualified)
        tied = [c for c in qualified if c.score >= top - self.tie_margin]
        winner = max(tied, key=lambda c: (c.specificity, c.score))
        return Verdict(winner.rule.outcome, round(winner.score, 1), winner.rule.name)


def _ranks_above(a: _Candidate, b: _Candidate) -> bool:
    return (a.score, a.specificity) > (b.score, b.specificity)


def _placeholder_values(skill_name: str | None, invocation: str | None) -> dict[str, str]:
    # The invocation name is usually the display name spoken in lower case, and vice versa.
    skill = normalise(skill_name or invocation or "")
    spoken = normalise(invocation or skill_name or "")
    return {"skill": skill, "invocation": spoken}


# -- loading ---------------------------------------------------------------------------------------


def load_rules(path: Path | str | None = None) -> Rules:
    """The rules of `path`, or the packaged ones; each file is read and validated once."""
    return _load_cached(Path(path).expanduser().resolve() if path is not None else None)


@cache
def _load_cached(path: Path | None) -> Rules:
    if path is not None:
        return _read(path, str(path))
    with resources.as_file(resources.files("orchestrator").joinpath(DEFAULT_RULES)) as packaged:
        return _read(packaged, str(packaged))


def _read(path: Path, source: str) -> Rules:
    parsed = config_files.validate(config_files.read_document(path), RulesFile)
    rules = tuple(
        _compile(outcome, frozenset(spec.kinds), pattern)
        for outcome, spec in parsed.outcomes.items()
        for pattern in spec.patterns
    )
    return Rules(source, parsed.threshold, parsed.tie_margin, parsed.scorer, rules)


def default_rules_path() -> Path:
    """Where the packaged rules file is, for an operator who wants a copy to edit."""
    return Path(str(resources.files("orchestrator").joinpath(DEFAULT_RULES)))


# -- the module-level API --------------------------------------------------------------------------


def classify(transcript: str | None, kind: str, skill_name: str | None = None,
             invocation: str | None = None, status: str = "ok", *,
             rules: Path | str | None = None) -> Verdict:
    """What a reply to an `enable`, `open` or `disable` step (or `ask`/`say` in a session) meant.

    `status == "no_response"` gives `no_response` (score 100) whatever the transcript; an empty
    transcript otherwise gives `other` (score 0). Raises ValueError for a kind no rule covers
    (listen, pause, stop) and ConfigError for a bad rules file.
    """
    return load_rules(rules).classify(transcript, kind, skill_name, invocation, status)


def expectation_met(transcript: str | None, expected: list[str], *,
                    rules: Path | str | None = None) -> tuple[bool, float]:
    """Whether the reply matches one of a persona step's expected replies, with the same tolerance
    (and threshold) as the outcome rules; returns (met, best score 0-100)."""
    return load_rules(rules).expectation_met(transcript, expected)
