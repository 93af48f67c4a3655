"""Speech recognition of the Echo's replies: the engines behind one seam, their models, the server.

Nothing outside this package knows which engine runs: the rest of the orchestrator holds a
`SpeechModel` (from `models.resolve`), hands it to a `TranscriptionServer`, and gets words.
"""

from orchestrator.asr.engine import ModelError, SpeechModel, check
from orchestrator.asr.server import (
    ModelLoadReport,
    Stream,
    Transcript,
    TranscriptionClient,
    TranscriptionError,
    TranscriptionServer,
    Word,
    load_check,
)

__all__ = [
    "ModelError", "ModelLoadReport", "SpeechModel", "Stream", "Transcript", "TranscriptionClient",
    "TranscriptionError", "TranscriptionServer", "Word", "check", "load_check",
]
