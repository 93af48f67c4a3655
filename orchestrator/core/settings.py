"""Where things live by default, and the environment variables that move them.

Defaults sit inside the project folder (the checkout holding pyproject.toml, or the current
directory for an installed package), so a lab's data stays beside the code that produced it.

| what                | option        | environment variable        | default                              |
|---------------------|---------------|-----------------------------|--------------------------------------|
| project folder      |               | ORCHESTRATOR_HOME           | the checkout, else the current dir   |
| interaction log     | --db          | ORCHESTRATOR_DB             | data/orchestrator.sqlite             |
| audio folder        | --audio-dir   | ORCHESTRATOR_AUDIO_DIR      | audio/                               |
| lab file            | --lab         | ORCHESTRATOR_LAB            | lab.yaml                             |
| speech model        | --model       | ORCHESTRATOR_ASR_MODEL      | vosk-model-small-en-us-0.15 (in audio/models) |

The speech model may also be named by the lab file (`speech_model:`); an option or the
environment wins over it. ORCHESTRATOR_VOSK_MODEL, its older name, is still read.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "ORCHESTRATOR_HOME"
ENV_DB = "ORCHESTRATOR_DB"
ENV_AUDIO_DIR = "ORCHESTRATOR_AUDIO_DIR"
ENV_LAB = "ORCHESTRATOR_LAB"
ENV_ASR_MODEL = "ORCHESTRATOR_ASR_MODEL"
ENV_VOSK_MODEL = "ORCHESTRATOR_VOSK_MODEL"  # the older name of ENV_ASR_MODEL

DEFAULT_MODEL_NAME = "vosk-model-small-en-us-0.15"


def project_home() -> Path:
    if env := os.environ.get(ENV_HOME):
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file():
        return checkout
    return Path.cwd()


def data_dir() -> Path:
    return project_home() / "data"


def default_db() -> Path:
    return Path(os.environ.get(ENV_DB) or data_dir() / "orchestrator.sqlite")


def default_audio_dir() -> Path:
    return Path(os.environ.get(ENV_AUDIO_DIR) or project_home() / "audio")


def default_lab_file() -> Path:
    return Path(os.environ.get(ENV_LAB) or project_home() / "lab.yaml")


def models_dir(audio_dir: Path | None = None) -> Path:
    return (audio_dir or default_audio_dir()) / "models"


def tts_cache_dir(audio_dir: Path | None = None) -> Path:
    return (audio_dir or default_audio_dir()) / "tts-cache"


def recordings_dir(audio_dir: Path | None = None) -> Path:
    return (audio_dir or default_audio_dir()) / "recordings"


def model_setting_from_env() -> str | None:
    return os.environ.get(ENV_ASR_MODEL) or os.environ.get(ENV_VOSK_MODEL) or None


def default_model_setting() -> str:
    """The speech model when neither --model nor the lab file names one."""
    return model_setting_from_env() or DEFAULT_MODEL_NAME
