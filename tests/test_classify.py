"""The reply classifier: accuracy on the labelled corpora, and each rule of its behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest
from rapidfuzz import fuzz
from reply_corpus import SEED, by_outcome, derive_noisy, evaluate, load_acoustic, load_corpus

from orchestrator.core.config_files import ConfigError
from orchestrator.runner.classify import (
    OUTCOMES,
    Verdict,
    classify,
    default_rules_path,
    expectation_met,
    load_rules,
    normalise,
)

REQUIRED_ACCURACY = 0.95
#: On replies spoken by a synthetic voice and recognised by pocketsphinx (bench/acoustic_corpus.py).
ACOUSTIC_ACCURACY = 0.95
ACOUSTIC_PER_OUTCOME = 0.90
ACOUSTIC_HELD_OUT = 0.90


def _classify_entry(entry):
    return classify(entry.text, entry.kind, entry.skill, entry.invocation)


def _listed(result) -> str:
    return "\n".join(f"  {m.entry.id}: {m.entry.outcome} -> {m.got} ({m.score}) {m.entry.text!r}"
                     for m in result.mistakes)


# -- the corpus ------------------------------------------------------------------------------------


def test_accuracy_over_the_whole_corpus() -> None:
    entries = load_corpus()
    result = evaluate(entries, _classify_entry)
    mistakes = "\n".join(f"  {m.entry.id}: {m.entry.outcome} -> {m.got} ({m.score})" for m in result.mistakes)
    print(f"\nclassifier accuracy: {result.ratio:.1%} ({result.right}/{result.total})\n{mistakes}")
    assert result.ratio >= REQUIRED_ACCURACY, f"accuracy {result.ratio:.1%} < {REQUIRED_ACCURACY:.0%}\n{mistakes}"


def test_corpus_has_sixty_sourced_clean_phrasings_and_their_noisy_copies() -> None:
    entries = load_corpus()
    clean = [e for e in entries if not e.noisy]
    noisy = [e for e in entries if e.noisy]
    assert len(clean) >= 60
    assert all(e.source for e in clean), [e.id for e in clean if not e.source]
    assert len({e.id for e in entries}) == len(entries)
    assert {e.outcome for e in entries} <= set(OUTCOMES)
    assert {e.derived_from for e in noisy} <= {e.id for e in clean}
    assert noisy, "the corpus must test transcription errors"


def test_noisy_entries_are_reproducible_from_the_seed() -> None:
    entries = load_corpus()
    clean = [e for e in entries if not e.noisy]
    stored = [(e.id, e.text) for e in entries if e.noisy]
    assert stored == [(e.id, e.text) for e in derive_noisy(clean, SEED)], (
        "regenerate with: .venv/bin/python tests/reply_corpus.py --write")


# -- the acoustic corpus ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def acoustic():
    return load_acoustic()


def test_acoustic_corpus_covers_every_outcome(acoustic) -> None:
    assert 150 <= len(acoustic) <= 450
    assert len({e.id for e in acoustic}) == len(acoustic)
    counts = {outcome: sum(e.outcome == outcome for e in acoustic) for outcome in OUTCOMES}
    assert all(n >= 10 for outcome, n in counts.items() if outcome != "no_response"), counts
    assert all(e.transcript and e.spoken for e in acoustic)
    assert all((e.heard_skill is not None) == (e.outcome == "other_skill") for e in acoustic)
    held = [e for e in acoustic if e.held_out]
    assert len(held) >= 50 and {e.outcome for e in held} == set(counts) - {"no_response"}


def test_accuracy_over_the_acoustic_corpus(acoustic) -> None:
    result = evaluate(acoustic, _classify_entry)
    print(f"\nacoustic accuracy: {result.ratio:.1%} ({result.right}/{result.total})\n{_listed(result)}")
    assert result.ratio >= ACOUSTIC_ACCURACY, f"accuracy {result.ratio:.1%}\n{_listed(result)}"


def test_acoustic_accuracy_of_every_outcome(acoustic) -> None:
    weak = {outcome: result for outcome, result in by_outcome(acoustic, _classify_entry).items()
            if result.ratio < ACOUSTIC_PER_OUTCOME}
    assert not weak, "\n".join(f"{o} {r.ratio:.1%}\n{_listed(r)}" for o, r in weak.items())


def test_acoustic_accuracy_on_held_out_phrasings(acoustic) -> None:
    result = evaluate([e for e in acoustic if e.held_out], _classify_entry)
    assert result.ratio >= ACOUSTIC_HELD_OUT, f"held-out accuracy {result.ratio:.1%}\n{_listed(result)}"


def test_other_skill_carries_the_name_heard(acoustic) -> None:
    # The name as recognised ("kids card" for Kids Court), so words of the transcript; most of them
    # still recognisably the name that was spoken.
    rules = load_rules()
    heard = {}
    for entry in acoustic:
        verdict = classify(entry.transcript, entry.kind, entry.skill, entry.invocation)
        if verdict.outcome == "other_skill":
            assert verdict.heard_skill, entry.id
            assert f" {verdict.heard_skill} " in f" {rules.heard_as(normalise(entry.transcript))} ", entry.id
            heard[entry.id] = (entry.heard_skill or "", verdict.heard_skill)
    close = [i for i, (spoken, name) in heard.items() if fuzz.token_set_ratio(spoken, name) >= 70]
    assert len(close) >= 0.8 * len(heard), {i: pair for i, pair in heard.items() if i not in close}

# -- statuses and empty replies --------------------------------------------------------------------


def test_no_response_status_wins_over_any_transcript() -> None:
    assert classify(None, "open", "Cat Facts", status="no_response") == Verdict(
        "no_response", 100.0, "status: no_response")
    assert classify("cat facts is now enabled", "enable", "Cat Facts", status="no_response").outcome == "no_response"


@pytest.mark.parametrize("transcript", [None, "", "   ", "..."])
def test_empty_transcript_on_an_ok_status_is_other(transcript: str | None) -> None:
    assert classify(transcript, "enable", "Cat Facts") == Verdict("other", 0.0, None)


def test_unrelated_reply_is_other_with_its_best_score() -> None:
    verdict = classify("The weather in Seattle is fifty five degrees", "open", "Cat Facts")
    assert verdict.outcome == "other"
    assert verdict.rule is None
    assert 0 < verdict.score < load_rules().threshold


# -- kinds -----------------------------------------------------------------------------------------


def test_an_enable_reply_cannot_be_skill_opened() -> None:
    welcome = "Welcome to Cat Facts. You can say, give me a fact."
    assert classify(welcome, "open", "Cat Facts").outcome == "skill_opened"
    assert classify(welcome, "enable", "Cat Facts").outcome == "other"


def test_enabled_and_disabled_belong_to_their_own_kinds() -> None:
    assert classify("Okay, Cat Facts is now enabled.", "open", "Cat Facts").outcome == "other"
    assert classify("Okay, Cat Facts is now enabled.", "disable", "Cat Facts").outcome != "enabled"
    assert classify("Okay. Cat Facts has been disabled.", "enable", "Cat Facts").outcome != "disabled"
    assert classify("Okay. Cat Facts has been disabled.", "disable", "Cat Facts").outcome == "disabled"


@pytest.mark.parametrize("outcome,reply", [
    ("skill_opened", "welcome to cat facts ask me for a fact"),
    ("account_linking", "to use cat facts go to the skills section of your alexa app and link your account"),
    ("not_found", "sorry i couldn't find that skill"),
    ("not_understood", "sorry i don't know that"),
    ("error", "there was a problem with the requested skill's response"),
])
def test_an_open_reply_can_mean(outcome: str, reply: str) -> None:
    assert classify(reply, "open", "Cat Facts").outcome == outcome


@pytest.mark.parametrize("kind", ["pause", "listen", "stop", "dance"])
def test_a_kind_no_rule_covers_is_refused(kind: str) -> None:
    with pytest.raises(ValueError, match="known kinds"):
        classify("sorry i don't know that", kind)


# -- whose welcome: other_skill --------------------------------------------------------------------


def test_verdict_keeps_its_first_three_fields() -> None:
    verdict = Verdict("enabled", 100.0, "enabled: is now enabled")
    assert verdict.heard_skill is None and len(verdict) == 4
    assert (verdict[0], verdict[1], verdict[2]) == ("enabled", 100.0, "enabled: is now enabled")
    assert verdict == ("enabled", 100.0, "enabled: is now enabled", None)


@pytest.mark.parametrize("reply,skill,heard", [
    ("welcome to smart restaurant what would you like to do", "Cat Facts", "smart restaurant"),
    ("Welcome back to Song Quiz. You can ask me for a recommendation.", "Daily Horoscopes", "song quiz"),
    ("welcome to the trivia hero skill say start to begin", "SkyBell", "trivia hero"),
    ("hi welcome to chompers you can ask me for todays special", "Wine Pairing", "chompers"),
    ("welcome to cat genius where cats are the smartest animals", "Cat Facts", "cat genius"),
    ("well come to smart restaurant", "Cat Facts", "smart restaurant"),  # a lead-in heard as three words
    ("thanks for opening jeopardy what can i do for you", "The Dog Feeder", "jeopardy"),
])
def test_a_welcome_naming_another_skill_is_other_skill(reply: str, skill: str, heard: str) -> None:
    verdict = classify(reply, "open", skill)
    assert verdict.outcome == "other_skill"
    assert verdict.heard_skill == heard
    assert verdict.rule is not None and verdict.rule.startswith("other_skill: ")
    assert verdict.score >= load_rules().threshold


@pytest.mark.parametrize("reply,skill,invocation", [
    ("welcome to cap facts what would you like to do", "Cat Facts", "cat facts"),  # misheard
    ("welcome tomcat facts ask me for a fact", "Cat Facts", "cat facts"),  # "to cat" merged
    ("welcome to sky bill", "SkyBell", "sky bell"),
    ("welcome back to the dog feeder skill how can i help", "The Dog Feeder", "dog feeder"),
    ("welcome to night scout what would you like to do", "Nightscout", None),  # a name split in two
    ("welcome to ocean waves you can say play", "Sleep Sounds Ocean Waves", "ocean waves"),  # the invocation
    ("welcome to the alexa skills kit you can say hello", "Hello World", None),  # the kit's template
])
def test_a_welcome_naming_the_skill_misheard_stays_skill_opened(reply: str, skill: str,
                                                                 invocation: str | None) -> None:
    verdict = classify(reply, "open", skill, invocation)
    assert verdict.outcome == "skill_opened", verdict
    assert verdict.heard_skill is None


def test_a_welcome_with_no_name_stays_skill_opened() -> None:
    verdict = classify("You can say, give me a fact. What would you like to do?", "open", "Cat Facts")
    assert verdict == ("skill_opened", 100.0, verdict.rule, None)


def test_a_welcome_is_only_read_for_open_and_ask_steps() -> None:
    reply = "welcome to smart restaurant what would you like to do"
    assert classify(reply, "ask", "Cat Facts").outcome == "other_skill"
    assert classify(reply, "enable", "Cat Facts").outcome == "other"
    assert classify(reply, "disable", "Cat Facts").outcome == "other"


def test_you_re_welcome_is_no_welcome() -> None:
    assert classify("you're welcome anything else", "ask", "Cat Facts").outcome == "other"


def test_recognition_confusions_are_undone_before_matching() -> None:
    assert load_rules().heard_as(normalise("h m m, I couldn't find the scale")) == "hmm i couldnt find the skill"
    reply = "okay cat facts is now unable to start say open cat facts"
    assert classify(reply, "enable", "Cat Facts").outcome == "enabled"


def test_without_the_skill_s_name_a_welcome_cannot_be_anothers() -> None:
    assert classify("welcome to smart restaurant what would you like to do", "open").outcome == "skill_opened"


def test_another_skill_asking_to_link_an_account_is_account_linking() -> None:
    # The outcomes a welcome can be confused with are the only ones the name overrides.
    reply = "welcome to smart restaurant please link your account in the alexa app"
    assert classify(reply, "open", "Cat Facts").outcome == "account_linking"


# -- where else an open can land -------------------------------------------------------------------


@pytest.mark.parametrize("outcome,kind,reply", [
    ("unreachable", "open", "Sorry, I'm having trouble accessing your Cat Facts skill right now."),
    ("unreachable", "open", "sorry i'm having trouble accessing your cat facts scale right now"),
    ("unreachable", "open", "Sorry, Cat Facts isn't responding right now. Please try again later."),
    ("unreachable", "ask", "hmm cat facts is not responding"),
    ("unreachable", "say", "Hmm... Living Room Scene isn't responding."),
    ("error", "open", "There was a problem with the requested skill's response."),
    ("error", "open", "Sorry, something went wrong."),
    ("alexa_answered", "open",
     "Here's something I found on the web. According to Wikipedia, cat facts are a popular topic."),
    ("alexa_answered", "open", "here's something i found on the land according to wikipedia cat facts"),
    ("alexa_answered", "ask", "here's what i found according to wikipedia cat facts is a phrase"),
    ("not_understood", "open", "Hmm, I'm not sure."),
    ("not_understood", "open", "h m m i'm not sure"),
    ("not_understood", "ask", "Sorry, I don't know that one."),
    ("not_understood", "say", "Sorry, I don't know that."),
    ("account_linking", "enable",
     "Cat Facts is enabled, but you'll need to link your account. I've sent a card to the Alexa app."),
    ("account_linking", "open", "Please go to the Alexa app and link your account to use Cat Facts."),
    ("permission_required", "enable",
     "Cat Facts wants to use your location. To do that, you'll need to give permission in the Alexa app."),
    ("permission_required", "open",
     "I need your permission to help you. I've sent a permission card to the Alexa app."),
])
def test_what_a_reply_can_mean(outcome: str, kind: str, reply: str) -> None:
    verdict = classify(reply, kind, "Cat Facts", "cat facts")
    assert verdict.outcome == outcome, verdict
    assert verdict.heard_skill is None


def test_alexa_answering_is_not_a_skill_s_own_fact() -> None:
    # A fact skill's welcome may start "here's": only Alexa's web answer is alexa_answered.
    reply = "Here's your fact: a year on Mercury is just 88 days long."
    assert classify(reply, "open", "Space Facts").outcome != "alexa_answered"


def test_unreachable_and_alexa_answered_need_a_step_that_reaches_a_skill() -> None:
    assert classify("cat facts isn't responding", "enable", "Cat Facts").outcome != "unreachable"
    assert classify("here's something i found on the web", "disable", "Cat Facts").outcome != "alexa_answered"


# -- placeholders and ties -------------------------------------------------------------------------


def test_placeholder_is_filled_with_the_skill_name() -> None:
    assert classify("Okay, Cat Facts is now enabled", "enable", skill_name="Cat Facts") == Verdict(
        "enabled", 100.0, "enabled: {skill} is now enabled")


def test_placeholder_falls_back_to_the_invocation_name() -> None:
    assert classify("welcome to sky bell", "open", invocation="sky bell").outcome == "skill_opened"


def test_a_placeholder_pattern_needs_the_name_in_the_reply() -> None:
    # "Welcome to" alone is any skill's welcome: the Echo opened something else.
    assert classify("Welcome to Amazon Music", "open", "Cat Facts").outcome == "other"
    assert classify("Getting Google from Fire TV.", "open", "Google").outcome == "other"


def test_misheard_skill_name_still_matches() -> None:
    verdict = classify("okay cat fax is now enabled to start say open cat fax", "enable", "Cat Facts")
    assert verdict.outcome == "enabled"


def test_a_near_tie_goes_to_the_more_specific_pattern(tmp_path: Path) -> None:
    # "welcome to {skill}" matches perfectly; the misheard "app" costs the longer account-linking
    # pattern a few points, yet it is what the reply means.
    reply = "welcome to space facts please link your account in the alexa up"
    verdict = classify(reply, "open", "Space Facts")
    assert verdict.outcome == "account_linking"
    assert load_rules().threshold <= verdict.score < 100
    no_margin = tmp_path / "no_margin.yaml"
    no_margin.write_text(default_rules_path().read_text().replace("tie_margin: 6", "tie_margin: 0"))
    assert classify(reply, "open", "Space Facts", rules=no_margin).outcome == "skill_opened"


# -- expectations ----------------------------------------------------------------------------------


def test_expectation_met_tolerates_recognition_errors() -> None:
    met, score = expectation_met("here is your cat fax cats sleep for around thirteen hours",
                                 ["Here is your cat fact.", "Would you like another fact?"])
    assert met and score >= load_rules().threshold


def test_expectation_not_met_by_another_reply() -> None:
    met, score = expectation_met("sorry i don't know that", ["Here is your cat fact."])
    assert not met and score < load_rules().threshold


def test_expectation_with_no_transcript_is_not_met() -> None:
    assert expectation_met(None, ["Here is your cat fact."]) == (False, 0.0)


def test_expectation_needs_expected_replies() -> None:
    with pytest.raises(ValueError):
        expectation_met("anything", [])


# -- rules files -----------------------------------------------------------------------------------


def test_rules_are_loaded_once() -> None:
    assert load_rules() is load_rules()
    assert load_rules(default_rules_path()) is load_rules(str(default_rules_path()))


def test_packaged_rules_cover_every_rule_outcome() -> None:
    rules = load_rules()
    assert {r.outcome for r in rules.rules} == set(OUTCOMES) - {"no_response", "other"}
    assert {"enable", "disable", "open"} <= rules.kinds


CUSTOM = """\
version: 1
threshold: 90
outcomes:
  enabled:
    kinds: [enable]
    patterns:
      - "all set with {skill}"
"""


def test_an_operator_can_pass_their_own_rules_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(CUSTOM)
    reply = "all set with cat facts"
    assert classify(reply, "enable", "Cat Facts").outcome == "other"
    assert classify(reply, "enable", "Cat Facts", rules=path) == Verdict(
        "enabled", 100.0, "enabled: all set with {skill}")
    with pytest.raises(ValueError, match="known kinds: enable"):
        classify(reply, "open", "Cat Facts", rules=path)


@pytest.mark.parametrize("text,line,field,message", [
    (CUSTOM.replace('"all set with {skill}"', '"all set with {skil}"'), 7, "outcomes.enabled.patterns[0]",
     "unknown placeholder"),
    (CUSTOM.replace('"all set with {skill}"', '"{skill}"'), 7, "outcomes.enabled.patterns[0]", "two words"),
    (CUSTOM.replace("  enabled:", "  enabeld:"), 4, "outcomes.enabeld", "Input should be"),
    (CUSTOM.replace("threshold: 90", "threshold: 190"), 2, "threshold", "less than or equal to 100"),
    (CUSTOM.replace("    kinds: [enable]\n", ""), 4, "outcomes.enabled.kinds", "Field required"),
    (CUSTOM.replace("    patterns:", "    pattern:"), 6, "outcomes.enabled.pattern", "unknown field"),
    (CUSTOM.replace('"all set with {skill}"', '"all set with {other}"'), 3, "outcomes", "other_skill pattern"),
    (CUSTOM.replace("  enabled:", "  other_skill:"), 3, "outcomes", "{other} ends every other_skill pattern"),
    (CUSTOM.replace("  enabled:", "  other_skill:").replace("{skill}", "{other} now"), 7,
     "outcomes.other_skill.patterns[0]", "must end the pattern"),
])
def test_a_malformed_rules_file_names_file_line_and_field(tmp_path: Path, text: str, line: int, field: str,
                                                           message: str) -> None:
    path = tmp_path / "bad_rules.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    issues = [i for i in caught.value.issues if i.field == field or i.field.startswith((field + ".", field + "["))]
    assert issues, caught.value
    issue = issues[0]
    assert (issue.file.name, issue.line) == ("bad_rules.yaml", line)
    assert message in issue.message
    assert f"bad_rules.yaml:{line}: {issue.field}: " in str(caught.value)


def test_a_rules_file_that_is_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text('version: 1\noutcomes:\n  enabled: {kinds: [enable], patterns: ["x y"]\n')
    with pytest.raises(ConfigError, match=r"broken\.yaml:3: not valid YAML"):
        load_rules(path)


def test_a_missing_rules_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        classify("anything", "enable", rules=tmp_path / "nowhere.yaml")
