"""Transcripts as records: storing them, choosing the current one, and the queue of replies to decode.

A step's recording can have several transcripts (``transcripts``); the current one is copied into
``interactions.transcript``/``words_json``/``confidence`` in the same transaction that makes it
current, so the two never disagree. A reply the plan does not react to is finished with
``transcript_state = 'pending'``: the queue is that column. A transcriber takes one with
:func:`claim_pending`, which moves it to ``'working'`` inside one ``BEGIN IMMEDIATE`` transaction,
so two transcribers never take the same reply.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from orchestrator.log.engine import write_session
from orchestrator.log.schema import Interaction, Run, Skill, Transcript, utcnow

#: A recording whose transcriber died this many times while decoding it is given up as failed.
MAX_TRIES = 2


@dataclass(frozen=True)
class Heard:
    """A transcript as a recognizer produced it, with where it came from."""

    text: str
    words: Sequence[Mapping[str, Any]]  # [{"word", "start", "end", "conf"}, ...]
    confidence: float | None
    engine: str | None
    model: str | None
    version: str | None
    audio_seconds: float | None = None
    decode_seconds: float | None = None


def words_json(words: Sequence[Mapping[str, Any]]) -> str:
    from orchestrator.log.write import canonical_json

    return canonical_json(list(words))


def add_transcript(session: Session, interaction: Interaction, heard: Heard, current: bool = True) -> Transcript:
    """Store `heard` for the step in `session`'s transaction; as current, it is also copied onto the step."""
    row = Transcript(
        interaction_id=interaction.id, recording=interaction.response_audio, engine=heard.engine,
        model=heard.model, version=heard.version, created_at=utcnow(), text=heard.text,
        words_json=words_json(heard.words), confidence=heard.confidence, audio_seconds=heard.audio_seconds,
        decode_seconds=heard.decode_seconds, is_current=False,
    )
    session.add(row)
    session.flush()
    if current:
        _make_current(session, interaction, row)
    interaction.transcript_state = "done"
    interaction.transcript_claim = None
    interaction.transcript_error = None
    return row


def _make_current(session: Session, interaction: Interaction, row: Transcript) -> None:
    session.execute(update(Transcript).where(Transcript.interaction_id == interaction.id,
                                             Transcript.is_current.is_(True)).values(is_current=False))
    session.flush()
    row.is_current = True
    interaction.transcript = row.text
    interaction.words_json = row.words_json
    interaction.confidence = row.confidence


def store_transcript(engine: Engine, interaction_id: int, heard: Heard, current: bool = True,
                     fields: Mapping[str, Any] | None = None) -> int:
    """Store a transcript of a step's recording (and `fields` of the step, e.g. its verdict); its id."""
    with write_session(engine) as session:
        interaction = session.get(Interaction, interaction_id)
        if interaction is None:
            raise LookupError(f"no interaction with id {interaction_id}")
        row = add_transcript(session, interaction, heard, current)
        for key, value in (fields or {}).items():
            setattr(interaction, key, value)
        return row.id


def make_current(engine: Engine, transcript_id: int) -> None:
    """Show this transcript as its step's transcript."""
    with write_session(engine) as session:
        row = session.get(Transcript, transcript_id)
        if row is None:
            raise LookupError(f"no transcript with id {transcript_id}")
        interaction = session.get(Interaction, row.interaction_id)
        assert interaction is not None
        _make_current(session, interaction, row)


# -- the queue --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueuedReply:
    """A claimed reply: what the transcriber needs to decode it and judge what it meant."""

    interaction_id: int
    run_id: int
    kind: str
    status: str
    audio: Path
    skill_name: str | None
    invocation_name: str | None


def claimer_name() -> str:
    """This process, as a claim names it: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_pending(engine: Engine, claimer: str) -> QueuedReply | None:
    """Take the oldest queued reply for `claimer`, or None when the queue is empty."""
    with write_session(engine) as session:
        found = session.execute(
            select(Interaction, Run.audio_dir, Skill.name, Skill.invocation_name)
            .join(Run, Run.id == Interaction.run_id)
            .outerjoin(Skill, Skill.id == Interaction.skill_id)
            .where(Interaction.transcript_state == "pending")
            .order_by(Interaction.id).limit(1)
        ).one_or_none()
        if found is None:
            return None
        interaction, audio_dir, skill_name, invocation = found
        interaction.transcript_state = "working"
        interaction.transcript_claim = claimer
        interaction.transcript_tries += 1
        audio = Path(audio_dir or "") / (interaction.response_audio or "")
        return QueuedReply(interaction.id, interaction.run_id, interaction.kind, interaction.status, audio,
                           skill_name, invocation)


def fail_transcript(engine: Engine, interaction_id: int, error: str) -> None:
    stmt = (update(Interaction).where(Interaction.id == interaction_id)
            .values(transcript_state="failed", transcript_claim=None, transcript_error=error))
    with engine.begin() as connection:
        connection.execute(stmt)


def release_dead_claims(engine: Engine, alive: Callable[[str], bool] | None = None) -> int:
    """Put back in the queue the replies whose transcriber died; a reply that died twice fails. How many."""
    alive = alive or claimer_alive
    released = 0
    with write_session(engine) as session:
        rows = session.scalars(select(Interaction).where(Interaction.transcript_state == "working")).all()
        for row in rows:
            if row.transcript_claim is not None and alive(row.transcript_claim):
                continue
            released += 1
            row.transcript_claim = None
            if row.transcript_tries >= MAX_TRIES:
                row.transcript_state = "failed"
                row.transcript_error = f"the transcriber died {row.transcript_tries} times decoding this recording"
            else:
                row.transcript_state = "pending"
    return released


def claimer_alive(claimer: str) -> bool:
    """Whether the process named by a claim still runs; a claim from another host is assumed alive."""
    host, _, pid = claimer.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def queued(engine: Engine) -> int:
    """How many replies wait for a transcript or are being decoded."""
    stmt = select(func.count()).select_from(Interaction).where(
        Interaction.transcript_state.in_(("pending", "working")))
    with engine.connect() as connection:
        return int(connection.execute(stmt).scalar_one())
