"""The audio of one step: what was played to the Echo and what was recorded of its answer.

Researchers check a verdict by listening to it. A step's row names its prompt and its recording
relative to the run's audio folder; `exchange` finds both, refuses paths that would leave that
folder (a log is data from elsewhere too), and joins them into one clip: the prompt, a short
silence, the reply, as the microphone beside the Echo would have heard the whole exchange.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.analysis.query import QueryError, run_query
from orchestrator.audio.clip import MIC_FORMAT, Clip, concat, read_wav, resample, silence

#: Between the prompt and the reply in a joined clip, so the ear can tell them apart.
GAP_SECONDS = 0.5

STEP_SQL = """
SELECT i.id, i.kind, i.status, i.prompt_text, i.transcript, i.prompt_audio, i.response_audio, r.audio_dir
FROM interactions AS i JOIN runs AS r ON r.id = i.run_id
WHERE i.id = :id
"""


class StepAudioError(QueryError):
    """No such step, no audio for it, or audio that is not where the log says."""


@dataclass(frozen=True)
class StepAudio:
    step_id: int
    kind: str
    status: str
    prompt_text: str | None
    transcript: str | None
    prompt: Path | None
    reply: Path | None


def find(db_path: Path | str, step_id: int) -> StepAudio:
    """The step's audio files, checked to lie inside its run's audio folder and to exist."""
    _, rows = run_query(db_path, STEP_SQL, {"id": step_id})
    with rows:
        found = list(rows)
    if not found:
        raise StepAudioError(f"no step (interaction) with id {step_id}")
    row_id, kind, status, prompt_text, transcript, prompt, reply, audio_dir = found[0]
    if audio_dir is None:
        raise StepAudioError(f"step {step_id}: its run records no audio folder")
    folder = Path(audio_dir)
    return StepAudio(row_id, kind, status, prompt_text, transcript, _inside(folder, prompt, step_id),
                     _inside(folder, reply, step_id))


def inside(folder: Path, relative: str) -> Path | None:
    """``relative`` resolved against ``folder``, links followed; None when it would leave the folder."""
    path = (folder / relative).resolve()
    return path if path.is_relative_to(folder.resolve()) else None


def _inside(folder: Path, relative: str | None, step_id: int) -> Path | None:
    if relative is None:
        return None
    path = inside(folder, relative)
    if path is None:
        raise StepAudioError(f"step {step_id}: its audio path {relative!r} leaves the run's audio folder {folder}")
    if not path.is_file():
        raise StepAudioError(f"step {step_id}: {path} is missing (moved with its log? see runs.audio_dir)")
    return path


def exchange(audio: StepAudio) -> Clip:
    """The prompt, a short silence and the reply, at the microphone's rate."""
    parts = [resample(read_wav(path), MIC_FORMAT.rate) for path in (audio.prompt, audio.reply) if path is not None]
    if not parts:
        raise StepAudioError(f"step {audio.step_id} has no audio ({audio.status})")
    return concat([parts[0], silence(GAP_SECONDS, MIC_FORMAT), *parts[1:]]) if len(parts) == 2 else parts[0]
