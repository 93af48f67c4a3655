"""pocketsphinx behind the engine seam: US English with no download.

The `pocketsphinx` wheel carries a complete US English model (acoustic model, pronunciation
dictionary, trigram language model) inside the package, so a machine that cannot reach the Vosk
model host still hears English. A model folder is laid out as the bundled one is:

    en-us/                  the acoustic model (mdef, means, variances, transition_matrices, ...)
    cmudict-en-us.dict      the pronunciation dictionary (any one *.dict)
    en-us.lm.bin            the language model (any one *.lm.bin, *.lm or *.lm.DMP)

One `Decoder` holds a whole model, so each recognizer loads its own (about 0.4 s); the server keeps
them warm across utterances as it does Vosk's.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path
from typing import Any

from orchestrator.asr.engine import Decoded, ModelError
from orchestrator.audio.clip import MIC_FORMAT

#: What pocketsphinx puts into a segmentation that no one said: sentence marks, silence, fillers.
_NOT_WORDS = re.compile(r"^(<s>|</s>|<sil>|\[.*\]|\+\+.*\+\+)$")
#: Alternate pronunciations are numbered in the dictionary: "facts(2)" is the word "facts".
_ALTERNATE = re.compile(r"\(\d+\)$")
_ACOUSTIC_FILES = ("mdef", "means", "variances", "transition_matrices", "feat.params")
_LM_SUFFIXES = (".lm.bin", ".lm", ".lm.DMP")


def bundled_model() -> Path:
    """The US English model inside the installed pocketsphinx package."""
    import pocketsphinx

    return Path(pocketsphinx.get_model_path()) / "en-us"


def _parts(path: Path) -> tuple[list[Path], list[Path], list[Path]]:
    acoustic = [d for d in path.iterdir() if d.is_dir() and (d / "mdef").is_file()] if path.is_dir() else []
    dicts = sorted(path.glob("*.dict")) if path.is_dir() else []
    lms = sorted(f for f in path.iterdir() if f.name.endswith(_LM_SUFFIXES) and "phone" not in f.name) \
        if path.is_dir() else []
    return acoustic, dicts, lms


def check_model(path: Path) -> None:
    """Raise ModelError unless `path` holds an acoustic model folder, a dictionary and a language model."""
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"pocketsphinx model folder {path} does not exist")
    acoustic, dicts, lms = _parts(path)
    problems = []
    if len(acoustic) != 1:
        problems.append("no acoustic model folder (one with mdef)" if not acoustic else
                        f"{len(acoustic)} acoustic model folders; keep one")
    else:
        missing = [f for f in _ACOUSTIC_FILES if not (acoustic[0] / f).is_file()]
        empty = [f for f in _ACOUSTIC_FILES if (acoustic[0] / f).is_file() and not (acoustic[0] / f).stat().st_size]
        if missing or empty:
            problems.append(f"acoustic model {acoustic[0].name}/ lacks " + ", ".join(missing + empty))
    if len(dicts) != 1:
        problems.append("no pronunciation dictionary (*.dict)" if not dicts else "more than one *.dict")
    if len(lms) != 1:
        problems.append("no language model (*.lm.bin, *.lm or *.lm.DMP)" if not lms else "more than one language model")
    if problems:
        raise ModelError(f"pocketsphinx model {path} is incomplete: {'; '.join(problems)}")


class SphinxRecognizer:
    """One pocketsphinx Decoder, an utterance at a time."""

    def __init__(self, config: dict[str, Any]) -> None:
        from pocketsphinx import Decoder

        self.decoder = Decoder(**config)
        self.frame_seconds = 1.0 / float(self.decoder.config["frate"])
        self.logmath = self.decoder.get_logmath()
        self.in_utterance = False

    def accept(self, pcm: bytes) -> None:
        if not self.in_utterance:
            self.decoder.start_utt()
            self.in_utterance = True
        self.decoder.process_raw(pcm, False, False)

    def finish(self) -> Decoded:
        if not self.in_utterance:
            return Decoded("", [])
        self.decoder.end_utt()
        self.in_utterance = False
        hypothesis = self.decoder.hyp()
        if hypothesis is None:
            return Decoded("", [])
        words = [(_ALTERNATE.sub("", seg.word), round(seg.start_frame * self.frame_seconds, 4),
                  round((seg.end_frame + 1) * self.frame_seconds, 4), _probability(self.logmath, seg.prob))
                 for seg in self.decoder.seg() if not _NOT_WORDS.match(seg.word)]
        return Decoded(" ".join(w for w, *_ in words), words)


def _probability(logmath: Any, log_prob: int) -> float:
    return max(0.0, min(1.0, round(float(logmath.exp(log_prob)), 4)))


class _LoadedSphinx:
    def __init__(self, path: Path) -> None:
        check_model(path)
        acoustic, dicts, lms = _parts(path)
        self.config = {"hmm": str(acoustic[0]), "dict": str(dicts[0]), "lm": str(lms[0]),
                       "samprate": MIC_FORMAT.rate, "loglevel": "ERROR"}
        # A probe: a corrupt file fails here, in the server's start, not on the night's first reply.
        SphinxRecognizer(self.config)

    def recognizer(self, grammar: list[str] | None = None) -> SphinxRecognizer:
        # A grammar would need a JSGF or keyphrase search; this engine always decodes freely.
        return SphinxRecognizer(self.config)


class SphinxEngine:
    name = "pocketsphinx"
    decodes_in_parallel = False  # its bindings hold the GIL while they decode

    def check(self, path: Path) -> None:
        check_model(path)

    def looks_like(self, path: Path) -> bool:
        acoustic, dicts, lms = _parts(Path(path))
        return bool(acoustic and dicts)

    def load(self, path: Path) -> _LoadedSphinx:
        return _LoadedSphinx(path)

    def version(self) -> str:
        try:
            return f"pocketsphinx {metadata.version('pocketsphinx')}"
        except metadata.PackageNotFoundError:
            return "pocketsphinx (version unknown)"


ENGINE = SphinxEngine()
