"""A simulated Amazon Echo for the virtual lab.

It behaves acoustically like the real device: it hears the persona's speech on the monitor of the
speaker placed beside it, notices when the command has ended (voice activity), waits a realistic
latency and answers by speaking into its own sink, which the persona's microphone records. Music
and radio stream until it hears someone speak again. It speaks with an Echo-like voice (voice.py),
which the lab's English recognizer hears as it would hear a real Echo.

It has no ears for the personas' espeak-ng voice, so the lab hooks (lab/hooks.py, sim/hooks.py) whisper
the text of each prompt through a `SideChannel` (a JSON Lines file in the lab folder) before it is
played. That is the simulation's only shortcut: timing stays acoustic (the Echo acts only on what it
hears), and what the orchestrator learns of a reply comes from the recording alone.

What it answers is a world of skills (the script, script.yaml, plus the catalog's skills) and the
phrasings Alexa uses (replies.yaml): skills that open, need account linking or permissions, cannot
be found or reached, or are answered by another skill or by Alexa herself.

Everything it says is appended to a truth log (`<echo>.truth.jsonl`) so tests and benchmarks can
compare the log's transcripts and verdicts with what was really said and meant.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from orchestrator.audio.clip import MIC_FORMAT, AudioFormat, Clip, concat, read_wav, silence
from orchestrator.audio.devices import DeviceError, open_backend, redirect_native_stderr
from orchestrator.audio.vad import EndpointConfig, EndpointDetector
from orchestrator.core.processes import die_with_parent, name_this_process
from orchestrator.sim.lab import use_own_devices
from orchestrator.sim.network import EchoNetwork, NetworkPlan

STREAM_BLOCK_SECONDS = 0.25
SIM_SPEAKER_LATENCY = 0.2
#: The Echo times its answers from the chunks' capture times, so deep buffering delays nothing;
#: it spares the sound server a short period on every speaker's monitor.
SIM_MICROPHONE_LATENCY = 0.2
#: How long a reply's record waits for its network contacts to finish (they take milliseconds).
NETWORK_WAIT = 10.0
SCRIPT = Path(__file__).with_name("script.yaml")
PHRASINGS = Path(__file__).with_name("replies.yaml")


# -- what the Echo understands ------------------------------------------------------------------

EnableBehaviour = Literal["enabled", "account_linking", "permission_required", "not_found"]
OpenBehaviour = Literal["welcome", "other_skill", "unreachable", "not_understood", "alexa_answered",
                        "account_linking", "permission_required"]


@dataclass(frozen=True)
class SimSkill:
    name: str
    invocation: str
    enable: EnableBehaviour = "enabled"
    open: OpenBehaviour = "welcome"
    other_skill: str | None = None  # who answers an open when `open: other_skill`
    welcome: list[str] = field(default_factory=list)
    answers: dict[str, list[str] | None] = field(default_factory=dict)  # None: the skill stays silent
    #: The skill's servers: the Echo reaches them (DNS, then TLS) when the skill answers, on a lab network.
    endpoints: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.open == "other_skill" and not self.other_skill:
            raise ValueError(f"simulated skill {self.name!r}: `open: other_skill` needs `other_skill: NAME`")


@dataclass(frozen=True)
class SimScript:
    wake_word: str = "alexa"
    latency: float = 0.9
    pause_inside: float = 0.5
    skills: tuple[SimSkill, ...] = ()
    questions: dict[str, list[str] | None] = field(default_factory=dict)
    stream_intro: str = "Here is Lab Radio."
    stream_loop: list[str] = field(default_factory=list)
    #: Alexa's own service, reached for every command heard; and where the Echo reports unprompted.
    alexa_endpoint: str = "avs-alexa-na.amazon.example"
    heartbeat_endpoint: str = "device-metrics-us.amazon.example"

    @classmethod
    def load(cls, path: Path = SCRIPT) -> SimScript:
        data = yaml.safe_load(path.read_text()) or {}
        skills = tuple(SimSkill(**{**s, "endpoints": tuple(s.get("endpoints", ()))}) for s in data.pop("skills", []))
        return cls(skills=skills, **data)

    def endpoints(self) -> list[str]:
        """Every name an Echo of this world may reach: what the lab network's resolver must know."""
        names = {self.alexa_endpoint, self.heartbeat_endpoint}
        for skill in self.skills:
            names.update(skill.endpoints)
        return sorted(names)

    def with_catalog(self, skills: list[Any], varied: bool = False) -> SimScript:
        """Every catalog skill can be enabled and opened; the script's own entries take precedence.

        A skill whose catalog record says it needs account linking asks for it, as the store says.
        `varied`: the skills' opens land as a real store's do, by a stable draw per skill: about one
        in five is answered by another skill (as in public crawls of skill conversations), one in
        twenty-five cannot be reached.
        """
        known = {normalise(s.invocation) for s in self.skills}
        # A smart-home skill has no invocation name: it is enabled, and spoken of, by its name.
        fresh = [s for s in skills if normalise(s.invocation_name or s.name) not in known]
        names = sorted({s.name for s in skills})
        extra = tuple(_sim_skill(s, names if varied else []) for s in fresh)
        return replace(self, skills=self.skills + extra)


def _sim_skill(skill: Any, others: list[str]) -> SimSkill:
    """A catalog skill in the simulation; with `others`, its open may land in one of them or nowhere."""
    draw = _stable_index(f"{skill.id}/open", 100)
    other = [name for name in others if name != skill.name]
    opening: OpenBehaviour = "welcome"
    if other and draw < 20:
        opening = "other_skill"
    elif other and draw < 24:
        opening = "unreachable"
    answering = other[_stable_index(f"{skill.id}/other", len(other))] if opening == "other_skill" else None
    return SimSkill(name=skill.name, invocation=skill.invocation_name or skill.name,
                    enable="account_linking" if skill.account_linking else "enabled", open=opening,
                    other_skill=answering, answers={"": [f"Here is something from {skill.name}."]},
                    endpoints=(f"api.{_slug(skill.name)}.example",))


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "skill"


@dataclass(frozen=True)
class Reply:
    kind: str  # one of OUTCOME_OF_KIND, or answer | silence | stream | stopped
    parts: tuple[str, ...] = ()  # spoken with a pause between parts
    endpoints: tuple[str, ...] = ()  # the skill servers the Echo reaches to make this reply

    @property
    def text(self) -> str:
        return " ".join(self.parts)


#: What each kind of reply means, in the words of the orchestrator's classifier: the truth that
#: tests and benchmarks hold the log's verdicts against.
OUTCOME_OF_KIND = {
    "enabled": "enabled", "account_linking": "account_linking", "permission_required": "permission_required",
    "not_found": "not_found", "disabled": "disabled", "welcome": "skill_opened", "other_skill": "other_skill",
    "unreachable": "unreachable", "alexa_answered": "alexa_answered", "dont_know": "not_understood",
}


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def _stable_index(seed: str, size: int) -> int:
    return int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big") % size


@dataclass(frozen=True)
class Phrasings:
    """Alexa's phrasings per step and situation (replies.yaml); one chosen per skill, stably."""

    table: dict[str, dict[str, list[list[str]]]]

    @classmethod
    def load(cls, path: Path = PHRASINGS) -> Phrasings:
        return cls(yaml.safe_load(path.read_text()))

    def options(self, step: str, situation: str, named: bool = True) -> list[list[str]]:
        """Every phrasing; without `named`, only those needing no skill name (nothing to fill in)."""
        found = self.table[step][situation]
        return found if named else [o for o in found if not any("{" in part for part in o)]

    def say(self, step: str, situation: str, skill: SimSkill | None = None, seed: str = "") -> tuple[str, ...]:
        options = self.options(step, situation, named=skill is not None)
        chosen = options[_stable_index(f"{skill.name if skill else seed}/{step}/{situation}", len(options))]
        if skill is None:
            return tuple(chosen)
        values = {"skill": skill.name, "invocation": skill.invocation, "other": skill.other_skill or ""}
        return tuple(part.format(**values) for part in chosen)


class EchoBrain:
    """Maps what was said to what the Echo answers; keeps the open skill session."""

    def __init__(self, script: SimScript, phrasings: Phrasings | None = None) -> None:
        self.script = script
        self.phrasings = phrasings or Phrasings.load()
        self.session: SimSkill | None = None
        self._by_invocation = {normalise(s.invocation): s for s in script.skills}
        self._by_invocation.update({normalise(s.name): s for s in script.skills})

    def hear(self, text: str) -> Reply:
        words = normalise(text)
        wake = normalise(self.script.wake_word)
        if words == wake or words.startswith(wake + " "):
            self.session = None  # the wake word leaves any open skill session
            return self._command(words[len(wake) :].strip())
        if self.session is not None:
            return self._in_session(words)
        return Reply("silence")  # not addressed to the Echo

    def dont_know(self, heard: str) -> Reply:
        return Reply("dont_know", self.phrasings.say("any", "not_understood", seed=heard))

    def _command(self, command: str) -> Reply:
        if command in ("stop", "cancel", "exit", "quit") or command.startswith("stop "):
            return Reply("stopped")
        for verb, handler in (("enable ", self._enable), ("open ", self._open), ("launch ", self._open),
                              ("ask ", self._ask), ("play ", self._play), ("disable ", self._disable)):
            if command.startswith(verb):
                return handler(command[len(verb) :].strip())
        if command in self.script.questions:
            return _reply("answer", self.script.questions[command])
        return self.dont_know(command)

    def _skill(self, spoken: str) -> SimSkill | None:
        bare = re.sub(r"^(the )|( skill)$", "", spoken)
        return self._by_invocation.get(spoken) or self._by_invocation.get(bare)

    def _enable(self, spoken: str) -> Reply:
        skill = self._skill(spoken)
        if skill is None or skill.enable == "not_found":
            return Reply("not_found", self.phrasings.say("enable", "not_found", skill, seed=spoken))
        return Reply(skill.enable, self.phrasings.say("enable", skill.enable, skill))

    def _disable(self, spoken: str) -> Reply:
        skill = self._skill(spoken)
        if skill is None:
            return Reply("not_found", self.phrasings.say("disable", "not_found", seed=spoken))
        return Reply("disabled", self.phrasings.say("disable", "disabled", skill))

    def _open(self, spoken: str) -> Reply:
        skill = self._skill(spoken)
        if skill is None:
            return self.dont_know(spoken)
        if skill.open == "welcome":
            self.session = skill
            return Reply("welcome", tuple(skill.welcome) or self.phrasings.say("open", "skill_opened", skill),
                         skill.endpoints)
        if skill.open == "other_skill":
            # The other skill has the session now: what is said next goes to it, and it knows nothing.
            self.session = SimSkill(name=skill.other_skill or "", invocation=skill.other_skill or "")
        return Reply(skill.open if skill.open != "not_understood" else "dont_know",
                     self.phrasings.say("open", skill.open, skill))

    def _ask(self, spoken: str) -> Reply:
        for invocation, skill in self._by_invocation.items():
            if spoken.startswith(invocation + " "):
                question = re.sub(r"^(for|to|about) ", "", spoken[len(invocation) :].strip())
                return self._answer(skill, question)
        return self.dont_know(spoken)

    def _in_session(self, words: str) -> Reply:
        assert self.session is not None
        return self._answer(self.session, words)

    def _answer(self, skill: SimSkill, words: str) -> Reply:
        for phrase, reply in skill.answers.items():
            if normalise(phrase) in words:
                # The utterance goes to the skill's servers even when the skill then says nothing.
                return replace(_reply("answer", reply), endpoints=skill.endpoints)
        self.session = None
        return self.dont_know(words)

    def _play(self, _what: str) -> Reply:
        self.session = None
        return Reply("stream", (self.script.stream_intro,))


def _reply(kind: str, parts: list[str] | None) -> Reply:
    return Reply("silence") if not parts else Reply(kind, tuple(parts))


# -- the whisper and the truth ------------------------------------------------------------------


@dataclass(frozen=True)
class Announcement:
    key: str  # unique per prompt, across restarts of the runner
    text: str
    duration: float


class SideChannel:
    """The runner's whisper to a simulated Echo: what the next prompt says and how long it lasts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seq = 0

    def announce(self, text: str, duration: float) -> str:
        """Whisper the next prompt; returns its key, under which the Echo files its reply."""
        self._seq += 1
        key = f"{os.getpid()}-{time.monotonic_ns()}-{self._seq}"
        line = json.dumps({"key": key, "text": text, "duration": duration})
        with open(self.path, "a") as fh:
            fh.write(line + "\n")
        return key

    def latest(self) -> Announcement | None:
        for data in _newest_first(self.path):
            return Announcement(data["key"], data["text"], float(data["duration"]))
        return None


def _newest_first(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a JSON Lines file, last first; a line being written right now is passed over."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return
    for line in reversed(lines):
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue


@dataclass
class TruthRecord:
    heard: str
    kind: str
    text: str
    started: float  # monotonic, comparable across processes on one machine
    duration: float
    wall_start: float
    wall_started: float | None = None  # when the reply's sound began, on the wall clock (`started`'s moment)
    contacted: list[str] = field(default_factory=list)  # the names reached over the lab network for it


def said_path(lab_dir: Path, echo: str) -> Path:
    """The side channel: what the runner is about to say to `echo`."""
    return lab_dir / f"{echo}.said.jsonl"


def truth_path(lab_dir: Path, echo: str) -> Path:
    """The truth log: what `echo` really said, and meant."""
    return lab_dir / f"{echo}.truth.jsonl"


def read_truth(path: Path) -> list[TruthRecord]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(TruthRecord(**json.loads(line)))
        except json.JSONDecodeError:
            continue  # the line being written when the Echo was stopped
    return records


# -- the acoustic shell -------------------------------------------------------------------------


class SimulatedEcho:
    """Listens on `hears` (input device), speaks into `speaks` (output device)."""

    def __init__(self, name: str, brain: EchoBrain, voice_clips: dict[str, Clip], side: SideChannel,
                 truth_path: Path, backend: Any, hears: str, speaks: str, network: EchoNetwork | None = None) -> None:
        self.name = name
        self.network = network
        self.brain = brain
        self.clips = voice_clips
        self.side = side
        self.truth_path = truth_path
        fmt = next(iter(voice_clips.values())).format
        self.mic = backend.open_microphone(hears, MIC_FORMAT, latency=SIM_MICROPHONE_LATENCY)
        # A deep buffer: a stall on a busy machine must not open a gap inside a reply (a gap over the
        # hangover would end it early); its durations come from playback, so latency changes none.
        self.speaker = backend.open_speaker(speaks, fmt, latency=SIM_SPEAKER_LATENCY)
        self._stop = threading.Event()
        self._barge_in = threading.Event()
        self._handled: str | None = None
        self._stream_bed = radio_bed(fmt, 4.0)

    def stop(self) -> None:
        self._stop.set()

    def serve(self) -> None:
        """Hear, answer, repeat, until `stop()`."""
        try:
            self._listen_loop()
        finally:
            self.mic.close()
            self.speaker.close()

    def _listen_loop(self) -> None:
        config = EndpointConfig(no_answer_timeout=1e9, max_reply=1e9, hangover=0.3)
        detector, origin, first_onset = None, 0.0, None
        while not self._stop.is_set():
            try:
                chunk = self.mic.read(timeout=2.0)
            except DeviceError:
                continue  # a stall on a busy machine; a real Echo does not unplug itself either
            if detector is None:
                detector, origin = EndpointDetector(MIC_FORMAT, config), chunk.start
            bounds = detector.push(chunk.pcm)
            if detector.onset is not None and first_onset is None:
                self._barge_in.set()  # someone speaks: a real Echo ducks and stops its stream
                first_onset = origin + detector.onset
            if bounds is None:
                continue
            detector = None
            speech_end = origin + (bounds.end or 0.0)
            if first_onset is not None and self._prompt_complete(first_onset, speech_end):
                first_onset = None
                self._respond(speech_end)
            elif not self._prompt_pending():
                first_onset = None  # a sound without the wake word (a rig probe, a door) is ignored

    def _prompt_pending(self) -> bool:
        announcement = self.side.latest()
        return announcement is not None and announcement.key != self._handled

    def _prompt_complete(self, onset: float, end: float) -> bool:
        announcement = self.side.latest()
        if announcement is None or announcement.key == self._handled:
            return False
        # The wake word alone, followed by a pause, is not yet a command.
        return end - onset >= announcement.duration - 0.35

    def _respond(self, speech_end: float) -> None:
        announcement = self.side.latest()
        assert announcement is not None
        self._handled = announcement.key
        reply = self.brain.hear(announcement.text)
        self._barge_in.clear()
        delay = speech_end + self.brain.script.latency - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        threading.Thread(target=self._speak, args=(announcement.text, reply), daemon=True).start()

    def _speak(self, heard: str, reply: Reply) -> None:
        started = time.monotonic()
        wall = time.time()
        contacts = None
        if self.network is not None and reply.kind != "stopped":
            # Alexa's service hears every command; a skill's servers make the skill's replies.
            contacts = self.network.contact((self.brain.script.alexa_endpoint, *reply.endpoints))
        mono_at_wall = started
        if reply.kind == "stream":
            started, played = self._stream(reply)
        elif reply.parts:
            clip = self._compose(reply.parts)
            playback = self.speaker.play(clip)
            started, played = playback.started, playback.ended - playback.started
        else:
            played = 0.0
        contacted = contacts.result(NETWORK_WAIT) if contacts is not None else []
        record = TruthRecord(heard, reply.kind, reply.text, started, played, wall,
                             wall_started=wall + (started - mono_at_wall), contacted=contacted)
        with open(self.truth_path, "a") as fh:
            fh.write(json.dumps(asdict(record)) + "\n")

    def _compose(self, parts: tuple[str, ...]) -> Clip:
        fmt = self.speaker.format
        pieces: list[Clip] = []
        for i, part in enumerate(parts):
            if i:
                pieces.append(silence(self.brain.script.pause_inside, fmt))
            pieces.append(self.clips[part])
        return concat(pieces)

    def _stream(self, reply: Reply) -> tuple[float, float]:
        """Speak the intro, then loop the radio programme until someone speaks; when it began, how long it ran."""
        loop = [self._compose(reply.parts)] + [self.clips[t] for t in self.brain.script.stream_loop]
        started = last = time.monotonic()
        first = None
        index = 0
        while not self._barge_in.is_set() and not self._stop.is_set():
            clip = mix(loop[index % len(loop)], self._stream_bed)
            index += 1
            for block in blocks(clip, STREAM_BLOCK_SECONDS):
                if self._barge_in.is_set() or self._stop.is_set():
                    break
                playback = self.speaker.play(block)
                first = first if first is not None else playback.started
                last = playback.ended
        return (first, last - first) if first is not None else (started, time.monotonic() - started)


def blocks(clip: Clip, seconds: float) -> list[Clip]:
    size = clip.format.nbytes(seconds)
    return [Clip(clip.pcm[i : i + size], clip.format) for i in range(0, len(clip.pcm), size)]


def radio_bed(fmt: AudioFormat, seconds: float) -> Clip:
    """A soft chord that sits under the radio announcer, as music does under a DJ."""
    t = np.arange(int(fmt.rate * seconds)) / fmt.rate
    wave = np.sum([np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)], axis=0) / 3
    return Clip((wave * 2500).astype(np.int16).tobytes(), fmt)


def mix(voice: Clip, bed: Clip) -> Clip:
    v = voice.samples().astype(np.int32)
    b = np.resize(bed.samples(), v.size).astype(np.int32)
    return Clip(np.clip(v + b, -32768, 32767).astype(np.int16).tobytes(), voice.format)


def phrases(script: SimScript, phrasings: Phrasings | None = None) -> list[str]:
    """Every sentence the Echo may say, to be rendered before the lab opens."""
    brain = EchoBrain(script, phrasings)
    say = brain.phrasings
    lines = {script.stream_intro, *script.stream_loop}
    for step, situation in (("any", "not_understood"), ("enable", "not_found"), ("disable", "not_found")):
        lines.update(part for option in say.options(step, situation, named=False) for part in option)
    for skill in script.skills:
        lines.update(skill.welcome or say.say("open", "skill_opened", skill))
        lines.update(say.say("enable", skill.enable, skill) + say.say("disable", "disabled", skill))
        if skill.open != "welcome":
            lines.update(say.say("open", skill.open, skill))
        for reply in skill.answers.values():
            lines.update(reply or [])
    for reply in script.questions.values():
        lines.update(reply or [])
    return sorted(lines)


# -- the simulated Echos of a lab, each in a process of its own ---------------------------------------


class SimulatedEchos:
    """Runs each virtual Echo's `SimulatedEcho` in a process of its own, as separate devices would be.

    The processes import this module only (not the runner's), so sixteen of them start in seconds.
    """

    def __init__(self, lab_dir: Path, names: list[str], script: SimScript, clips: dict[str, Path],
                 backend: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._ready = [ctx.Event() for _ in names]
        self._processes = [
            ctx.Process(target=_serve_echo, name=f"sim-{name}",
                        args=(lab_dir, name, script, clips, backend, self._stop, ready))
            for name, ready in zip(names, self._ready, strict=True)
        ]

    def __enter__(self) -> SimulatedEchos:
        for process in self._processes:
            process.start()
        deadline = time.monotonic() + 60
        if not all(ready.wait(max(0.0, deadline - time.monotonic())) for ready in self._ready):
            self.__exit__()
            raise RuntimeError("the simulated Echos did not start within 60 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for process in self._processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()


def _serve_echo(lab_dir: Path, name: str, script: SimScript, clip_paths: dict[str, Path], backend_name: str,
                stop: Any, ready: Any) -> None:
    die_with_parent()
    name_this_process()
    redirect_native_stderr(lab_dir / "logs" / f"simulated-{name}.log")
    use_own_devices(lab_dir, name, "echo")
    clips = {text: read_wav(path) for text, path in clip_paths.items()}
    network_plan = NetworkPlan.load(lab_dir)
    network = None
    if network_plan is not None and name in network_plan.echos:
        network = EchoNetwork(network_plan, name, heartbeat_name=script.heartbeat_endpoint)
    echo = SimulatedEcho(name, EchoBrain(script), clips, SideChannel(said_path(lab_dir, name)),
                         truth_path(lab_dir, name), open_backend(backend_name),
                         hears=f"{name}_out_mon", speaks=f"{name}_mic", network=network)
    thread = threading.Thread(target=echo.serve, name=name)
    thread.start()
    ready.set()
    stop.wait()
    echo.stop()
    thread.join(5)
    if network is not None:
        network.close()
