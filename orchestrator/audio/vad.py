"""When has the Echo finished talking? Voice activity detection on the recorded reply.

webrtcvad labels 30 ms frames as speech or not. On top of it a small state machine decides:

* onset: `onset_frames` speech frames out of the last `onset_window` (a click is not a reply);
* end: no sound for `hangover` seconds (longer than the pauses inside a reply, which reach
  0.6 s when Alexa reads a list), dated at the end of the last sound. After the onset, "sound"
  is a speech frame or any frame `activity_margin_db` above the room's noise floor: webrtcvad
  calls the fading consonants at the end of a sentence silence, and counting them as pause
  would cut a reply at its first full stop;
* no answer: no onset within `no_answer_timeout` seconds;
* cut: the reply has run for `max_reply` seconds (music and radio stream without end).

Times are seconds from the start of the audio pushed in, so they are exact in samples and do not
depend on when the frames arrive.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

import webrtcvad

from orchestrator.audio.clip import AudioFormat, rms_dbfs

FRAME_MS = 30
FRAME_SECONDS = FRAME_MS / 1000


class Outcome(enum.Enum):
    REPLY_ENDED = "ok"
    NO_RESPONSE = "no_response"
    MAX_LENGTH = "max_length"


@dataclass(frozen=True)
class EndpointConfig:
    no_answer_timeout: float = 8.0
    max_reply: float = 30.0
    hangover: float = 0.7
    aggressiveness: int = 2
    onset_frames: int = 3
    onset_window: int = 5
    min_level_dbfs: float = -55.0  # below this a frame is room noise whatever webrtcvad says
    activity_margin_db: float = 15.0  # this far above the noise floor, a frame is sound
    noise_floor_dbfs: float = -70.0  # the quietest floor assumed; digital silence is far below it

    def __post_init__(self) -> None:
        if not 0 <= self.aggressiveness <= 3:
            raise ValueError("aggressiveness is 0..3")
        if self.hangover <= 0 or self.no_answer_timeout <= 0 or self.max_reply <= 0:
            raise ValueError("hangover, no_answer_timeout and max_reply must be positive")


@dataclass(frozen=True)
class ReplyBounds:
    outcome: Outcome
    onset: float | None  # seconds from the start of the audio
    end: float | None
    decided_at: float  # how much audio had been pushed when the outcome was known

    @property
    def duration(self) -> float | None:
        if self.onset is None or self.end is None:
            return None
        return self.end - self.onset


class EndpointDetector:
    """Feed it audio as it is recorded; it says when the reply is over."""

    def __init__(self, fmt: AudioFormat, config: EndpointConfig | None = None) -> None:
        if fmt.rate not in (8000, 16000, 32000, 48000) or fmt.channels != 1 or fmt.width != 2:
            raise ValueError(f"webrtcvad needs 16-bit mono at 8/16/32/48 kHz, not {fmt}")
        self.format = fmt
        self.config = config or EndpointConfig()
        self._vad = webrtcvad.Vad(self.config.aggressiveness)
        self._frame_bytes = fmt.nbytes(FRAME_SECONDS)
        self._pending = b""
        self._frames_seen = 0
        self._recent: deque[bool] = deque(maxlen=self.config.onset_window)
        self._quiet_levels: deque[float] = deque(maxlen=50)  # levels heard before the reply began
        self.onset: float | None = None
        self.last_speech_end: float | None = None
        self.result: ReplyBounds | None = None

    @property
    def elapsed(self) -> float:
        # Integer milliseconds first: 30 * 0.03 is a hair under 0.9 in floating point.
        return self._frames_seen * FRAME_MS / 1000

    def push(self, pcm: bytes) -> ReplyBounds | None:
        """Add audio; returns the final bounds once decided, else None."""
        if self.result is not None:
            return self.result
        self._pending += pcm
        while len(self._pending) >= self._frame_bytes and self.result is None:
            frame, self._pending = self._pending[: self._frame_bytes], self._pending[self._frame_bytes :]
            level = rms_dbfs(frame)
            speech = level >= self.config.min_level_dbfs and self._vad.is_speech(frame, self.format.rate)
            self._step(speech, speech or level >= self.activity_threshold())
            if self.onset is None and not speech:
                self._quiet_levels.append(level)
        return self.result

    def activity_threshold(self) -> float:
        """Level above which a frame counts as sound: the room's noise floor plus a margin."""
        floor = sorted(self._quiet_levels)[len(self._quiet_levels) // 2] if self._quiet_levels else -120.0
        return max(floor, self.config.noise_floor_dbfs) + self.config.activity_margin_db

    def _step(self, speech: bool, sound: bool) -> None:
        self._frames_seen += 1
        now = self.elapsed
        cfg = self.config
        self._recent.append(speech)
        if self.onset is None:
            if sum(self._recent) >= cfg.onset_frames:
                first = len(self._recent) - list(self._recent).index(True)
                self.onset = now - first * FRAME_SECONDS
                self.last_speech_end = now
            elif now >= cfg.no_answer_timeout:
                self.result = ReplyBounds(Outcome.NO_RESPONSE, None, None, now)
            return
        if sound:
            self.last_speech_end = now
        assert self.last_speech_end is not None
        if now - self.onset >= cfg.max_reply:
            self.result = ReplyBounds(Outcome.MAX_LENGTH, self.onset, now, now)
        elif now - self.last_speech_end >= cfg.hangover:
            self.result = ReplyBounds(Outcome.REPLY_ENDED, self.onset, self.last_speech_end, now)
