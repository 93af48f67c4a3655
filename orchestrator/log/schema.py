"""The interaction log's schema: its tables as SQLAlchemy models, and how moments are stored.

Analysts read the log with plain SQL, so the table and column names below are a public contract
(docs/log.md describes each). The Alembic migrations in ``orchestrator/log/migrations`` make the
tables; these models describe them.

Timestamps are stored as fixed-width ISO-8601 UTC text (``2025-01-31T22:05:07.123Z``): readable in
any SQLite shell, ordered correctly by plain text comparison, and understood by SQLite's date
functions (``julianday(response_started_at) - julianday(prompt_ended_at)``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, get_args

from sqlalchemy import Boolean, Dialect, Float, ForeignKey, Index, Integer, MetaData, Text, TypeDecorator, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

RunStatus = Literal["running", "completed", "failed", "interrupted", "missed"]
InteractionStatus = Literal[
    "started", "ok", "no_response", "max_length", "timeout", "error", "interrupted", "skipped"
]
InstallAction = Literal["enable", "disable"]
RigVerdict = Literal["ok", "silent", "crosstalk", "device_error"]
TranscriptState = Literal["pending", "working", "done", "failed"]
CaptureSource = Literal["night", "import"]
FlowLink = Literal["interaction", "background"]

RUN_STATUSES: frozenset[str] = frozenset(get_args(RunStatus))
INTERACTION_STATUSES: frozenset[str] = frozenset(get_args(InteractionStatus))
INSTALL_ACTIONS: frozenset[str] = frozenset(get_args(InstallAction))
RIG_VERDICTS: frozenset[str] = frozenset(get_args(RigVerdict))
TRANSCRIPT_STATES: frozenset[str] = frozenset(get_args(TranscriptState))


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
    mac: Mapped[str | None]  # the Echo's network identity, as the lab file gives it
    ip: Mapped[str | None]


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
    clock_sync: Mapped[str | None]  # synchronized | unsynchronized | unknown: the host clock at the start
    clock_source: Mapped[str | None]  # chrony | timedatectl, or NULL when neither answered
    clock_offset_seconds: Mapped[float | None]  # the host clock's offset from its time source, as reported
    timestamp_accuracy_seconds: Mapped[float | None]  # how far a logged moment may be from the true one


class Interaction(Base):
    """One attempt at one step of a run; a retry is a new row with ``attempt`` + 1."""

    __tablename__ = "interactions"
    __table_args__ = (
        Index("ix_interactions_run_id", "run_id"),
        Index("ix_interactions_persona_id_started_at", "persona_id", "started_at"),
        Index("ix_interactions_status", "status"),
        Index("ix_interactions_skill_id", "skill_id"),
        Index("ix_interactions_reply_outcome", "reply_outcome"),
        # What the reports across nights read of every step, in the order they sum it (migration 0007).
        Index("ix_interactions_replies", "run_id", "skill_id", "prompt_text", "status", "reply_outcome", "transcript",
              "response_latency_seconds", "response_seconds"),
        Index("ix_interactions_transcript_state", "transcript_state"),
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
    # Where the transcript is: pending (queued), working (claimed), done, failed; NULL: no recording.
    transcript_state: Mapped[str | None]
    transcript_claim: Mapped[str | None]  # "host:pid" of the transcriber working on it
    transcript_tries: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    transcript_error: Mapped[str | None]


class Transcript(Base):
    """One transcript of a step's recording; `interactions.transcript` copies the current one."""

    __tablename__ = "transcripts"
    __table_args__ = (
        Index("ix_transcripts_interaction_id", "interaction_id"),
        Index("uq_transcripts_current", "interaction_id", unique=True, sqlite_where=text("is_current = 1")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    interaction_id: Mapped[int] = mapped_column(ForeignKey("interactions.id"))
    recording: Mapped[str | None]  # relative to the run's audio_dir, as interactions.response_audio
    engine: Mapped[str | None]  # vosk | pocketsphinx
    model: Mapped[str | None]  # the model folder
    version: Mapped[str | None]  # the recognizer library, e.g. "pocketsphinx 5.1.1"
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    text: Mapped[str]
    words_json: Mapped[str | None]
    confidence: Mapped[float | None]
    audio_seconds: Mapped[float | None]
    decode_seconds: Mapped[float | None]
    is_current: Mapped[bool] = mapped_column(default=False)


class SkillInstall(Base):
    """An enable or disable of a skill, as the persona asked for it and as Alexa answered."""

    __tablename__ = "skill_installs"
    __table_args__ = (
        Index("ix_skill_installs_persona_id_skill_id", "persona_id", "skill_id"),
        Index("ix_skill_installs_run_id", "run_id"),
    )

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


class Capture(Base):
    """One capture file: made by a night's tcpdump, or imported from the lab's access point."""

    __tablename__ = "captures"

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str]  # night | import
    path: Mapped[str]
    sha256: Mapped[str | None]
    bytes: Mapped[int | None]
    interface: Mapped[str | None]
    filter: Mapped[str | None]
    snap_length: Mapped[int | None]
    # The one Echo the file holds (an import with --echo); NULL: every Echo with a network identity.
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"))
    # Added to the file's packet times to put them on the log's clock.
    clock_offset_seconds: Mapped[float] = mapped_column(default=0.0)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    first_packet_at: Mapped[datetime | None]
    last_packet_at: Mapped[datetime | None]
    packets: Mapped[int | None]
    packets_dropped: Mapped[int | None]
    host: Mapped[str | None]
    error: Mapped[str | None]
    analyzed_at: Mapped[datetime | None]


class Flow(Base):
    """One conversation of an Echo with a remote address and port, as read from a capture."""

    __tablename__ = "flows"
    __table_args__ = (
        Index("ix_flows_capture_id", "capture_id"),
        Index("ix_flows_interaction_id", "interaction_id"),
        Index("ix_flows_device_id_first_packet_at", "device_id", "first_packet_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    capture_id: Mapped[int] = mapped_column(ForeignKey("captures.id"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    interaction_id: Mapped[int | None] = mapped_column(ForeignKey("interactions.id"))
    link: Mapped[str]  # interaction | background
    protocol: Mapped[str]  # tcp | udp | icmp | ...
    echo_address: Mapped[str | None]
    echo_port: Mapped[int | None]
    remote_address: Mapped[str | None]
    remote_port: Mapped[int | None]
    first_packet_at: Mapped[datetime]
    last_packet_at: Mapped[datetime]
    packets_out: Mapped[int]
    bytes_out: Mapped[int]
    packets_in: Mapped[int]
    bytes_in: Mapped[int]
    name: Mapped[str | None]  # the name behind the remote address
    name_source: Mapped[str | None]  # tls_sni | http_host | dns_query | dns_answer
    domain: Mapped[str | None]  # the name's registrable domain (public suffix list)
    tracker: Mapped[bool | None]  # on the operator's advertising/tracking list; NULL without a list
