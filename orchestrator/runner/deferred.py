"""The background transcriber: the replies the plan did not need at once, decoded from their recordings.

A reply the plan does not react to (a sample utterance, a question, a long listen for audio ads)
is written to disk and its row left with ``transcript_state = 'pending'`` (run.py). The night starts
one transcriber process beside its workers, at a lower priority so the replies decoded while they
are recorded come first; it takes queued replies one at a time (`log.claim_pending`, atomic, so
no reply is decoded twice), stores each transcript with what the reply meant, and keeps going after
the last step until the queue is empty. A night that is killed leaves its queue in the log: the
next night's transcriber, or `orchestrator transcribe --pending`, finishes it.

`retranscribe` decodes a night's recordings again with another model (`orchestrator transcribe
--run N --model M`), adding transcripts; by default they become the current ones.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from orchestrator import log
from orchestrator.asr import SpeechModel
from orchestrator.asr.engine import Recognizer, engine_for
from orchestrator.audio.clip import MIC_FORMAT, read_wav
from orchestrator.audio.devices import redirect_native_stderr
from orchestrator.core.processes import die_with_parent, name_this_process
from orchestrator.runner.reaction import Judgement, verdict_of

#: Niceness of the background transcriber: replies decoded while recorded, and the Echos' audio, come first.
NICENESS = 10
#: How often an idle transcriber looks at the queue again.
IDLE_POLL = 0.5
#: Audio is handed to the recognizer in pieces of this many bytes (a second), as a recording would be.
CHUNK_BYTES = MIC_FORMAT.bytes_per_second
#: A transcriber that keeps dying is restarted at most this often in one night; the queue then waits
#: in the log for `orchestrator transcribe --pending`.
MAX_RESTARTS = 3


class Decoder:
    """One recognizer of `model`, in this process, decoding recordings one at a time."""

    def __init__(self, model: SpeechModel) -> None:
        self.model = model
        engine = engine_for(model)
        self.version = engine.version()
        self._loaded = engine.load(model.path)
        self._recognizer: Recognizer = self._loaded.recognizer()

    def hear(self, path: Path) -> log.Heard:
        clip = read_wav(path)
        if clip.format != MIC_FORMAT:
            raise ValueError(f"{path} is {clip.format}, not the recordings' {MIC_FORMAT}")
        started = time.perf_counter()
        try:
            for offset in range(0, len(clip.pcm), CHUNK_BYTES):
                self._recognizer.accept(clip.pcm[offset:offset + CHUNK_BYTES])
            decoded = self._recognizer.finish()
        except Exception:
            self._recognizer = self._loaded.recognizer()  # its state is unknown: start afresh
            raise
        words = [{"word": w, "start": s, "end": e, "conf": c} for w, s, e, c in decoded.words]
        confidence = sum(c for *_, c in decoded.words) / len(decoded.words) if decoded.words else None
        return log.Heard(decoded.text, words, confidence, self.model.engine, str(self.model.path), self.version,
                         audio_seconds=clip.duration, decode_seconds=time.perf_counter() - started)


@lru_cache(maxsize=2)
def decoder_for(model: SpeechModel) -> Decoder:
    """A decoder of `model` for this process, loaded once (a model takes seconds to load)."""
    return Decoder(model)


def transcribe_one(engine: Engine, decoder: Decoder, reply: log.QueuedReply) -> bool:
    """Decode one claimed reply and store its transcript and verdict; False if it failed (recorded)."""
    try:
        heard = decoder.hear(reply.audio)
    except Exception as exc:  # noqa: BLE001 - one bad recording fails alone, recorded on its row
        log.fail_transcript(engine, reply.interaction_id, f"{type(exc).__name__}: {exc}")
        return False
    verdict = verdict_of(reply.kind, heard.text, reply.status, reply.skill_name, reply.invocation_name)
    fields = Judgement(verdict, None).fields() if verdict is not None else {}
    log.store_transcript(engine, reply.interaction_id, heard, fields=fields)
    return True


def work_through_queue(db: Path, model: SpeechModel, until_empty: Callable[[], bool] = lambda: True,
                       stop: Callable[[], bool] = lambda: False,
                       on_reply: Callable[[log.QueuedReply, bool], None] = lambda _r, _ok: None) -> int:
    """Decode queued replies until the queue is empty and `until_empty()` says so, or `stop()`; how many."""
    engine = log.open_log(db)
    try:
        decoder = decoder_for(model)
        log.release_dead_claims(engine)
        claimer = log.claimer_name()
        done = 0
        while not stop():
            reply = log.claim_pending(engine, claimer)
            if reply is None:
                if until_empty():
                    break
                time.sleep(IDLE_POLL)
                continue
            on_reply(reply, transcribe_one(engine, decoder, reply))
            done += 1
        return done
    finally:
        engine.dispose()


def _transcriber_main(db: Path, model: SpeechModel, night_over: Any, log_file: Path) -> None:
    die_with_parent()
    name_this_process("transcriber")
    os.nice(NICENESS)
    redirect_native_stderr(log_file)
    # Ctrl-C reaches the whole process group; the night decides when the transcriber ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    work_through_queue(db, model, until_empty=night_over.is_set)


class BackgroundTranscriber:
    """The night's transcriber process: it runs beside the workers, and after them until the queue is empty."""

    def __init__(self, ctx: Any, db: Path, model: SpeechModel, log_file: Path) -> None:
        self.ctx = ctx
        self.db = db
        self.model = model
        self.log_file = log_file
        self.night_over = ctx.Event()
        self.restarts = -1  # the first start is not a restart
        self._process: Any = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def ensure_running(self) -> bool:
        """Start it, or start it again if it died; False once it has died too often tonight."""
        if self._process is not None and self._process.is_alive():
            return True
        if self.restarts >= MAX_RESTARTS:
            return False
        self.restarts += 1
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._process = self.ctx.Process(target=_transcriber_main, name="transcriber",
                                         args=(self.db, self.model, self.night_over, self.log_file), daemon=True)
        self._process.start()
        return True

    def finish(self, stopped: Callable[[], bool], on_phase: Callable[[str], None], report_every: float = 30.0) -> int:
        """After the night's last step: wait until the queue is empty; how many replies are left (0, or
        what a stop or a dying transcriber left for `orchestrator transcribe --pending`)."""
        self.night_over.set()
        engine = log.open_log(self.db)
        try:
            left = log.queued(engine)
            if left:
                on_phase(f"transcribing {left} recorded replies in the background")
            next_report = time.monotonic() + report_every
            while not stopped() and self.ensure_running():
                self._process.join(timeout=0.5)
                if not self._process.is_alive() and log.queued(engine) == 0:
                    break
                if time.monotonic() > next_report:
                    on_phase(f"{log.queued(engine)} replies still to transcribe")
                    next_report += report_every
            self.stop()
            left = log.queued(engine)
            if left:
                on_phase(f"{left} replies are not transcribed yet: `orchestrator transcribe --pending` "
                         "decodes them")
            return left
        finally:
            engine.dispose()

    def stop(self) -> None:
        """End the process; a reply it was decoding goes back to the queue at the next start."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.is_alive():
            process.terminate()
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()


# -- transcribing a night again ---------------------------------------------------------------------


@dataclass
class Retranscribed:
    added: int = 0
    failed: int = 0
    already: int = 0  # had a transcript by this model already
    queued: int = 0  # still waiting for the night's transcriber: left alone


def retranscribe(db: Path, run_id: int, model: SpeechModel, current: bool = True,
                 on_reply: Callable[[int, str | None], None] = lambda _id, _text: None) -> Retranscribed:
    """Decode every recording of run `run_id` with `model`, adding transcripts (current ones unless not `current`).

    A recording that already has a transcript by this engine and model is left alone, so running
    the command twice does not decode twice. Verdicts are not judged again: they are what the plan
    acted on during the night.
    """
    engine = log.open_log(db)
    try:
        rows = _recordings(engine, run_id)
        decoder: Decoder | None = None  # loaded once there is something to decode
        result = Retranscribed()
        for interaction_id, state, audio in rows:
            if state in ("pending", "working"):
                result.queued += 1
            elif _has_transcript(engine, interaction_id, model):
                result.already += 1
            else:
                decoder = decoder or decoder_for(model)
                try:
                    heard = decoder.hear(audio)
                except Exception as exc:  # noqa: BLE001 - one bad recording fails alone
                    result.failed += 1
                    on_reply(interaction_id, f"failed: {type(exc).__name__}: {exc}")
                    continue
                log.store_transcript(engine, interaction_id, heard, current=current)
                result.added += 1
                on_reply(interaction_id, heard.text)
        return result
    finally:
        engine.dispose()


def _recordings(engine: Engine, run_id: int) -> list[tuple[int, str | None, Path]]:
    with engine.connect() as connection:
        audio_dir = connection.execute(select(log.Run.audio_dir).where(log.Run.id == run_id)).scalar_one_or_none()
        if audio_dir is None:
            raise LookupError(f"no run {run_id} with recordings in this log")
        rows = connection.execute(
            select(log.Interaction.id, log.Interaction.transcript_state, log.Interaction.response_audio)
            .where(log.Interaction.run_id == run_id, log.Interaction.response_audio.is_not(None))
            .order_by(log.Interaction.id)).all()
    return [(row_id, state, Path(audio_dir) / str(audio)) for row_id, state, audio in rows]


def _has_transcript(engine: Engine, interaction_id: int, model: SpeechModel) -> bool:
    stmt = select(log.Transcript.id).where(log.Transcript.interaction_id == interaction_id,
                                          log.Transcript.engine == model.engine,
                                          log.Transcript.model == str(model.path)).limit(1)
    with engine.connect() as connection:
        return connection.execute(stmt).first() is not None
