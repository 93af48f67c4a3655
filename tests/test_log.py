"""The interaction log: schema made by migrations, pragmas, write helpers, concurrent writers."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Engine, MetaData, Text, inspect, select, text
from sqlalchemy.exc import IntegrityError

from orchestrator import log
from orchestrator.log import Interaction, Run, SkillInstall

HEAD_REVISION = ScriptDirectory.from_config(log.alembic_config()).get_current_head()

#: The analysts' contract: these tables with exactly these columns.
CONTRACT = {
    "personas": ["id", "name", "interest", "is_control", "file_path", "file_sha256", "created_at"],
    "devices": ["id", "name", "room", "speaker_device", "microphone_device", "audio_backend", "created_at",
                "mac", "ip"],
    "skills": ["id", "name", "invocation_name", "category"],
    "runs": [
        "id", "persona_id", "device_id", "status", "started_at", "finished_at", "scheduled_for",
        "tool_version", "config_sha256", "config_json", "tts_engine", "tts_voice",
        "tts_rate", "audio_backend", "host", "audio_dir", "error", "rig_check_id",
        "asr_engine", "asr_model", "asr_version", "clock_sync", "clock_source", "clock_offset_seconds",
        "timestamp_accuracy_seconds",
    ],
    "interactions": [
        "id", "run_id", "persona_id", "device_id", "step_index", "attempt", "skill_id", "kind",
        "prompt_text", "prompt_audio", "status", "error", "started_at", "prompt_started_at",
        "prompt_ended_at", "response_started_at", "response_ended_at", "finished_at",
        "prompt_seconds", "response_latency_seconds", "response_seconds", "response_audio",
        "recorded_seconds", "end_detect_delay", "transcript", "words_json", "confidence",
        "transcript_ready_delay", "asr_rtf", "input_overflows", "output_underflows",
        "reply_outcome", "reply_outcome_score", "reply_outcome_rule", "expectation_met",
        "reply_heard_skill", "transcript_state", "transcript_claim", "transcript_tries", "transcript_error",
    ],
    "transcripts": [
        "id", "interaction_id", "recording", "engine", "model", "version", "created_at", "text", "words_json",
        "confidence", "audio_seconds", "decode_seconds", "is_current",
    ],
    "skill_installs": [
        "id", "run_id", "persona_id", "skill_id", "interaction_id", "action", "outcome", "created_at",
    ],
    "rig_checks": [
        "id", "started_at", "finished_at", "host", "trigger", "probe_level_dbfs", "min_level_dbfs",
        "max_crosstalk_dbfs", "min_snr_db", "passed",
    ],
    "rig_check_results": ["id", "rig_check_id", "device_id", "probe_hz", "status", "level_dbfs", "noise_dbfs", "error"],
    "rig_check_levels": [
        "id", "rig_check_id", "speaker_device_id", "microphone_device_id", "same_room", "level_dbfs", "noise_dbfs",
    ],
    "captures": [
        "id", "source", "path", "sha256", "bytes", "interface", "filter", "snap_length", "device_id",
        "clock_offset_seconds", "started_at", "finished_at", "first_packet_at", "last_packet_at", "packets",
        "packets_dropped", "host", "error", "analyzed_at",
    ],
    "flows": [
        "id", "capture_id", "device_id", "interaction_id", "link", "protocol", "echo_address", "echo_port",
        "remote_address", "remote_port", "first_packet_at", "last_packet_at", "packets_out", "bytes_out",
        "packets_in", "bytes_in", "name", "name_source", "domain", "tracker",
    ],
}  # fmt: skip

INDEXES = {
    "interactions": {
        ("run_id",),
        ("persona_id", "started_at"),
        ("status",),
        ("skill_id",),
        ("run_id", "skill_id", "prompt_text", "status", "reply_outcome", "transcript", "response_latency_seconds",
         "response_seconds"),
    },
    "skill_installs": {("persona_id", "skill_id"), ("run_id",)},
}

ISO_UTC = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "nested" / "orchestrator.sqlite"


@pytest.fixture
def engine(db_path: Path) -> Iterator[Engine]:
    engine = log.open_log(db_path)
    yield engine
    engine.dispose()


@pytest.fixture
def audio_dir(tmp_path: Path) -> Path:
    path = tmp_path / "audio"
    path.mkdir()
    return path


def make_run(engine: Engine, audio_dir: Path, persona: str = "pets") -> int:
    persona_id = log.upsert_persona(engine, name=persona, interest="pets & animals")
    device_id = log.upsert_device(engine, name=f"echo-{persona}", room="lab-1")
    return log.start_run(
        engine,
        persona_id=persona_id,
        device_id=device_id,
        audio_dir=audio_dir,
        config={"persona": persona, "rate": 170},
        asr_engine="vosk", asr_model="vosk-model-small-en-us-0.15", asr_version="vosk 0.3.45",
        tts_engine="espeak-ng",
        tts_voice="en-us",
        tts_rate=170,
        audio_backend="pulse",
    )


def raw(db_path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read with a plain sqlite3 connection, as an analyst would, bypassing SQLAlchemy."""
    connection = sqlite3.connect(db_path)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


# --- schema ----------------------------------------------------------------------------------


def test_migrations_create_the_contract_schema(engine: Engine, db_path: Path) -> None:
    assert db_path.is_file()
    inspector = inspect(engine)
    assert set(inspector.get_table_names()) == set(CONTRACT) | {"alembic_version"}
    for table, columns in CONTRACT.items():
        assert [c["name"] for c in inspector.get_columns(table)] == columns, table
    for table, wanted in INDEXES.items():
        present = {tuple(ix["column_names"]) for ix in inspector.get_indexes(table)}
        assert wanted <= present, table


def test_open_log_twice_is_idempotent(db_path: Path, audio_dir: Path) -> None:
    first = log.open_log(db_path)
    run_id = make_run(first, audio_dir)
    first.dispose()
    second = log.open_log(db_path)
    second.dispose()
    assert raw(db_path, "SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]
    assert raw(db_path, "SELECT id FROM runs") == [(run_id,)]


def test_an_old_log_keeps_its_vosk_model_as_the_speech_model(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    engine = log.make_engine(db_path)
    log.upgrade(engine, "0004")
    with engine.begin() as connection:
        connection.exec_driver_sql("INSERT INTO personas (id, name, is_control, created_at) "
                                   "VALUES (1, 'pets', 0, '2026-11-01T00:00:00.000000Z')")
        for run_id, model in ((1, "/models/vosk-model-small-en-us-0.15"), (2, None)):
            connection.exec_driver_sql(
                "INSERT INTO runs (id, persona_id, status, started_at, vosk_model) "
                "VALUES (?, 1, 'completed', '2026-11-01T01:00:00.000000Z', ?)", (run_id, model))
    log.upgrade(engine)
    engine.dispose()
    assert raw(db_path, "SELECT run_id, asr_engine, asr_model, asr_version FROM run_details ORDER BY run_id") == [
        (1, "vosk", "/models/vosk-model-small-en-us-0.15", None), (2, None, None, None)]
    assert "vosk_model" not in [row[1] for row in raw(db_path, "PRAGMA table_info(runs)")]


def test_an_old_log_gets_the_comparison_views_with_nights_told_apart(db_path: Path) -> None:
    """A 0005 log: two demo nights on one date, a run past midnight, a missed run, the control."""
    db_path.parent.mkdir(parents=True)
    engine = log.make_engine(db_path)
    log.upgrade(engine, "0005")
    rows = {
        "personas": [(1, "pets", "pets-animals", 0, "2026-11-01T00:00:00.000Z"),
                     (2, "vanilla", None, 1, "2026-11-01T00:00:00.000Z")],
        "devices": [(1, "echo1", "a", "2026-11-01T00:00:00.000Z"), (2, "echo2", "b", "2026-11-01T00:00:00.000Z")],
        "skills": [("B01", "Cat Facts", "cat facts", "pets-animals")],
        # (id, persona, device, status, started_at, scheduled_for): runs 1-2 and 3-4 are two nights of the
        # 28th (the second past midnight UTC), run 5 the next night's missed control.
        "runs": [(1, 1, 1, "completed", "2026-11-28T20:00:00.000Z", None),
                 (2, 2, 2, "completed", "2026-11-28T20:00:01.000Z", None),
                 (3, 1, 1, "completed", "2026-11-29T00:30:00.000Z", None),
                 (4, 2, 2, "completed", "2026-11-29T00:30:01.000Z", None),
                 (5, 2, None, "missed", "2026-11-30T08:00:00.000Z", "2026-11-29T21:00:00.000Z")],
        "interactions": [(1, 3, 1, 1, 0, 0, "open", "B01", "ok", "2026-11-29T00:30:02.000Z",
                          "2026-11-29T00:30:02.100Z", "2026-11-29T00:30:03.200Z", "2026-11-29T00:30:04.250Z",
                          "2026-11-29T00:30:06.000Z", "welcome to cat facts")],
        "skill_installs": [(1, 3, 1, "B01", 1, "enable", "enabled", "2026-11-29T00:30:07.000Z")],
    }
    columns = {
        "personas": "id, name, interest, is_control, created_at",
        "devices": "id, name, room, created_at",
        "skills": "id, name, invocation_name, category",
        "runs": "id, persona_id, device_id, status, started_at, scheduled_for",
        "interactions": "id, run_id, persona_id, device_id, step_index, attempt, kind, skill_id, status, started_at, "
                        "prompt_started_at, prompt_ended_at, response_started_at, response_ended_at, transcript",
        "skill_installs": "id, run_id, persona_id, skill_id, interaction_id, action, outcome, created_at",
    }
    with engine.begin() as connection:
        for table, values in rows.items():
            marks = ", ".join("?" * len(values[0]))
            for row in values:
                connection.exec_driver_sql(f"INSERT INTO {table} ({columns[table]}) VALUES ({marks})", row)
    log.upgrade(engine)
    engine.dispose()
    assert raw(db_path, "SELECT run_id, night, night_round, persona, persona_interest, is_control FROM run_details "
                        "ORDER BY run_id") == [
        (1, "2026-11-28", 1, "pets", "pets-animals", 0), (2, "2026-11-28", 1, "vanilla", None, 1),
        (3, "2026-11-28", 2, "pets", "pets-animals", 0), (4, "2026-11-28", 2, "vanilla", None, 1),
        (5, "2026-11-29", 1, "vanilla", None, 1)]
    assert raw(db_path, "SELECT night, night_round, persona_interest, is_control, echo, skill_name, skill_category, "
                        "prompt_started_at, prompt_ended_at, response_started_at, response_ended_at "
                        "FROM interaction_details") == [
        ("2026-11-28", 2, "pets-animals", 0, "echo1", "Cat Facts", "pets-animals", "2026-11-29T00:30:02.100Z",
         "2026-11-29T00:30:03.200Z", "2026-11-29T00:30:04.250Z", "2026-11-29T00:30:06.000Z")]
    assert raw(db_path, "SELECT night, night_round, persona_interest, is_control, echo, skill_name, reply_transcript "
                        "FROM install_details") == [
        ("2026-11-28", 2, "pets-animals", 0, "echo1", "Cat Facts", "welcome to cat facts")]
    # The installs of a night are found by their run, not by reading them all.
    plan = " ".join(row[-1] for row in raw(db_path, "EXPLAIN QUERY PLAN SELECT * FROM skill_installs WHERE run_id = 3"))
    assert "ix_skill_installs_run_id" in plan


def test_the_comparison_views_go_back_to_those_of_0005(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    engine = log.make_engine(db_path)
    log.upgrade(engine)
    with engine.begin() as connection:
        command_downgrade(connection, "0005")
    views = [name for (name,) in raw(db_path, "SELECT name FROM sqlite_master WHERE type = 'view' ORDER BY name")]
    assert views == ["install_details", "interaction_details", "run_details"]
    assert "night_round" not in [row[1] for row in raw(db_path, "PRAGMA table_info(run_details)")]
    log.upgrade(engine)
    engine.dispose()
    assert "night_round" in [row[1] for row in raw(db_path, "PRAGMA table_info(interaction_details)")]


def command_downgrade(connection: Any, revision: str) -> None:
    from alembic import command

    config = log.alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, revision)
def test_an_old_log_keeps_its_transcripts_as_the_first_current_ones(db_path: Path, audio_dir: Path) -> None:
    db_path.parent.mkdir(parents=True)
    engine = log.make_engine(db_path)
    log.upgrade(engine, "0007")
    heard, silent = 1, 2
    words = [{"word": "cats", "start": 0.1, "end": 0.4, "conf": 0.9}]
    with engine.begin() as connection:  # rows as 0005 wrote them
        for sql in (
            "INSERT INTO personas (id, name, is_control, created_at) VALUES (1, 'pets', 0, '2026-11-01T00:00:00.000Z')",
            "INSERT INTO devices (id, name, created_at) VALUES (1, 'echo-1', '2026-11-01T00:00:00.000Z')",
            "INSERT INTO runs (id, persona_id, device_id, status, started_at, asr_engine, asr_model, asr_version) "
            "VALUES (1, 1, 1, 'completed', '2026-11-01T00:00:00.000Z', 'vosk', 'vosk-model-small-en-us-0.15', "
            "'vosk 0.3.45')",
        ):
            connection.exec_driver_sql(sql)
        insert = ("INSERT INTO interactions (id, run_id, persona_id, device_id, step_index, attempt, kind, status, "
                  "started_at, finished_at, transcript, words_json, confidence, response_audio) "
                  "VALUES (?, 1, 1, 1, ?, 0, 'ask', ?, '2026-11-01T00:59:00.000Z', '2026-11-01T01:00:00.000Z', "
                  "?, ?, ?, ?)")
        connection.exec_driver_sql(insert, (heard, 0, "ok", "cats purr", json.dumps(words), 0.9, "1/000-0-ask.wav"))
        connection.exec_driver_sql(insert, (silent, 1, "no_response", None, None, None, None))
    log.upgrade(engine)
    engine.dispose()
    assert raw(db_path, "SELECT interaction_id, recording, engine, model, version, created_at, text, words_json, "
                        "confidence, is_current FROM transcripts") == [
        (heard, "1/000-0-ask.wav", "vosk", "vosk-model-small-en-us-0.15", "vosk 0.3.45", "2026-11-01T01:00:00.000Z",
         "cats purr", json.dumps(words), 0.9, 1)]
    assert raw(db_path, "SELECT interaction_id, transcript, transcript_state, transcript_engine FROM "
                        "interaction_details ORDER BY interaction_id") == [
        (heard, "cats purr", "done", "vosk"), (silent, None, None, None)]


def test_a_step_shows_one_current_transcript_and_keeps_the_others(engine: Engine, db_path: Path,
                                                                   audio_dir: Path) -> None:
    run_id = make_run(engine, audio_dir)
    row = log.start_interaction(engine, run_id=run_id, step_index=0, kind="ask")
    log.finish_interaction(engine, row, "ok", transcript="cat fax", confidence=0.5)
    later = log.Heard("cat facts", [{"word": "cat", "start": 0, "end": 0.2, "conf": 0.8}], 0.8,
                      "pocketsphinx", "/models/large", "pocketsphinx 5.1.1")
    newer = log.store_transcript(engine, row, later)
    assert raw(db_path, "SELECT transcript, confidence, transcript_id, transcript_model FROM interaction_details") == [
        ("cat facts", 0.8, newer, "/models/large")]
    assert raw(db_path, "SELECT transcript, engine, is_current FROM transcript_details ORDER BY transcript_id") == [
        ("cat fax", "vosk", 0), ("cat facts", "pocketsphinx", 1)]
    first = raw(db_path, "SELECT id FROM transcripts WHERE NOT is_current")[0][0]
    log.make_current(engine, first)
    assert raw(db_path, "SELECT transcript FROM interactions") == [("cat fax",)]
    with pytest.raises(IntegrityError):  # at most one current transcript per step
        with engine.begin() as connection:
            connection.execute(text("UPDATE transcripts SET is_current = 1"))


def test_every_connection_gets_the_pragmas(engine: Engine) -> None:
    for _ in range(2):
        with engine.connect() as connection:
            pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
            assert pragma("journal_mode") == "wal"
            assert pragma("foreign_keys") == 1
            assert pragma("synchronous") == 1  # NORMAL
            assert pragma("busy_timeout") == 10_000


def test_models_match_the_migrations(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, log.Base.metadata) == []

        # The comparison does notice a difference, so the empty list above means something.
        drifted = MetaData()
        for table in log.Base.metadata.sorted_tables:
            table.to_metadata(drifted)
        drifted.tables["runs"].append_column(Column("extra", Text()))
        assert compare_metadata(context, drifted) != []


def test_transactions_take_the_write_lock_at_begin(engine: Engine, db_path: Path) -> None:
    """A transaction that has only read still blocks other writers: it began IMMEDIATE."""
    other = sqlite3.connect(db_path, timeout=0, isolation_level=None)
    try:
        with engine.begin() as connection:
            connection.execute(select(Run.id)).all()
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()


def test_a_failed_transaction_leaves_nothing_behind(engine: Engine, db_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with log.write_session(engine) as session:
            session.add(log.Persona(name="half-written", interest=None))
            session.flush()
            raise RuntimeError("crash mid-transaction")
    assert raw(db_path, "SELECT count(*) FROM personas") == [(0,)]


# --- write helpers ---------------------------------------------------------------------------


def test_upserts_return_stable_ids(engine: Engine) -> None:
    first = log.upsert_persona(engine, name="vanilla", interest=None, is_control=True)
    again = log.upsert_persona(engine, name="vanilla", interest=None, is_control=True, file_sha256="ab")
    assert first == again
    assert log.upsert_device(engine, name="echo-1") == log.upsert_device(engine, name="echo-1", room="b")

    log.upsert_skill(engine, id="B07XYZ", name="Dog Facts", invocation_name="dog facts", category="pets")
    assert log.upsert_skill(engine, id="B07XYZ", category="Pets & Animals") == "B07XYZ"
    with engine.connect() as connection:
        row = connection.execute(text("SELECT name, invocation_name, category FROM skills")).one()
    # A source that does not know a field leaves the earlier value in place.
    assert tuple(row) == ("Dog Facts", "dog facts", "Pets & Animals")


def test_run_records_provenance(engine: Engine, db_path: Path, audio_dir: Path) -> None:
    run_id = make_run(engine, audio_dir)
    status, config_json, sha, version, host, stored_dir, started = raw(
        db_path,
        "SELECT status, config_json, config_sha256, tool_version, host, audio_dir, started_at "
        "FROM runs WHERE id = ?",
        run_id,
    )[0]
    assert status == "running"
    assert json.loads(config_json) == {"persona": "pets", "rate": 170}
    assert sha == hashlib.sha256(config_json.encode()).hexdigest()
    assert version == log.tool_version() and version
    assert host
    assert stored_dir == str(audio_dir.resolve())
    assert started.endswith("Z")
    clock_sync, accuracy = raw(db_path, "SELECT clock_sync, timestamp_accuracy_seconds FROM runs WHERE id = ?",
                               run_id)[0]
    assert clock_sync in {"synchronized", "unsynchronized", "unknown"}
    assert 0 < accuracy < 1

    log.finish_run(engine, run_id, "completed")
    assert raw(db_path, "SELECT status, finished_at IS NOT NULL FROM runs")[0] == ("completed", 1)
    with pytest.raises(ValueError):
        log.finish_run(engine, run_id, "running")  # type: ignore[arg-type]
    with pytest.raises(LookupError):
        log.finish_run(engine, 999, "failed")


def test_interaction_row_exists_before_the_step_finishes(
    engine: Engine, db_path: Path, audio_dir: Path
) -> None:
    run_id = make_run(engine, audio_dir)
    log.upsert_skill(engine, id="B01", name="Cat Facts", invocation_name="cat facts")
    interaction_id = log.start_interaction(
        engine,
        run_id=run_id,
        step_index=0,
        kind="open",
        skill_id="B01",
        prompt_text="Alexa, open cat facts",
        prompt_audio=audio_dir / "tts-cache" / "open-cat-facts.wav",
    )
    # Committed already: another connection (another process, an analyst) sees it.
    assert raw(db_path, "SELECT status, prompt_audio, attempt FROM interactions") == [
        ("started", "tts-cache/open-cat-facts.wav", 0)
    ]

    prompt_start = datetime(2025, 1, 31, 22, 5, 7, 123456, tzinfo=UTC)
    words = [{"word": "meow", "start": 0.1, "end": 0.4, "conf": 0.93}]
    log.finish_interaction(
        engine,
        interaction_id,
        "ok",
        prompt_started_at=prompt_start,
        prompt_ended_at=prompt_start + timedelta(seconds=1.5),
        response_started_at="2025-01-31T23:05:09.000+01:00",
        prompt_seconds=1.5,
        response_latency_seconds=0.377,
        response_seconds=2.25,
        response_audio="recordings/run-1/0000-0.wav",
        recorded_seconds=3.1,
        transcript="meow",
        words=words,
        confidence=0.93,
        input_overflows=0,
        output_underflows=0,
    )
    row = raw(
        db_path,
        "SELECT status, prompt_started_at, prompt_ended_at, response_started_at, finished_at, "
        "response_audio, words_json, transcript FROM interactions",
    )[0]
    assert row[0] == "ok"
    assert row[1:4] == ("2025-01-31T22:05:07.123Z", "2025-01-31T22:05:08.623Z", "2025-01-31T22:05:09.000Z")
    assert row[4].endswith("Z")
    assert row[5] == "recordings/run-1/0000-0.wav"
    assert json.loads(row[6]) == words
    assert row[7] == "meow"

    # ORM reads give aware datetimes back.
    with log.write_session(engine) as session:
        stored = session.get(Interaction, interaction_id)
        assert stored is not None and stored.prompt_started_at == prompt_start.replace(microsecond=123000)

    log.update_interaction(engine, interaction_id, transcript="meow meow", transcript_ready_delay=0.8)
    assert raw(db_path, "SELECT status, transcript FROM interactions") == [("ok", "meow meow")]


def test_interaction_arguments_are_checked(engine: Engine, audio_dir: Path, tmp_path: Path) -> None:
    run_id = make_run(engine, audio_dir)
    interaction_id = log.start_interaction(engine, run_id=run_id, step_index=0, kind="say")
    with pytest.raises(ValueError):
        log.finish_interaction(engine, interaction_id, "started")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        log.finish_interaction(engine, interaction_id, "fine")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        log.finish_interaction(engine, interaction_id, "ok", colour="blue")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="not inside"):
        log.finish_interaction(engine, interaction_id, "ok", response_audio=tmp_path / "elsewhere.wav")
    with pytest.raises(ValueError, match="timezone"):
        log.finish_interaction(engine, interaction_id, "ok", prompt_started_at=datetime(2025, 1, 1))
    with pytest.raises(LookupError):
        log.start_interaction(engine, run_id=999, step_index=0, kind="say")


def test_audio_paths_are_stored_relative_to_the_resolved_audio_dir(
    engine: Engine, db_path: Path, tmp_path: Path
) -> None:
    real = tmp_path / "disk" / "audio"
    real.mkdir(parents=True)
    link = tmp_path / "audio-link"
    link.symlink_to(real)
    run_id = make_run(engine, link)
    assert raw(db_path, "SELECT audio_dir FROM runs") == [(str(real.resolve()),)]
    interaction_id = log.start_interaction(
        engine, run_id=run_id, step_index=0, kind="say", prompt_audio=link / "tts-cache" / "a.wav"
    )
    log.finish_interaction(engine, interaction_id, "ok", response_audio=real / "recordings" / "1" / "000.wav")
    assert raw(db_path, "SELECT prompt_audio, response_audio FROM interactions") == [
        ("tts-cache/a.wav", "recordings/1/000.wav")
    ]


def test_statuses_of_a_run_with_retries_and_a_crash(engine: Engine, db_path: Path, audio_dir: Path) -> None:
    run_id = make_run(engine, audio_dir)
    first = log.start_interaction(engine, run_id=run_id, step_index=0, kind="open")
    log.finish_interaction(engine, first, "no_response")
    retry = log.start_interaction(engine, run_id=run_id, step_index=0, attempt=1, kind="open")
    log.finish_interaction(engine, retry, "timeout", error="no reply within 8 s")
    log.start_interaction(engine, run_id=run_id, step_index=1, kind="listen")
    log.start_interaction(engine, run_id=run_id, step_index=2, kind="stop")

    # The process "dies" here; the next start cleans up after it.
    assert log.mark_stale_started(engine, run_id) == 2
    log.finish_run(engine, run_id, "interrupted", error="killed")
    assert log.mark_stale_started(engine, run_id) == 0

    rows = raw(
        db_path, "SELECT step_index, attempt, status, finished_at IS NULL FROM interactions ORDER BY id"
    )
    assert rows == [
        (0, 0, "no_response", 0),
        (0, 1, "timeout", 0),
        (1, 0, "interrupted", 1),
        (2, 0, "interrupted", 1),
    ]
    assert raw(db_path, "SELECT status, error FROM runs") == [("interrupted", "killed")]


def test_record_install_and_missed_run(engine: Engine, db_path: Path, audio_dir: Path) -> None:
    run_id = make_run(engine, audio_dir)
    log.upsert_skill(engine, id="B02", name="Wine Pairing")
    step = log.start_interaction(engine, run_id=run_id, step_index=0, kind="enable", skill_id="B02")
    log.finish_interaction(engine, step, "ok", transcript="wine pairing is now enabled")
    install_id = log.record_install(
        engine, run_id=run_id, skill_id="B02", action="enable", outcome="enabled", interaction_id=step
    )
    with log.write_session(engine) as session:
        install = session.get(SkillInstall, install_id)
        assert install is not None
        assert (install.action, install.outcome, install.interaction_id) == ("enable", "enabled", step)
    with pytest.raises(ValueError):
        log.record_install(
            engine, run_id=run_id, skill_id="B02", action="install", outcome=None  # type: ignore[arg-type]
        )

    persona_id = log.upsert_persona(engine, name="wine", interest="wine & beverages")
    missed = log.record_missed_run(
        engine, persona_id=persona_id, device_id=None, scheduled_for="2025-02-01T02:00:00+00:00",
        error="scheduler was down",
    )
    assert raw(db_path, "SELECT status, scheduled_for FROM runs WHERE id = ?", missed) == [
        ("missed", "2025-02-01T02:00:00.000Z")
    ]


def test_foreign_keys_are_enforced(engine: Engine, audio_dir: Path) -> None:
    with pytest.raises(IntegrityError, match="FOREIGN KEY"):
        log.start_run(
            engine, persona_id=999, device_id=999, audio_dir=audio_dir, config={}, asr_engine=None, asr_model=None,
            tts_engine=None, tts_voice=None, tts_rate=None, audio_backend=None,
        )
    run_id = make_run(engine, audio_dir)
    with pytest.raises(IntegrityError, match="FOREIGN KEY"):
        log.start_interaction(engine, run_id=run_id, step_index=0, kind="open", skill_id="unknown")
    with pytest.raises(IntegrityError, match="FOREIGN KEY"):
        log.record_install(engine, run_id=run_id, skill_id="unknown", action="enable", outcome=None)


def test_timestamps_are_fixed_width_utc_text() -> None:
    assert log.to_iso("2025-03-30T03:30:00+02:00") == "2025-03-30T01:30:00.000Z"
    almost_a_second = datetime(2025, 1, 1, 0, 0, 0, 999999, tzinfo=UTC)
    assert log.to_iso(almost_a_second) == "2025-01-01T00:00:00.999Z"  # truncated, never rounded up
    assert len(log.utcnow_iso()) == len("2025-01-01T00:00:00.000Z")
    with pytest.raises(ValueError):
        log.to_iso("2025-01-01T00:00:00")


# --- several processes -----------------------------------------------------------------------

WRITERS = 4
STEPS = 40


def _writer(db_path: str, audio_dir: str, index: int, barrier: Any, errors: Any) -> None:
    """One lab process: migrate, register, then log steps as fast as it can."""
    try:
        barrier.wait()
        engine = log.open_log(Path(db_path))
        run_id = make_run(engine, Path(audio_dir), persona=f"persona-{index % 2}")
        for step in range(STEPS):
            interaction_id = log.start_interaction(engine, run_id=run_id, step_index=step, kind="say")
            log.finish_interaction(engine, interaction_id, "ok", transcript=f"reply {step}")
        log.finish_run(engine, run_id, "completed")
        engine.dispose()
    except Exception as error:  # reported to the parent, which fails the test with it
        errors.put(f"writer {index}: {type(error).__name__}: {error}")


def test_concurrent_writers_do_not_hit_database_is_locked(db_path: Path, audio_dir: Path) -> None:
    """Processes start together on a fresh file: concurrent migration, upserts and read-then-write
    transactions (start_interaction reads the run, then inserts) that fail without BEGIN IMMEDIATE."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WRITERS)
    errors = context.Queue()
    processes = [
        context.Process(target=_writer, args=(str(db_path), str(audio_dir), i, barrier, errors))
        for i in range(WRITERS)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert problems == []
    assert [p.exitcode for p in processes] == [0] * WRITERS
    assert raw(db_path, "SELECT count(*) FROM interactions WHERE status = 'ok'") == [(WRITERS * STEPS,)]
    assert raw(db_path, "SELECT count(*) FROM personas") == [(2,)]
    assert raw(db_path, "SELECT DISTINCT status FROM runs") == [("completed",)]
