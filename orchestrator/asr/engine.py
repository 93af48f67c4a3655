"""The seam between the transcription server and a speech recognition library.

The server (server.py) decodes every reply of a night, whatever recognizes it. What it needs of an
engine is small: check a model's files before a night, load the model in the server's process, and
hand out streaming recognizers (audio in while it is recorded; at the end, words with their start,
end and confidence). Each engine is one module of this package that imports its library lazily,
so loading a persona file or listing models never pulls a recognizer in.

    model = SpeechModel("pocketsphinx", path, "pocketsphinx-en-us")
    engine = engine_for(model)
    engine.check(model.path)                      # files present: cheap, before the night
    loaded = engine.load(model.path, grammar=None)  # in the server process
    recognizer = loaded.recognizer()
    recognizer.accept(pcm); ...; decoded = recognizer.finish()   # and again for the next utterance
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

#: The engines this package knows, by the name the settings and the log use.
ENGINES = {
    "vosk": "orchestrator.asr.vosk",
    "pocketsphinx": "orchestrator.asr.sphinx",
}


class ModelError(RuntimeError):
    """The speech model cannot be used: folder missing, files missing, or files corrupt."""


@dataclass(frozen=True)
class SpeechModel:
    """What transcribes a night: an engine and the model folder it loads."""

    engine: str
    path: Path
    name: str  # as the operator knows it: a registry name, or the folder's name

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ModelError(f"unknown speech recognition engine {self.engine!r}; known: {', '.join(ENGINES)}")

    def __str__(self) -> str:
        return f"{self.engine}:{self.name}"


@dataclass(frozen=True)
class Decoded:
    """One utterance as a recognizer heard it; word times are seconds from the utterance's start."""

    text: str
    words: list[tuple[str, float, float, float]]  # word, start, end, confidence 0..1


class Recognizer(Protocol):
    """A streaming recognizer, reused across utterances."""

    def accept(self, pcm: bytes) -> None:
        """Decode 16 kHz 16-bit mono PCM as it arrives."""

    def finish(self) -> Decoded:
        """The utterance's words; the recognizer is ready for the next utterance."""


class LoadedModel(Protocol):
    def recognizer(self, grammar: list[str] | None = None) -> Recognizer:
        """A new recognizer; `grammar` limits it to these phrases where the engine can."""


class Engine(Protocol):
    name: str
    #: Whether one process decodes several connections at once on several cores (the library lets
    #: go of Python's GIL while it decodes); if not, the night runs one server per core (shards.py).
    decodes_in_parallel: bool

    def check(self, path: Path) -> None:
        """Raise ModelError unless `path` holds a complete model for this engine (files only, fast)."""

    def looks_like(self, path: Path) -> bool:
        """Whether `path` is laid out as this engine's models are (to tell engines apart by folder)."""

    def load(self, path: Path) -> LoadedModel:
        """Load the model; raise ModelError (or any exception) if it is unusable."""

    def version(self) -> str:
        """The library's name and version, for the log's provenance."""


def engine_for(model: SpeechModel | str) -> Engine:
    name = model.engine if isinstance(model, SpeechModel) else model
    if name not in ENGINES:
        raise ModelError(f"unknown speech recognition engine {name!r}; known: {', '.join(ENGINES)}")
    engine: Engine = importlib.import_module(ENGINES[name]).ENGINE
    return engine


def check(model: SpeechModel) -> None:
    """Raise ModelError unless the model's files are all there (see also server.load_check)."""
    engine_for(model).check(model.path)


def engine_of_folder(path: Path) -> str | None:
    """The engine whose model layout `path` has, or None."""
    for name in ENGINES:
        if engine_for(name).looks_like(path):
            return name
    return None
