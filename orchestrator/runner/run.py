"""One persona's night on one Echo: speak each planned step, record the reply, transcribe it, log it.

Following one utterance:

1. `persona.compile_plan` turned the persona file's step into words ("Alexa, open cat facts");
2. `prepare_prompts` rendered them with pyttsx3 before the night began (audio/speech.py);
3. `Rig.exchange` plays the prompt on the speaker beside the Echo while the microphone, already
   recording, keeps every sample captured after the prompt ended; the endpoint detector (audio/vad.py)
   decides when the reply is over. A reply the plan reacts to (reaction.needs_words_now) has been
   decoded all along by the transcription server (asr/server.py); any other is only recorded;
4. `PersonaRun._record` writes the reply's WAV atomically, asks what a decoded reply meant
   (reaction.py, classify.py), then fills the step's row in the log (log/), which was inserted
   as 'started' before anything was said. A reply not decoded yet is left `pending` for the
   night's background transcriber (deferred.py), which stores its transcript and verdict later.

Around each step: the room's lock (two Echos of one room never speak at once), a deadline for
the night's watchdog, one retry of a step that ended in error, and a failure budget.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Engine

from orchestrator import log
from orchestrator.asr import SpeechModel, Transcript, TranscriptionClient, TranscriptionError
from orchestrator.audio.clip import MIC_FORMAT, AudioFormat, Clip, concat, read_wav, silence, write_wav_atomic
from orchestrator.audio.devices import Chunk, DeviceError, Microphone, Playback, Speaker, open_backend
from orchestrator.audio.speech import OUTPUT_RATE, SynthesisError, Synthesizer, Voice
from orchestrator.audio.vad import EndpointConfig, EndpointDetector, Outcome, ReplyBounds
from orchestrator.catalog.skills import Catalog
from orchestrator.core import settings
from orchestrator.core.durable import DiskFull
from orchestrator.lab.config import EchoConfig, Endpointing, LabConfig
from orchestrator.lab.hooks import LabHooks, hooks_for
from orchestrator.plan.persona import LoadedPersona, PlannedStep, compile_plan
from orchestrator.runner.reaction import PlanReaction, needs_words_now

#: A microphone silent this long is gone (a recording always delivers, even silence); long enough
#: that a loaded machine's stall is not mistaken for an unplugged device.
MIC_STALL_SECONDS = 5.0
#: Shorter waits where Alexa normally says nothing, so "stop" does not cost a full no-answer wait.
QUIET_KINDS = {"stop": 3.0}


@dataclass(frozen=True)
class Prompt:
    text: str  # as spoken, wake word included
    clip: Clip
    path: Path  # the exact audio played, inside the audio folder


@dataclass(frozen=True)
class Exchange:
    """What happened acoustically during one step."""

    playback: Playback
    window_start: float  # monotonic time of the first recorded sample (= end of the prompt)
    bounds: ReplyBounds
    recorded: bytes
    detected_at: float  # monotonic time at which the end was known
    transcript: Transcript | None
    transcript_error: str | None
    overflows: int


@dataclass
class StepEvent:
    """Progress of a run, for the operator's screen."""

    persona: str
    echo: str
    index: int
    total: int
    kind: str
    status: str
    text: str = ""
    audio_seconds: float = 0.0
    deadline: float | None = None  # monotonic time by which a running step must have ended


@dataclass
class RunSummary:
    run_id: int
    persona: str
    echo: str
    status: str = "running"
    steps: int = 0
    ok: int = 0
    no_response: int = 0
    max_length: int = 0
    skipped: int = 0
    errors: int = 0
    audio_seconds: float = 0.0
    error: str | None = None

    def count(self, status: str, audio_seconds: float) -> None:
        self.steps += 1
        self.audio_seconds += audio_seconds
        if status == "ok":
            self.ok += 1
        elif status == "no_response":
            self.no_response += 1
        elif status == "max_length":
            self.max_length += 1
        elif status == "skipped":
            self.skipped += 1
        else:
            self.errors += 1


# -- the prompts ----------------------------------------------------------------------------------


def prepare_prompts(loaded: LoadedPersona, steps: list[PlannedStep], synth: Synthesizer,
                    audio_dir: Path) -> dict[int, Prompt]:
    """Render every prompt of the night before it starts: a synthesis failure stops nothing mid-run."""
    persona = loaded.persona
    prompts: dict[int, Prompt] = {}
    for step in steps:
        if step.kind == "pause":
            continue
        spoken = step.spoken(persona.wake.word)
        if step.wake and persona.wake.alone:
            path = _wake_then_command(synth, persona.wake.word, step.text, persona.wake.pause, audio_dir)
        else:
            path = synth.render(spoken)
        prompts[step.index] = Prompt(spoken, read_wav(path), path)
    return prompts


def _wake_then_command(synth: Synthesizer, wake: str, command: str, pause: float, audio_dir: Path) -> Path:
    wake_clip, command_clip = synth.render_clip(wake), synth.render_clip(command)
    key = hashlib.sha256(f"{wake}\0{command}\0{pause}\0{synth.cache_key(command)}".encode()).hexdigest()
    path = settings.tts_cache_dir(audio_dir) / "composed" / f"{key}.wav"
    if not path.exists():
        write_wav_atomic(path, concat([wake_clip, silence(pause, wake_clip.format), command_clip]))
    return path


# -- the rig of one Echo ----------------------------------------------------------------------------


class Rig:
    """The speaker and microphone beside one Echo, and a transcription stream for its replies."""

    def __init__(self, lab: LabConfig, echo: EchoConfig, speaker_format: Any,
                 asr: TranscriptionClient, hooks: LabHooks) -> None:
        self.echo = echo
        self.backend = open_backend(lab.backend_of(echo))
        self.speaker: Speaker = self.backend.open_speaker(echo.speaker, speaker_format)
        self.mic: Microphone = self.backend.open_microphone(echo.microphone, MIC_FORMAT)
        self.asr = asr
        self.asr.prepare(1)  # the server warms a recognizer now, not on the first reply
        self.hooks = hooks

    def close(self) -> None:
        self.speaker.close()
        self.mic.close()

    def exchange(self, prompt: Prompt, endpoint: EndpointConfig, listen_seconds: float | None,
                 decode: bool = True) -> Exchange:
        """Say the prompt and record the reply; with `decode`, the reply is transcribed while recorded."""
        # Before the prompt: a transcription server being restarted is waited for, not talked over.
        stream = self.asr.stream() if decode else None
        self.hooks.before_prompt(self.echo.name, prompt.text, prompt.clip.duration)
        self.mic.drain()
        overflows_before = self.mic.overflows
        playback = self.speaker.play(prompt.clip)
        detector = EndpointDetector(MIC_FORMAT, endpoint)
        recorded = bytearray()
        bounds = None
        while bounds is None:
            pcm = self._after(self.mic.read(timeout=MIC_STALL_SECONDS), playback.ended)
            recorded += pcm
            if stream is not None:
                stream.feed(pcm)
            bounds = detector.push(pcm)
            if listen_seconds is not None:
                bounds = _listen_outcome(detector, MIC_FORMAT.seconds(len(recorded)), listen_seconds)
        detected_at = time.monotonic()
        transcript, transcript_error = _finish_transcript(stream) if stream is not None else (None, None)
        return Exchange(playback, playback.ended, bounds, bytes(recorded), detected_at, transcript,
                        transcript_error, self.mic.overflows - overflows_before)

    @staticmethod
    def _after(chunk: Chunk, start: float) -> bytes:
        """The part of a chunk captured after `start`: our own prompt is not part of the reply."""
        if chunk.end <= start:
            return b""
        if chunk.start >= start:
            return chunk.pcm
        skip = chunk.format.nbytes(start - chunk.start)
        return chunk.pcm[skip:]


def _listen_outcome(detector: EndpointDetector, recorded: float, seconds: float) -> ReplyBounds | None:
    """A listen step records for a fixed time, whatever is heard."""
    if recorded < seconds:
        return None
    if detector.onset is None:
        return ReplyBounds(Outcome.NO_RESPONSE, None, None, recorded)
    return ReplyBounds(Outcome.REPLY_ENDED, detector.onset, detector.last_speech_end, recorded)


#: A step waits this long for a transcription server that is down: the night restarts a dead one
#: within seconds (night.py), and the step in flight when it died is retried.
ASR_RECONNECT = 30.0
#: A dead server is noticed at once (the connection closes); this only bounds a hung one. A loaded
#: machine may decode slower than real time for a while, and that must not cost a transcript.
TRANSCRIPT_TIMEOUT = 60.0


def _finish_transcript(stream: Any) -> tuple[Transcript | None, str | None]:
    try:
        return stream.finish(timeout=TRANSCRIPT_TIMEOUT), None
    except TranscriptionError as exc:
        return None, f"transcription failed: {exc}"


# -- the run ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRequest:
    """Everything a worker needs to run one persona; plain data, so it crosses process boundaries."""

    persona: LoadedPersona
    lab: LabConfig
    catalog: Catalog
    db_path: Path
    audio_dir: Path
    model: SpeechModel
    asr_socket: Path
    asr_authkey: bytes
    scheduled_for: datetime | None = None
    resume_run_id: int | None = None
    rig_check_id: int | None = None  # the self-test that cleared this Echo tonight
    asr_version: str | None = None  # the recognizer library's name and version, as the server reports it


class RunControls:
    """What a worker shares with its night: the stop request and its room's lock."""

    def __init__(self, stop: Any = None, room_lock: Any = None) -> None:
        self.stop = stop if stop is not None else threading.Event()
        self.room_lock = room_lock if room_lock is not None else threading.Lock()


#: Beyond the longest a step can legitimately take; the night's watchdog kills a worker past it.
STEP_SLACK_SECONDS = 30.0
#: A step that ends in error is tried again this many times (a new row each time, `attempt` + 1);
#: the log's count, by which a resumed run retries an interrupted step.
STEP_RETRIES = log.STEP_RETRIES
#: This many steps in a row ending in error abort the persona's night (OpenWPM's failure budget).
FAILURE_BUDGET = 5


class PersonaRun:
    def __init__(self, request: RunRequest, on_event: Callable[[StepEvent], None] | None = None,
                 on_start: Callable[[int], None] | None = None, controls: RunControls | None = None) -> None:
        self.request = request
        self.controls = controls or RunControls()
        self.on_start = on_start or (lambda _run_id: None)
        self.persona = request.persona.persona
        self.echo = request.lab.echo(self.persona.echo)
        self.steps = compile_plan(self.persona, request.catalog)
        self.on_event = on_event or (lambda _event: None)
        self.engine: Engine = log.open_log(request.db_path)
        self.reaction = PlanReaction(request.catalog)
        self.budget = 0  # steps in a row that ended in error
        self.done: set[int] = set()  # steps a resumed run has behind it
        self.attempts: dict[int, int] = {}  # retry number of steps that were interrupted before
        self.recordings = settings.recordings_dir(request.audio_dir)

    def execute(self) -> RunSummary:
        voice = Voice(self.persona.voice.name, self.persona.voice.rate)
        with Synthesizer(settings.tts_cache_dir(self.request.audio_dir), voice) as synth:
            prompts = prepare_prompts(self.request.persona, self.steps, synth, self.request.audio_dir)
            engine_info = synth.engine_description()
        if self.request.resume_run_id is not None:
            run_id = self._resume(self.request.resume_run_id)
        else:
            run_id = self._start_run(engine_info)
        self.on_start(run_id)
        summary = RunSummary(run_id, self.persona.name, self.echo.name)
        try:
            rig = self._open_rig(prompts)
        except (DeviceError, TranscriptionError, OSError) as exc:
            return self._fail(summary, f"rig not available: {exc}")
        try:
            self._steps(rig, prompts, summary)
        finally:
            rig.close()
        if summary.status == "running":
            summary.status = "completed"
            log.finish_run(self.engine, run_id, "completed")
        return summary

    def _resume(self, run_id: int) -> int:
        """Continue an interrupted run: done steps are kept, the interrupted one is retried once."""
        state = log.resume_state(self.engine, run_id)
        if state.persona != self.persona.name:
            raise ValueError(f"run {run_id} belongs to persona {state.persona!r}, not {self.persona.name!r}")
        planned = self._resolved_config()["steps"]
        if state.steps != planned:
            raise ValueError(f"run {run_id} was made from a different plan; it cannot be resumed with this one")
        log.reopen_run(self.engine, run_id)
        self.done = state.done
        self.attempts = state.attempts
        account_for_audio(self.engine, self.recordings, run_id)
        for skill_id, outcome in state.enable_outcomes.items():
            self.reaction.learn_enable(skill_id, outcome)
        for skill_id, (outcome, heard) in state.open_outcomes.items():
            self.reaction.learn_open(skill_id, outcome, heard)
        return run_id

    def _open_rig(self, prompts: dict[int, Prompt]) -> Rig:
        asr = TranscriptionClient(self.request.asr_socket, self.request.asr_authkey, reconnect_seconds=ASR_RECONNECT)
        speaker_format = next(iter(prompts.values())).clip.format if prompts else AudioFormat(OUTPUT_RATE)
        return Rig(self.request.lab, self.echo, speaker_format, asr, hooks_for(self.request.lab.virtual_lab))

    def _steps(self, rig: Rig, prompts: dict[int, Prompt], summary: RunSummary) -> None:
        for step in self.steps:
            if step.index in self.done:
                continue
            if self.controls.stop.is_set():
                summary.status, summary.error = "interrupted", "stopped by the operator before step " \
                    f"{step.index}"
                log.finish_run(self.engine, summary.run_id, "interrupted", error=summary.error)
                return
            self._emit(step, "running", 0.0, prompts[step.index].text if step.index in prompts else "",
                       deadline=time.monotonic() + self._longest(step, prompts))
            time.sleep(step.delay)
            if step.kind == "pause":
                time.sleep(step.pause_seconds or 0.0)
                continue
            if reason := self.reaction.skip_reason(step):
                self._skip(step, prompts[step.index], summary, reason)
                continue
            try:
                status = self._attempt(rig, step, prompts[step.index], summary)
            except DeviceError as exc:
                summary.count("error", 0.0)
                self._fail(summary, f"device failed at step {step.index}: {exc}")
                return
            except DiskFull as exc:  # every next step would fail alike: stop with what is recorded
                summary.count("error", 0.0)
                self._fail(summary, f"disk full at step {step.index}: {exc}")
                return
            self.budget = self.budget + 1 if status == "error" else 0
            if self.budget >= FAILURE_BUDGET:
                self._fail(summary, f"failure budget spent: {self.budget} steps in a row ended in error "
                                    f"(last: step {step.index})")
                return

    def _attempt(self, rig: Rig, step: PlannedStep, prompt: Prompt, summary: RunSummary) -> str:
        """Run a step; one that ends in error is tried again, at most `STEP_RETRIES` times."""
        first = self.attempts.get(step.index, 0)
        for attempt in range(first, first + STEP_RETRIES + 1):
            self.attempts[step.index] = attempt
            with self.controls.room_lock:  # two Echos of one room would hear each other
                status, seconds = self._step(rig, step, prompt, summary.run_id)
            summary.count(status, seconds)
            self._emit(step, status, seconds, prompt.text)
            if status != "error":
                break
        return status

    def _longest(self, step: PlannedStep, prompts: dict[int, Prompt]) -> float:
        """The most a step may take before the night's watchdog calls the worker stuck."""
        prompt = prompts[step.index].clip.duration if step.index in prompts else 0.0
        one_attempt = ASR_RECONNECT + prompt + longest_recording(self._endpoint(step)) + TRANSCRIPT_TIMEOUT
        return step.delay + (step.pause_seconds or 0.0) + (STEP_RETRIES + 1) * one_attempt + STEP_SLACK_SECONDS

    def _skip(self, step: PlannedStep, prompt: Prompt, summary: RunSummary, reason: str) -> None:
        row = log.start_interaction(self.engine, run_id=summary.run_id, step_index=step.index, kind=step.kind,
                                    skill_id=step.skill_id, prompt_text=prompt.text, prompt_audio=prompt.path)
        log.finish_interaction(self.engine, row, "skipped", error=reason)
        summary.count("skipped", 0.0)
        self._emit(step, "skipped", 0.0, prompt.text)

    def _step(self, rig: Rig, step: PlannedStep, prompt: Prompt, run_id: int) -> tuple[str, float]:
        row = log.start_interaction(
            self.engine, run_id=run_id, step_index=step.index, kind=step.kind, skill_id=step.skill_id,
            prompt_text=prompt.text, prompt_audio=prompt.path, attempt=self.attempts.get(step.index, 0),
        )
        self._emit(step, "running", 0.0, prompt.text)
        try:
            exchange = rig.exchange(prompt, self._endpoint(step), step.listen_seconds, needs_words_now(step))
        except DeviceError as exc:
            log.finish_interaction(self.engine, row, "error", error=str(exc))
            raise
        except Exception as exc:  # noqa: BLE001 - a step's failure is recorded, the night goes on
            log.finish_interaction(self.engine, row, "error", error=_describe(exc))
            return "error", 0.0
        try:
            return self._record(row, step, prompt, exchange, run_id)
        except DiskFull as exc:
            log.finish_interaction(self.engine, row, "error", error=f"the recording was not stored: {exc}")
            raise

    def _record(self, row: int, step: PlannedStep, prompt: Prompt, ex: Exchange, run_id: int) -> tuple[str, float]:
        attempt = self.attempts.get(step.index, 0)
        audio = self.recordings / str(run_id) / f"{step.index:03d}-{attempt}-{step.kind}.wav"
        write_wav_atomic(audio, Clip(ex.recorded, MIC_FORMAT))
        status: log.InteractionStatus = ex.bounds.outcome.value
        fields = _exchange_fields(prompt, ex)
        # A step's audio, as `report night` counts it: the prompt played and the reply recorded.
        seconds = prompt.clip.duration + MIC_FORMAT.seconds(len(ex.recorded))
        if not needs_words_now(step):  # the background transcriber hears and judges it later
            log.finish_interaction(self.engine, row, status, response_audio=audio, transcript_state="pending",
                                   **fields)
            return status, seconds
        judgement = self.reaction.judge(step, ex.transcript.text if ex.transcript else None, status)
        fields |= judgement.fields()
        if ex.transcript_error:
            status = "error"
        log.finish_interaction(self.engine, row, status, response_audio=audio, error=ex.transcript_error,
                               **fields)
        if step.kind in ("enable", "disable") and step.skill_id:
            outcome = judgement.verdict.outcome if judgement.verdict else status
            action = cast(log.InstallAction, step.kind)
            log.record_install(self.engine, run_id=run_id, skill_id=step.skill_id, action=action,
                               outcome=outcome, interaction_id=row)
        return status, seconds

    def _endpoint(self, step: PlannedStep) -> EndpointConfig:
        return endpoint_for(step, self.request.lab.endpointing)

    def _start_run(self, engine_info: dict[str, Any]) -> int:
        request = self.request
        persona_id, device_id = register(self.engine, request)
        for skill_id in {s.skill_id for s in self.steps if s.skill_id}:
            skill = request.catalog[skill_id]
            log.upsert_skill(self.engine, id=skill.id, name=skill.name, invocation_name=skill.invocation_name,
                             category=skill.category)
        return log.start_run(
            self.engine, persona_id=persona_id, device_id=device_id, audio_dir=request.audio_dir,
            config=self._resolved_config(), asr_engine=request.model.engine, asr_model=request.model.path,
            asr_version=request.asr_version, tts_engine=engine_info.get("engine"),
            tts_voice=self.persona.voice.name, tts_rate=self.persona.voice.rate,
            audio_backend=request.lab.backend_of(self.echo), scheduled_for=request.scheduled_for,
            rig_check_id=request.rig_check_id,
        )

    def _resolved_config(self) -> dict[str, Any]:
        return {
            "persona": self.persona.model_dump(mode="json"),
            "echo": self.echo.model_dump(mode="json"),
            "endpointing": self.request.lab.endpointing.model_dump(mode="json"),
            "steps": [s.spoken(self.persona.wake.word) if s.kind != "pause" else f"(pause {s.pause_seconds} s)"
                      for s in self.steps],
        }

    def _fail(self, summary: RunSummary, error: str) -> RunSummary:
        summary.status, summary.error = "failed", error
        log.finish_run(self.engine, summary.run_id, "failed", error=error)
        return summary

    def _emit(self, step: PlannedStep, status: str, seconds: float, text: str, deadline: float | None = None) -> None:
        self.on_event(StepEvent(self.persona.name, self.echo.name, step.index, len(self.steps), step.kind,
                                status, text, seconds, deadline))


def endpoint_for(step: PlannedStep, endpointing: Endpointing) -> EndpointConfig:
    """How the reply to `step` is listened for: a listen step records for its time, "stop" waits less."""
    if step.listen_seconds is not None:
        return endpointing.config(max_reply=step.listen_seconds + 1, hangover=step.listen_seconds + 1,
                                  no_answer_timeout=step.listen_seconds + 1)
    if step.kind in QUIET_KINDS:
        return endpointing.config(no_answer_timeout=QUIET_KINDS[step.kind])
    return endpointing.config()


def longest_recording(cfg: EndpointConfig) -> float:
    """The most a step's recording can last: waiting for the reply, the longest reply, its hangover."""
    return cfg.no_answer_timeout + cfg.max_reply + cfg.hangover


def _exchange_fields(prompt: Prompt, ex: Exchange) -> dict[str, Any]:
    b, t = ex.bounds, ex.transcript
    fields: dict[str, Any] = {
        "prompt_started_at": wall_time(ex.playback.started),
        "prompt_ended_at": wall_time(ex.playback.ended),
        "prompt_seconds": prompt.clip.duration,
        "recorded_seconds": MIC_FORMAT.seconds(len(ex.recorded)),
        "output_underflows": ex.playback.underflows,
        "input_overflows": ex.overflows,
    }
    if b.onset is not None and b.end is not None:
        fields |= {
            "response_started_at": wall_time(ex.window_start + b.onset),
            "response_ended_at": wall_time(ex.window_start + b.end),
            "response_latency_seconds": b.onset,
            "response_seconds": b.end - b.onset,
            "end_detect_delay": ex.detected_at - (ex.window_start + b.end),
        }
    if t is not None:
        fields |= {
            "transcript": t.text, "words": [w.__dict__ for w in t.words], "confidence": t.confidence,
            "transcript_ready_delay": t.ready_delay,
            "asr_rtf": t.decode_seconds / t.audio_seconds if t.audio_seconds else None,
        }
    return fields


def register(engine: Engine, request: RunRequest) -> tuple[int, int]:
    """The persona's and its Echo's rows in the log, added or brought up to date."""
    loaded, persona = request.persona, request.persona.persona
    echo = request.lab.echo(persona.echo)
    persona_id = log.upsert_persona(
        engine, name=persona.name, interest=persona.interest, is_control=persona.control,
        file_path=loaded.path, file_sha256=hashlib.sha256(loaded.path.read_bytes()).hexdigest(),
    )
    device_id = log.upsert_device(engine, **request.lab.device_row(echo))
    return persona_id, device_id


def account_for_audio(engine: Engine, recordings: Path, run_id: int) -> None:
    """After a kill: drop half-written temp files, attach complete recordings to their rows.

    A recording is renamed into place before its row is updated; a kill between the two leaves
    a complete WAV that its (now interrupted) row does not point at yet.
    """
    folder = recordings / str(run_id)
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink()
    for wav in sorted(folder.glob("*.wav")):
        index, attempt, _kind = wav.stem.split("-", 2)
        log.adopt_response_audio(engine, run_id, int(index), int(attempt), wav)


def wall_time(monotonic: float) -> datetime:
    return datetime.fromtimestamp(time.time() - (time.monotonic() - monotonic), tz=UTC)


def _describe(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    place = f" ({os.path.basename(where.filename)}:{where.lineno})" if where else ""
    return f"{type(exc).__name__}: {exc}{place}"


__all__ = ["PersonaRun", "Prompt", "Rig", "RunRequest", "RunSummary", "StepEvent", "SynthesisError"]
