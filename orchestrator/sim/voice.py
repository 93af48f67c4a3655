"""The simulated Echo's voice: Festival with its HTS US English voice, rendered once and cached.

An Echo's replies are what the lab transcribes, so the simulation must sound like one to a
recognizer. espeak-ng (the personas' voice) is formant synthesis that English recognizers mishear
badly; Festival's HTS voice (`cmu_us_slt_arctic_hts`, a natural female US voice) is heard almost
word for word by pocketsphinx, with the kind of errors a real Echo's recording gets. The personas
keep their pyttsx3 voice: a simulated Echo does not need to hear them (see lab/hooks.py).

Each sentence is rendered by `text2wave` in a subprocess with a deadline, resampled to the lab's
16 kHz, trimmed of leading and trailing silence and stored under a name derived from the voice
and the text, so a cached file is exactly what the Echo says.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from orchestrator.audio.clip import MIC_FORMAT, InvalidAudio, read_wav, resample, trim_silence, write_wav_atomic

VOICE = "cmu_us_slt_arctic_hts"
#: Changes whenever the way a cached file is produced changes, so old entries are not reused.
CACHE_SCHEMA = 1
RENDER_TIMEOUT = 60.0
#: Festival is single-threaded; two renders at once use a two-core machine fully.
PARALLEL_RENDERS = 2
DEBIAN_PACKAGES = "festival festvox-us-slt-hts"


class VoiceError(RuntimeError):
    """The Echo's voice is not installed, or a sentence could not be rendered."""


def cache_path(cache_dir: Path, text: str) -> Path:
    key = hashlib.sha256(f"{CACHE_SCHEMA}\0{VOICE}\0{text}".encode()).hexdigest()
    return cache_dir / "echo-voice" / f"{key}.wav"


def check_installed() -> None:
    if shutil.which("text2wave") is None:
        raise VoiceError(f"the simulated Echo's voice needs Festival: install the Debian packages {DEBIAN_PACKAGES} "
                         "(scripts/bootstrap does)")


def render(text: str, cache_dir: Path) -> Path:
    """A cached 16 kHz WAV of `text` in the Echo's voice, rendering it if needed."""
    path = cache_path(cache_dir, text)
    if path.exists():
        return path
    if not text.strip():
        raise VoiceError("the simulated Echo cannot say an empty sentence")
    with tempfile.TemporaryDirectory(prefix="echo-voice-") as scratch:
        raw = Path(scratch) / "raw.wav"
        _text2wave(text, raw)
        try:
            clip = read_wav(raw)
        except InvalidAudio as exc:
            raise VoiceError(f"Festival wrote unusable audio for {text!r}: {exc}") from exc
    write_wav_atomic(path, trim_silence(resample(clip, MIC_FORMAT.rate)))
    return path


def render_many(texts: Iterable[str], cache_dir: Path,
                on_progress: Callable[[int, int], None] | None = None) -> dict[str, Path]:
    """Every distinct sentence rendered (cached ones cost nothing); fails on the first error."""
    check_installed()
    unique = list(dict.fromkeys(texts))
    paths: dict[str, Path] = {}
    with ThreadPoolExecutor(PARALLEL_RENDERS, thread_name_prefix="echo-voice") as pool:
        for done, (text, path) in enumerate(zip(unique, pool.map(lambda t: render(t, cache_dir), unique),
                                                strict=True), start=1):
            paths[text] = path
            if on_progress is not None:
                on_progress(done, len(unique))
    return paths


def _text2wave(text: str, target: Path) -> None:
    try:
        result = subprocess.run(
            ["text2wave", "-eval", f"(voice_{VOICE})", "-o", str(target)],
            input=text, capture_output=True, text=True, timeout=RENDER_TIMEOUT, check=False,
        )
    except subprocess.TimeoutExpired:
        raise VoiceError(f"Festival did not render {text!r} within {RENDER_TIMEOUT:g} s") from None
    if result.returncode != 0 or not target.exists():
        detail = (result.stderr or "").strip()[-500:]
        raise VoiceError(f"Festival could not render {text!r} (exit code {result.returncode}): {detail}; "
                         f"are {DEBIAN_PACKAGES} installed?")
