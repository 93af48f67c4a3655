"""The `orchestrator` command, driven with click's CliRunner."""

from __future__ import annotations

import csv
import io
import json
import textwrap
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from orchestrator import log
from orchestrator.cli.main import main

PROJECT = Path(__file__).resolve().parents[1]
CATALOG_DIR = PROJECT / "skills_catalog"
DEMO_PERSONAS = sorted((PROJECT / "persona_scripts" / "demo").glob("*.yaml"))


def walk(command: click.Command, path: tuple[str, ...] = ()):
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):  # the lazily loaded commands too
            yield from walk(command.get_command(ctx, name), (*path, name))


COMMANDS = list(walk(main))
OPTIONS = [
    (path, param)
    for path, command in COMMANDS
    for param in command.params
    if isinstance(param, click.Option)
]
def option_case(path, param):
    return pytest.param(path, param, id=" ".join([*path, param.opts[0]]) or "main")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def lab(tmp_path) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text(textwrap.dedent("""
        echos:
          - name: echo1
            speaker: echo1_out
            microphone: echo1_mic
          - name: echo2
            speaker: echo2_out
            microphone: echo2_mic
        """))
    return path


# -- every command and option is documented --------------------------------------------------------------


def test_the_command_tree():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert names == {"", "demo", "run", "validate", "query", "models", "models list", "models download", "devices",
                     "catalog", "catalog import", "catalog list", "catalog upgrade", "report", "export", "browse",
                     "audio", "serve", "schedule", "schedule list", "schedule trigger", "schedule pause",
                     "schedule resume",
                     "status", "lab", "lab check", "transcribe", "traffic", "traffic import", "traffic analyze"}


@pytest.mark.parametrize("path", [path for path, _ in COMMANDS], ids=lambda p: " ".join(p) or "main")
def test_help_of_every_command(runner, path):
    result = runner.invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
    assert "-h, --help" in result.output


@pytest.mark.parametrize("path", [path for path, _ in COMMANDS], ids=lambda p: " ".join(p) or "main")
def test_every_command_has_a_description(path):
    command = dict(COMMANDS)[path]
    assert command.help and command.help.strip()


@pytest.mark.parametrize("path, param", [option_case(path, param) for path, param in OPTIONS])
def test_every_option_has_help_text(path, param):
    assert param.help and param.help.strip(), f"{' '.join(path)} {param.opts[0]}"


def test_version(runner):
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("orchestrator, version ")


# -- validate ---------------------------------------------------------------------------------------------


def test_validate_ok(runner, lab):
    result = runner.invoke(main, ["validate", "--lab", str(lab), "--catalog", str(CATALOG_DIR),
                                  *map(str, DEMO_PERSONAS)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"ok: lab file {lab} (2 Echos)")
    assert "2 persona file(s)" in result.stdout


def test_validate_malformed_persona(runner, lab, tmp_path):
    persona = tmp_path / "bad.yaml"
    persona.write_text("name: pets\ninterest: pets-animals\necho: echo1\nplan:\n  - listen: radio\n    seconds: -1\n"
                       "  - enable: NOPE\n")
    result = runner.invoke(main, ["validate", "--lab", str(lab), "--catalog", str(CATALOG_DIR), str(persona)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("Error: 1 problem(s) found:")
    assert f"{persona}:6: plan[0].seconds: Input should be greater than 0" in result.stderr


def test_validate_echo_missing_from_the_lab(runner, lab, tmp_path):
    persona = tmp_path / "lost.yaml"
    persona.write_text("name: lost\ncontrol: true\necho: echo5\n")
    result = runner.invoke(main, ["validate", "--lab", str(lab), "--catalog", str(CATALOG_DIR), str(persona)])
    assert result.exit_code == 2
    assert f"{persona}:3: echo: Echo 'echo5' is not in the lab file" in result.stderr


def test_validate_missing_lab_file(runner, tmp_path):
    missing = tmp_path / "nope.yaml"
    result = runner.invoke(main, ["validate", "--lab", str(missing), "--catalog", str(CATALOG_DIR),
                                  str(DEMO_PERSONAS[0])])
    assert result.exit_code == 2
    assert f"{missing}: file not found" in result.stderr


def test_validate_without_arguments_checks_the_study_personas(runner, lab, tmp_path, monkeypatch):
    folder = tmp_path / "home" / "persona_scripts"
    (folder / "demo").mkdir(parents=True)
    (folder / "broken.yaml").write_text("name: [\n")
    (folder / "demo" / "other-lab.yaml").write_text("name: demo\ncontrol: true\necho: echo-of-the-demo\n")
    monkeypatch.setenv("ORCHESTRATOR_HOME", str(tmp_path / "home"))
    result = runner.invoke(main, ["validate", "--lab", str(lab), "--catalog", str(CATALOG_DIR)])
    assert result.exit_code == 2
    assert "broken.yaml:2: not valid YAML" in result.stderr and "echo-of-the-demo" not in result.stderr


def test_the_shipped_files_validate_out_of_the_box(runner, monkeypatch, tmp_path):
    monkeypatch.delenv("ORCHESTRATOR_LAB", raising=False)
    monkeypatch.delenv("ORCHESTRATOR_HOME", raising=False)
    if (PROJECT / "lab.yaml").exists():
        pytest.skip("this checkout has a lab.yaml of its own")
    result = runner.invoke(main, ["validate"])
    assert result.exit_code == 0, result.stderr
    assert "no lab.yaml yet: checking against lab.example.yaml" in result.stderr
    assert result.stdout.startswith("ok: lab file") and "10 persona file(s)" in result.stdout


def test_a_missing_lab_file_says_how_to_make_one(runner, tmp_path):
    missing = tmp_path / "lab.yaml"
    pets = PROJECT / "persona_scripts" / "pets-animals.yaml"
    result = runner.invoke(main, ["run", "--dry-run", str(pets), "--lab", str(missing)])
    assert result.exit_code == 2
    assert "copy lab.example.yaml to lab.yaml" in result.stderr and "orchestrator devices" in result.stderr


# -- run --dry-run ----------------------------------------------------------------------------------------


def test_run_dry_run_checks_the_lab_file_too(runner, tmp_path):
    pets = PROJECT / "persona_scripts" / "demo" / "pets.yaml"
    missing = tmp_path / "nowhere.yaml"
    result = runner.invoke(main, ["run", "--dry-run", "--lab", str(missing), "--catalog", str(CATALOG_DIR), str(pets)])
    assert result.exit_code == 2 and f"{missing}: file not found" in result.stderr
    other = tmp_path / "other.yaml"
    other.write_text("echos:\n  - {name: kitchen, speaker: s, microphone: m}\n")
    result = runner.invoke(main, ["run", "--dry-run", "--lab", str(other), "--catalog", str(CATALOG_DIR), str(pets)])
    assert result.exit_code == 2 and "Echo 'echo1' is not in the lab file" in result.stderr


def test_run_dry_run_prints_the_words_in_order(runner, lab):
    demo = PROJECT / "persona_scripts" / "demo"
    pets, vanilla = demo / "pets.yaml", demo / "vanilla.yaml"
    result = runner.invoke(main, ["run", "--dry-run", "--lab", str(lab), "--catalog", str(CATALOG_DIR),
                                  str(pets), str(vanilla)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"# pets-demo on echo1 ({pets})",
        "#0   enable   Alexa, enable Cat Facts",
        "#1   open     Alexa, open cat facts",
        "#2   dialog   tell me a fact",
        "#3   dialog   say meow",
        "#4   dialog   another fact",
        "#5   stop     Alexa, stop",
        "#6   enable   Alexa, enable Cat Genius",
        "#7   open     Alexa, open cat genius",
        "#8   say      tell me a fact",
        "#9   stop     Alexa, stop",
        "#10  enable   Alexa, enable Cat Raiser",
        "#11  open     Alexa, open cat raiser",
        "#12  say      tell me a fact",
        "#13  stop     Alexa, stop",
        "#14  enable   Alexa, enable Pug Bomb",
        "#15  open     Alexa, open pug bomb",
        "#16  enable   Alexa, enable The Dog Feeder",
        "#17  enable   Alexa, enable SkyBell",
        "#18  ask      Alexa, play lab radio",
        "#19  stop     Alexa, stop",
        f"# vanilla-demo on echo2 ({vanilla})",
        "#0   ask      Alexa, what time is it",
        "#1   pause    (pause 1 s)",
        "#2   ask      Alexa, how tall is mount everest",
    ]


def test_run_dry_run_with_a_bad_persona(runner, lab, tmp_path):
    persona = tmp_path / "bad.yaml"
    persona.write_text("name: pets\ninterest: pets-animals\necho: echo1\nplan:\n  - open: NOPE\n")
    result = runner.invoke(main, ["run", "--dry-run", "--lab", str(lab), "--catalog", str(CATALOG_DIR), str(persona)])
    assert result.exit_code == 2
    assert f"{persona}:5: plan[0].open: unknown skill 'NOPE'" in result.stderr


def test_run_needs_a_persona(runner):
    result = runner.invoke(main, ["run", "--dry-run"])
    assert result.exit_code == 2
    assert "Missing argument 'PERSONAS...'" in result.output


# -- query ------------------------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path) -> Path:
    path = tmp_path / "log.sqlite"
    engine = log.open_log(path)
    log.upsert_persona(engine, name="pets-demo", interest="pets-animals", file_path="persona_scripts/demo/pets.yaml")
    log.upsert_persona(engine, name="vanilla-demo", interest=None, is_control=True)
    engine.dispose()
    return path


SQL = "SELECT name, interest, is_control FROM personas ORDER BY name"


def query(runner, db, *args):
    return runner.invoke(main, ["query", SQL, "--db", str(db), *args])


def test_query_csv(runner, db):
    result = query(runner, db, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert list(csv.reader(io.StringIO(result.stdout))) == [
        ["name", "interest", "is_control"],
        ["pets-demo", "pets-animals", "0"],
        ["vanilla-demo", "", "1"],
    ]


def test_query_json(runner, db):
    result = query(runner, db, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"name": "pets-demo", "interest": "pets-animals", "is_control": 0},
        {"name": "vanilla-demo", "interest": None, "is_control": 1},
    ]


def test_query_jsonl(runner, db):
    result = query(runner, db, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"name": "pets-demo", "interest": "pets-animals", "is_control": 0},
        {"name": "vanilla-demo", "interest": None, "is_control": 1},
    ]


def test_query_table_is_the_default(runner, db):
    result = query(runner, db)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["name", "interest", "is_control"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["pets-demo", "pets-animals", "0"]
    assert lines[3].split() == ["vanilla-demo", "1"]


@pytest.mark.parametrize("sql", [
    "DELETE FROM personas",
    "UPDATE personas SET interest = 'x'",
    "DROP TABLE personas",
    "INSERT INTO personas (name, created_at) VALUES ('intruder', '2024-01-01T00:00:00+00:00')",
])
def test_query_refuses_writes(runner, db, sql):
    before = query(runner, db, "--format", "jsonl").stdout
    result = runner.invoke(main, ["query", sql, "--db", str(db)])
    assert result.exit_code != 0
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ")
    assert query(runner, db, "--format", "jsonl").stdout == before
    assert before.count("\n") == 2


def test_query_missing_database(runner, tmp_path):
    missing = tmp_path / "nowhere" / "log.sqlite"
    result = runner.invoke(main, ["query", "SELECT 1", "--db", str(missing)])
    assert result.exit_code != 0
    assert result.stderr == f"Error: no database at {missing}\n"
    assert not missing.exists()


def test_query_database_from_the_environment(runner, db):
    result = runner.invoke(main, ["query", "SELECT count(*) AS n FROM personas", "--format", "csv"],
                           env={"ORCHESTRATOR_DB": str(db)})
    assert result.exit_code == 0, result.output
    assert result.stdout == "n\n2\n"


def test_query_bad_sql(runner, db):
    result = runner.invoke(main, ["query", "SELEKT 1", "--db", str(db)])
    assert result.exit_code == 1
    assert "syntax error" in result.stderr


def test_query_unknown_format(runner, db):
    result = query(runner, db, "--format", "xml")
    assert result.exit_code == 2
    assert "Invalid value for '--format'" in result.output
