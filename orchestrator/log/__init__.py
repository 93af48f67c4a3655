"""The interaction log: one SQLite file that records every run and every step a persona attempted.

Analysts read this file with plain SQL, so the table and column names are a public contract. The
layout follows OpenWPM's ``crawl_history``: a row is written with status ``'started'`` *before* a
step executes and is updated when it ends, so a process killed mid-step still leaves a visible row
(later turned into ``'interrupted'`` by :func:`mark_stale_started`) and gaps are never silent.

- schema.py: the tables as models, and moments stored as ISO-8601 UTC text;
- engine.py: the engine (WAL, busy timeout, ``BEGIN IMMEDIATE``), migrations, sessions;
- write.py: the write helpers, one transaction each;
- resume.py: what an interrupted run has behind it, and continuing it;
- transcripts.py: transcripts as records, the current one, and the queue of replies to decode.

Callers use the names below as ``log.open_log``, ``log.start_run``, ...
"""

from orchestrator.log.engine import (
    BUSY_TIMEOUT_S,
    MIGRATIONS_DIR,
    alembic_config,
    make_engine,
    open_log,
    session_factory,
    upgrade,
    write_session,
)
from orchestrator.log.resume import (
    STEP_RETRIES,
    ResumeState,
    adopt_response_audio,
    mark_stale_started,
    reopen_run,
    resumable_run,
    resume_state,
)
from orchestrator.log.schema import (
    INSTALL_ACTIONS,
    INTERACTION_STATUSES,
    NAMING_CONVENTION,
    RIG_VERDICTS,
    RUN_STATUSES,
    TRANSCRIPT_STATES,
    Base,
    Capture,
    Device,
    Flow,
    InstallAction,
    Interaction,
    InteractionStatus,
    Persona,
    RigCheck,
    RigCheckLevel,
    RigCheckResult,
    RigVerdict,
    Run,
    RunStatus,
    Skill,
    SkillInstall,
    Transcript,
    TranscriptState,
    UtcTimestamp,
    to_iso,
    to_utc,
    utcnow,
    utcnow_iso,
)
from orchestrator.log.transcripts import (
    Heard,
    QueuedReply,
    claim_pending,
    claimer_name,
    fail_transcript,
    make_current,
    queued,
    release_dead_claims,
    store_transcript,
)
from orchestrator.log.write import (
    DIST_NAME,
    InteractionFields,
    canonical_json,
    finish_interaction,
    finish_run,
    record_install,
    record_missed_run,
    record_rig_check,
    record_unstarted_run,
    sha256_text,
    start_interaction,
    start_run,
    tool_version,
    update_interaction,
    upsert_device,
    upsert_persona,
    upsert_skill,
)

__all__ = [
    # schema
    "INSTALL_ACTIONS",
    "INTERACTION_STATUSES",
    "NAMING_CONVENTION",
    "RIG_VERDICTS",
    "RUN_STATUSES",
    "TRANSCRIPT_STATES",
    "Base",
    "Capture",
    "Device",
    "Flow",
    "InstallAction",
    "Interaction",
    "InteractionStatus",
    "Persona",
    "RigCheck",
    "RigCheckLevel",
    "RigCheckResult",
    "RigVerdict",
    "Run",
    "RunStatus",
    "Skill",
    "SkillInstall",
    "Transcript",
    "TranscriptState",
    "UtcTimestamp",
    "to_iso",
    "to_utc",
    "utcnow",
    "utcnow_iso",
    # engine
    "BUSY_TIMEOUT_S",
    "MIGRATIONS_DIR",
    "alembic_config",
    "make_engine",
    "open_log",
    "session_factory",
    "upgrade",
    "write_session",
    # transcripts
    "Heard",
    "QueuedReply",
    "claim_pending",
    "claimer_name",
    "fail_transcript",
    "make_current",
    "queued",
    "release_dead_claims",
    "store_transcript",
    # write
    "DIST_NAME",
    "InteractionFields",
    "canonical_json",
    "finish_interaction",
    "finish_run",
    "record_install",
    "record_missed_run",
    "record_rig_check",
    "record_unstarted_run",
    "sha256_text",
    "start_interaction",
    "start_run",
    "tool_version",
    "update_interaction",
    "upsert_device",
    "upsert_persona",
    "upsert_skill",
    # resume
    "STEP_RETRIES",
    "ResumeState",
    "adopt_response_audio",
    "mark_stale_started",
    "reopen_run",
    "resumable_run",
    "resume_state",
]
