"""Crawls of the real store, in the two column styles public crawls use: categories, popularity, clean prompts."""

from __future__ import annotations

import shutil
import sqlite3
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from crawl_factory import write_style1, write_style2

from orchestrator.catalog.crawl import ImportOptions, import_crawl
from orchestrator.catalog.skills import CATEGORIES, IMPORTED_STORE, Skill, load_catalog
from orchestrator.catalog.store_categories import MAPPING_FILE
from orchestrator.catalog.utterances import clean_utterance, invocation_key, utterance_kind
from orchestrator.cli.catalog import catalog
from orchestrator.core.config_files import ConfigError
from orchestrator.plan.persona import Persona, compile_plan, load_persona
from orchestrator.plan.validate import plan_warnings

PROJECT = Path(__file__).resolve().parents[1]
CRAWLS = Path(__file__).resolve().parent / "data" / "crawls"
STYLE1 = CRAWLS / "us_store_style1.csv"
STYLE2 = CRAWLS / "skill_list_style2.csv"


@pytest.fixture
def folder(tmp_path) -> Path:
    path = tmp_path / "skills_catalog"
    path.mkdir()
    for shipped in (PROJECT / "skills_catalog").glob("*.yaml"):
        shutil.copy(shipped, path)
    return path


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(catalog, [str(a) for a in args])


def imported(folder: Path, path: Path, *options: str) -> Result:
    result = invoke("import", path, "--catalog", folder, *options)
    assert result.exit_code == 0, result.output
    return result


def persona(interest: str, plan: list[dict[str, object]], shuffle: bool = False) -> Persona:
    return Persona.model_validate({"name": "p", "interest": interest, "echo": "e", "plan": plan, "shuffle": shuffle})


# -- utterances -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, clean", [
    ("Alexa, open Cat Facts.", "open Cat Facts."),
    ('"Alexa, ask Drive Time how long to work"', "ask Drive Time how long to work"),
    ('Alexa, "Alexa, ask pet quiz for a question"', "ask pet quiz for a question"),
    ("Alexa, tell Scout to disarm mode (with PIN).", "tell Scout to disarm mode."),
    ("(To end the session) Alexa, stop", "stop"),
    ("[pause] B", "B"),
    ("(To end the session)", None),
    ("  One ", "One"),
    ("Echo, play jazz", "play jazz"),
    ("Echo Dot tips", "Echo Dot tips"),
])
def test_utterances_are_cleaned(raw, clean):
    assert clean_utterance(raw) == clean


@pytest.mark.parametrize("text, kind", [
    ("open cat facts", "launch"),
    ("launch Cat Facts.", "launch"),
    ("ask cat facts for a fact", "one-shot"),
    ("tell Cat Facts to say meow", "one-shot"),  # the listed name, not the invocation name
    ("One", "follow-up"),
    ("my token is a b c", "follow-up"),
    ("tell me a fact", "follow-up"),
])
def test_one_shots_and_follow_ups(text, kind):
    assert utterance_kind(text, "cat facts", "Cat Facts") == kind


# -- the first style: a store-listing crawl ----------------------------------------------------------------


def test_a_store_listing_crawl_without_any_map(folder):
    result = invoke("import", STYLE1, "--catalog", folder, "--max-rejected", "2")
    assert result.exit_code == 0, result.output
    assert "14 row(s): 11 added, 0 updated, 0 unchanged, 1 kept curated, 2 rejected" in result.stderr
    assert [line.strip() for line in result.stderr.splitlines() if line.strip().startswith("row 1")] == [
        "row 14: rating: 'great' is not a number",
        "row 15: invocation_name: missing (column 'Invocation Name' is empty)",
    ]
    skills = load_catalog(folder)
    by_category = {s.id: s.category for s in skills.skills.values() if s.id not in skills.curated}
    assert by_category == {
        "B01AAAAAA1": "pets-animals", "B01AAAAAA2": "pets-animals", "B01AAAAAA3": "pets-animals",
        "B01AAAAAA4": "pets-animals", "B01EIQSPOY": "smart-home", "B01AAAAAB2": "smart-home",
        "B01AAAAAC1": "health-fitness", "B01AAAAAD1": "navigation-trip-planners",
        # Not the study's: kept, under the store's own category.
        "B01AAAAAE1": "food-drink", "B01AAAAAF1": "games-trivia-accessories", "B01AAAAAG1": "news",
    }
    walker = skills["B01AAAAAA3"]
    assert (walker.rating, walker.review_count, walker.release_date, walker.description) == (
        4.5, 312, "2016-03-01", "Plans walks.")
    assert (walker.terms_url, walker.in_app_purchasing, walker.store_category) == (
        "https://acme.example/terms", True, "Pets & Animals")
    assert walker.sample_utterances == ["ask dog walker when to walk", "my token is a b c", "stop"]
    assert walker.sample_utterances_raw == ["Alexa, ask dog walker when to walk", "my token is a b c",
                                            "(To end the session) Alexa, stop"]
    assert skills["B01AAAAAA1"].review_count == 87 and skills["B01AAAAAA4"].rating is None
    lights, news = skills["B01EIQSPOY"], skills["B01AAAAAG1"]
    assert (lights.skill_type, lights.invocation_name, news.skill_type) == ("smart_home", None, "flash_briefing")


def test_list_top_shows_rank_reviews_and_rating(folder):
    imported(folder, STYLE1, "--max-rejected", "2")
    result = invoke("list", "--catalog", folder, "--category", "pets-animals", "--top", "3", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "rank,id,category,origin,name,invocation_name,type,reviews,rating,developer",
        "1,B01AAAAAA2,pets-animals,imported,Feline Facts,cat facts,custom,2310,4.8,Meow LLC",
        "2,B01AAAAAA3,pets-animals,imported,Dog Walker,dog walker,custom,312,4.5,Acme",
        "3,B01AAAAAA1,pets-animals,imported,Cat Facts!,cat facts,custom,87,3.1,Kitty Corp",
    ]
    assert "give --category too" in invoke("list", "--catalog", folder, "--top", "3").stderr


# -- the second style: a skill list with sub-categories --------------------------------------------------


def test_a_skill_list_with_sub_categories_and_no_asins(folder):
    imported(folder, STYLE2)
    skills = load_catalog(folder)
    mine = {s.name + "/" + (s.developer or ""): s for s in skills.skills.values() if s.id not in skills.curated}
    two_cats = mine["Cat Facts/Purrfect Apps"], mine["Cat Facts/Whisker Works"]
    assert [s.id for s in two_cats] == ["slug:lifestyle/purrfect-apps/cat-facts",
                                        "slug:lifestyle/whisker-works/cat-facts"]
    assert [s.account_linking for s in two_cats] == [False, True]
    assert two_cats[1].permissions == ["Device Address"] and two_cats[0].permissions == []
    assert two_cats[1].sample_utterances == ["ask kitty facts for a fact", "Another"]
    assert mine["Date Night Ideas/Romance Co"].permissions == ["Customer Name", "Customer Email"]
    assert mine["Style Advisor/Fashionista"].account_linking is True
    assert {name: s.category for name, s in mine.items()} == {
        "Cat Facts/Purrfect Apps": "pets-animals", "Cat Facts/Whisker Works": "pets-animals",
        "Date Night Ideas/Romance Co": "dating", "Style Advisor/Fashionista": "fashion-style",
        "Daily Verse/Faith Apps": "religion-spirituality", "Vino Guide/Grape Minds": "wine-beverages",
        "Recipe Box/Cooks": "food-drink", "Kasa/TP-Link": "smart-home", "Car Connect/AutoCo": "connected-car",
        "Trip Planner/Wanderlust": "navigation-trip-planners", "Lingo/Words Ltd": "travel-transportation",
        "Jazz Radio/Radio Co": "music-audio",
    }
    assert (mine["Kasa/TP-Link"].skill_type, mine["Jazz Radio/Radio Co"].skill_type) == ("smart_home", "music")
    assert mine["Vino Guide/Grape Minds"].store_subcategory == "Wine & Beverages"


def test_missing_columns_are_reported_at_once_with_a_suggested_map(folder, tmp_path):
    path = tmp_path / "crawl.csv"
    path.write_text("Skill Title,Genre,invocation\nDog,Pets & Animals,dog\n")
    result = invoke("import", path, "--catalog", folder)
    assert result.exit_code == 2
    assert ("no column for name (looked for name, title, skill_name); --map name='Skill Title'; "
            "no column for category (looked for category); --map category=COLUMN (or give --category)") in result.stderr


# -- categories: the shipped mapping, the operator's, and moves on re-import -------------------------------


def test_the_operators_mapping_and_a_category_change_on_re_import(folder):
    imported(folder, STYLE1, "--max-rejected", "2")
    (folder / MAPPING_FILE).write_text(textwrap.dedent("""\
        store_category,sub_category,category
        Pets & Animals,,dating
        Food & Drink,,wine-beverages
        """))
    result = imported(folder, STYLE1, "--max-rejected", "2")
    assert f"store categories mapped by {folder / MAPPING_FILE}" in result.stderr
    assert "6 stored skill(s) move to another category:" in result.stderr
    assert "row 3: category: 'B01AAAAAA1' moves from pets-animals to dating" in result.stderr
    assert "row 11: category: 'B01AAAAAE1' moves from food-drink to wine-beverages" in result.stderr
    skills = load_catalog(folder)
    assert skills["B01AAAAAA1"].category == "dating"
    # No row of this mapping names them: the store's category, as a slug.
    assert (skills["B01AAAAAD1"].category, skills["B01EIQSPOY"].category) == ("travel-transportation", "smart-home")


def test_a_re_import_with_another_category_option_moves_the_skills(folder, tmp_path):
    path = tmp_path / "crawl.csv"
    path.write_text("asin,name,invocation_name\nB000000001,Dog,dog\n")
    imported(folder, path, "--category", "dating")
    result = imported(folder, path, "--category", "pets-animals")
    assert "0 added, 1 updated" in result.stderr
    assert "row 2: category: 'B000000001' moves from dating to pets-animals" in result.stderr
    assert load_catalog(folder)["B000000001"].category == "pets-animals"


def test_a_broken_mapping_names_its_line(folder, tmp_path):
    (folder / MAPPING_FILE).write_text("store_category,sub_category,category\nPets & Animals,,gardening\n")
    result = invoke("import", STYLE1, "--catalog", folder)
    assert result.exit_code == 2
    assert f"{folder / MAPPING_FILE}:2: category: 'gardening' is not a study category" in result.stderr


# -- the store's layout -----------------------------------------------------------------------------------


def old_store(folder: Path) -> Path:
    store = folder / IMPORTED_STORE
    db = sqlite3.connect(store)
    db.execute("CREATE TABLE skills (id TEXT PRIMARY KEY, category TEXT NOT NULL, record TEXT NOT NULL) WITHOUT ROWID")
    record = ('{"id": "B000000001", "asin": "B000000001", "name": "Dog", "invocation_name": "dog", '
              '"category": "pets-animals", "sample_utterances": ["Alexa, open dog"]}')
    db.execute("INSERT INTO skills VALUES ('B000000001', 'pets-animals', ?)", (record,))
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    return store


def test_a_store_of_the_old_layout_is_carried_over(folder):
    old_store(folder)
    with pytest.raises(ConfigError) as caught:
        load_catalog(folder)
    assert "`orchestrator catalog upgrade` carries its skills over" in str(caught.value.issues[0])
    result = invoke("upgrade", "--catalog", folder)
    assert result.exit_code == 0, result.output
    assert "1 skill(s) carried over from layout 1 to layout 2" in result.stderr
    assert load_catalog(folder)["B000000001"].name == "Dog"
    assert "already layout 2" in invoke("upgrade", "--catalog", folder).stderr


def test_an_import_carries_an_old_store_over(folder):
    old_store(folder)
    result = imported(folder, STYLE2)
    assert "layout 1 from an older orchestrator" in result.stderr
    skills = load_catalog(folder)
    assert skills["B000000001"].name == "Dog" and len(skills.imported.ids()) == 13  # type: ignore[union-attr]


# -- plans ------------------------------------------------------------------------------------------------


def test_generate_ranks_by_reviews_and_skips_a_second_skill_of_one_invocation_name(folder):
    imported(folder, STYLE1, "--max-rejected", "2")
    imported(folder, STYLE2)
    skills = load_catalog(folder)
    steps = compile_plan(persona("pets-animals", [{"generate": {"top": 4}}]), skills)
    enables = [(s.skill_id, s.note) for s in steps if s.kind == "enable"]
    assert enables == [
        ("B01AAAAAA2", "rank 1 in pets-animals: 2,310 reviews, rated 4.8"),
        ("B01AAAAAA3", "rank 3 in pets-animals: 312 reviews, rated 4.5"),  # rank 2 is another "cat facts"
        ("slug:lifestyle/whisker-works/cat-facts", "rank 5 in pets-animals: 20 reviews, rated 3.2"),
        ("B0193ZD0EU", "rank 7 in pets-animals: reviews unknown"),  # curated, in file order after counted ones
    ]
    names = [invocation_key(skills[i].invocation_name) for i, _ in enables]
    assert len(names) == len(set(names))
    walker = [(s.kind, s.spoken("Alexa")) for s in steps if s.skill_id == "B01AAAAAA3"]
    assert walker == [
        ("enable", "Alexa, enable Dog Walker"), ("open", "Alexa, open dog walker"),
        ("say", "my token is a b c"),  # a follow-up, inside the session; the listed "stop" is the stop step
        ("stop", "Alexa, stop"), ("say", "Alexa, ask dog walker when to walk"),
    ]
    by_rating = compile_plan(persona("pets-animals", [{"generate": {"top": 2, "rank": "rating"}}]), skills)
    assert [s.skill_id for s in by_rating if s.kind == "enable"] == ["B01AAAAAA2", "B01AAAAAA3"]


def test_ties_are_broken_the_same_way_every_time(folder, tmp_path):
    path = tmp_path / "crawl.csv"
    rows = "".join(f"B00000000{n},Skill {n},skill {n},Pets & Animals,100,4.0\n" for n in (3, 1, 2))
    path.write_text("asin,name,invocation_name,category,reviews,rating\n" + rows)
    imported(folder, path)
    skills = load_catalog(folder)
    tops = [[s.id for s in skills.top("pets-animals", 3)] for _ in range(3)]
    assert tops == [["B000000001", "B000000002", "B000000003"]] * 3


def test_plans_for_each_skill_type(folder):
    imported(folder, STYLE1, "--max-rejected", "2")
    imported(folder, STYLE2)
    skills = load_catalog(folder)
    home = compile_plan(persona("smart-home", [{"generate": {"top": 1}}]), skills)
    assert [(s.kind, s.spoken("Alexa")) for s in home] == [
        ("enable", "Alexa, enable Kasa"), ("say", "Alexa, turn on the fan"), ("say", "Alexa, turn off the porch light")]
    news = compile_plan(persona("pets-animals", [{"generate": {"top": 1, "category": "news"}}]), skills)
    assert [(s.kind, s.spoken("Alexa"), s.listen_seconds) for s in news] == [
        ("enable", "Alexa, enable NPR News Now", None), ("listen", "Alexa, what's my flash briefing", 20.0),
        ("stop", "Alexa, stop", None)]
    radio = compile_plan(persona("pets-animals", [{"generate": {"top": 1, "category": "music-audio"}}]), skills)
    assert [s.spoken("Alexa") for s in radio if s.kind == "listen"] == ["Alexa, play jazz radio"]


def test_validate_warns_about_shared_invocation_names_duplicates_and_odd_prompts(folder, tmp_path):
    imported(folder, STYLE1, "--max-rejected", "2")
    path = tmp_path / "pets.yaml"
    path.write_text(yaml.safe_dump({"name": "pets", "interest": "pets-animals", "echo": "e", "plan": [
        {"enable": "B01AAAAAA2"}, {"say": "tell me a fact {fact}", "session": True}]}))
    warnings = plan_warnings([load_persona(path)], load_catalog(folder))
    assert any("'tell me a fact {fact}' has characters a voice may misread: { }" in w for w in warnings)
    assert any("skill B01AAAAAA2 (Feline Facts): its invocation name 'cat facts' is also that of B017OBJI46, "
               "B01AAAAAA1" in w for w in warnings)


# -- a crawl of the whole study -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """Style 2 has the sub-categories every study category needs; style 1 then adds popularity."""
    root = tmp_path_factory.mktemp("study")
    folder = root / "skills_catalog"
    folder.mkdir()
    for shipped in (PROJECT / "skills_catalog").glob("*.yaml"):
        shutil.copy(shipped, folder)
    for write in (write_style1, write_style2):
        crawl = write(root / f"{write.__name__}.csv", 8000)
        result = import_crawl(folder, crawl, ImportOptions(max_rejected=100))
        assert result.rejected <= 20, [str(r) for r in result.rejections[:5]]
    return folder


def test_every_study_persona_dry_runs_its_top_50(study):
    skills = load_catalog(study)
    for category in CATEGORIES:
        loaded = load_persona(PROJECT / "persona_scripts" / f"{category}.yaml").persona
        # Unshuffled, so that the rank order shows; the persona's own seed would only reorder the blocks.
        night = loaded.model_copy(update={"plan": persona(category, [{"generate": {"top": 50}}]).plan,
                                          "shuffle": False})
        steps = compile_plan(night, skills)
        enabled = [skills[s.skill_id] for s in steps if s.kind == "enable" and s.skill_id]
        assert len(enabled) == 50, category
        assert all(s.category == category for s in enabled)
        keys = [invocation_key(s.invocation_name) for s in enabled if s.invocation_name]
        assert len(keys) == len(set(keys)), category
        assert not any(s.kind == "open" and skills[s.skill_id or ""].skill_type != "custom" for s in steps)
        assert all(s.wake or s.kind in ("say", "pause") for s in steps)
        counts = [s.review_count for s in enabled if s.id not in skills.curated]
        assert counts == sorted(counts, key=lambda c: -(c or 0)), category


def test_the_study_crawl_fills_every_category(study):
    skills = load_catalog(study)
    sizes = Counter({c: skills.count_in(c) for c in CATEGORIES})
    assert min(sizes.values()) >= 50, sizes
    assert all(isinstance(s, Skill) for s in skills.top("smart-home", 5))
