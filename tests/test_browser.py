"""The web view in a real browser: Debian's headless Chromium, driven through its chromedriver, reads a log that
`orchestrator browse` serves on a loopback port.

It opens a table page and the night page, plays an audio element of each (fetched with HTTP 200 and a WAV
body, decoded by the browser), and asks the server, byte for byte, for paths that try to leave the audio
folder: `..`, `%2e%2e`, absolute paths, and a step whose logged path leads outside.
"""

from __future__ import annotations

import http.client
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_night_page import HOSTILE_PATH, build_three_nights
from test_web import STOP_TIMEOUT_S, free_port, wait_until_answering

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                reason="needs Debian's chromium and chromium-driver (scripts/bootstrap installs them)")

#: What the browser runs in a page: fetch the audio element's source, then let the element load it.
#: Returns the status, the first 12 bytes, and the duration the browser decoded.
PLAY = """
const [selector, done] = arguments;
const audio = document.querySelector(selector);
if (!audio) { done({missing: true}); return; }
fetch(audio.currentSrc || audio.src).then(async (response) => {
  const head = Array.from(new Uint8Array(await response.arrayBuffer()).slice(0, 12));
  audio.preload = "auto";
  const decoded = new Promise((resolve) => {
    audio.addEventListener("loadedmetadata", () => resolve(audio.duration), {once: true});
    audio.addEventListener("error", () => resolve(-1), {once: true});
  });
  audio.load();
  done({status: response.status, head: head, duration: await decoded, src: audio.getAttribute("src")});
});
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`orchestrator browse` on the three nights' log, as a real process on a free loopback port."""
    folder = tmp_path_factory.mktemp("browse")
    db = build_three_nights(folder)
    port = free_port()
    browse = subprocess.Popen([sys.executable, "-m", "orchestrator", "browse", "--db", str(db), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(base, browse)
        yield base, folder
    finally:
        browse.send_signal(signal.SIGTERM)
        browse.wait(timeout=STOP_TIMEOUT_S)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--mute-audio",
                     "--autoplay-policy=no-user-gesture-required", "--window-size=1400,1000",
                     f"--user-data-dir={profile}"):
        options.add_argument(argument)
    # The driver path is given, so Selenium looks nothing up and downloads nothing.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_script_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def play(driver: Any, selector: str) -> dict[str, Any]:
    result: dict[str, Any] = driver.execute_async_script(PLAY, selector)
    assert not result.get("missing"), f"no {selector} on {driver.current_url}"
    return result


def assert_wav_played(result: dict[str, Any], seconds: float) -> None:
    assert result["status"] == 200, result
    assert bytes(result["head"][:4]) == b"RIFF" and bytes(result["head"][8:12]) == b"WAVE", result
    assert result["duration"] == pytest.approx(seconds, abs=0.05), result


def test_a_table_page_opens_on_its_rows_and_plays_a_steps_reply(served: tuple[str, Path], browser: Any) -> None:
    base, _ = served
    browser.get(f"{base}/orchestrator/interactions?prompt_audio__notblank=1")  # the step with both sounds on disk
    layout = browser.execute_script("""
        const rows = document.querySelector("table.rows-and-columns");
        const described = document.querySelector("details.column-descriptions");
        const words = document.querySelector("td.col-words_json details");
        const status = document.querySelector("th.col-status");
        return {rowsTop: rows.getBoundingClientRect().top, describedTop: described.getBoundingClientRect().top,
                folded: !described.open, words: words && words.querySelector("summary").textContent,
                wordsRow: words && words.closest("tr").getBoundingClientRect().height,
                statusTitle: status.title};
    """)
    assert layout["rowsTop"] < layout["describedTop"] and layout["folded"], layout
    assert layout["rowsTop"] < 400, layout  # the rows start on the first screen
    assert layout["words"] == "4 words", layout  # "welcome to cat facts"
    assert layout["wordsRow"] < 150, layout  # the words' JSON does not make the row tall
    assert layout["statusTitle"].startswith("ok (a reply, ended by itself)"), layout
    assert_wav_played(play(browser, "td.col-response_audio audio"), 0.2)
    assert_wav_played(play(browser, "td.col-prompt_audio audio"), 0.3)


def test_the_night_page_is_served_with_players_on_the_audio_route(served: tuple[str, Path], browser: Any) -> None:
    base, _ = served
    browser.get(f"{base}/orchestrator")
    browser.find_element("link text", "The latest night's page").click()
    assert browser.current_url == f"{base}/-/night/orchestrator"
    assert browser.find_element("tag name", "h1").text == "Night 2026-03-06"
    assert "Failed steps (1)" in browser.page_source
    result = play(browser, "audio")
    assert result["src"].startswith("/-/audio/orchestrator/")
    assert_wav_played(result, 0.2)
    sizes = browser.execute_script(
        "return Array.from(document.querySelectorAll('svg text')).map(t => parseFloat(getComputedStyle(t).fontSize))")
    assert sizes and min(sizes) >= 14


def raw_get(base: str, path: str, redirects: int = 3) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (no client normalises its dots or decodes its escapes), following
    the server's redirects on this server, as a browser would."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        status, body, location = response.status, response.read(), response.getheader("Location")
    finally:
        connection.close()
    if status in (301, 302, 307, 308) and location and redirects:
        assert location.startswith("/") or location.startswith(base), location  # never off this server
        return raw_get(base, location.removeprefix(base), redirects - 1)
    return status, body


def test_no_request_leaves_the_audio_folder(served: tuple[str, Path]) -> None:
    base, folder = served
    connection = sqlite3.connect(folder / "orchestrator.sqlite")
    try:
        (hostile,) = connection.execute("SELECT id FROM interactions WHERE response_audio = ?",
                                        (HOSTILE_PATH,)).fetchone()
        (fine,) = connection.execute("SELECT id FROM interactions WHERE prompt_audio IS NOT NULL").fetchone()
    finally:
        connection.close()
    secret = (folder / "outside.wav").read_bytes()
    assert raw_get(base, f"/-/audio/orchestrator/{fine}/reply.wav")[0] == 200
    attempts = [
        f"/-/audio/orchestrator/{hostile}/reply.wav",  # the log's own path leads out of the folder
        f"/-/audio/orchestrator/{fine}/../../../../outside.wav",
        f"/-/audio/orchestrator/{fine}/%2e%2e/%2e%2e/%2e%2e/outside.wav",
        f"/-/audio/orchestrator/{fine}/..%2f..%2f..%2foutside.wav",
        f"/-/audio/orchestrator/{fine}/reply.wav/../../../../../etc/passwd",
        "/-/audio/orchestrator/../../../etc/passwd",
        "/-/audio/%2e%2e/%2e%2e/etc/passwd",
        f"/-/audio/orchestrator/{folder}/outside.wav",
        f"/-/audio/orchestrator/{fine}/{folder / 'outside.wav'}",
        "/-/audio//etc/passwd",
        "//etc/passwd",
        "/etc/passwd",
        f"/{folder}/outside.wav",
        "/-/static/../../../../../etc/passwd",
        "/-/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/-/audio/_internal/1/reply.wav",
    ]
    for path in attempts:
        status, body = raw_get(base, path)
        assert status in (400, 403, 404), (path, status)
        assert secret not in body and b"root:" not in body, path
