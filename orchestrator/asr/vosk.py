"""Vosk (Kaldi) behind the engine seam: its model layouts, and a streaming recognizer per connection.

Vosk calls release the GIL, so recognizers served by different threads decode in parallel, one
core each. A fresh recognizer builds its decoding graph lazily and is two to three times slower on
its first utterances: the server keeps them warm and reuses them across utterances.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

from orchestrator.asr.engine import Decoded, ModelError
from orchestrator.audio.clip import MIC_FORMAT
from orchestrator.core.settings import ENV_ASR_MODEL

SAMPLE_RATE = MIC_FORMAT.rate

# Vosk (model.cc) recognises two layouts: the current one with am/ conf/ graph/ folders, and an old
# flat one. Within each, the graph is either a full HCLG.fst or the lookahead pair HCLr.fst + Gr.fst
# (small models), and an i-vector extractor is optional but comes as a set of files.
_IVECTOR_FILES = (
    "final.dubm",
    "final.ie",
    "final.mat",
    "global_cmvn.stats",
    "online_cmvn.conf",
    "splice.conf",
)


def _required_files(path: Path) -> list[str] | None:
    """Relative paths Vosk will read for the layout found in `path`, or None if no layout is recognisable."""
    if (path / "am").is_dir() or (path / "conf").is_dir() or (path / "graph").is_dir():
        conf, graph = "conf/", "graph/"
        required = ["am/final.mdl", "conf/model.conf"]
    elif (path / "final.mdl").exists():
        conf = graph = ""  # old flat layout
        required = ["final.mdl"]
    else:
        return None
    if not (path / f"{conf}fbank.conf").exists():
        required.append(f"{conf}mfcc.conf")
    if not (path / f"{graph}HCLG.fst").exists():
        required += [f"{graph}HCLr.fst", f"{graph}Gr.fst", f"{graph}disambig_tid.int"]
    if (path / "ivector").is_dir():
        required += [f"ivector/{name}" for name in _IVECTOR_FILES]
    return required


def _nested_model(path: Path) -> Path | None:
    """A model one level down: the usual result of unzipping into a folder named like the zip."""
    subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for sub in subdirs:
        if _required_files(sub) is not None:
            return sub
    return None


def check_model(path: Path) -> None:
    """Raise ModelError unless `path` looks like a complete Vosk model folder.

    Only looks at files (fast, no loading), so it can run before anything else starts; the error
    says which folder and what is wrong. Corrupt file *contents* need `load_check`.
    """
    path = Path(path)
    hint = f"(set {ENV_ASR_MODEL} or --model to a model folder; `orchestrator models` lists and downloads them)"
    if not path.exists():
        raise ModelError(f"Vosk model folder {path} does not exist {hint}")
    if not path.is_dir():
        raise ModelError(f"Vosk model path {path} is a file, not a model folder {hint}")
    if not any(path.iterdir()):
        raise ModelError(f"Vosk model folder {path} is empty {hint}")
    required = _required_files(path)
    if required is None:
        nested = _nested_model(path)
        where = f"; the model seems to be one level down, in {nested}" if nested else ""
        raise ModelError(
            f"{path} is not a Vosk model folder: no am/final.mdl (or old-layout final.mdl){where} {hint}"
        )
    missing = [rel for rel in required if not (path / rel).is_file()]
    empty = [rel for rel in required if (path / rel).is_file() and (path / rel).stat().st_size == 0]
    problems = []
    if missing:
        problems.append("missing " + ", ".join(missing))
    if empty:
        problems.append("empty " + ", ".join(empty))
    if problems:
        raise ModelError(f"Vosk model {path} is incomplete: {'; '.join(problems)}")


class VoskRecognizer:
    """One KaldiRecognizer, its results made per utterance."""

    def __init__(self, model: Any, grammar: list[str] | None) -> None:
        import vosk

        args = (model, float(SAMPLE_RATE)) + ((json.dumps(grammar, ensure_ascii=False),) if grammar else ())
        self.recognizer = vosk.KaldiRecognizer(*args)
        self.recognizer.SetWords(True)
        # Vosk times words from the recognizer's creation, across utterances; remember where
        # this utterance began so its words can be reported relative to its own audio.
        self.samples_total = 0
        self.utterance_start = 0

    def accept(self, pcm: bytes) -> None:
        # The endpoint flag is ignored on purpose: never calling Result() mid-utterance keeps
        # one segment per utterance, so FinalResult() fully resets and offsets stay exact.
        self.recognizer.AcceptWaveform(pcm)
        self.samples_total += len(pcm) // MIC_FORMAT.width

    def finish(self) -> Decoded:
        result = json.loads(self.recognizer.FinalResult())  # also resets the recognizer
        offset = self.utterance_start / SAMPLE_RATE
        self.utterance_start = self.samples_total
        words = [(w["word"], _relative(w["start"], offset), _relative(w["end"], offset), w.get("conf", 1.0))
                 for w in result.get("result", [])]
        return Decoded(result.get("text", ""), words)


def _relative(seconds: float, offset: float) -> float:
    # Vosk prints 6 decimals and frames are 30 ms: round away the float noise of the subtraction.
    return max(0.0, round(seconds - offset, 4))


class _LoadedVosk:
    def __init__(self, path: Path) -> None:
        import vosk

        vosk.SetLogLevel(-1)  # warnings and errors only
        self.model = vosk.Model(str(path))

    def recognizer(self, grammar: list[str] | None = None) -> VoskRecognizer:
        return VoskRecognizer(self.model, grammar)


class VoskEngine:
    name = "vosk"
    decodes_in_parallel = True  # cffi releases the GIL around every call into Kaldi

    def check(self, path: Path) -> None:
        check_model(path)

    def looks_like(self, path: Path) -> bool:
        return path.is_dir() and _required_files(path) is not None

    def load(self, path: Path) -> _LoadedVosk:
        return _LoadedVosk(path)

    def version(self) -> str:
        try:
            return f"vosk {metadata.version('vosk')}"
        except metadata.PackageNotFoundError:
            return "vosk (version unknown)"


ENGINE = VoskEngine()
