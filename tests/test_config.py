"""Lab, catalog and persona files: every problem is reported with its file, line and field."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from orchestrator.catalog.skills import CATEGORIES, Catalog, load_catalog
from orchestrator.cli.main import main
from orchestrator.core import config_files
from orchestrator.core.config_files import ConfigError, Issue
from orchestrator.lab.config import LabConfig, load_lab
from orchestrator.plan.persona import (
    PlannedStep,
    check_persona,
    compile_plan,
    load_persona,
    load_personas,
    strip_wake_word,
)
from orchestrator.plan.validate import validate_all

PROJECT = Path(__file__).resolve().parents[1]
CATALOG_DIR = PROJECT / "skills_catalog"
CAT_FACTS = "B017OBJI46"
CAT_GENIUS = "B01DBH0L3Y"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(CATALOG_DIR)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def line_of(path: Path, marker: str, occurrence: int = 1) -> int:
    """1-based number of the line holding the `occurrence`-th `marker`."""
    seen = 0
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if marker in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{marker!r} not in {path}")


def issues_of(loader, *args) -> list[Issue]:
    with pytest.raises(ConfigError) as info:
        loader(*args)
    return info.value.issues


def only_issue(loader, *args) -> Issue:
    issues = issues_of(loader, *args)
    assert len(issues) == 1, issues
    return issues[0]


HEADER = """
name: pets
interest: pets-animals
echo: echo1
"""


def with_header(text: str) -> str:
    return HEADER + textwrap.dedent(text).lstrip("\n")


# -- persona files: one malformed input each ------------------------------------------------------


# (case id, file body, marker of the reported line or None for no line, field, part of the message)
MALFORMED_PERSONAS = [
    ("unknown-top-level-field", HEADER + "colour: red\n", "colour:", "colour", "unknown field"),
    ("unknown-step-kind", HEADER + "plan:\n  - sing: la la\n", "- sing", "plan[0]", "a step is one of: enable"),
    ("two-kinds-in-one-step", HEADER + "plan:\n  - stop\n  - say: hi\n    ask: ho\n", "- say", "plan[1]",
     "a step is one of"),
    ("bare-word-step", HEADER + "plan:\n  - go\n", "- go", "plan[0]", "a step is one of"),
    ("empty-say", HEADER + "plan:\n  - say: ''\n", "- say", "plan[0].say", "at least 1 character"),
    ("negative-listen-seconds", HEADER + "plan:\n  - listen: play lab radio\n    seconds: -3\n", "seconds:",
     "plan[0].seconds", "greater than 0"),
    ("zero-pause", HEADER + "plan:\n  - pause: 0\n", "- pause", "plan[0].pause", "greater than 0"),
    ("pause-not-a-number", HEADER + "plan:\n  - pause: soon\n", "- pause", "plan[0].pause", "valid number"),
    ("stop-false", HEADER + "plan:\n  - stop: false\n", "- stop", "plan[0].stop", "True"),
    ("rate-too-high", HEADER + "voice:\n  name: gmw/en-us\n  rate: 1000\n", "rate:", "voice.rate",
     "less than or equal to 400"),
    ("rate-too-low", HEADER + "voice: {rate: 10}\n", "voice:", "voice.rate", "greater than or equal to 80"),
    ("wake-pause-too-long", HEADER + "wake:\n  pause: 100\n", "pause:", "wake.pause", "less than or equal to 8"),
    ("cron-with-four-fields", HEADER + "schedule:\n  cron: '0 2 * *'\n", "cron:", "schedule.cron",
     "cron needs five fields"),
    ("unknown-time-zone", HEADER + "schedule:\n  timezone: Mars/Olympus_Mons\n", "timezone:", "schedule.timezone",
     "unknown time zone 'Mars/Olympus_Mons'"),
    ("jitter-negative", HEADER + "schedule:\n  jitter_minutes: -5\n", "jitter_minutes:",
     "schedule.jitter_minutes", "greater than or equal to 0"),
    ("name-with-space-and-uppercase", "name: Pet Lover\ninterest: pets-animals\necho: echo1\n", "name:", "name",
     "should match pattern"),
    ("plan-not-a-list", HEADER + "plan: enable cat facts\n", "plan:", "plan", "valid list"),
    ("missing-echo", "name: pets\ninterest: pets-animals\n", "name:", "echo", "Field required"),
    ("top-level-is-a-list", "- name: pets\n- echo: echo1\n", "- name", "", "valid dictionary"),
    ("unknown-field-inside-a-step", HEADER + "plan:\n  - say: hi\n    sesion: true\n", "sesion:",
     "plan[0].sesion", "unknown field"),
]


@pytest.mark.parametrize("body, marker, field, message",
                         [case[1:] for case in MALFORMED_PERSONAS], ids=[case[0] for case in MALFORMED_PERSONAS])
def test_malformed_persona_names_file_line_and_field(tmp_path, body, marker, field, message):
    path = write(tmp_path, "persona.yaml", body)
    issue = only_issue(load_persona, path)
    assert issue.file == path
    assert issue.line == line_of(path, marker)
    assert issue.field == field
    assert message in issue.message
    assert str(issue).startswith(f"{path}:{issue.line}: ")


@pytest.mark.parametrize("body, marker", [
    ("name: pets\n  echo: echo1\ninterest: pets-animals\n", "echo:"),
    ("name: pets\necho: echo1\ninterest: pets-animals\nplan:\n\t- stop\n", "- stop"),
    ("name: pets\necho: echo1\ninterest: pets-animals\nvoice: {rate: 160\nseed: 1\n", "voice:"),  # where it opened
], ids=["bad-indentation", "tab", "unclosed-brace"])
def test_yaml_syntax_error_reports_its_line(tmp_path, body, marker):
    path = write(tmp_path, "broken.yaml", body)
    issue = only_issue(load_persona, path)
    assert issue.file == path
    assert issue.line == line_of(path, marker)
    assert issue.message.startswith("not valid YAML: ")


def test_file_not_found(tmp_path):
    path = tmp_path / "missing.yaml"
    issue = only_issue(load_persona, path)
    assert (issue.file, issue.line, issue.field, issue.message) == (path, None, "", "file not found")
    assert str(issue) == f"{path}: file not found"


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: pets\necho: echo1\ninterest: caf\xe9\n".encode("latin-1"))
    issue = only_issue(load_persona, path)
    assert issue.file == path
    assert issue.line == 3
    assert issue.message.startswith("cannot read: ")
    assert "UTF-8" in issue.message


def test_empty_file_reports_every_required_field(tmp_path):
    path = write(tmp_path, "empty.yaml", "")
    issues = issues_of(load_persona, path)
    assert {i.field for i in issues} == {"name", "echo"}
    assert all(i.file == path and "Field required" in i.message for i in issues)


@pytest.mark.parametrize("body, message", [
    ("name: pets\ninterest: pets-animals\ncontrol: true\necho: echo1\n", "a control persona has no interest"),
    ("name: pets\necho: echo1\n", "set `interest` (a catalog category) or `control: true`"),
], ids=["both-control-and-interest", "neither-control-nor-interest"])
def test_control_or_interest(tmp_path, body, message, catalog):
    path = write(tmp_path, "persona.yaml", body)
    issues = check_persona(load_persona(path), catalog)
    assert len(issues) == 1
    assert issues[0].file == path and issues[0].field == "interest"
    assert issues[0].line == (line_of(path, "interest:") if "interest:" in body else 1)
    assert issues[0].message == message


def test_every_problem_of_a_file_is_reported_at_once(tmp_path):
    path = write(tmp_path, "persona.yaml", """
        name: Bad Name
        interest: pets-animals
        echo: echo1
        voice:
          rate: 10
        plan:
          - dance: yes
        """)
    issues = issues_of(load_persona, path)
    assert [(i.line, i.field) for i in issues] == [
        (line_of(path, "name:"), "name"),
        (line_of(path, "rate:"), "voice.rate"),
        (line_of(path, "- dance"), "plan[0]"),
    ]
    assert all(i.file == path for i in issues)


def test_bare_stop_step(tmp_path, catalog):
    path = write(tmp_path, "persona.yaml", HEADER + f"plan:\n  - open: {CAT_FACTS}\n  - stop\n  - stop: true\n")
    steps = compile_plan(load_persona(path).persona, catalog)
    assert [(s.kind, s.spoken("Alexa"), s.skill_id) for s in steps] == [
        ("open", "Alexa, open cat facts", CAT_FACTS),
        ("stop", "Alexa, stop", CAT_FACTS),
        ("stop", "Alexa, stop", None),
    ]


def test_control_persona_must_not_use_skills(tmp_path, catalog):
    path = write(tmp_path, "vanilla.yaml", f"""
        name: vanilla
        control: true
        echo: echo2
        plan:
          - ask: what time is it
          - enable: {CAT_FACTS}
          - say: tell me a fact
            skill: {CAT_FACTS}
        """)
    issues = check_persona(load_persona(path), catalog)
    assert [(i.file, i.line, i.field) for i in issues] == [
        (path, line_of(path, "- enable"), "plan[1].enable"),
        (path, line_of(path, "skill:"), "plan[2].skill"),
    ]
    assert all(i.message == "a control persona must not use skills" for i in issues)


def test_unknown_skill_ids_are_reported_for_every_kind_of_step(tmp_path, catalog):
    path = write(tmp_path, "persona.yaml", with_header("""
        plan:
          - enable: NOPE1
          - open: NOPE2
          - disable: NOPE3
          - say: hello
            skill: NOPE4
          - enable: B017OBJI46
        """))
    issues = check_persona(load_persona(path), catalog)
    assert [(i.line, i.field) for i in issues] == [
        (line_of(path, "NOPE1"), "plan[0].enable"),
        (line_of(path, "NOPE2"), "plan[1].open"),
        (line_of(path, "NOPE3"), "plan[2].disable"),
        (line_of(path, "NOPE4"), "plan[3].skill"),
    ]
    assert [i.message for i in issues] == [f"unknown skill 'NOPE{n}' (not in the catalog)" for n in range(1, 5)]


def test_two_persona_files_with_one_name(tmp_path, catalog):
    first = write(tmp_path, "a.yaml", "name: same\ncontrol: true\necho: echo1\n")
    second = write(tmp_path, "b.yaml", "control: true\nname: same\necho: echo2\n")
    issue = only_issue(load_personas, [first, second], catalog)
    assert (issue.file, issue.line, issue.field) == (second, line_of(second, "name:"), "name")
    assert issue.message == f"persona name 'same' is also the name in {first}"


def test_two_personas_owning_one_echo_name_both_files(tmp_path, catalog):
    first = write(tmp_path, "a.yaml", "name: first\ncontrol: true\necho: echo1\n")
    second = write(tmp_path, "b.yaml", "name: second\ncontrol: true\nseed: 3\necho: echo1\n")
    issue = only_issue(load_personas, [first, second], catalog)
    assert issue.file == second
    assert issue.line == line_of(second, "echo:")
    assert issue.field == "echo"
    assert "'first'" in issue.message and str(first) in issue.message


def test_load_personas_reports_every_file(tmp_path, catalog):
    broken = write(tmp_path, "broken.yaml", "name: [\n")
    unknown = write(tmp_path, "unknown.yaml", HEADER + "plan:\n  - enable: NOPE\n")
    good = write(tmp_path, "good.yaml", "name: good\ncontrol: true\necho: echo9\n")
    issues = issues_of(load_personas, [broken, unknown, good], catalog)
    assert [i.file for i in issues] == [broken, unknown]


def test_session_step_is_spoken_without_the_wake_word(tmp_path, catalog):
    path = write(tmp_path, "persona.yaml", with_header(f"""
        plan:
          - open: {CAT_GENIUS}
          - say: "Alexa, tell me a fact"
            session: true
          - ask: what time is it
          - say: for a fact
            session: true
        """))
    steps = compile_plan(load_persona(path).persona, catalog)
    assert [(s.text, s.wake, s.skill_id) for s in steps] == [
        ("open cat genius", True, CAT_GENIUS),
        ("tell me a fact", False, CAT_GENIUS),
        ("what time is it", True, None),
        ("for a fact", False, None),
    ]
    assert steps[1].spoken("Alexa") == "tell me a fact"


def test_wake_alone_setting(tmp_path, catalog):
    path = write(tmp_path, "persona.yaml", with_header("""
        wake: {word: Computer, alone: true, pause: 1.5}
        plan:
          - ask: what time is it
        """))
    persona = load_persona(path).persona
    assert (persona.wake.word, persona.wake.alone, persona.wake.pause) == ("Computer", True, 1.5)
    [step] = compile_plan(persona, catalog)
    assert step.wake is True
    assert step.spoken(persona.wake.word) == "Computer, what time is it"


def test_compile_plan_words(tmp_path, catalog):
    path = write(tmp_path, "persona.yaml", with_header(f"""
        plan:
          - enable: {CAT_FACTS}
          - open: {CAT_FACTS}
          - say: tell me a fact
            session: true
          - ask: "Alexa, what time is it?"
          - listen: play lab radio
            seconds: 12
          - pause: 2.5
          - say: "Alexa, ask Cat Genius for a fact."
            skill: {CAT_GENIUS}
          - stop
          - disable: {CAT_FACTS}
        """))
    steps = compile_plan(load_persona(path).persona, catalog)
    assert [s.spoken("Alexa") for s in steps] == [
        "Alexa, enable Cat Facts",
        "Alexa, open cat facts",
        "tell me a fact",
        "Alexa, what time is it?",
        "Alexa, play lab radio",
        "",
        "Alexa, ask Cat Genius for a fact.",
        "Alexa, stop",
        "Alexa, disable Cat Facts",
    ]
    assert steps[4] == PlannedStep(4, "listen", "play lab radio", True, listen_seconds=12.0, source=4)
    assert steps[5] == PlannedStep(5, "pause", "", False, pause_seconds=2.5, source=5)
    assert [s.skill_id for s in steps] == [CAT_FACTS, CAT_FACTS, CAT_FACTS, None, None, None, CAT_GENIUS, None,
                                           CAT_FACTS]
    assert [s.index for s in steps] == list(range(9))


@pytest.mark.parametrize("utterance, command", [
    ("Alexa, ask Cat Genius for a fact.", "ask Cat Genius for a fact."),
    ("Alexa, open Cat Facts.", "open Cat Facts."),
    ("  alexa.  launch Cat Facts", "launch Cat Facts"),
    ("Alexa ask The Tube what's happening on the District", "ask The Tube what's happening on the District"),
    ("Computer, what time is it", "what time is it"),
    ("what time is it", "what time is it"),
    ("Alexander the Great", "Alexander the Great"),
])
def test_strip_wake_word(utterance, command):
    assert strip_wake_word(utterance) == command


def test_strip_wake_word_on_every_catalog_sample_utterance(catalog):
    utterances = [u for skill in catalog.skills.values() for u in skill.sample_utterances]
    assert len(utterances) > 100
    for utterance in utterances:
        command = strip_wake_word(utterance)
        assert command and not command.lower().startswith("alexa"), utterance
        assert utterance.rstrip().endswith(command)


# -- lab files --------------------------------------------------------------------------------------


LAB = """
audio_backend: sounddevice
echos:
  - name: echo1
    speaker: "USB Audio Device"
    microphone: "Blue Yeti"
  - name: echo2
    room: b
    speaker: spk2
    microphone: mic2
    backend: pyaudio
"""


def test_lab_file_loads_with_defaults_and_per_echo_backend(tmp_path):
    lab = load_lab(write(tmp_path, "lab.yaml", LAB))
    echo1, echo2 = lab.echo("echo1"), lab.echo("echo2")
    assert lab.backend_of(echo1) == "sounddevice"
    assert lab.backend_of(echo2) == "pyaudio"
    assert (echo1.room_key, echo2.room_key) == ("echo:echo1", "b")
    assert lab.endpointing.config().hangover == 0.7
    assert lab.endpointing.config(hangover=1.2).hangover == 1.2
    with pytest.raises(KeyError):
        lab.echo("echo3")


def test_lab_default_backend_applies_to_echos_without_their_own(tmp_path):
    lab = load_lab(write(tmp_path, "lab.yaml", LAB.replace("audio_backend: sounddevice", "audio_backend: pyaudio")))
    assert [lab.backend_of(e) for e in lab.echos] == ["pyaudio", "pyaudio"]
    assert isinstance(lab, LabConfig)


def test_lab_transcription_servers_default_to_the_engine_and_refuse_zero(tmp_path):
    assert load_lab(write(tmp_path, "lab.yaml", LAB)).transcription_servers is None
    assert load_lab(write(tmp_path, "lab.yaml", LAB + "transcription_servers: 3\n")).transcription_servers == 3
    path = write(tmp_path, "lab.yaml", LAB + "transcription_servers: 0\n")
    issue = only_issue(load_lab, path)
    assert (issue.line, issue.field) == (line_of(path, "transcription_servers:"), "transcription_servers")


def test_lab_missing_speaker(tmp_path):
    path = write(tmp_path, "lab.yaml", "echos:\n  - name: echo1\n    microphone: m1\n")
    issue = only_issue(load_lab, path)
    assert (issue.file, issue.line, issue.field) == (path, line_of(path, "- name"), "echos[0].speaker")
    assert issue.message == "Field required"


def test_lab_unknown_backends(tmp_path):
    path = write(tmp_path, "lab.yaml", """
        audio_backend: alsa
        echos:
          - name: echo1
            speaker: s1
            microphone: m1
            backend: jack
        """)
    issues = issues_of(load_lab, path)
    assert [(i.line, i.field) for i in issues] == [
        (line_of(path, "audio_backend:"), "audio_backend"),
        (line_of(path, "backend: jack"), "echos[0].backend"),
    ]
    assert all("'sounddevice' or 'pyaudio'" in i.message for i in issues)


def test_lab_endpointing_out_of_range(tmp_path):
    path = write(tmp_path, "lab.yaml", LAB + """
endpointing:
  no_answer_timeout: 0
  max_reply: 4000
  hangover: 0.05
  aggressiveness: 4
""")
    issues = issues_of(load_lab, path)
    assert [(i.line, i.field) for i in issues] == [
        (line_of(path, "no_answer_timeout:"), "endpointing.no_answer_timeout"),
        (line_of(path, "max_reply:"), "endpointing.max_reply"),
        (line_of(path, "hangover:"), "endpointing.hangover"),
        (line_of(path, "aggressiveness:"), "endpointing.aggressiveness"),
    ]


@pytest.mark.parametrize("field, what", [("microphone", "microphone"), ("speaker", "speaker")])
def test_lab_echos_sharing_a_device(tmp_path, field, what):
    shared = {"microphone": ("mic2", '"Blue Yeti"'), "speaker": ("spk2", '"USB Audio Device"')}[field]
    path = write(tmp_path, "lab.yaml", LAB.replace(f"{field}: {shared[0]}", f"{field}: {shared[1]}"))
    issue = only_issue(load_lab, path)
    assert (issue.file, issue.field) == (path, f"echos[1].{field}")
    assert issue.line == line_of(path, f"{field}:", 2)
    assert issue.message == f"{what} {shared[1].strip(chr(34))!r} is used twice (also echos[0])"


def test_lab_network_identity_is_kept_normalised(tmp_path):
    text = LAB.replace('microphone: "Blue Yeti"',
                       'microphone: "Blue Yeti"\n    mac: F0-27-2D-12-34-56\n    ip: 10.0.0.7')
    lab = load_lab(write(tmp_path, "lab.yaml", text))
    echo1 = lab.echo("echo1")
    assert (echo1.mac, echo1.ip) == ("f0:27:2d:12:34:56", "10.0.0.7")
    assert lab.device_row(echo1)["mac"] == "f0:27:2d:12:34:56"
    assert lab.device_row(lab.echo("echo2"))["ip"] is None


@pytest.mark.parametrize("field, value, message", [
    ("mac", "f0:27:2d:12:34", "'f0:27:2d:12:34' is not a MAC address"),
    ("ip", "10.0.0.300", "'10.0.0.300' is not an IP address"),
])
def test_lab_bad_network_identity_names_file_line_and_field(tmp_path, field, value, message):
    path = write(tmp_path, "lab.yaml", LAB.replace("microphone: mic2", f"microphone: mic2\n    {field}: {value}"))
    issue = only_issue(load_lab, path)
    assert (issue.file, issue.line, issue.field) == (path, line_of(path, f"{field}:"), f"echos[1].{field}")
    assert issue.message.startswith(message)


def test_lab_two_echos_with_one_address(tmp_path):
    text = LAB.replace('microphone: "Blue Yeti"', 'microphone: "Blue Yeti"\n    ip: 10.0.0.7')
    path = write(tmp_path, "lab.yaml", text.replace("microphone: mic2", "microphone: mic2\n    ip: 10.0.0.7"))
    issue = only_issue(load_lab, path)
    assert (issue.field, issue.line) == ("echos[1].ip", line_of(path, "ip:", 2))
    assert issue.message == "IP address '10.0.0.7' is used twice (also echos[0])"


def test_lab_capture_needs_an_echo_with_a_network_identity(tmp_path):
    path = write(tmp_path, "lab.yaml", LAB + "capture:\n  interface: eth1\n")
    issue = only_issue(load_lab, path)
    assert (issue.field, issue.line) == ("capture", line_of(path, "capture:"))
    assert "give at least one Echo its `mac` or `ip`" in issue.message
    text = LAB.replace("mic2", "mic2\n    ip: 10.0.0.8") + "capture:\n  interface: eth1\n"
    lab = load_lab(write(tmp_path, "lab.yaml", text))
    assert lab.capture is not None and (lab.capture.snap_length, lab.capture.optional) == (0, False)


def test_lab_duplicate_echo_names(tmp_path):
    path = write(tmp_path, "lab.yaml", LAB.replace("name: echo2", "name: echo1"))
    issue = only_issue(load_lab, path)
    assert issue.file == path
    assert issue.message.startswith("Echo name 'echo1' is used twice")


def test_lab_without_echos(tmp_path):
    path = write(tmp_path, "lab.yaml", "echos: []\n")
    issue = only_issue(load_lab, path)
    assert (issue.line, issue.field) == (1, "echos")


# -- the catalog ------------------------------------------------------------------------------------


def test_shipped_catalog(catalog):
    assert len(catalog) >= 9 * 5
    for category in CATEGORIES:
        assert len(catalog.in_category(category)) >= 5, category
    for skill in catalog.skills.values():
        assert skill.category in CATEGORIES
        assert skill.invocation_name.strip(), skill.id
        assert skill.source and skill.source.startswith("https://"), skill.id
    assert catalog[CAT_FACTS].name == "Cat Facts"
    assert CAT_FACTS in catalog and "NOPE" not in catalog


def test_shipped_catalog_files_are_named_for_their_category():
    for path in CATALOG_DIR.glob("*.yaml"):
        assert path.stem in CATEGORIES


SKILL = """
  - id: {id}
    name: {name}
    invocation_name: {name}
    category: {category}
"""


def catalog_file(folder: Path, name: str, category: str, *skills: tuple[str, str, str]) -> Path:
    body = f"category: {category}\nskills:" + "".join(
        SKILL.format(id=i, name=n, category=c) for i, n, c in skills)
    return write(folder, name, body)


def test_catalog_duplicate_ids_across_files(tmp_path):
    catalog_file(tmp_path, "a.yaml", "dating", ("X1", "one", "dating"))
    second = catalog_file(tmp_path, "b.yaml", "pets-animals", ("Y1", "why", "pets-animals"),
                          ("X1", "two", "pets-animals"))
    issue = only_issue(load_catalog, tmp_path)
    assert (issue.file, issue.line, issue.field) == (second, line_of(second, "id: X1"), "skills[1].id")
    assert issue.message == "duplicate skill id 'X1'"


def test_catalog_category_mismatch(tmp_path):
    path = catalog_file(tmp_path, "dating.yaml", "dating", ("X1", "one", "dating"), ("X2", "two", "smart-home"))
    issue = only_issue(load_catalog, tmp_path)
    assert (issue.file, issue.line, issue.field) == (path, line_of(path, "category: smart-home"),
                                                     "skills[1].category")
    assert "'smart-home' differs from the file's 'dating'" in issue.message


def test_catalog_bad_asin(tmp_path):
    path = write(tmp_path, "dating.yaml", """
        category: dating
        skills:
          - id: X1
            asin: b123
            name: one
            invocation_name: one
            category: dating
        """)
    issue = only_issue(load_catalog, tmp_path)
    assert (issue.file, issue.line, issue.field) == (path, line_of(path, "asin:"), "skills[0].asin")
    assert "should match pattern" in issue.message


def test_catalog_problems_of_all_files_are_reported(tmp_path):
    first = write(tmp_path, "a.yaml", "category: dating\nskills:\n  - id: X1\n    name: ''\n")
    second = write(tmp_path, "b.yaml", "category: [\n")
    issues = issues_of(load_catalog, tmp_path)
    assert {i.file for i in issues} == {first, second}
    assert {i.field for i in issues if i.file == first} == {"skills[0].name", "skills[0].invocation_name",
                                                           "skills[0].category"}


def test_catalog_folder_not_found(tmp_path):
    issue = only_issue(load_catalog, tmp_path / "nowhere")
    assert (issue.file, issue.message) == (tmp_path / "nowhere", "catalog folder not found")


# -- everything together ----------------------------------------------------------------------------


@pytest.fixture
def lab_path(tmp_path) -> Path:
    return write(tmp_path, "lab.yaml", LAB)


def test_validate_all_ok(tmp_path, lab_path):
    personas = sorted((PROJECT / "persona_scripts" / "demo").glob("*.yaml"))
    report = validate_all(lab_path, CATALOG_DIR, personas)
    assert report.startswith("ok: ")
    assert f"lab file {lab_path} (2 Echos)" in report
    assert f"catalog {CATALOG_DIR} ({len(load_catalog(CATALOG_DIR))} skills)" in report
    assert "2 persona file(s)" in report


def test_validate_all_persona_on_an_echo_missing_from_the_lab(tmp_path, lab_path):
    persona = write(tmp_path, "p.yaml", "name: lost\ncontrol: true\nseed: 2\necho: echo7\n")
    issue = only_issue(validate_all, lab_path, CATALOG_DIR, [persona])
    assert (issue.file, issue.line, issue.field) == (persona, line_of(persona, "echo:"), "echo")
    assert "Echo 'echo7' is not in the lab file" in issue.message
    assert "echo1, echo2" in issue.message


def test_validate_all_reports_lab_and_persona_problems_together(tmp_path):
    lab = write(tmp_path, "lab.yaml", "echos:\n  - name: echo1\n    speaker: s\n")
    broken = write(tmp_path, "broken.yaml", "name: x\ncontrol: true\necho: echo1\nplan:\n  - sing: la\n")
    unknown = write(tmp_path, "unknown.yaml", HEADER.replace("echo1", "echo2") + "plan:\n  - open: NOPE\n")
    issues = issues_of(validate_all, lab, CATALOG_DIR, [broken, unknown])
    assert [(i.file, i.field) for i in issues] == [
        (lab, "echos[0].microphone"),
        (broken, "plan[0]"),
        (unknown, "plan[0].open"),
    ]


# -- known defects ----------------------------------------------------------------------------------


def test_unknown_capitalised_field_is_named(tmp_path):
    path = write(tmp_path, "persona.yaml", HEADER + "Seed: 4\n")
    issue = only_issue(load_persona, path)
    assert (issue.line, issue.field) == (line_of(path, "Seed:"), "Seed")


def test_duplicate_key_in_a_step_is_reported(tmp_path):
    path = write(tmp_path, "persona.yaml", HEADER + "plan:\n  - say: tell me a fact\n    say: say meow\n")
    issues_of(load_persona, path)


def test_unterminated_quote_points_at_its_opening_line(tmp_path):
    path = write(tmp_path, "broken.yaml", HEADER + 'plan:\n  - say: "unterminated\n  - stop\n')
    issue = only_issue(load_persona, path)
    assert issue.line == line_of(path, "- say")


def test_duplicate_echo_name_points_at_the_second_echo(tmp_path):
    path = write(tmp_path, "lab.yaml", LAB.replace("name: echo2", "name: echo1"))
    issue = only_issue(load_lab, path)
    assert (issue.line, issue.field) == (line_of(path, "name: echo1", 2), "echos[1].name")


def test_control_with_interest_points_at_the_interest(tmp_path, catalog):
    path = write(tmp_path, "persona.yaml", "name: pets\necho: echo1\ninterest: pets-animals\ncontrol: true\n")
    [issue] = check_persona(load_persona(path), catalog)
    assert (issue.line, issue.field) == (line_of(path, "interest:"), "interest")


def test_unknown_interest_is_reported(tmp_path, catalog):
    path = write(tmp_path, "persona.yaml", "name: pets\ninterest: pets\necho: echo1\n")
    issues = check_persona(load_persona(path), catalog)
    assert [(i.line, i.field) for i in issues] == [(line_of(path, "interest:"), "interest")]


def test_cron_values_out_of_range_are_reported(tmp_path):
    path = write(tmp_path, "persona.yaml", HEADER + "schedule:\n  cron: '61 25 * * *'\n")
    issue = only_issue(load_persona, path)
    assert issue.field == "schedule.cron"


def test_command_starting_with_amazon_keeps_its_words(tmp_path, catalog):
    path = write(tmp_path, "persona.yaml", HEADER + "plan:\n  - ask: amazon music play jazz\n")
    [step] = compile_plan(load_persona(path).persona, catalog)
    assert step.spoken("Alexa") == "Alexa, amazon music play jazz"


def test_validate_all_reports_lab_catalog_and_persona_problems_together(tmp_path):
    lab = write(tmp_path, "lab.yaml", "echos: []\n")
    catalog_dir = tmp_path / "catalog"
    catalog_dir.mkdir()
    bad_catalog = write(catalog_dir, "dating.yaml", "category: dating\nskills:\n  - id: ''\n")
    persona = write(tmp_path, "p.yaml", "name: [\n")
    issues = issues_of(validate_all, lab, catalog_dir, [persona])
    assert {i.file for i in issues} == {lab, bad_catalog, persona}


# -- hostile files: bounded reading -----------------------------------------------------------------

#: 539 bytes that a YAML loader following aliases expands into 10^9 strings (about 24 GB).
BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))


def test_aliases_are_refused_before_anything_expands(tmp_path):
    # Only parsed here: validating the expanded data is what takes gigabytes (the subprocess test
    # below runs the whole command, with a memory limit).
    with pytest.raises(yaml.YAMLError, match=re.escape("aliases (*a) are not allowed in configuration files")):
        config_files.parse_yaml(BILLION_LAUGHS)


@pytest.mark.parametrize("body, marker, message", [
    ("name: &n [*n]\n", "name:", "aliases (*n) are not allowed"),
    ("name: pets\nplan: " + "[" * 5000 + "]" * 5000 + "\n", "plan:", "nested more than 32 deep"),
    ("".join("  " * depth + f"k{depth}:\n" for depth in range(40)), "k31:", "nested more than 32 deep"),
    (HEADER + "seed: " + "9" * 5000 + "\n", "seed:", "an integer of 5000 characters; at most 4300"),
    (HEADER + "seed: 1" + ":00" * 100_000 + "\n", "seed:", "an integer of 300001 characters"),
    (HEADER + "seed: 2026-13-45\n", "seed:", "cannot read the value: month must be in 1..12"),
], ids=["recursive-alias", "deep-flow", "deep-block", "huge-integer", "sexagesimal", "bad-date"])
def test_hostile_yaml_is_refused_with_its_line(tmp_path, body, marker, message):
    path = write(tmp_path, "persona.yaml", body)
    issue = only_issue(load_persona, path)
    assert (issue.file, issue.line) == (path, line_of(path, marker))
    assert message in issue.message


def test_too_many_values(tmp_path, monkeypatch):
    monkeypatch.setattr(config_files, "MAX_NODES", 1000)  # the real limit takes seconds to reach
    path = write(tmp_path, "persona.yaml", HEADER + "plan:\n" + "  - stop\n" * 1000)
    issue = only_issue(load_persona, path)
    # The mapping, its 4 keys and 4 values, and the plan's list are 9 values: the 992nd stop is the 1001st.
    assert (issue.line, issue.message) == (line_of(path, "- stop", 992), "more than 1000 values in one file")


def test_python_int_limit_is_a_config_error_with_its_line(tmp_path, monkeypatch):
    """Python itself refuses to convert more than 4300 digits: a ValueError, reported with its line."""
    monkeypatch.setattr(config_files, "MAX_INTEGER_CHARS", 10_000)
    path = write(tmp_path, "persona.yaml", HEADER + "seed: " + "9" * 5000 + "\n")
    issue = only_issue(load_persona, path)
    assert issue.line == line_of(path, "seed:")
    assert "cannot read the value: Exceeds the limit (4300 digits)" in issue.message


def test_a_file_over_the_size_limit(tmp_path):
    path = write(tmp_path, "persona.yaml", HEADER + "# " + "x" * config_files.MAX_CONFIG_BYTES + "\n")
    issue = only_issue(load_persona, path)
    assert (issue.line, issue.message) == (None, "larger than 1 MiB, the most this file may hold")


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/urandom", "/"])
def test_a_lab_file_that_is_not_a_file(target):
    issue = only_issue(load_lab, Path(target))
    assert issue.file == Path(target)
    assert issue.message.startswith("not a regular file (")


def test_a_catalog_folder_with_a_fifo_reports_it(tmp_path):
    catalog_file(tmp_path, "dating.yaml", "dating", ("X1", "one", "dating"))
    os.mkfifo(tmp_path / "pets-animals.yaml")
    issue = only_issue(load_catalog, tmp_path)
    assert (issue.file, issue.message) == (tmp_path / "pets-animals.yaml",
                                          "not a regular file (a FIFO); give the path of a file")


def test_the_projects_files_use_no_aliases():
    files = [*CATALOG_DIR.glob("*.yaml"), *(PROJECT / "persona_scripts").rglob("*.yaml"),
             PROJECT / "orchestrator" / "runner" / "reply_rules.yaml", PROJECT / "lab.example.yaml"]
    for path in files:
        config_files.read_document(path)  # raises on an alias, or on more depth or values than allowed


def test_validate_survives_every_hostile_file_at_once(tmp_path):
    """The whole command, in a process with 4 GB of address space: exit code 2, every file named, no traceback."""
    laughs = write(tmp_path, "laughs.yaml", BILLION_LAUGHS)
    deep = write(tmp_path, "deep.yaml", "name: x\nplan: " + "[" * 5000 + "]" * 5000 + "\n")
    recursive = write(tmp_path, "recursive.yaml", "name: &n [*n]\n")
    huge = write(tmp_path, "huge.yaml", HEADER + "seed: " + "9" * 5000 + "\n")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "validate", *map(str, (laughs, deep, recursive, huge, fifo)),
         "--lab", "/dev/zero", "--catalog", str(CATALOG_DIR)],
        capture_output=True, text=True, timeout=120, preexec_fn=limited)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    for expected in ("/dev/zero: not a regular file (a device)", f"{laughs}:2: aliases (*a)",
                     f"{deep}:2: nested more than 32 deep", f"{recursive}:1: aliases (*n)",
                     f"{huge}:4: an integer of 5000 characters", f"{fifo}: not a regular file (a FIFO)"):
        assert expected in done.stderr


# -- words that reach a terminal or a speaker ---------------------------------------------------------


@pytest.mark.parametrize("step, field, named", [
    ('ask: "what time \\e[2J is it"', "plan[0].ask", "U+001B"),
    ('say: "tell me a fact \\u202Etxt"', "plan[0].say", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    ('listen: "play lab\\u200Bradio"', "plan[0].listen", "U+200B (ZERO WIDTH SPACE)"),
    ('dialog: ["yes", "no\\x9b31m"]', "plan[0].dialog[1].say", "U+009B"),
], ids=["ask-escape", "say-bidi", "listen-zero-width", "dialog-c1"])
def test_spoken_words_with_control_characters_are_refused(tmp_path, step, field, named):
    path = write(tmp_path, "persona.yaml", HEADER + f"plan:\n  - {step}\n")
    issue = only_issue(load_persona, path)
    assert (issue.file, issue.line, issue.field) == (path, line_of(path, "plan:") + 1, field)
    assert named in issue.message and "are not allowed" in issue.message


def test_wake_word_and_echo_with_control_characters_are_refused(tmp_path):
    path = write(tmp_path, "persona.yaml", 'name: pets\ninterest: pets-animals\necho: "e\\e]0;x\\a"\n'
                                           'wake: {word: "Alexa\\u2066"}\n')
    issues = issues_of(load_persona, path)
    assert [(i.line, i.field) for i in issues] == [(3, "echo"), (4, "wake.word")]


def test_catalog_names_invocations_and_utterances_with_control_characters_are_refused(tmp_path):
    path = write(tmp_path, "dating.yaml", """
        category: dating
        skills:
          - id: X1
            name: "Cat\\e[31mFacts"
            invocation_name: "cat \\u202Efacts"
            category: dating
            sample_utterances: ["Alexa, open cat facts", "Alexa, \\u200Bopen"]
        """)
    issues = issues_of(load_catalog, tmp_path)
    assert [(i.file, i.line, i.field) for i in issues] == [
        (path, line_of(path, "name: "), "skills[0].name"),
        (path, line_of(path, "invocation_name:"), "skills[0].invocation_name"),
        (path, line_of(path, "sample_utterances:"), "skills[0].sample_utterances[1]"),
    ]


def test_lab_device_names_with_control_characters_are_refused(tmp_path):
    path = write(tmp_path, "lab.yaml", 'echos:\n  - name: echo1\n    speaker: "USB\\e[8m"\n    microphone: m\n')
    issue = only_issue(load_lab, path)
    assert (issue.line, issue.field) == (3, "echos[0].speaker")


def test_dry_run_of_a_persona_with_an_escape_prints_nothing_of_it(tmp_path, lab_path):
    persona = write(tmp_path, "p.yaml", HEADER + 'plan:\n  - ask: "\\e]2;owned\\a\\e[2J what time is it"\n')
    result = CliRunner().invoke(main, ["run", str(persona), "--dry-run", "--lab", str(lab_path),
                                       "--catalog", str(CATALOG_DIR)])
    assert result.exit_code == 2
    assert f"{persona}:5: plan[0].ask: contains U+001B" in result.stderr
    assert "\x1b" not in result.output and "\x07" not in result.output


def test_a_problem_quoting_the_files_text_is_escaped_for_the_terminal(tmp_path):
    path = write(tmp_path, "persona.yaml", HEADER + '"colour\\e]0;owned\\a\\u202e": red\n')
    issue = only_issue(load_persona, path)
    assert issue.field == "colour\x1b]0;owned\x07\u202e"  # the key, as the file has it
    assert str(issue) == f"{path}:4: colour\\x1b]0;owned\\x07\\u202e: unknown field (check its spelling)"
