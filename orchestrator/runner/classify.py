"""What did the Echo mean? The outcome of an enable, open or disable step, read from its transcript.

    >>> classify("okay cat facts is now enabled", "enable", skill_name="Cat Facts")
    Verdict(outcome='enabled', score=100.0, rule='enabled: {skill} is now enabled', heard_skill=None)
    >>> classify("welcome to smart restaurant what would you like to do", "open", skill_name="Cat Facts")
    Verdict(outcome='other_skill', score=100.0, rule='other_skill: welcome to {other}', heard_skill='smart restaurant')

The rules are data (`reply_rules.yaml` beside this module, documented at its top): phrase patterns
per outcome, each limited to the step kinds whose replies can mean it. Transcripts come from a
speech recogniser (Vosk, pocketsphinx) and carry recognition errors ("skill" heard as "scale",
"hmm" as "h m m"), so every pattern is matched fuzzily (rapidfuzz) and scored 0-100.
Outcomes scoring below `threshold` are out; of the rest, the best wins, and outcomes within
`tie_margin` points of it count as a tie, won by the most specific pattern (the most text of its
own, placeholders not counted), because a short generic phrase ("you can say") matches by chance
far more often than a long one that was slightly misheard. With no outcome left, it is `other`.

Besides the install outcomes (enabled, not found, account linking, permission, region, ...), an
`open` can land somewhere else: in Alexa's own answer (`alexa_answered`: "here's something I
found on the web"), in a skill Alexa cannot reach (`unreachable`: "{skill} isn't responding"), in
a non-answer (`not_understood`: "hmm, I'm not sure") or in another skill's welcome
(`other_skill`). A welcome's words alone ("what would you like to do") say only that some skill
opened; whose it is, the name after its lead-in tells ("welcome to {other}"). When that name is
not the invoked skill's, allowing for recognition errors ("cap facts" is Cat Facts), the verdict
is `other_skill` with the name as heard in `Verdict.heard_skill`; a welcome naming the invoked
skill, or no skill, stays `skill_opened`.

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

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from rapidfuzz import fuzz

from orchestrator.core import config_files

#: Outcomes a rule can name; `no_response` and `other` are decided here, not by rules.
RuleOutcome = Literal[
    "enabled", "already_enabled", "disabled", "not_found", "account_linking", "permission_required",
    "not_available", "skill_opened", "other_skill", "alexa_answered", "not_understood", "unreachable",
    "error",
]
NO_RESPONSE = "no_response"
OTHER = "other"
OTHER_SKILL = "other_skill"
SKILL_OPENED = "skill_opened"
OUTCOMES: tuple[str, ...] = (*get_args(RuleOutcome), NO_RESPONSE, OTHER)
PLACEHOLDERS = ("skill", "invocation", "other")
#: What the rules may have taken a welcome for before the name in it was read.
WELCOME_LIKE = (SKILL_OPENED, OTHER)
DEFAULT_RULES = "reply_rules.yaml"


class Verdict(NamedTuple):
    """What a reply meant, how well it matched (0-100), which rule said so, and whose welcome it was.

    For `other`, `score` is the best any rule reached (below the threshold) and `rule` is None.
    For `other_skill`, `heard_skill` is the other skill's name as recognised ("smart restaurant");
    it is None for every other outcome.
    """

    outcome: str
    score: float
    rule: str | None
    heard_skill: str | None = None


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
            raise ValueError(f"unknown placeholder {{{name}}} in {pattern!r}; "
                             "use {skill}, {invocation} or (at the end of an other_skill pattern) {other}")
        words += 1
    if "{other}" in pattern and not pattern.rstrip().endswith("{other}"):
        raise ValueError(f"{{other}} must end the pattern {pattern!r}: the name heard is what follows")
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


Word = Annotated[str, Field(pattern=r"^[a-z0-9]+$")]


class NameRules(_Strict):
    """How the name after a welcome's lead-in ("welcome to {other}") is read."""

    same_skill: float = Field(70.0, ge=0, le=100)
    max_words: int = Field(4, ge=1, le=10)
    ends: list[Word] = Field(default_factory=list)
    fillers: list[Word] = Field(default_factory=list)
    not_skill_words: list[Word] = Field(default_factory=list)


class RulesFile(_Strict):
    version: Literal[1]
    scorer: Scorer = "hybrid"
    threshold: float = Field(80.0, ge=0, le=100)
    tie_margin: float = Field(6.0, ge=0, le=50)
    outcomes: dict[RuleOutcome, OutcomeRules] = Field(min_length=1)
    names: NameRules = NameRules()
    heard_as: dict[str, str] = Field(default_factory=dict)

    @field_validator("outcomes")
    @classmethod
    def _other_only_in_other_skill(cls, outcomes: dict[str, OutcomeRules]) -> dict[str, OutcomeRules]:
        # An other_skill pattern is a lead-in whose name is read afterwards; without {other} there
        # is no name to read, and elsewhere {other} would have no meaning.
        for outcome, spec in outcomes.items():
            for pattern in spec.patterns:
                if (outcome == OTHER_SKILL) != ("{other}" in pattern):
                    raise ValueError(f"{outcome} pattern {pattern!r}: {{other}} ends every other_skill "
                                     "pattern and appears in no other")
        return outcomes


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
class HeardAs:
    """Undoes the recogniser's systematic confusions in a transcript ("scale" for "skill", "h m m")."""

    pattern: re.Pattern[str] | None = None
    meant: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, heard_as: dict[str, str]) -> HeardAs:
        meant = {normalise(heard): normalise(word) for heard, word in heard_as.items() if normalise(heard)}
        if not meant:
            return cls()
        # Longest first, whole words only: "h m m" before any shorter entry, never "scaled".
        alternatives = "|".join(re.escape(heard) for heard in sorted(meant, key=len, reverse=True))
        return cls(re.compile(rf"(?<!\S)(?:{alternatives})(?!\S)"), meant)

    def __call__(self, text: str) -> str:
        if self.pattern is None:
            return text
        return self.pattern.sub(lambda found: self.meant[found.group(0)], text)


# -- whose welcome ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Names:
    """Reads the skill name that follows a welcome's lead-in, and tells whether it is the invoked skill.

    A transcript has no punctuation, so a name ends at a word that starts the next sentence
    (`ends`), or after `max_words`. The recogniser garbles names ("scan bell" for SkyBell, "making
    nature" for Akinator), so two names are alike by the mean of how alike they are spelt and how
    alike they sound (`sound_alike`), with and without their spaces.
    """

    same_skill: float = 70.0
    max_words: int = 4
    ends: frozenset[str] = frozenset()
    fillers: frozenset[str] = frozenset()
    not_skill_words: frozenset[str] = frozenset()

    def heard(self, words: Sequence[str]) -> str | None:
        """The name at the start of `words`, fillers ("the", "skill") dropped; None if there is none."""
        words = self._trim(words)
        name: list[str] = []
        for word in words[: self.max_words]:
            if word in self.ends:
                break
            name.append(word)
        name = self._trim(name)
        return " ".join(name) if name else None

    def names_one_of(self, words: Sequence[str], names: Sequence[str]) -> bool:
        """Whether `words` begin with one of `names`, allowing for recognition errors."""
        words = self._trim(words)
        return any(self._begins_with(words, self._trim(name.split())) for name in names if name)

    def is_no_skill(self, name: str) -> bool:
        return any(word in self.not_skill_words for word in name.split())

    def _trim(self, words: Sequence[str]) -> list[str]:
        start, end = 0, len(words)
        while start < end and words[start] in self.fillers:
            start += 1
        while end > start and words[end - 1] in self.fillers:
            end -= 1
        return list(words[start:end])

    def _begins_with(self, words: list[str], name: list[str]) -> bool:
        # The recogniser may split a name into more words ("daily her as scouts") or merge two into one.
        if not name:
            return False
        return any(_alike(words[:width], name) >= self.same_skill for width in range(1, len(name) + 4))


def _alike(heard: Sequence[str], name: Sequence[str]) -> float:
    spelt = max(fuzz.ratio(" ".join(heard), " ".join(name)), fuzz.ratio("".join(heard), "".join(name)))
    sound = sound_alike("".join(name))
    if not sound:
        return spelt
    return (spelt + fuzz.ratio(sound_alike("".join(heard)), sound)) / 2


_VOWELS = re.compile(r"[aeiouyhw]")
_DOUBLED = re.compile(r"(.)\1+")
_UNVOICED = str.maketrans("bdgvzcqx", "ptkfskkk")


def sound_alike(word: str) -> str:
    """A word's consonants as they sound: what a misheard name keeps ("skybell" and "scanbell": "skpl", "sknpl").

    Vowels and the glides y, h and w dropped, voiced consonants merged with their unvoiced pairs
    (b/p, d/t, g/k, v/f, z/s), c, q and x read as k, doubled letters read once.
    """
    return _DOUBLED.sub(r"\1", _VOWELS.sub("", word.replace("ph", "f").translate(_UNVOICED)))


@dataclass(frozen=True)
class _Welcome:
    """A welcome's lead-in found in a reply, and the words after it."""

    score: float
    rule: Rule
    after: tuple[str, ...]
    after_split: tuple[str, ...]  # the recogniser may merge the lead-in into the name: "welcome tomcat facts"


def _find_lead_in(rule: Rule, words: Sequence[str]) -> _Welcome | None:
    """The run of words most like the rule's lead-in, or one word longer (a word heard as two).

    Words, not characters: a character alignment would find "welcome to" at 100 in "to the alexa
    skills kit", its last word matching the start of the reply. Never a word shorter: "welcome"
    alone is as often "you're welcome" as a welcome.
    """
    lead = rule.literal.split()
    best: tuple[float, int, int] | None = None
    for width in (len(lead), len(lead) + 1):
        for start in range(len(words) - width + 1):
            score = fuzz.ratio(rule.literal, " ".join(words[start:start + width]))
            if best is None or score > best[0]:
                best = (score, start, width)
    if best is None:
        return None
    score, start, width = best
    after = tuple(words[start + width:])
    last = words[start + width - 1]
    merged = last != lead[-1] and last.startswith(lead[-1])
    after_split = (last[len(lead[-1]):], *after) if merged else after
    return _Welcome(score, rule, after, after_split)


# -- the rules -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """A loaded, validated rules file, ready to classify replies."""

    source: str
    threshold: float
    tie_margin: float
    scorer: str
    rules: tuple[Rule, ...]
    names: Names = Names()
    heard_as: HeardAs = HeardAs()
    kinds: frozenset[str] = field(init=False)
    _by_kind: dict[str, tuple[Rule, ...]] = field(init=False, repr=False, compare=False)
    _welcomes: dict[str, tuple[Rule, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kinds = frozenset(k for rule in self.rules for k in rule.kinds)
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "_by_kind", {
            k: tuple(r for r in self.rules if k in r.kinds and r.outcome != OTHER_SKILL) for k in kinds})
        object.__setattr__(self, "_welcomes", {
            k: tuple(r for r in self.rules if k in r.kinds and r.outcome == OTHER_SKILL) for k in kinds})

    def with_scorer(self, scorer: str) -> Rules:
        if scorer not in SCORERS:
            raise ValueError(f"unknown scorer {scorer!r}; known: {', '.join(SCORERS)}")
        return replace(self, scorer=scorer)

    def classify(self, transcript: str | None, kind: str, skill_name: str | None = None,
                 invocation: str | None = None, status: str = "ok") -> Verdict:
        self._check_kind(kind)
        if status == NO_RESPONSE:
            return Verdict(NO_RESPONSE, 100.0, f"status: {NO_RESPONSE}")
        text = self.heard_as(normalise(transcript or ""))
        if not text:
            return Verdict(OTHER, 0.0, None)
        values = _placeholder_values(skill_name, invocation)
        verdict = self._decide(self._candidates(text, kind, values))
        if verdict.outcome in WELCOME_LIKE:
            verdict = self._whose_welcome(text, kind, values, verdict)
        return verdict

    def expectation_met(self, transcript: str | None, expected: Sequence[str]) -> tuple[bool, float]:
        if not expected:
            raise ValueError("expectation_met needs at least one expected reply")
        text = self.heard_as(normalise(transcript or ""))
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

    def _whose_welcome(self, text: str, kind: str, values: dict[str, str], verdict: Verdict) -> Verdict:
        """`other_skill` when the reply welcomes the user to a skill that is not the one invoked.

        A welcome is `skill_opened` by its words alone ("what would you like to do"), whoever's it
        is: only the name after its lead-in tells. Without the invoked skill's name nothing can tell.
        """
        invoked = [values["skill"], values["invocation"]]
        welcome = self._welcome(text, kind)
        if welcome is None or not any(invoked):
            return verdict
        if any(self.names.names_one_of(after, invoked) for after in (welcome.after, welcome.after_split)):
            return self._own_welcome(kind, welcome, verdict)
        heard = self.names.heard(welcome.after)
        if heard is None or self.names.is_no_skill(heard):
            return verdict
        return Verdict(OTHER_SKILL, round(welcome.score, 1), welcome.rule.name, heard)

    def _own_welcome(self, kind: str, welcome: _Welcome, verdict: Verdict) -> Verdict:
        """The invoked skill's welcome, its name too garbled for the skill_opened pattern with the same lead-in."""
        if verdict.outcome == SKILL_OPENED:
            return verdict
        lead_in = welcome.rule.literal
        same = [r for r in self._by_kind[kind] if r.outcome == SKILL_OPENED and r.literal == lead_in]
        return Verdict(SKILL_OPENED, round(welcome.score, 1), same[0].name) if same else verdict

    def _welcome(self, text: str, kind: str) -> _Welcome | None:
        """The best lead-in of this kind's other_skill patterns that the reply contains, if any."""
        words = text.split()
        found = [w for rule in self._welcomes.get(kind, ()) if (w := _find_lead_in(rule, words)) is not None]
        found = [w for w in found if w.score >= self.threshold and w.after]
        return max(found, key=lambda w: (w.score, len(w.rule.literal)), default=None)


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
    with resources.as_file(resources.files("orchestrator.runner").joinpath(DEFAULT_RULES)) as packaged:
        return _read(packaged, str(packaged))


def _read(path: Path, source: str) -> Rules:
    parsed = config_files.validate(config_files.read_document(path), RulesFile)
    rules = tuple(
        _compile(outcome, frozenset(spec.kinds), pattern)
        for outcome, spec in parsed.outcomes.items()
        for pattern in spec.patterns
    )
    names = Names(parsed.names.same_skill, parsed.names.max_words, frozenset(parsed.names.ends),
                  frozenset(parsed.names.fillers), frozenset(parsed.names.not_skill_words))
    heard_as = HeardAs.of(parsed.heard_as)
    return Rules(source, parsed.threshold, parsed.tie_margin, parsed.scorer, rules, names, heard_as)


def default_rules_path() -> Path:
    """Where the packaged rules file is, for an operator who wants a copy to edit."""
    return Path(str(resources.files("orchestrator.runner").joinpath(DEFAULT_RULES)))


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
