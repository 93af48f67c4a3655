"""What the simulated Echo answers, its skill sessions, the whisper channel and the truth log."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from orchestrator.audio.clip import MIC_FORMAT, AudioFormat, Clip, concat
from orchestrator.sim.echo import (
    OUTCOME_OF_KIND,
    EchoBrain,
    Phrasings,
    SideChannel,
    SimScript,
    SimSkill,
    TruthRecord,
    blocks,
    mix,
    normalise,
    phrases,
    radio_bed,
    read_truth,
)

DEMO_SCRIPT = Path(__file__).resolve().parents[1] / "orchestrator" / "sim" / "script.yaml"

PHRASINGS = Phrasings.load()
DONT_KNOW = {tuple(o) for o in PHRASINGS.options("any", "not_understood")}
NOT_FOUND = {tuple(o) for o in PHRASINGS.options("enable", "not_found", named=False)}

FACT = ("Here is your cat fact.", "Cats sleep for around thirteen to sixteen hours a day.",
        "Would you like another fact?")


@pytest.fixture(scope="module")
def script() -> SimScript:
    return SimScript.load(DEMO_SCRIPT)


@pytest.fixture
def brain(script) -> EchoBrain:
    return EchoBrain(script)


def hear(brain: EchoBrain, text: str) -> tuple[str, tuple[str, ...]]:
    reply = brain.hear(text)
    return reply.kind, reply.parts


def dont_know(brain: EchoBrain, text: str) -> bool:
    kind, parts = hear(brain, text)
    return kind == "dont_know" and parts in DONT_KNOW


def said(step: str, situation: str, skill: SimSkill) -> set[tuple[str, ...]]:
    """Every phrasing Alexa may use for this skill in this situation."""
    values = {"skill": skill.name, "invocation": skill.invocation, "other": skill.other_skill or ""}
    return {tuple(part.format(**values) for part in option) for option in PHRASINGS.options(step, situation)}


def skill_named(script: SimScript, name: str) -> SimSkill:
    return next(s for s in script.skills if s.name == name)


def test_demo_script_loads(script):
    assert script.wake_word == "alexa"
    assert [s.name for s in script.skills] == ["Cat Facts", "Cat Genius", "Cat Raiser", "Pug Bomb", "The Dog Feeder",
                                               "SkyBell"]
    assert script.skills[1].answers == {"tell me a fact": None}
    assert script.latency == 0.9 and script.pause_inside == 0.5
    assert len(script.stream_loop) == 3


# -- replies ----------------------------------------------------------------------------------------


def test_enable(brain, script):
    kind, parts = hear(brain, "Alexa, enable Cat Facts")
    assert kind == "enabled" and parts in said("enable", "enabled", skill_named(script, "Cat Facts"))
    assert "Cat Facts" in parts[0]
    assert brain.session is None


def test_each_skill_keeps_its_phrasing_and_skills_differ(script):
    skills = [SimSkill(f"Skill {n}", f"skill {n}") for n in range(12)]
    first = [EchoBrain(SimScript(skills=tuple(skills))).hear(f"alexa enable skill {n}").parts for n in range(12)]
    again = [EchoBrain(SimScript(skills=tuple(skills))).hear(f"alexa enable skill {n}").parts for n in range(12)]
    assert first == again
    assert len({parts[0].replace(f"Skill {n}", "") for n, parts in enumerate(first)}) >= 2


def test_enable_by_invocation_with_article_and_suffix(brain):
    assert hear(brain, "Alexa, enable the cat genius skill")[0] == "enabled"


def test_enable_needing_account_linking(brain, script):
    kind, parts = hear(brain, "Alexa, enable SkyBell")
    assert kind == "account_linking" and parts in said("enable", "account_linking", skill_named(script, "SkyBell"))


@pytest.mark.parametrize("text", ["Alexa, enable The Dog Feeder", "Alexa, enable Dog Genius"])
def test_enable_not_found(brain, text):
    kind, parts = hear(brain, text)
    assert kind == "not_found"
    assert parts in NOT_FOUND or parts in said("enable", "not_found", SimSkill("The Dog Feeder", "the dog"))


def test_disable(brain, script):
    kind, parts = hear(brain, "Alexa, disable Cat Facts")
    assert kind == "disabled" and parts in said("disable", "disabled", skill_named(script, "Cat Facts"))
    kind, parts = hear(brain, "Alexa, disable Bird Facts")
    assert kind == "not_found" and parts in {tuple(o) for o in PHRASINGS.options("disable", "not_found", False)}


@pytest.mark.parametrize("verb", ["open", "launch"])
def test_welcome_opens_a_session(brain, verb):
    assert hear(brain, f"Alexa, {verb} cat facts") == (
        "welcome", ("Welcome to Cat Facts.", "Ask me for a fact, or say stop."))
    assert brain.session is not None and brain.session.name == "Cat Facts"


def test_default_welcome():
    brain = EchoBrain(SimScript(skills=(SimSkill("Bird Song", "bird song"),)))
    assert hear(brain, "alexa open bird song") == ("welcome", ("Welcome to Bird Song.",))


def test_another_skill_answers_the_open_and_keeps_the_session(brain, script):
    kind, parts = hear(brain, "Alexa, open cat raiser")
    assert kind == "other_skill" and parts in said("open", "other_skill", skill_named(script, "Cat Raiser"))
    assert "Smart Restaurant" in " ".join(parts)
    assert brain.session is not None and brain.session.name == "Smart Restaurant"
    assert hear(brain, "tell me a fact")[0] == "dont_know"  # the other skill knows nothing of cats


@pytest.mark.parametrize("behaviour", ["unreachable", "not_understood", "alexa_answered", "account_linking",
                                       "permission_required"])
def test_opens_that_land_elsewhere(behaviour):
    skill = SimSkill("Bird Song", "bird song", open=behaviour)
    kind, parts = hear(EchoBrain(SimScript(skills=(skill,))), "alexa open bird song")
    assert OUTCOME_OF_KIND[kind] == behaviour and parts in said("open", behaviour, skill)


def test_other_skill_needs_a_name():
    with pytest.raises(ValueError, match="other_skill: NAME"):
        SimSkill("Bird Song", "bird song", open="other_skill")


def test_open_unknown_skill(brain):
    kind, parts = hear(brain, "Alexa, open bird song")
    assert kind == "dont_know" and parts in DONT_KNOW
    assert brain.session is None


def test_answer_with_parts_inside_a_session(brain):
    brain.hear("Alexa, open cat facts")
    reply = brain.hear("tell me a fact")
    assert (reply.kind, reply.parts) == ("answer", FACT)
    assert reply.text == " ".join(FACT)
    assert brain.session is not None
    assert hear(brain, "another fact please")[0] == "answer"


def test_unknown_utterance_in_session_gives_dont_know_and_closes_it(brain):
    brain.hear("Alexa, open cat facts")
    assert dont_know(brain, "say meow")
    assert brain.session is None
    assert hear(brain, "tell me a fact") == ("silence", ())


def test_skill_that_never_answers_is_silent_and_keeps_its_session(brain):
    brain.hear("Alexa, open cat genius")
    assert hear(brain, "tell me a fact") == ("silence", ())
    assert brain.session is not None and brain.session.name == "Cat Genius"
    assert dont_know(brain, "for a fact")


def test_wake_word_closes_the_session(brain):
    brain.hear("Alexa, open cat facts")
    assert hear(brain, "Alexa, what time is it") == ("answer", ("It's five past four.",))
    assert brain.session is None
    assert hear(brain, "tell me a fact") == ("silence", ())


def test_speech_without_wake_word_and_no_session_is_silence(brain):
    assert hear(brain, "tell me a fact") == ("silence", ())
    assert hear(brain, "alexandra, what time is it") == ("silence", ())
    assert brain.session is None


@pytest.mark.parametrize("command", ["stop", "cancel", "exit", "quit", "stop the music"])
def test_stop(brain, command):
    brain.hear("Alexa, open cat facts")
    assert hear(brain, f"Alexa, {command}") == ("stopped", ())
    assert brain.session is None


def test_stream(brain, script):
    brain.hear("Alexa, open cat facts")
    assert hear(brain, "Alexa, play lab radio") == ("stream", (script.stream_intro,))
    assert brain.session is None


def test_questions(brain):
    assert hear(brain, "ALEXA... how tall is Mount Everest?") == (
        "answer", ("Mount Everest is eight thousand eight hundred and forty nine metres tall.",))
    assert dont_know(brain, "Alexa, what is the meaning of life")
    assert dont_know(brain, "Alexa")


def test_question_answered_with_none_is_silence():
    brain = EchoBrain(SimScript(questions={"are you there": None}))
    assert hear(brain, "Alexa, are you there") == ("silence", ())


@pytest.mark.parametrize("text", [
    "Alexa, ask cat facts for a fact",
    "Alexa, ask Cat Facts to tell me a fact",
    "Alexa, ask cat facts about a fact",
    "Alexa, ask Cat Facts, fact!",
])
def test_ask_invocation_for(brain, text):
    assert hear(brain, text) == ("answer", FACT)
    assert brain.session is None


def test_ask_forms_that_get_no_answer(brain):
    assert hear(brain, "Alexa, ask cat genius to tell me a fact") == ("silence", ())
    assert dont_know(brain, "Alexa, ask cat facts for a joke")
    assert dont_know(brain, "Alexa, ask bird song for a fact")
    assert dont_know(brain, "Alexa, ask cat facts")


def test_custom_wake_word():
    brain = EchoBrain(SimScript(wake_word="Computer", questions={"what time is it": ["Noon."]}))
    assert hear(brain, "Computer, what time is it") == ("answer", ("Noon.",))
    assert hear(brain, "Alexa, what time is it") == ("silence", ())


@pytest.mark.parametrize("text, expected", [
    ("Alexa, open Cat Facts!", "alexa open cat facts"),
    ("  It's   five past FOUR. ", "it's five past four"),
    ("Buttery - Beer, Wine & Liquor", "buttery beer wine liquor"),
    ("", ""),
    ("...", ""),
    ("Route 66", "route 66"),
])
def test_normalise(text, expected):
    assert normalise(text) == expected


# -- every sentence the brain can say is rendered beforehand --------------------------------------------


def commands_for(script: SimScript) -> list[str]:
    commands = ["", "stop", "play lab radio", "play something else", "what is the meaning of life"]
    commands += list(script.questions)
    for skill in script.skills:
        for spoken in {skill.name, skill.invocation, f"the {skill.invocation} skill"}:
            commands += [f"{verb} {spoken}" for verb in ("enable", "disable", "open", "launch")]
            for phrase in [*skill.answers, "nothing known"]:
                commands += [f"ask {spoken} {glue}{phrase}" for glue in ("", "for ", "to ", "about ")]
    return commands


def utterances_for(script: SimScript) -> list[list[str]]:
    """Conversations: a wake-word command, then what is said inside the session it may open."""
    wake = script.wake_word
    in_session = [p for s in script.skills for p in s.answers] + ["something unknown", "stop"]
    conversations = []
    for command in commands_for(script):
        conversations.append([f"{wake}, {command}"])
        conversations += [[f"{wake}, {command}", follow_up] for follow_up in in_session]
    return conversations


def test_phrases_cover_every_reply_of_the_demo_script(script):
    known = set(phrases(script))
    kinds = set()
    for conversation in utterances_for(script):
        brain = EchoBrain(script)
        for text in conversation:
            reply = brain.hear(text)
            kinds.add(reply.kind)
            missing = [part for part in reply.parts if part not in known]
            assert not missing, (conversation, reply)
    assert kinds == {"enabled", "account_linking", "not_found", "disabled", "welcome", "answer", "dont_know",
                     "silence", "stream", "stopped", "other_skill", "unreachable"}


def test_phrases_are_sorted_unique_and_include_the_stream(script):
    lines = phrases(script)
    assert lines == sorted(set(lines))
    assert set(script.stream_loop) <= set(lines)
    assert {part for option in DONT_KNOW | NOT_FOUND for part in option} | {script.stream_intro} <= set(lines)
    assert "Welcome to SkyBell." in lines
    assert all(isinstance(line, str) and line for line in lines)


# -- the whisper ----------------------------------------------------------------------------------------


def test_side_channel_round_trip(tmp_path):
    path = tmp_path / "echo1.side.jsonl"
    channel = SideChannel(path)
    assert channel.latest() is None
    channel.announce("Alexa, open cat facts", 1.25)
    first = channel.latest()
    assert (first.text, first.duration) == ("Alexa, open cat facts", 1.25)
    channel.announce("tell me a fact", 0.8)
    second = channel.latest()
    assert (second.text, second.duration) == ("tell me a fact", 0.8)
    assert second.key != first.key
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["key"] for r in records] == [first.key, second.key]
    assert SideChannel(path).latest() == second


def test_side_channel_ignores_a_partially_written_last_line(tmp_path):
    path = tmp_path / "echo1.side.jsonl"
    channel = SideChannel(path)
    channel.announce("Alexa, stop", 0.6)
    with open(path, "a") as fh:
        fh.write('{"key": "x-2", "text": "Alexa, ena')
    latest = channel.latest()
    assert latest is not None
    assert (latest.text, latest.duration) == ("Alexa, stop", 0.6)


def test_side_channel_with_only_a_partial_line(tmp_path):
    path = tmp_path / "echo1.side.jsonl"
    path.write_text('{"key": "x-1", "te')
    assert SideChannel(path).latest() is None


def test_a_new_announcement_is_new_even_after_a_partial_line(tmp_path):
    path = tmp_path / "echo1.side.jsonl"
    channel = SideChannel(path)
    channel.announce("Alexa, stop", 0.6)
    line = json.dumps({"key": "other-process-1", "text": "Alexa, enable SkyBell", "duration": 1.0})
    with open(path, "a") as fh:
        fh.write(line[:20])
    before = channel.latest()
    with open(path, "a") as fh:
        fh.write(line[20:] + "\n")
    after = channel.latest()
    assert before is not None and after is not None
    assert after.text == "Alexa, enable SkyBell"
    assert before.text == "Alexa, stop"
    assert before.key != after.key


# -- the truth log ----------------------------------------------------------------------------------------


def test_read_truth(tmp_path):
    path = tmp_path / "echo1.truth.jsonl"
    assert read_truth(path) == []
    records = [
        TruthRecord("Alexa, open cat facts", "welcome", "Welcome to Cat Facts.", 12.5, 1.75, 1_700_000_000.0),
        TruthRecord("tell me a fact", "silence", "", 20.0, 0.0, 1_700_000_010.0),
    ]
    path.write_text("".join(json.dumps(asdict(r)) + "\n" for r in records) + "\n  \n")
    assert read_truth(path) == records


# -- stream audio -------------------------------------------------------------------------------------


def tone(seconds: float, amplitude: int, fmt: AudioFormat = MIC_FORMAT) -> Clip:
    n = int(seconds * fmt.rate)
    return Clip(np.full(n, amplitude, dtype=np.int16).tobytes(), fmt)


def test_blocks_cover_the_clip_in_order():
    clip = Clip(np.arange(17_600, dtype=np.int16).tobytes(), MIC_FORMAT)  # 1.1 s
    parts = blocks(clip, 0.25)
    assert [len(p.pcm) for p in parts] == [8000, 8000, 8000, 8000, 3200]
    assert all(p.format == MIC_FORMAT for p in parts)
    assert concat(parts).pcm == clip.pcm


def test_blocks_of_an_exact_multiple():
    parts = blocks(tone(0.5, 1), 0.25)
    assert [p.duration for p in parts] == [0.25, 0.25]


def test_mix_keeps_the_voice_length_and_repeats_the_bed():
    bed = Clip(np.array([1, 2, 3], dtype=np.int16).tobytes(), MIC_FORMAT)
    voice = Clip(np.array([10, 10, 10, 10, 10, 10, 10], dtype=np.int16).tobytes(), MIC_FORMAT)
    mixed = mix(voice, bed)
    assert mixed.format == voice.format
    assert mixed.samples().tolist() == [11, 12, 13, 11, 12, 13, 11]


def test_mix_clips_instead_of_wrapping():
    loud = tone(0.01, 30_000)
    mixed = mix(loud, tone(0.01, 10_000)).samples()
    assert mixed.max() == 32767
    assert mix(tone(0.01, -30_000), tone(0.01, -10_000)).samples().min() == -32768
    assert mixed.size == loud.samples().size


def test_radio_bed():
    fmt = AudioFormat(22050)
    bed = radio_bed(fmt, 4.0)
    assert bed.format == fmt
    assert bed.duration == pytest.approx(4.0)
    samples = bed.samples()
    assert 0 < np.abs(samples).max() <= 2500
    assert mix(tone(1.0, 0, fmt), bed).pcm == bed.pcm[: fmt.nbytes(1.0)]


# -- known defects ----------------------------------------------------------------------------------


def test_invocation_that_starts_with_the():
    brain = EchoBrain(SimScript(skills=(SimSkill("The Tube", "the tube"),)))
    assert hear(brain, "Alexa, open the tube")[0] == "welcome"


def test_catalog_skills_answer_as_a_store_does_when_varied():
    from orchestrator.catalog.skills import load_catalog

    catalog = load_catalog(Path(__file__).resolve().parents[1] / "skills_catalog")
    skills = [s for category in sorted(catalog.categories()) for s in catalog.in_category(category)]
    plain = SimScript().with_catalog(skills)
    varied = SimScript().with_catalog(skills, varied=True)
    assert {s.open for s in plain.skills} == {"welcome"}
    opens = [s.open for s in varied.skills]
    assert 0.1 <= opens.count("other_skill") / len(opens) <= 0.3  # about one in five, as crawls show
    assert opens.count("unreachable") >= 1
    for skill in varied.skills:
        if skill.open == "other_skill":
            assert skill.other_skill in {s.name for s in skills} and skill.other_skill != skill.name
    assert varied == SimScript().with_catalog(skills, varied=True)  # the same draw every night
    linking = {s.name for s in skills if s.account_linking}
    assert {s.name for s in varied.skills if s.enable == "account_linking"} == linking


def test_a_skill_without_an_invocation_name_is_spoken_of_by_its_name():
    from types import SimpleNamespace

    hub = SimpleNamespace(id="B0HUB", name="Smart Hub", invocation_name=None, account_linking=True)
    brain = EchoBrain(SimScript().with_catalog([hub], varied=True))
    assert hear(brain, "Alexa, enable Smart Hub")[0] == "account_linking"
