"""The interaction log: one SQLite file that records every run and every step a persona attempted.

Analysts read this file with plain SQL, so the table and column names below are a public contract.
The layout follows OpenWPM's ``crawl_history``: a row is written with status ``'started'`` *before*
a step executes and is updated when it ends, so a process killed mid-step still leaves a visible
row (later turned into ``'interrupted'`` by :func:`mark_stale_started`) and gaps are never silent.

Timestamps are stored as fixed-width ISO-8601 UTC text (``2025-01-31T22:05:07.123Z``): readable in
any SQLite shell, ordered correctly by plain text comparison, and understood by SQLite's date
functions (``julianday(response_started_at) - julianday(prompt_ended_at)``).

The schema is created and changed only by the Alembic migrations in ``orchestrator/log/migrations``;
:func:`open_log` applies them. Several processes write to the same file, so every connection runs
in WAL mode with a busy timeout, and every transaction starts with ``BEGIN IMMEDIATE``: a writer
takes the write lock up front and waits for it, instead of failing with "database is locked" when
a read transaction tries to upgrade to a write.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Any, Literal, TypedDict, Unpack, get_args

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Boolean,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Text,
    TypeDecorator,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

DIST_NAME = "echo-orchestrator"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: How long a connection waits for another process's write lock before giving up.
BUSY_TIMEOUT_S = 10.0

RunStatus = Literal["running", "completed", "failed", "interrupted", "missed"]
InteractionStatus = Literal[
    "started", "ok", "no_response", "max_length", "timeout", "error", "interrupted", "skipped"
]
InstallAction = Literal["enable", "disable"]
RigVerdict = Literal["ok", "silent", "crosstalk", "device_error"]

RUN_STATUSES: frozenset[str] = frozenset(get_args(RunStatus))
INTERACTION_STATUSES: frozenset[str] = frozenset(get_args(InteractionStatus))
INSTALL_ACTIONS: frozenset[str] = frozenset(get_args(InstallAction))
RIG_VERDICTS: frozenset[str] = frozenset(get_args(RigVerdict))

# ---------------------------------------------------------------------------------------------
# Time
# ---------------------------------------------------------------------------------------------


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def to_utc(value: datetime | str) -> datetime:
    """A timezone-aware datetime or ISO-8601 text with an offset, as an aware UTC datetime.

    Naive values are refused: a lab clock's local time would silently shift rows by hours.
    """
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no timezone; the log stores UTC moments only")
    return moment.astimezone(UTC)


def to_iso(value: datetime | str) -> str:
    """Render a moment as the log's canonical text: UTC, millisecond precision, ``Z`` suffix.

    One fixed-width form for every row is what makes ``ORDER BY started_at`` and ``WHERE
    started_at >= '2025-02-01'`` correct as plain text comparisons. Strings are parsed and
    re-rendered so a caller's ``+00:00`` or ``+01:00`` offset cannot break that ordering.
    """
    text = to_utc(value).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


def utcnow_iso() -> str:
    """The current time in the log's canonical text form."""
    return to_iso(utcnow())


class UtcTimestamp(TypeDecorator[datetime]):
    """An aware datetime in Python, ISO-8601 UTC text in the database (see :func:`to_iso`)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: datetime | str | None, dialect: Dialect) -> str | None:
        return None if value is None else to_iso(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

# Named constraints let future SQLite "batch" migrations find and alter them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        str: Text(),
        int: Integer(),
        float: Float(),
        bool: Boolean(),
        datetime: UtcTimestamp(),
    }


class Persona(Base):
    """A simulated user; ``interest`` is NULL for the control persona that installs nothing."""

    __tablename__ = "personas"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)
    interest: Mapped[str | None]
    is_control: Mapped[bool] = mapped_column(default=False)
    file_path: Mapped[str | None]
    file_sha256: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Device(Base):
    """An Echo and the sound devices that talk to it, named as in the lab file."""

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)
    room: Mapped[str | None]
    speaker_device: Mapped[str | None]
    microphone_device: Mapped[str | None]
    audio_backend: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Skill(Base):
    """An Alexa skill; ``id`` is the store ASIN where known, so it stays stable across catalogs."""

    __tablename__ = "skills"

    id: Mapped[str] = mapped_column(primary_key=True)
    name: Mapped[str | None]
    invocation_name: Mapped[str | None]
    category: Mapped[str | None]


class Run(Base):
    """One persona's session on one device, with everything needed to reproduce it."""

    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_persona_id_started_at", "persona_id", "started_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    persona_id: Mapped[int] = mapped_column(ForeignKey("personas.id"))
    # NULL only for a missed run whose device could not be resolved.
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"))
    status: Mapped[str]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    scheduled_for: Mapped[datetime | None]
    tool_version: Mapped[str | None]
    config_sha256: Mapped[str | None]
    config_json: Mapped[str | None]
    tts_engine: Mapped[str | None]
    tts_voice: Mapped[str | None]
    tts_rate: Mapped[float | None]
    audio_backend: Mapped[str | None]
    host: Mapped[str | None]
    # Absolute; interactions.prompt_audio / response_audio are relative to it.
    audio_dir: Mapped[str | None]
    error: Mapped[str | None]
    # The rig self-test that cleared (or stopped) this run; NULL when the night skipped it.
    rig_check_id: Mapped[int | None] = mapped_column(ForeignKey("rig_checks.id"))
    asr_engine: Mapped[str | None]  # vosk | pocketsphinx
    asr_model: Mapped[str | None]  # the model folder
    asr_version: Mapped[str | None]  # the recognizer library, e.g. "pocketsphinx 5.1.1"


class Interaction(Base):
    """One attempt at one step of a run; a retry is a new row with ``attempt`` + 1."""

    __tablename__ = "interactions"
    __table_args__ = (
        Index("ix_interactions_run_id", "run_id"),
        Index("ix_interactions_persona_id_started_at", "persona_id", "started_at"),
        Index("ix_interactions_status", "status"),
        Index("ix_interactions_skill_id", "skill_id"),
        Index("ix_interactions_reply_outcome", "reply_outcome"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    persona_id: Mapped[int] = mapped_column(ForeignKey("personas.id"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    step_index: Mapped[int]
    attempt: Mapped[int] = mapped_column(default=0)
    skill_id: Mapped[str | None] = mapped_column(ForeignKey("skills.id"))
    kind: Mapped[str]
    prompt_text: Mapped[str | None]
    prompt_audio: Mapped[str | None]
    status: Mapped[str]
    error: Mapped[str | None]
    started_at: Mapped[datetime]
    prompt_started_at: Mapped[datetime | None]
    prompt_ended_at: Mapped[datetime | None]
    response_started_at: Mapped[datetime | None]
    response_ended_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    prompt_seconds: Mapped[float | None]
    response_latency_seconds: Mapped[float | None]
    response_seconds: Mapped[float | None]
    response_audio: Mapped[str | None]
    recorded_seconds: Mapped[float | None]
    end_detect_delay: Mapped[float | None]
    transcript: Mapped[str | None]
    words_json: Mapped[str | None]
    confidence: Mapped[float | None]
    transcript_ready_delay: Mapped[float | None]
    asr_rtf: Mapped[float | None]
    input_overflows: Mapped[int | None]
    output_underflows: Mapped[int | None]
    reply_outcome: Mapped[str | None]
    reply_outcome_score: Mapped[float | None]
    reply_outcome_rule: Mapped[str | None]
    expectation_met: Mapped[bool | None]
    reply_heard_skill: Mapped[str | None]  # for 'other_skill': the skill the reply welcomed the user to


class SkillInstall(Base):
    """An enable or disable of a skill, as the persona asked for it and as Alexa answered."""

    __tablename__ = "skill_installs"
    __table_args__ = (Index("ix_skill_installs_persona_id_skill_id", "persona_id", "skill_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    persona_id: Mapped[int] = mapped_column(ForeignKey("personas.id"))
    skill_id: Mapped[str] = mapped_column(ForeignKey("skills.id"))
    interaction_id: Mapped[int | None] = mapped_column(ForeignKey("interactions.id"))
    action: Mapped[str]
    outcome: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RigCheck(Base):
    """One rig self-test: each probed Echo's speaker played a tone while every microphone listened."""

    __tablename__ = "rig_checks"

    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    host: Mapped[str | None]
    trigger: Mapped[str]  # 'night' (before a night's runs) or 'manual' (`orchestrator lab check`)
    probe_level_dbfs: Mapped[float]
    min_level_dbfs: Mapped[float]
    max_crosstalk_dbfs: Mapped[float]
    min_snr_db: Mapped[float]
    passed: Mapped[bool]


class RigCheckResult(Base):
    """The verdict on one probed Echo: its microphone heard its probe, and no other room did."""

    __tablename__ = "rig_check_results"
    __table_args__ = (Index("ix_rig_check_results_rig_check_id", "rig_check_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rig_check_id: Mapped[int] = mapped_column(ForeignKey("rig_checks.id"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    probe_hz: Mapped[float]
    status: Mapped[str]
    level_dbfs: Mapped[float | None]
    noise_dbfs: Mapped[float | None]
    error: Mapped[str | None]


class RigCheckLevel(Base):
    """How loud one speaker's probe was on one microphone, against that microphone's noise."""

    __tablename__ = "rig_check_levels"
    __table_args__ = (Index("ix_rig_check_levels_rig_check_id", "rig_check_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rig_check_id: Mapped[int] = mapped_column(ForeignKey("rig_checks.id"))
    speaker_device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    microphone_device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    same_room: Mapped[bool]
    level_dbfs: Mapped[float]
    noise_dbfs: Mapped[float]


# ---------------------------------------------------------------------------------------------
# Engine, migrations, sessions
# ---------------------------------------------------------------------------------------------


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    """Per-connection settings; SQLite forgets all but journal_mode when a connection closes."""
    # Take transaction control away from the sqlite3 module so _on_begin decides how to BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # NORMAL survives an application crash; only a power loss may lose the last commits.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _on_begin(connection: Connection) -> None:
    """Start every transaction holding the write lock, waiting up to the busy timeout for it."""
    if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(db_path: Path | str) -> Engine:
    """An engine for an existing log file, with the pragmas and locking described above.

    Use :func:`open_log` instead unless the schema must not be touched (e.g. in a migration).
    """
    url = URL.create("sqlite", database=str(db_path))
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
    event.listen(engine, "connect", _on_connect)
    event.listen(engine, "begin", _on_begin)
    return engine


def alembic_config(db_path: Path | str | None = None) -> Config:
    """An Alembic ``Config`` for the packaged migrations; no alembic.ini is needed.

    With ``db_path``, Alembic commands (``command.revision(cfg, autogenerate=True, ...)``,
    ``command.current(cfg)``) can be run against that file directly.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if db_path is not None:
        url = URL.create("sqlite", database=str(db_path)).render_as_string()
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


#: Alembic keeps its migration context in module globals: one migration at a time per process.
_MIGRATION_LOCK = threading.Lock()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` inside one ``BEGIN IMMEDIATE`` transaction.

    Holding the write lock for the whole upgrade means two processes starting at once cannot
    both try to create the tables: the second waits, then finds the schema already current.
    """
    config = alembic_config()
    with _MIGRATION_LOCK, engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def open_log(db_path: Path | str) -> Engine:
    """Open (creating if needed) the log at ``db_path`` and migrate it to the current schema."""
    path = Path(db_path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(path)
    upgrade(engine)
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (the runner keeps rows it wrote)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A session in one transaction that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


# ---------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def tool_version() -> str:
    """The installed version of this tool, stored with every run."""
    try:
        return importlib.metadata.version(DIST_NAME)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, so equal configs give equal text and equal hashes."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _text(value: str | PurePath | None) -> str | None:
    return None if value is None else str(value)


# ---------------------------------------------------------------------------------------------
# Write helpers: each is one transaction, committed before it returns.
# ---------------------------------------------------------------------------------------------


def _check(value: str, allowed: frozenset[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {sorted(allowed)}")


def upsert_persona(
    engine: Engine,
    *,
    name: str,
    interest: str | None,
    is_control: bool = False,
    file_path: str | PurePath | None = None,
    file_sha256: str | None = None,
) -> int:
    """Insert or update the persona called ``name`` and return its id."""
    values = {
        "interest": interest,
        "is_control": is_control,
        "file_path": _text(file_path),
        "file_sha256": file_sha256,
    }
    stmt = (
        sqlite_insert(Persona)
        .values(name=name, created_at=utcnow(), **values)
        .on_conflict_do_update(index_elements=[Persona.name], set_=values)
        .returning(Persona.id)
    )
    with engine.begin() as connection:
        return connection.execute(stmt).scalar_one()


def upsert_device(
    engine: Engine,
    *,
    name: str,
    room: str | None = None,
    speaker_device: str | None = None,
    microphone_device: str | None = None,
    audio_backend: str | None = None,
) -> int:
    """Insert or update the device called ``name`` and return its id."""
    values = {
        "room": room,
        "speaker_device": speaker_device,
        "microphone_device": microphone_device,
        "audio_backend": audio_backend,
    }
    stmt = (
        sqlite_insert(Device)
        .values(name=name, created_at=utcnow(), **values)
        .on_conflict_do_update(index_elements=[Device.name], set_=values)
        .returning(Device.id)
    )
    with engine.begin() as connection:
        return connection.execute(stmt).scalar_one()


def upsert_skill(
    engine: Engine,
    *,
    id: str,
    name: str | None = None,
    invocation_name: str | None = None,
    category: str | None = None,
) -> str:
    """Insert or update a skill; a ``None`` field keeps what an earlier source already recorded."""
    stmt = sqlite_insert(Skill).values(
        id=id, name=name, invocation_name=invocation_name, category=category
    )
    columns = ("name", "invocation_name", "category")
    stmt = stmt.on_conflict_do_update(
        index_elements=[Skill.id],
        set_={c: func.coalesce(stmt.excluded[c], Skill.__table__.c[c]) for c in columns},
    )
    with engine.begin() as connection:
        connection.execute(stmt)
    return id


def start_run(
    engine: Engine,
    *,
    persona_id: int,
    device_id: int,
    audio_dir: Path,
    config: Mapping[str, Any] | str,
    asr_engine: str | None,
    asr_model: str | PurePath | None,
    asr_version: str | None = None,
    tts_engine: str | None,
    tts_voice: str | None,
    tts_rate: float | None,
    audio_backend: str | None,
    scheduled_for: datetime | str | None = None,
    host: str | None = None,
    rig_check_id: int | None = None,
) -> int:
    """Record the start of a run with its provenance and return the run id.

    ``config`` is the resolved configuration (a mapping, stored as canonical JSON, or JSON text);
    its SHA-256 lets analysts group runs that used the same settings.
    """
    if isinstance(config, str):
        json.loads(config)  # refuse text that analysts could not parse back
        config_json = config
    else:
        config_json = canonical_json(config)
    run = Run(
        persona_id=persona_id,
        device_id=device_id,
        status="running",
        started_at=utcnow(),
        scheduled_for=None if scheduled_for is None else to_utc(scheduled_for),
        tool_version=tool_version(),
        config_sha256=sha256_text(config_json),
        config_json=config_json,
        asr_engine=asr_engine,
        asr_model=_text(asr_model),
        asr_version=asr_version,
        tts_engine=tts_engine,
        tts_voice=tts_voice,
        tts_rate=tts_rate,
        audio_backend=audio_backend,
        host=host or socket.gethostname(),
        audio_dir=str(Path(audio_dir).expanduser().resolve()),
        rig_check_id=rig_check_id,
    )
    with write_session(engine) as session:
        session.add(run)
        session.flush()
        return run.id


def record_missed_run(
    engine: Engine,
    *,
    persona_id: int,
    device_id: int | None,
    scheduled_for: datetime | str,
    error: str | None = None,
    host: str | None = None,
) -> int:
    """Record a scheduled run that never started (e.g. the scheduler was down), so it is not silent."""
    return record_unstarted_run(engine, persona_id=persona_id, device_id=device_id, status="missed",
                                scheduled_for=scheduled_for, error=error, host=host)


def record_unstarted_run(
    engine: Engine,
    *,
    persona_id: int,
    device_id: int | None,
    status: Literal["missed", "failed"],
    scheduled_for: datetime | str | None,
    error: str | None = None,
    host: str | None = None,
    rig_check_id: int | None = None,
) -> int:
    """A run that never began: `missed` (it was not started) or `failed` (it could not start)."""
    now = utcnow()
    run = Run(
        persona_id=persona_id,
        device_id=device_id,
        status=status,
        started_at=now,
        finished_at=now,
        scheduled_for=to_utc(scheduled_for) if scheduled_for is not None else None,
        tool_version=tool_version(),
        host=host or socket.gethostname(),
        error=error,
        rig_check_id=rig_check_id,
    )
    with write_session(engine) as session:
        session.add(run)
        session.flush()
        return run.id


def finish_run(engine: Engine, run_id: int, status: RunStatus, error: str | None = None) -> None:
    """Close a run with its final status."""
    _check(status, RUN_STATUSES - {"running"}, "final run status")
    stmt = (
        update(Run)
        .where(Run.id == run_id)
        .values(status=status, finished_at=utcnow(), error=error)
    )
    with engine.begin() as connection:
        if connection.execute(stmt).rowcount != 1:
            raise LookupError(f"no run with id {run_id}")


def _audio_path(value: str | PurePath | None, audio_dir: str | None) -> str | None:
    """The stored form of an audio path: POSIX text relative to the run's audio_dir.

    Absolute paths are made relative here so the log stays valid when the audio folder is
    moved or copied to an analyst's machine along with the database.
    """
    if value is None:
        return None
    path = Path(value)
    if path.is_absolute():
        if audio_dir is None:
            raise ValueError(f"{path} is absolute but the run has no audio_dir")
        # audio_dir is stored resolved; resolve the folder (not a symlinked file) to match it.
        for candidate in (path, path.parent.resolve() / path.name):
            if candidate.is_relative_to(audio_dir):
                return candidate.relative_to(audio_dir).as_posix()
        raise ValueError(f"{path} is not inside the run's audio_dir {audio_dir}")
    return path.as_posix()


def start_interaction(
    engine: Engine,
    *,
    run_id: int,
    step_index: int,
    kind: str,
    attempt: int = 0,
    skill_id: str | None = None,
    prompt_text: str | None = None,
    prompt_audio: str | PurePath | None = None,
) -> int:
    """Insert the row for a step about to execute (status ``'started'``) and return its id.

    Committed before the step runs, so a crash or kill during the step leaves this row behind.
    """
    with write_session(engine) as session:
        run = session.execute(
            select(Run.persona_id, Run.device_id, Run.audio_dir).where(Run.id == run_id)
        ).one_or_none()
        if run is None:
            raise LookupError(f"no run with id {run_id}")
        if run.device_id is None:
            raise ValueError(f"run {run_id} has no device; it cannot have interactions")
        interaction = Interaction(
            run_id=run_id,
            persona_id=run.persona_id,
            device_id=run.device_id,
            step_index=step_index,
            attempt=attempt,
            skill_id=skill_id,
            kind=kind,
            prompt_text=prompt_text,
            prompt_audio=_audio_path(prompt_audio, run.audio_dir),
            status="started",
            started_at=utcnow(),
        )
        session.add(interaction)
        session.flush()
        return interaction.id


class InteractionFields(TypedDict, total=False):
    """What a finished step can report; every key is an ``interactions`` column except ``words``."""

    error: str | None
    prompt_text: str | None
    prompt_audio: str | PurePath | None
    prompt_started_at: datetime | str | None
    prompt_ended_at: datetime | str | None
    response_started_at: datetime | str | None
    response_ended_at: datetime | str | None
    finished_at: datetime | str | None
    prompt_seconds: float | None
    response_latency_seconds: float | None
    response_seconds: float | None
    response_audio: str | PurePath | None
    recorded_seconds: float | None
    end_detect_delay: float | None
    transcript: str | None
    #: Vosk-style word list ``[{"word", "start", "end", "conf"}, ...]``, stored in words_json.
    words: Sequence[Mapping[str, Any]] | None
    confidence: float | None
    transcript_ready_delay: float | None
    asr_rtf: float | None
    input_overflows: int | None
    output_underflows: int | None
    reply_outcome: str | None
    reply_outcome_score: float | None
    reply_outcome_rule: str | None
    reply_heard_skill: str | None
    expectation_met: bool | None


_INTERACTION_FIELDS = frozenset(InteractionFields.__annotations__)
_TIMESTAMP_FIELDS = frozenset(
    {"prompt_started_at", "prompt_ended_at", "response_started_at", "response_ended_at", "finished_at"}
)


def _interaction_values(fields: Mapping[str, Any], audio_dir: str | None) -> dict[str, Any]:
    unknown = set(fields) - _INTERACTION_FIELDS
    if unknown:
        raise TypeError(f"not an interaction field: {', '.join(sorted(unknown))}")
    values = dict(fields)
    if "words" in values:
        words = values.pop("words")
        values["words_json"] = None if words is None else canonical_json(list(words))
    for key in ("prompt_audio", "response_audio"):
        if key in values:
            values[key] = _audio_path(values[key], audio_dir)
    for key in _TIMESTAMP_FIELDS & values.keys():
        if values[key] is not None:
            values[key] = to_utc(values[key])
    return values


def _update_interaction(
    engine: Engine, interaction_id: int, fields: Mapping[str, Any], status: str | None = None
) -> None:
    with write_session(engine) as session:
        interaction = session.get(Interaction, interaction_id)
        if interaction is None:
            raise LookupError(f"no interaction with id {interaction_id}")
        audio_dir = session.scalar(select(Run.audio_dir).where(Run.id == interaction.run_id))
        for key, value in _interaction_values(fields, audio_dir).items():
            setattr(interaction, key, value)
        if status is not None:
            interaction.status = status


def finish_interaction(
    engine: Engine, interaction_id: int, status: InteractionStatus, **fields: Unpack[InteractionFields]
) -> None:
    """Record how a step ended: its status plus any of :class:`InteractionFields`.

    ``finished_at`` defaults to now. Audio paths may be absolute (inside the run's audio_dir) or
    already relative to it.
    """
    _check(status, INTERACTION_STATUSES - {"started"}, "final interaction status")
    fields.setdefault("finished_at", utcnow())
    _update_interaction(engine, interaction_id, fields, status)


def update_interaction(
    engine: Engine, interaction_id: int, **fields: Unpack[InteractionFields]
) -> None:
    """Add fields to a step without changing its status, e.g. a transcript that arrives later."""
    _update_interaction(engine, interaction_id, fields)


def record_install(
    engine: Engine,
    *,
    run_id: int,
    skill_id: str,
    action: InstallAction,
    outcome: str | None,
    interaction_id: int | None = None,
) -> int:
    """Record an enable/disable of a skill for the run's persona and return the row id."""
    _check(action, INSTALL_ACTIONS, "install action")
    with write_session(engine) as session:
        persona_id = session.scalar(select(Run.persona_id).where(Run.id == run_id))
        if persona_id is None:
            raise LookupError(f"no run with id {run_id}")
        install = SkillInstall(
            run_id=run_id,
            persona_id=persona_id,
            skill_id=skill_id,
            interaction_id=interaction_id,
            action=action,
            outcome=outcome,
            created_at=utcnow(),
        )
        session.add(install)
        session.flush()
        return install.id


def record_rig_check(engine: Engine, check: RigCheck, results: Sequence[RigCheckResult],
                     levels: Sequence[RigCheckLevel]) -> int:
    """Store a rig self-test with its verdicts and levels in one transaction; return its id."""
    _check(check.trigger, frozenset({"night", "manual"}), "rig check trigger")
    for result in results:
        _check(result.status, RIG_VERDICTS, "rig check verdict")
    with write_session(engine) as session:
        session.add(check)
        session.flush()
        for row in [*results, *levels]:
            row.rig_check_id = check.id
            session.add(row)
        return check.id


def mark_stale_started(
    engine: Engine, run_id: int, error: str = "the run ended before this step finished"
) -> int:
    """Turn the ``'started'`` rows of a dead run into ``'interrupted'``; return how many.

    ``finished_at`` stays NULL: when the step really stopped is unknown.
    """
    stmt = (
        update(Interaction)
        .where(Interaction.run_id == run_id, Interaction.status == "started")
        .values(status="interrupted", error=error)
    )
    with engine.begin() as connection:
        return connection.execute(stmt).rowcount


@dataclass(frozen=True)
class ResumeState:
    """What an interrupted run has behind it, as its rows tell."""

    persona: str
    steps: list[str]  # the words of every planned step, as recorded when the run began
    done: set[int]  # steps not to repeat
    attempts: dict[int, int]  # retry number for steps that were interrupted
    enable_outcomes: dict[str, str | None]  # skill id -> what the last enable reply meant
    open_outcomes: dict[str, tuple[str | None, str | None]]  # skill id -> the last open's verdict, skill heard


#: An interrupted step is retried once; interrupted again, it is left behind.
MAX_ATTEMPTS = 2


def resume_state(engine: Engine, run_id: int) -> ResumeState:
    """What an interrupted run has behind it; `reopen_run` once the caller has decided to continue it."""
    mark_stale_started(engine, run_id)
    with write_session(engine) as session:
        run = session.get(Run, run_id)
        if run is None:
            raise LookupError(f"no run with id {run_id}")
        if run.status == "completed":
            raise ValueError(f"run {run_id} is completed; there is nothing to resume")
        persona = session.scalar(select(Persona.name).where(Persona.id == run.persona_id)) or ""
        rows = session.execute(
            select(Interaction.step_index, Interaction.attempt, Interaction.status, Interaction.kind,
                   Interaction.skill_id, Interaction.reply_outcome, Interaction.reply_heard_skill)
            .where(Interaction.run_id == run_id).order_by(Interaction.step_index, Interaction.attempt)
        ).all()
        if run.config_json is None:
            raise ValueError(f"run {run_id} never began; there is nothing to resume")
        steps = json.loads(run.config_json).get("steps", [])
    return _resume_from_rows(persona, steps, rows)


def reopen_run(engine: Engine, run_id: int) -> None:
    """Mark a run running again, for a worker that continues it."""
    stmt = update(Run).where(Run.id == run_id).values(status="running", finished_at=None, error=None)
    with engine.begin() as connection:
        connection.execute(stmt)


def _resume_from_rows(persona: str, steps: list[str], rows: Sequence[Any]) -> ResumeState:
    done: set[int] = set()
    attempts: dict[int, int] = {}
    enable_outcomes: dict[str, str | None] = {}
    open_outcomes: dict[str, tuple[str | None, str | None]] = {}
    for index, attempt, status, kind, skill_id, outcome, heard in rows:
        if status == "interrupted" and attempt + 1 < MAX_ATTEMPTS:
            attempts[index] = attempt + 1
            done.discard(index)
            continue
        done.add(index)
        attempts.pop(index, None)
        if kind == "enable" and skill_id:
            enable_outcomes[skill_id] = outcome
        elif kind == "open" and skill_id:
            open_outcomes[skill_id] = (outcome, heard)
    return ResumeState(persona, steps, done, attempts, enable_outcomes, open_outcomes)


def resumable_run(engine: Engine, persona: str, since: datetime) -> int | None:
    """The persona's latest run since `since` that stopped before its end, if any."""
    stmt = (
        select(Run.id).join(Persona, Persona.id == Run.persona_id)
        .where(Persona.name == persona, Run.status.in_(("interrupted", "running")), Run.started_at >= since,
               Run.config_json.is_not(None))
        .order_by(Run.started_at.desc()).limit(1)
    )
    with engine.connect() as connection:
        return connection.execute(stmt).scalar()


def adopt_response_audio(engine: Engine, run_id: int, step_index: int, attempt: int, path: PurePath) -> bool:
    """Point a step's row at its recording if nothing points at it yet; True if it did."""
    with write_session(engine) as session:
        row = session.scalar(select(Interaction).where(
            Interaction.run_id == run_id, Interaction.step_index == step_index, Interaction.attempt == attempt))
        if row is None or row.response_audio is not None:
            return False
        audio_dir = session.scalar(select(Run.audio_dir).where(Run.id == run_id))
        row.response_audio = _audio_path(path, audio_dir)
        return True
