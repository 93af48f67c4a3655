"""Options and error handling shared by every `orchestrator` command module."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from orchestrator.core import settings
from orchestrator.core.config_files import ConfigError
from orchestrator.runner.progress import operator_console

#: For every command a module offers on its own (the lazily loaded ones are also run standalone):
#: click caches a command's help option the first time it is asked, with that context's names.
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 110}

BAD_INPUT = 2
stderr = operator_console()


class InputError(click.ClickException):
    exit_code = BAD_INPUT


def reports_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the project's own exceptions into `Error: …` messages with the right exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            listing = "\n".join(f"  {issue}" for issue in exc.issues)
            raise InputError(f"{len(exc.issues)} problem(s) found:\n{listing}") from None
        except Exception as exc:
            if isinstance(exc, _loaded(BAD_INPUT_ERRORS)):
                raise InputError(str(exc)) from None
            if isinstance(exc, _loaded(FAULT_ERRORS)):
                raise click.ClickException(str(exc)) from None
            raise

    return wrapper


#: Exceptions that mean the operator's input cannot be used (exit 2), and faults of the rig (exit 1).
BAD_INPUT_ERRORS = (("orchestrator.asr.engine", "ModelError"), ("orchestrator.audio.speech", "SynthesisError"),
                    ("orchestrator.catalog.crawl", "CrawlError"))
FAULT_ERRORS = (("orchestrator.audio.devices", "DeviceError"), ("orchestrator.sim.lab", "LabError"),
                ("orchestrator.sim.network", "NetworkError"),
                ("orchestrator.runner.night", "NotEnoughSpace"), ("orchestrator.core.durable", "DiskFull"),
                ("orchestrator.traffic.capture", "CaptureError"))


def _loaded(names: tuple[tuple[str, str], ...]) -> tuple[type, ...]:
    """The classes among `names` whose module is imported: an exception can't come from another.

    Looking them up instead of importing keeps the audio stack out of a `query`'s start-up.
    """
    return tuple(getattr(sys.modules[module], name) for module, name in names if module in sys.modules)


def db_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--db", type=click.Path(dir_okay=False, path_type=Path), default=settings.default_db,
        envvar=settings.ENV_DB, show_default="data/orchestrator.sqlite",
        help=f"The SQLite interaction log [env: {settings.ENV_DB}].",
    )(func)


def audio_dir_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--audio-dir", type=click.Path(file_okay=False, path_type=Path), default=settings.default_audio_dir,
        envvar=settings.ENV_AUDIO_DIR, show_default="audio/",
        help=f"Where recordings and the speech cache go [env: {settings.ENV_AUDIO_DIR}].",
    )(func)


def model_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--model", "model_setting", default=None, envvar=[settings.ENV_ASR_MODEL, settings.ENV_VOSK_MODEL],
        metavar="NAME|PATH|auto",
        help="Speech model, and with it the engine (Vosk or pocketsphinx): a name from `orchestrator models "
             "list`, a model folder, [ENGINE:]either of those, or `auto` (an installed Vosk English model, else "
             f"pocketsphinx's bundled English one) [env: {settings.ENV_ASR_MODEL}; else the lab file's "
             f"speech_model; default: {settings.DEFAULT_MODEL_NAME}].",
    )(func)


def lab_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--lab", "lab_path", type=click.Path(dir_okay=False, path_type=Path), default=settings.default_lab_file,
        envvar=settings.ENV_LAB, show_default="lab.yaml", help=f"The lab file [env: {settings.ENV_LAB}].",
    )(func)


def catalog_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--catalog", "catalog_dir", type=click.Path(file_okay=False, path_type=Path),
        default=lambda: settings.project_home() / "skills_catalog", show_default="skills_catalog/",
        help="Folder of the skills catalog.",
    )(func)


def resolve_model_setting(setting: str | None, lab_setting: str | None = None, audio_dir: Path | None = None) -> Any:
    """The speech model (a `SpeechModel`) from --model, else the lab file, else the default; its files
    are checked before anything runs. Model names are looked up in `audio_dir`'s models folder."""
    from orchestrator.asr import ModelError, check
    from orchestrator.asr.models import resolve

    try:
        model = resolve(setting or lab_setting, settings.models_dir(audio_dir))
        check(model)
    except ModelError as exc:
        raise InputError(str(exc)) from None
    return model
