"""Reports across nights: rounds of one date, --by night, each persona beside the control, a skill's history.

The log is the two nights of two_nights.py and a second round on the first date, as a second demo
night on the same evening leaves it:

  round 2 of 2026-03-04, pets     open B01 ok "welcome back to cat facts" (skill_opened),
                                  ask ok "here is a song" (alexa_answered)
  round 2 of 2026-03-04, vanilla  ask ok "it is ten o'clock" (other)

The control's steps are "Alexa, ask" (two ok with outcome other, one timeout); pets asks it once
and Alexa answers herself: the one subject both asked whose usual verdict differs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from two_nights import NIGHT_1, NIGHT_2, Step, _run, _steps, build, pick, rows_of

from orchestrator import log
from orchestrator.analysis.export import export
from orchestrator.analysis.query import run_query
from orchestrator.analysis.reports import NO_SKILL, REPORTS, Filters, ReportError, parameters, run_report
from orchestrator.cli.main import main

PETS_ROUND_2 = [
    Step("open", "B01", "ok", "welcome back to cat facts", 2.5, 3.0, "skill_opened"),
    Step("ask", None, "ok", "here is a song", 1.0, 2.0, "alexa_answered"),
]
VANILLA_ROUND_2 = [Step("ask", None, "ok", "it is ten o'clock", 3.0, 2.0, "other")]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("rounds")
    path = folder / "orchestrator.sqlite"
    engine = build(path, folder)
    ids = {name: log.upsert_persona(engine, name=name, interest=interest, is_control=interest is None)
           for name, interest in (("pets", "pets-animals"), ("vanilla", None))}
    devices = {name: log.upsert_device(engine, name=name) for name in ("echo-1", "echo-2")}
    # After the first round's last run (vanilla's, at 01:30 on the 5th): still the night of the 4th.
    for persona, echo, steps, at in (("pets", "echo-1", PETS_ROUND_2, "02:00"),
                                     ("vanilla", "echo-2", VANILLA_ROUND_2, "02:05")):
        run = _run(engine, ids[persona], devices[echo], folder, f"{NIGHT_2}T{at}:00Z")
        _steps(engine, run, steps)
        log.finish_run(engine, run, "completed")
    engine.dispose()
    yield path


def test_two_nights_on_one_date_are_two_rounds(db: Path) -> None:
    assert pick(rows_of(db, "night", night=NIGHT_1), "night", "night_round", "persona", "runs", "steps") == [
        (NIGHT_1, 1, "pets", 1, 6), (NIGHT_1, 1, "vanilla", 1, 2),
        (NIGHT_1, 2, "pets", 1, 2), (NIGHT_1, 2, "vanilla", 1, 1),
    ]


def test_installs_and_replies_by_night(db: Path) -> None:
    installs = pick(rows_of(db, "installs", by="night"), "night", "night_round", "skill_id", "attempts", "last_outcome")
    assert installs == [
        (NIGHT_1, 1, "B01", 1, "enabled"), (NIGHT_1, 1, "B02", 1, "not_found"), (NIGHT_2, 1, "B02", 1, "enabled"),
    ]
    replies = rows_of(db, "replies", by="night")
    assert pick(replies, "night", "night_round", "skill_id", "steps", "replies") == [
        (NIGHT_1, 1, "B01", 5, 3), (NIGHT_1, 1, "B02", 1, 1), (NIGHT_1, 1, None, 2, 1),
        (NIGHT_1, 2, "B01", 1, 1), (NIGHT_1, 2, None, 2, 2),
        (NIGHT_2, 1, "B02", 2, 1),
    ]


def test_replies_of_the_control_are_its_questions(db: Path) -> None:
    assert pick(rows_of(db, "replies", persona="vanilla"), "skill_id", "skill_name", "steps", "replies",
                "latency_mean_s", "words_mean") == [(None, NO_SKILL, 3, 2, 2.0, 4.0)]


COMPARED = ("persona", "persona_interest", "control", "steps", "control_steps", "replies", "control_replies",
            "reply_pct", "control_reply_pct", "latency_mean_s", "control_latency_mean_s", "length_mean_s",
            "control_length_mean_s", "words_mean", "control_words_mean")


def test_compare_sets_each_persona_beside_the_control(db: Path) -> None:
    (pets,) = rows_of(db, "compare")
    # pets: 10 steps, 7 replies; latencies 1, 1.5, 2, 0.5, then 2.5, 1 (round 2), then 1 (night 2).
    assert pick([pets], *COMPARED) == [
        ("pets", "pets-animals", "vanilla", 10, 3, 7, 2, 70.0, 66.7, 1.36, 2.0, 2.43, 1.5, 5.3, 4.0),
    ]
    assert pets["outcomes"] == ("enabled 2, skill_opened 2, alexa_answered 1, error 1, interrupted 1, "
                                "no_response 1, not_found 1, other 1")
    assert pets["control_outcomes"] == "other 2, timeout 1"
    assert pets["differing"] == "Alexa, ask: alexa_answered (control: other)"


def test_compare_by_night_pairs_the_rounds(db: Path) -> None:
    rows = rows_of(db, "compare", by="night")
    assert pick(rows, "night", "night_round", "persona", "steps", "control_steps", "reply_pct",
                "control_reply_pct", "differing") == [
        (NIGHT_1, 1, "pets", 6, 2, 66.7, 50.0, None),
        (NIGHT_1, 2, "pets", 2, 1, 100.0, 100.0, "Alexa, ask: alexa_answered (control: other)"),
        (NIGHT_2, 1, "pets", 2, None, 50.0, None, None),  # the control's run was missed
    ]
    assert rows_of(db, "compare", persona="vanilla") == []  # the control is not compared with itself
    assert pick(rows_of(db, "compare", night=NIGHT_2), "persona", "steps", "control_steps") == [("pets", 2, None)]


def test_skill_history_tells_whether_a_skill_answered_the_same_way(db: Path) -> None:
    rows = rows_of(db, "skill-history", skill="cat FACTS")
    assert pick(rows, "skill_id", "skill_name", "night", "night_round", "steps", "replies", "outcome",
                "distinct_replies", "changed") == [
        ("B01", "Cat Facts", NIGHT_1, 1, 5, 3, "enabled", 3, None),
        ("B01", "Cat Facts", NIGHT_1, 2, 1, 1, "skill_opened", 1, 1),
    ]
    assert rows[0]["outcomes"] == "enabled 1, error 1, no_response 1, other 1, skill_opened 1"
    assert rows[1]["usual_reply"] == "welcome back to cat facts"
    dog = rows_of(db, "skill-history", skill="B02")
    assert pick(dog, "night", "steps", "outcome", "usual_reply", "changed") == [
        (NIGHT_1, 1, "not_found", "I couldn't find that skill", None),
        (NIGHT_2, 2, "enabled", "Dog Feeder is now enabled", 1),
    ]
    assert [row["skill_id"] for row in rows_of(db, "skill-history", night=NIGHT_2)] == ["B02"]


def test_misused_options_are_refused(db: Path) -> None:
    with pytest.raises(ReportError, match="--by night applies to installs, replies, compare"):
        run_report(db, "failures", Filters(by="night"))
    with pytest.raises(ReportError, match="skill-history report only"):
        run_report(db, "replies", Filters(skill="B01"))


def test_report_command_by_night_and_skill(db: Path) -> None:
    result = CliRunner().invoke(main, ["report", "compare", "--db", str(db), "--by", "night", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert [(row["night_round"], row["control"]) for row in json.loads(result.stdout)] == [
        (1, "vanilla"), (2, "vanilla"), (1, None)]
    result = CliRunner().invoke(main, ["report", "skill-history", "--db", str(db), "--skill", "Dog Feeder"])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 4 and "Dog Feeder" in result.stdout  # header, rule, two nights
    result = CliRunner().invoke(main, ["report", "search", "--db", str(db), "--grep", "cat", "--by", "night"])
    assert result.exit_code == 1 and "Error: --by night applies to" in result.stderr


def test_views_keep_their_types_in_parquet_for_pyarrow_and_duckdb(db: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    duckdb = pytest.importorskip("duckdb")
    out = tmp_path / "steps.parquet"
    assert export(db, "interaction_details", out, "parquet") == 13
    schema = pq.read_schema(out)
    types = {name: str(schema.field(name).type) for name in (
        "night", "night_round", "is_control", "persona_interest", "prompt_started_at", "prompt_ended_at",
        "response_started_at", "response_ended_at")}
    assert types == {"night": "date32[day]", "night_round": "int64", "is_control": "bool", "persona_interest": "string",
                     **{f"{moment}_at": "timestamp[us, tz=UTC]" for moment in (
                         "prompt_started", "prompt_ended", "response_started", "response_ended")}}
    connection = duckdb.connect()
    described = dict(connection.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '{out}')")
                     .fetchall())
    assert (described["night"], described["night_round"], described["is_control"], described["started_at"]) == (
        "DATE", "BIGINT", "BOOLEAN", "TIMESTAMP WITH TIME ZONE")
    rounds = connection.execute(
        f"SELECT night, night_round, count(*) FROM '{out}' WHERE NOT is_control GROUP BY ALL ORDER BY ALL").fetchall()
    assert [(str(night), round_, count) for night, round_, count in rounds] == [
        (NIGHT_1, 1, 6), (NIGHT_1, 2, 2), (NIGHT_2, 1, 2)]


@pytest.mark.parametrize("name", ["compare", "skill-history", "replies"])
def test_reports_across_nights_read_the_replies_index_in_its_order(db: Path, name: str) -> None:
    """What keeps them fast on a million steps: the steps are read from one index, and not sorted."""
    report = REPORTS[name]
    _, rows = run_query(db, "EXPLAIN QUERY PLAN " + report.sql, parameters(report, Filters()))
    with rows:
        plan = [(node, parent, detail) for node, parent, _, detail in rows]
    (parent,) = [parent for _, parent, detail in plan if "interactions" in detail]
    steps = [detail for _, under, detail in plan if under == parent]
    assert any("USING COVERING INDEX ix_interactions_replies" in detail for detail in steps), steps
    if name != "replies":  # replies sums a subquery of the index, which counts each reply's words once
        assert not any("TEMP B-TREE FOR GROUP BY" in detail for detail in steps), steps


def test_a_log_older_than_the_reports_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    engine = log.make_engine(path)
    log.upgrade(engine, "0005")  # views without night_round
    engine.dispose()
    with pytest.raises(ReportError, match=r"no such column: .*the log's schema is 0005, older than this version's"):
        run_report(path, "compare")
