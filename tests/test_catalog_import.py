"""`orchestrator catalog import` and `list`: crawls of the skill store merged into the catalog, all or nothing."""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from full_disk import fill, small_disk  # noqa: F401 - the fixture

from orchestrator.catalog import crawl as catalog_import
from orchestrator.catalog.crawl import IMPORT_LOCK
from orchestrator.catalog.skills import IMPORTED_STORE, load_catalog
from orchestrator.cli.catalog import catalog
from orchestrator.core.config_files import ConfigError

DISK_FULL = "disk full: the file was not written; any earlier version is left as it was"

CURATED = textwrap.dedent("""\
    category: pets-animals
    skills:
      - id: B017OBJI46
        asin: B017OBJI46
        name: Cat Facts
        invocation_name: cat facts
        category: pets-animals
        source: https://example.org/curated
    """)

HEADER = ["ASIN", "Title", "Invocation Name", "Category", "Vendor", "Example Phrases", "Account Linking",
          "Privacy Policy"]
DOG = ["B000000001", "Dog Walker", "dog walker", "pets-animals", "Acme ", "Alexa, open dog walker|Alexa, ask dog "
       "walker for a walk", "yes", "https://acme.example/privacy"]
WINE = ["B000000002", "Wine Pal", "wine pal", "wine-beverages", "", "Alexa, open wine pal", "", ""]


@pytest.fixture
def folder(tmp_path) -> Path:
    path = tmp_path / "skills_catalog"
    path.mkdir()
    (path / "pets-animals.yaml").write_text(CURATED)
    return path


@pytest.fixture
def store(folder) -> Path:
    return folder / IMPORTED_STORE


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(catalog, [str(a) for a in args])


def import_file(folder: Path, path: Path, *options: str) -> Result:
    return invoke("import", path, "--catalog", folder, *options)


def rejection_lines(result: Result) -> list[str]:
    return [line.strip() for line in result.stderr.splitlines() if line.strip().startswith("row ")]


# -- formats and columns ----------------------------------------------------------------------------------


def test_csv_with_the_default_column_names(folder, tmp_path):
    result = import_file(folder, write_csv(tmp_path / "crawl.csv", [DOG, WINE]))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "crawl.csv: 2 row(s): 2 added, 0 updated, 0 unchanged, 0 kept curated, 0 rejected" in result.stderr
    assert ("columns: id <- 'ASIN', asin <- 'ASIN', name <- 'Title', invocation_name <- 'Invocation Name', "
            "category <- 'Category', developer <- 'Vendor', sample_utterances <- 'Example Phrases', account_linking "
            "<- 'Account Linking', privacy_policy_url <- 'Privacy Policy'") in result.stderr
    skills = load_catalog(folder)
    assert len(skills) == 3
    dog = skills["B000000001"]
    assert dog.model_dump() == {
        "id": "B000000001", "asin": "B000000001", "name": "Dog Walker", "invocation_name": "dog walker",
        "skill_type": "custom", "category": "pets-animals", "store_category": None, "store_subcategory": None,
        "developer": "Acme", "sample_utterances": ["open dog walker", "ask dog walker for a walk"],
        "sample_utterances_raw": ["Alexa, open dog walker", "Alexa, ask dog walker for a walk"],
        "account_linking": True, "permissions": None, "privacy_policy_url": "https://acme.example/privacy",
        "terms_url": None, "in_app_purchasing": None, "rating": None, "review_count": None, "release_date": None,
        "description": None, "source": "crawl.csv", "retrieved": None, "notes": None,
    }
    wine = skills["B000000002"]
    assert (wine.developer, wine.account_linking, wine.privacy_policy_url) == (None, None, None)
    assert wine.sample_utterances == ["open wine pal"]


def test_json_array_with_camel_case_names(folder, tmp_path):
    path = tmp_path / "crawl.json"
    path.write_text(json.dumps([
        {"skill_id": "amzn1.ask.skill.1", "skill_name": "Fit Coach", "invocationName": "fit coach",
         "category": "health-fitness", "vendor": "Gym Inc", "examplePhrases": ["Alexa, open fit coach", " "],
         "account_linking": False, "permissions": ["device address"], "privacyPolicyUrl": "https://gym.example/p"},
    ]))
    result = import_file(folder, path)
    assert result.exit_code == 0, result.output
    skill = load_catalog(folder)["amzn1.ask.skill.1"]
    assert (skill.asin, skill.name, skill.invocation_name, skill.developer) == (
        None, "Fit Coach", "fit coach", "Gym Inc")
    assert skill.sample_utterances == ["open fit coach"]
    assert (skill.account_linking, skill.permissions, skill.privacy_policy_url) == (
        False, ["device address"], "https://gym.example/p")


def test_json_lines_and_a_json_object_holding_skills(folder, tmp_path):
    lines = tmp_path / "crawl.jsonl"
    lines.write_text('{"asin": "B000000001", "title": "Dog Walker", "invocation": "dog walker", '
                     '"category": "pets-animals", "example_phrases": "Alexa, open dog walker\\nHelp"}\n\n')
    wrapped = tmp_path / "more.json"
    wrapped.write_text(json.dumps({"skills": [{"ASIN": "B000000002", "name": "Wine Pal", "invocation_name": "wine pal",
                                               "category": "wine-beverages"}]}))
    assert import_file(folder, lines).exit_code == 0
    assert import_file(folder, wrapped).exit_code == 0
    skills = load_catalog(folder)
    assert skills["B000000001"].sample_utterances == ["open dog walker", "Help"]
    assert skills["B000000002"].name == "Wine Pal"


def test_format_option_for_a_file_without_a_known_suffix(folder, tmp_path):
    path = write_csv(tmp_path / "crawl.txt", [DOG])
    assert "give --format" in import_file(folder, path).stderr
    assert import_file(folder, path, "--format", "csv").exit_code == 0


def test_custom_mapping(folder, tmp_path):
    """The zwang695/alexa-skills-list CSV: the store's category, numbered example columns."""
    header = ["Name", "Category", "Author", "ASIN", "Invocation Name", "Example Interaction 1",
              "Example Interaction 2", "Example Interaction 3", "Display"]
    row = ["ignored", "Education", "deegles.co", "B000000003", "dog facts", "Alexa, open dog facts", "",
           "Alexa, ask dog facts for a fact", "Dog Facts"]
    path = write_csv(tmp_path / "skills.csv", [row], header)
    result = import_file(folder, path, "--map", "name=Display", "--map", "store_category=Category",
                         "--map", "category=", "--category", "pets-animals", "--map", "developer=author",
                         "--source", "https://example.org/skills.csv")
    assert result.exit_code == 0, result.output
    skill = load_catalog(folder)["B000000003"]
    assert (skill.name, skill.category, skill.store_category, skill.developer) == (
        "Dog Facts", "pets-animals", "Education", "deegles.co")
    assert skill.sample_utterances == ["open dog facts", "ask dog facts for a fact"]
    assert skill.source == "https://example.org/skills.csv"


def test_a_list_field_from_named_columns(folder, tmp_path):
    header = ["asin", "name", "invocation_name", "category", "first", "second"]
    path = write_csv(tmp_path / "c.csv", [["B000000001", "Dog", "dog", "pets-animals", "one|two", "three"]], header)
    result = import_file(folder, path, "--map", "sample_utterances=second", "--map", "sample_utterances=first")
    assert result.exit_code == 0, result.output
    assert load_catalog(folder)["B000000001"].sample_utterances == ["three", "one", "two"]


# -- merging ----------------------------------------------------------------------------------------------


def test_merge_by_id_updates_only_the_fields_the_file_has(folder, tmp_path):
    assert import_file(folder, write_csv(tmp_path / "crawl.csv", [DOG, WINE])).exit_code == 0
    header = ["ASIN", "Title", "Invocation Name", "Category"]
    later = write_csv(tmp_path / "later.csv", [
        ["B000000001", "Dog Walker Pro", "dog walker", "pets-animals"],
        ["B000000003", "Date Night", "date night", "dating"],
    ], header)
    result = import_file(folder, later, "--source", "crawl.csv")
    assert result.exit_code == 0, result.output
    assert "2 row(s): 1 added, 1 updated, 0 unchanged" in result.stderr
    skills = load_catalog(folder)
    assert len(skills) == 4
    dog = skills["B000000001"]
    assert dog.name == "Dog Walker Pro"
    assert (dog.developer, dog.account_linking) == ("Acme", True)  # no column for them in the later file
    assert skills["B000000002"].name == "Wine Pal"


def test_importing_the_same_file_again_changes_nothing(folder, tmp_path, store):
    path = write_csv(tmp_path / "crawl.csv", [DOG, WINE])
    assert import_file(folder, path).exit_code == 0
    before = store.read_bytes()
    result = import_file(folder, path)
    assert result.exit_code == 0
    assert "0 added, 0 updated, 2 unchanged" in result.stderr
    assert "nothing to change" in result.stderr
    assert store.read_bytes() == before


def test_dry_run_writes_nothing(folder, tmp_path, store):
    result = import_file(folder, write_csv(tmp_path / "crawl.csv", [DOG]), "--dry-run")
    assert result.exit_code == 0
    assert "1 added" in result.stderr and "dry run: nothing written" in result.stderr
    assert not store.exists()


# -- rejected rows ----------------------------------------------------------------------------------------


def test_rejected_rows_name_the_row_the_field_and_the_reason(folder, tmp_path, store):
    rows = [
        DOG,
        ["B000000009", "", "nameless", "dating", "", "", "", ""],
        ["b12", "Bad", "bad", "Education", "", "", "maybe", ""],
        ["B000000010", "No Invocation", "null", "", "", "", "", ""],
        DOG,
    ]
    result = import_file(folder, write_csv(tmp_path / "crawl.csv", rows))
    assert result.exit_code == 2
    assert rejection_lines(result) == [
        "row 3: name: missing (column 'Title' is empty)",
        "row 4: account_linking: 'maybe' is neither true nor false (yes/no, 1/0)",
        "row 4: asin: String should match pattern '^B[0-9A-Z]{9}$'",
        "row 5: invocation_name: missing (column 'Invocation Name' is empty)",
        "row 5: category: missing (column 'Category' is empty and there is no --category)",
        "row 6: id: 'B000000001' is also on row 2",
    ]
    assert "5 row(s): 1 added, 0 updated, 0 unchanged, 0 kept curated, 4 rejected" in result.stderr
    assert "Error: 4 row(s) rejected, more than the 0 allowed by --max-rejected; nothing was imported" in result.stderr
    assert not store.exists()


def test_row_numbers_in_each_format(folder, tmp_path):
    multi_line = ["B000000001", "Dog", "dog", "pets-animals", "", "Alexa, open dog\nHelp", "", ""]
    csv_file = write_csv(tmp_path / "c.csv", [multi_line, ["B000000002", "", "x", "dating", "", "", "", ""]])
    assert rejection_lines(import_file(folder, csv_file))[0].startswith("row 3: name:")  # the header is row 1

    jsonl = tmp_path / "c.jsonl"
    good = '{"asin": "B000000001", "name": "Dog", "invocation_name": "dog", "category": "pets-animals"}'
    jsonl.write_text(f'{good}\n\n{{"asin": "B000000002"\n[1]\n')
    assert rejection_lines(import_file(folder, jsonl)) == [
        "row 3: not valid JSON (Expecting ',' delimiter at column 22)",
        "row 4: not a JSON object but list",
    ]

    array = tmp_path / "c.json"
    array.write_text(json.dumps([json.loads(good), {"asin": "B000000002", "name": "Wine", "category": "dating"}]))
    assert rejection_lines(import_file(folder, array)) == [
        "row 2: invocation_name: missing (the row has no 'invocation_name')"]


def test_a_csv_row_with_the_wrong_number_of_cells(folder, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("asin,name,invocation_name,category\nB000000001,Dog,dog,pets-animals,extra\n")
    assert rejection_lines(import_file(folder, path)) == ["row 2: has 5 cells, the header has 4"]


@pytest.mark.parametrize("ending", ["\r\n", "\r", "\n"])
def test_csv_line_endings_of_every_platform(folder, tmp_path, ending):
    path = tmp_path / "c.csv"
    lines = ["asin,name,invocation_name,category,example_phrases",
             'B000000001,Dog,dog,pets-animals,"Alexa, open dog' + ending + 'Help"', "B000000002,,x,dating,"]
    path.write_bytes(ending.join(lines).encode())
    result = import_file(folder, path, "--max-rejected", "1")
    assert rejection_lines(result) == ["row 3: name: missing (column 'name' is empty)"]  # a spreadsheet's row 3
    assert load_catalog(folder)["B000000001"].sample_utterances == ["open dog", "Help"]  # one phrase per line


def test_a_broken_csv_row_late_in_the_file_names_its_line_and_writes_nothing(folder, tmp_path, store):
    path = tmp_path / "c.csv"
    oversized = "x" * 200_000  # over the csv module's field limit: a damaged crawl, not a description
    path.write_text(f"asin,name,invocation_name,category\nB000000001,Dog,dog,pets-animals\n"
                    f"B000000002,Wine,wine,wine-beverages\nB000000003,\"{oversized}\",x,dating\n")
    result = import_file(folder, path)
    assert result.exit_code == 2
    assert "not a valid CSV file (line 4: field larger than field limit" in result.stderr
    assert not store.exists()


def test_max_rejected_imports_the_valid_rows(folder, tmp_path):
    rows = [DOG, ["B000000009", "", "nameless", "dating", "", "", "", ""], WINE]
    result = import_file(folder, write_csv(tmp_path / "crawl.csv", rows), "--max-rejected", "1")
    assert result.exit_code == 0, result.output
    assert "2 added, 0 updated, 0 unchanged, 0 kept curated, 1 rejected" in result.stderr
    assert rejection_lines(result) == ["row 3: name: missing (column 'Title' is empty)"]
    skills = load_catalog(folder)
    assert "B000000001" in skills and "B000000002" in skills and "B000000009" not in skills


def test_long_lists_of_rejections_are_cut_unless_verbose(folder, tmp_path):
    rows = [[f"B{n:09d}", "", "x", "dating", "", "", "", ""] for n in range(30)]
    path = write_csv(tmp_path / "crawl.csv", rows)
    short = import_file(folder, path)
    assert len(rejection_lines(short)) == 20
    assert "… and 10 more reasons (--verbose lists them all)" in short.stderr
    assert len(rejection_lines(import_file(folder, path, "--verbose"))) == 30


# -- all or nothing -------------------------------------------------------------------------------------


def test_a_refused_import_leaves_the_store_byte_for_byte(folder, tmp_path, store):
    assert import_file(folder, write_csv(tmp_path / "crawl.csv", [DOG])).exit_code == 0
    before = store.read_bytes()
    changed = [["B000000001", "Renamed", "dog walker", "pets-animals", "", "", "", ""],
               WINE, ["B000000009", "", "nameless", "dating", "", "", "", ""]]
    result = import_file(folder, write_csv(tmp_path / "later.csv", changed))
    assert result.exit_code == 2
    assert store.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == [IMPORTED_STORE, IMPORT_LOCK, "pets-animals.yaml"]
    assert load_catalog(folder)["B000000001"].name == "Dog Walker"


def test_a_failed_write_leaves_the_store_byte_for_byte(folder, tmp_path, store, monkeypatch):
    assert import_file(folder, write_csv(tmp_path / "crawl.csv", [DOG])).exit_code == 0
    before = store.read_bytes()
    real_write = catalog_import._write_database

    def write_then_fail(path: Path, records: list) -> None:
        real_write(path, records)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(catalog_import, "_write_database", write_then_fail)
    result = import_file(folder, write_csv(tmp_path / "later.csv", [WINE]))
    assert result.exit_code == 1
    assert result.stderr == f"Error: {store}: {DISK_FULL}\n"
    assert store.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == [IMPORTED_STORE, IMPORT_LOCK, "pets-animals.yaml"]


def test_sqlite_on_a_full_disk_is_a_disk_full_error(small_disk, tmp_path):  # noqa: F811 - the fixture
    folder = small_disk / "skills_catalog"
    folder.mkdir()
    (folder / "pets-animals.yaml").write_text(CURATED)
    assert import_file(folder, write_csv(tmp_path / "crawl.csv", [DOG])).exit_code == 0
    before = (folder / IMPORTED_STORE).read_bytes()
    fill(small_disk)
    result = import_file(folder, write_csv(tmp_path / "later.csv", [WINE]))
    assert result.exit_code == 1
    assert "disk full" in result.stderr and "Traceback" not in result.output
    assert (folder / IMPORTED_STORE).read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == [IMPORTED_STORE, IMPORT_LOCK, "pets-animals.yaml"]


# -- curated records win ----------------------------------------------------------------------------------


def test_a_curated_id_is_kept_and_reported(folder, tmp_path):
    cat_copy = ["B017OBJI46", "Cat Facts Copy", "cat facts copy", "pets-animals", "", "", "", ""]
    result = import_file(folder, write_csv(tmp_path / "crawl.csv", [cat_copy, DOG]))
    assert result.exit_code == 0, result.output
    assert "1 added, 0 updated, 0 unchanged, 1 kept curated, 0 rejected" in result.stderr
    assert "row 2: id: 'B017OBJI46' is curated in pets-animals.yaml; the curated record is kept" in result.stderr
    skills = load_catalog(folder)
    assert skills["B017OBJI46"].name == "Cat Facts"
    assert skills.imported is not None and "B017OBJI46" not in skills.imported


def test_a_skill_curated_after_its_import_hides_the_imported_record(folder, tmp_path):
    assert import_file(folder, write_csv(tmp_path / "crawl.csv", [DOG, WINE])).exit_code == 0
    (folder / "wine-beverages.yaml").write_text(textwrap.dedent("""\
        category: wine-beverages
        skills:
          - id: B000000002
            name: Wine Pal (curated)
            invocation_name: wine pal
            category: wine-beverages
        """))
    skills = load_catalog(folder)
    assert len(skills) == 3
    assert skills["B000000002"].name == "Wine Pal (curated)"
    assert [s.name for s in skills.in_category("wine-beverages")] == ["Wine Pal (curated)"]
    assert sorted(skills.skills) == ["B000000001", "B000000002", "B017OBJI46"]
    assert [s.name for s in skills.skills.values()] == ["Cat Facts", "Wine Pal (curated)", "Dog Walker"]


# -- list -------------------------------------------------------------------------------------------------


def test_list_a_category(folder, tmp_path):
    assert import_file(folder, write_csv(tmp_path / "crawl.csv", [DOG, WINE])).exit_code == 0
    result = invoke("list", "--catalog", folder, "--category", "pets-animals", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert list(csv.reader(io.StringIO(result.stdout))) == [
        ["id", "category", "origin", "name", "invocation_name", "developer"],
        ["B017OBJI46", "pets-animals", "curated", "Cat Facts", "cat facts", ""],
        ["B000000001", "pets-animals", "imported", "Dog Walker", "dog walker", "Acme"],
    ]


def test_list_everything_as_a_table(folder, tmp_path):
    assert import_file(folder, write_csv(tmp_path / "crawl.csv", [DOG, WINE])).exit_code == 0
    lines = invoke("list", "--catalog", folder).stdout.splitlines()
    assert lines[0].split() == ["id", "category", "origin", "name", "invocation_name", "developer"]
    assert [line.split()[0] for line in lines[2:]] == ["B017OBJI46", "B000000001", "B000000002"]


def test_list_an_unknown_category(folder):
    result = invoke("list", "--catalog", folder, "--category", "gardening")
    assert result.exit_code == 2
    assert "unknown category 'gardening'; the catalog has: connected-car, dating" in result.stderr


# -- files that cannot be imported ----------------------------------------------------------------------


@pytest.mark.parametrize("name, content, message", [
    ("crawl.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not UTF-8 text, so not a CSV file"),
    ("crawl.csv", b"asin,name\x00,x\n", "not a CSV file (it contains NUL bytes)"),
    ("crawl.csv", b"", "no header row"),
    ("crawl.csv", b'[{"asin": "B000000001"}]\n', "no column for name (looked for name, title, skill_name)"),
    ("crawl.csv", b"asin,skill title,invocation\nB000000001,Dog,dog\n",
     "no column for name (looked for name, title, skill_name); --map name='skill title'; no column for category "
     "(looked for category); --map category=COLUMN (or give --category); the file's columns are 'asin', "
     "'skill title', 'invocation'"),
    ("crawl.csv", b"asin,name,invocation_name\nB000000001,Dog,dog\n", "no column for category"),
    ("crawl.csv", b"asin,ASIN,name,invocation,category\n", "the columns 'asin' and 'ASIN' could both be id"),
    ("crawl.csv", b"asin,name,name\n", "the column 'name' is given twice"),
    ("crawl.json", b"asin,name\n", "not valid JSON (line 1: Expecting value)"),
    ("crawl.json", b'{"asin": "B000000001"}', "expected a JSON array of skills"),
    ("crawl.jsonl", b"asin,name\nB000000001,Dog\n", "not a JSON Lines file (line 1: not valid JSON"),
    ("crawl.xlsx", b"PK\x03\x04", "cannot tell the format from the name; give --format (csv, json, jsonl)"),
])
def test_a_file_that_cannot_be_imported(folder, tmp_path, store, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    result = import_file(folder, path)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {path}: ")
    assert message in result.stderr
    assert not store.exists()


def test_a_missing_file(folder, tmp_path):
    result = import_file(folder, tmp_path / "nope.csv")
    assert result.exit_code == 2
    assert f"Error: {tmp_path / 'nope.csv'}: file not found" in result.stderr


@pytest.mark.parametrize("option, message", [
    ("titel=Title", "--map titel=Title: no field 'titel'"),
    ("name=Headline", "no column 'Headline' (for --map name=Headline)"),
    ("name", "'name' is not FIELD=COLUMN"),
])
def test_bad_mappings(folder, tmp_path, option, message):
    result = import_file(folder, write_csv(tmp_path / "crawl.csv", [DOG]), "--map", option)
    assert result.exit_code == 2
    assert message in result.stderr


def test_an_unknown_default_category(folder, tmp_path):
    result = import_file(folder, write_csv(tmp_path / "crawl.csv", [DOG]), "--category", "gardening")
    assert result.exit_code == 2
    assert "--category gardening: not a catalog category" in result.stderr


def test_a_broken_curated_file_stops_the_import(folder, tmp_path):
    (folder / "dating.yaml").write_text("category: dating\nskills:\n  - id: X\n")
    result = import_file(folder, write_csv(tmp_path / "crawl.csv", [DOG]))
    assert result.exit_code == 2
    assert f"{folder / 'dating.yaml'}:3: skills[0].name: Field required" in result.stderr


# -- the store ------------------------------------------------------------------------------------------


def test_a_damaged_store_is_reported_with_its_file(folder, store):
    store.write_bytes(b"not a database at all, just text that is long enough to have a header" * 10)
    with pytest.raises(ConfigError) as caught:
        load_catalog(folder)
    [issue] = caught.value.issues
    assert issue.file == store
    assert "not an imported-skills store" in issue.message


def test_the_catalog_crosses_process_boundaries(folder, tmp_path):
    assert import_file(folder, write_csv(tmp_path / "crawl.csv", [DOG, WINE])).exit_code == 0
    copy = pickle.loads(pickle.dumps(load_catalog(folder)))
    assert len(copy) == 3
    assert copy["B000000002"].name == "Wine Pal"
    assert copy["B017OBJI46"].name == "Cat Facts"


def test_a_few_thousand_skills(folder, tmp_path):
    """Every row arrives, in category and id order; speed is measured in bench/catalog_speed.py."""
    categories = ["dating", "smart-home", "pets-animals"]
    rows = [[f"B{n:09d}", f"Skill {n}", f"skill {n}", categories[n % 3], "", f"Alexa, open skill {n}", "", ""]
            for n in range(3000)]
    result = import_file(folder, write_csv(tmp_path / "crawl.csv", rows))
    assert result.exit_code == 0, result.output
    skills = load_catalog(folder)
    assert len(skills) == 3001
    assert skills["B000002999"].invocation_name == "skill 2999"
    dating = skills.in_category("dating")
    assert len(dating) == 1000 and [s.id for s in dating] == sorted(s.id for s in dating)
    assert skills.categories() >= set(categories)
    assert len(list(skills.skills.values())) == 3001


# -- the command's own documentation ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["import", "list"])
def test_every_option_is_documented(name):
    command = catalog.commands[name]
    assert command.help and command.help.strip()
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help and param.help.strip(), param.opts[0]
    assert invoke(name, "--help").output.startswith("Usage: ")


# -- hostile crawls ----------------------------------------------------------------------------------------


def run_cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The command in a process of its own, with 4 GB of address space and a time limit."""
    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    return subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limited)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_crawl_that_is_not_a_file_is_refused_at_once(folder, tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "crawl.csv"
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    done = run_cli("catalog", "import", path, "--format", "csv", "--catalog", folder)
    assert done.returncode == 2
    assert done.stderr == f"Error: {path}: not a regular file (a {'FIFO' if kind == 'fifo' else 'device'}); " \
                          "give the path of a file\n"


def test_a_crawl_over_the_size_limit(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(catalog_import, "MAX_CRAWL_BYTES", 100)
    path = write_csv(tmp_path / "crawl.csv", [DOG])
    result = import_file(folder, path)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {path}: larger than 100 bytes, the most this file may hold\n"


@pytest.mark.parametrize("content, message", [
    ("[" * 100_000 + "]" * 100_000, "cannot read the JSON: nested too deeply"),
    ('[{"asin": ' + "7" * 5000 + "}]", "cannot read the JSON: Exceeds the limit (4300 digits)"),
], ids=["deep", "huge-integer"])
def test_json_that_python_will_not_hold(folder, tmp_path, content, message):
    path = tmp_path / "crawl.json"
    path.write_text(content)
    result = import_file(folder, path)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {path}: {message}")


def test_json_lines_that_python_will_not_hold_are_rejected_rows(folder, tmp_path):
    good = '{"asin": "B000000001", "name": "Dog", "invocation_name": "dog", "category": "pets-animals"}'
    path = tmp_path / "crawl.jsonl"
    path.write_text(f"{good}\n{'[' * 100_000}\n{{\"asin\": {'7' * 5000}}}\n")
    lines = rejection_lines(import_file(folder, path))
    assert lines[0] == "row 2: cannot read the JSON: nested too deeply"
    assert lines[1].startswith("row 3: cannot read the JSON: Exceeds the limit (4300 digits)")


def test_names_with_control_bidi_or_zero_width_characters_are_rejected(folder, tmp_path, store):
    rows = [["B000000001", "Dog\x1b[2J", "dog walker", "pets-animals", "", "", "", ""],
            ["B000000002", "Wine Pal", "wine\u202epal", "wine-beverages", "", "", "", ""],
            ["B000000003", "Fit", "fit", "health-fitness", "", "Alexa, open\u200b fit", "", ""]]
    result = import_file(folder, write_csv(tmp_path / "crawl.csv", rows))
    assert result.exit_code == 2
    assert rejection_lines(result) == [
        "row 2: name: contains U+001B (a control character) at character 4; control, bidirectional and "
        "zero-width characters are not allowed",
        "row 3: invocation_name: contains U+202E (RIGHT-TO-LEFT OVERRIDE) at character 5; control, "
        "bidirectional and zero-width characters are not allowed",
        "row 4: sample_utterances[0]: contains U+200B (ZERO WIDTH SPACE) at character 5; control, "
        "bidirectional and zero-width characters are not allowed",
    ]
    assert not store.exists()


def test_list_escapes_for_the_terminal_and_neutralises_formulas(folder, tmp_path):
    row = ["B000000001", "Dog Walker", "dog walker", "pets-animals", '=HYPERLINK("http://x","y")\x1b[8m', "", "", ""]
    assert import_file(folder, write_csv(tmp_path / "crawl.csv", [row])).exit_code == 0
    table = invoke("list", "--catalog", folder, "--category", "pets-animals").stdout
    assert "\x1b" not in table and '=HYPERLINK("http://x","y")\\x1b[8m' in table
    listed = list(csv.reader(io.StringIO(invoke("list", "--catalog", folder, "--format", "csv").stdout)))
    assert listed[2][5] == '\'=HYPERLINK("http://x","y")\x1b[8m'


# -- one import at a time -------------------------------------------------------------------------------

#: An import in a process of its own, whose write of the new store takes `sys.argv[1]` seconds; it
#: prints "writing" when the new store is written and not yet renamed (the lock held).
SLOW_IMPORT = """
import sys, time
from orchestrator.catalog import crawl as catalog_import
real = catalog_import._write_database
def slow(path, records):
    real(path, records)
    print("writing", flush=True)
    time.sleep(float(sys.argv[1]))
catalog_import._write_database = slow
catalog_import.LOCK_WAIT_SECONDS = float(sys.argv[2])
from orchestrator.cli.main import main
main(sys.argv[3:], prog_name="orchestrator")
"""


def start_import(folder: Path, crawl: Path, seconds: float, lock_wait: float = 10.0) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", SLOW_IMPORT, str(seconds), str(lock_wait), "catalog", "import",
                             str(crawl), "--catalog", str(folder)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until_writing(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line == "writing\n", process.communicate(timeout=60)


def test_two_imports_at_once_keep_both_imports_rows(folder, tmp_path):
    first = start_import(folder, write_csv(tmp_path / "dogs.csv", [DOG]), seconds=2)
    wait_until_writing(first)  # the first has read the (empty) store and holds the lock
    second = start_import(folder, write_csv(tmp_path / "wines.csv", [WINE]), seconds=0)
    assert first.wait(timeout=60) == 0, first.communicate()
    _, errors = second.communicate(timeout=60)
    assert second.returncode == 0, errors
    skills = load_catalog(folder)
    assert "B000000001" in skills and "B000000002" in skills  # the second merged into the first's store


def test_an_import_that_waited_too_long_names_the_running_one(folder, tmp_path, store):
    first = start_import(folder, write_csv(tmp_path / "dogs.csv", [DOG]), seconds=5)
    try:
        wait_until_writing(first)
        second = start_import(folder, write_csv(tmp_path / "wines.csv", [WINE]), seconds=0, lock_wait=0.3)
        _, errors = second.communicate(timeout=60)
        assert second.returncode == 1
        assert errors == (f"Error: another catalog import is running (pid {first.pid}); nothing was imported, "
                          "try again when it has finished\n")
    finally:
        assert first.wait(timeout=60) == 0
    assert "B000000002" not in load_catalog(folder)


def test_a_killed_import_leaves_its_temporary_store_to_the_next_one(folder, tmp_path, store):
    killed = start_import(folder, write_csv(tmp_path / "dogs.csv", [DOG]), seconds=600)
    wait_until_writing(killed)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    [left] = folder.glob(f".{IMPORTED_STORE}.*.tmp")
    assert left.stat().st_size > 0 and not store.exists()
    result = import_file(folder, write_csv(tmp_path / "wines.csv", [WINE]))
    assert result.exit_code == 0, result.output
    assert f"{left}: removed, the temporary store of an earlier import that did not finish" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == [IMPORTED_STORE, IMPORT_LOCK, "pets-animals.yaml"]
    assert "B000000002" in load_catalog(folder)


def test_a_dry_run_does_not_wait_for_the_lock(folder, tmp_path):
    with catalog_import.import_lock(folder, 0):
        result = import_file(folder, write_csv(tmp_path / "crawl.csv", [DOG]), "--dry-run")
    assert result.exit_code == 0, result.output
