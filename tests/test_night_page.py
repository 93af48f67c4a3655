"""The night page an operator reads in the morning: what failed and why, installs by skill name, the rig
self-test, the previous night, readable charts, and every step's audio linked from inside its run's folder.

The log is the two nights of `two_nights` and a third night on top, whose every step is known:

  pets on echo-1, 2026-03-06, cleared by a passing rig self-test:
    enable B02 ok (not_found; it was enabled the night before), open B01 ok (skill_opened),
    say B01 no_response (Cat Facts never answers: a failure), stop B01 no_response (the normal answer),
    say B01 skipped (its error says why), open B01 ok whose recording's path leaves the audio folder.
  Every recording is a real WAV on disk, and the first open's prompt too; the replies have their words.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from click.testing import CliRunner
from two_nights import NIGHT_2, PROMPT_SECONDS, RECORDED_SECONDS, build

from orchestrator import log
from orchestrator.analysis import night_data, night_page
from orchestrator.audio.clip import MIC_FORMAT, silence, write_wav_atomic
from orchestrator.cli.main import main

NIGHT_3 = "2026-03-06"
HOSTILE_PATH = "../../outside.wav"
#: The one prompt with its audio on disk: the open step's.
PROMPT_AUDIO = "tts-cache/open-cat-facts.wav"

#: (kind, skill, status, outcome, transcript, error, response_audio)
NIGHT_3_STEPS = [
    ("enable", "B02", "ok", "not_found", "I couldn't find that skill", None, "recordings/n3/000-enable.wav"),
    ("open", "B01", "ok", "skill_opened", "welcome to cat facts", None, "recordings/n3/001-open.wav"),
    ("say", "B01", "no_response", "no_response", None, None, "recordings/n3/002-say.wav"),
    ("stop", "B01", "no_response", "no_response", None, None, "recordings/n3/003-stop.wav"),
    ("say", "B01", "skipped", None, None, "an earlier turn of this dialog did not get its expected reply", None),
    ("open", "B01", "ok", "skill_opened", "welcome back", None, HOSTILE_PATH),
]


def build_three_nights(folder: Path) -> Path:
    """The two nights' log plus the third night above, with a real WAV for every recording it names."""
    db = folder / "orchestrator.sqlite"
    audio = folder / "audio"
    engine = build(db, audio)
    pets = log.upsert_persona(engine, name="pets", interest="pets-animals")
    echo_1 = log.upsert_device(engine, name="echo-1", room="a")
    check = log.record_rig_check(
        engine,
        log.RigCheck(started_at=f"{NIGHT_3}T20:59:00Z", finished_at=f"{NIGHT_3}T20:59:05Z", host="lab", trigger="night",
                     probe_level_dbfs=-12.0, min_level_dbfs=-40.0, max_crosstalk_dbfs=-50.0, min_snr_db=10.0,
                     passed=True),
        [log.RigCheckResult(device_id=echo_1, probe_hz=1000.0, status="ok", level_dbfs=-20.5, noise_dbfs=-80.0)], [],
    )
    run = log.start_run(engine, persona_id=pets, device_id=echo_1, audio_dir=audio, config={}, asr_engine="vosk",
                        asr_model="small", tts_engine=None, tts_voice=None, tts_rate=None, audio_backend=None,
                        scheduled_for=f"{NIGHT_3}T21:00:00Z", rig_check_id=check)
    for index, (kind, skill, status, outcome, transcript, error, recording) in enumerate(NIGHT_3_STEPS):
        if recording is not None and recording != HOSTILE_PATH:
            write_wav_atomic(audio / recording, silence(0.2, MIC_FORMAT))
        prompt = PROMPT_AUDIO if index == 1 else None
        if prompt is not None:
            write_wav_atomic(audio / prompt, silence(0.3, MIC_FORMAT))
        step = log.start_interaction(engine, run_id=run, step_index=index, kind=kind, skill_id=skill,
                                     prompt_text=f"Alexa, {kind}", prompt_audio=prompt)
        words = [{"word": w, "start": i * 0.3, "end": i * 0.3 + 0.25, "conf": 1.0}
                 for i, w in enumerate((transcript or "").split())]
        log.finish_interaction(engine, step, status, error=error, reply_outcome=outcome, transcript=transcript,
                               words=words or None, response_audio=recording, prompt_seconds=PROMPT_SECONDS,
                               recorded_seconds=RECORDED_SECONDS)
        if kind == "enable":
            log.record_install(engine, run_id=run, skill_id=skill, action="enable", outcome=outcome,
                               interaction_id=step)
    log.finish_run(engine, run, "completed")
    (folder / "outside.wav").write_bytes(b"not the run's")  # where the hostile path leads
    engine.dispose()
    return db


@pytest.fixture(scope="module")
def three_nights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_three_nights(tmp_path_factory.mktemp("three-nights"))


@pytest.fixture(scope="module")
def page(three_nights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The third night's page, written into a folder of its own away from the log and its audio."""
    out = tmp_path_factory.mktemp("pages") / "night.html"
    result = CliRunner().invoke(main, ["report", "night", "--db", str(three_nights), "--html", str(out)])
    assert result.exit_code == 0, result.output
    yield out, out.read_text()


def section(page: str, heading: str) -> str:
    return page.split(f"<h2>{heading}", 1)[1].split("<h2>", 1)[0]


def rows(html: str) -> list[str]:
    return re.findall(r"<tr><td>.*?</tr>", html, flags=re.S)


def test_expected_silences_and_skipped_steps_are_not_failures(page: tuple[Path, str]) -> None:
    _, html = page
    failed = section(html, "Failed steps")
    assert failed.startswith(" (1)</h2>")
    (row,) = rows(failed)
    assert ">say<" in row and "Cat Facts" in row and "no_response" in row
    assert "the Echo said nothing within the no-answer timeout" in row
    note = re.search(r'<p class="note">Not counted as failures: (.*?)</p>', failed, flags=re.S)
    assert note is not None
    assert note.group(1).startswith('1 step got no answer after &quot;stop&quot;')
    assert "1 step skipped" in note.group(1) and "did not get its expected reply (1)" in note.group(1)


@pytest.mark.parametrize("status", sorted(night_data.FAILED_STATUSES))
def test_every_failure_says_why_even_without_an_error(status: str) -> None:
    step = {"status": status, "kind": "say", "error": None}
    assert night_data.is_failure(step) and night_data.why(step)
    assert night_data.why({**step, "error": "DeviceError: gone"}) == "DeviceError: gone"


def test_silence_after_stop_is_expected_and_silence_elsewhere_is_not() -> None:
    assert night_data.is_expected_silence({"status": "no_response", "kind": "stop"})
    assert not night_data.is_failure({"status": "no_response", "kind": "stop"})
    assert night_data.is_failure({"status": "no_response", "kind": "open"})
    assert not night_data.is_failure({"status": "skipped", "kind": "say"})


def test_installs_by_skill_name_with_the_change_since_the_previous_night(page: tuple[Path, str]) -> None:
    _, html = page
    installs = section(html, "Skills installed")
    assert "0 of 1 enables worked; <strong>not_found</strong> (1): Dog Feeder." in installs
    (row,) = rows(installs)
    assert "<strong>Dog Feeder</strong>" in row and ">not_found<" in row and "I couldn&#x27;t find that skill" in row
    compared = section(html, "Compared with the previous night")
    assert f"previous night ({NIGHT_2})" in compared
    assert re.search(r"<strong>Dog Feeder</strong> \(pets, enable\): <span[^>]*>enabled</span> then "
                     r"<span[^>]*>not_found</span>", compared)
    figures = dict(re.findall(r"<tr><td>([^<]+)</td><td class=\"num\">([^<]+)</td>", compared))
    assert figures["runs"] == "1" and figures["steps"] == "6" and figures["failed steps"] == "1"
    assert figures["expected silences (after stop)"] == "1" and figures["skipped steps"] == "1"


def test_the_rig_self_test_that_cleared_the_night(page: tuple[Path, str]) -> None:
    _, html = page
    assert '<div class="value">passed</div><div class="label">rig self-test</div>' in html
    rig = section(html, "Rig self-test")
    assert "(night): <strong>passed</strong>" in rig
    (row,) = rows(rig)
    assert "echo-1" in row and ">ok<" in row and "-20.5" in row


def test_the_previous_nights_page_says_the_rig_test_did_not_run(three_nights: Path) -> None:
    made = night_page.page(three_nights, night_page.route_links("/a"), NIGHT_2)
    assert made is not None
    assert "No rig self-test cleared this night" in made[1]


def test_outcome_chart_names_its_bars_and_skills_and_draws_no_bar_of_nothing(page: tuple[Path, str]) -> None:
    _, html = page
    chart = section(html, "What the replies meant")
    labels = re.findall(r'<text x="0" y="\d+">([^<]+)</text>', chart)
    assert labels == ["skill_opened", "not_found"]  # most first; the silent steps are not replies
    assert ">1: Dog Feeder<" in chart  # a problem names its skills
    assert "(none)" not in chart and "unjudged" not in chart
    assert f"svg text {{ font-size: {night_page.FONT_PX}px" in html and night_page.FONT_PX >= 14


def test_audio_is_linked_relative_to_the_page_and_never_outside_the_runs_folder(page: tuple[Path, str]) -> None:
    out, html = page
    steps = section(html, "Steps</h2>")
    links = re.findall(r'<a href="([^"]+)">(prompt|reply)</a>', steps)
    # enable, open (its prompt too), say, stop; the skipped step has no audio and the hostile path gets no link
    assert [which for _, which in links] == ["reply", "prompt", "reply", "reply", "reply"]
    for href, _which in re.findall(r'<audio controls preload="none" src="([^"]+)" title="(\w+)">', html):
        assert not href.startswith("/") and "://" not in href
        target = (out.parent / unquote(href)).resolve()
        assert target.is_file() and target.read_bytes()[8:12] == b"WAVE", href
    assert "outside.wav" not in html


def test_served_page_links_the_web_views_audio_route(three_nights: Path) -> None:
    made = night_page.page(three_nights, night_page.route_links("/-/audio/orchestrator"))
    assert made is not None
    data, html = made
    srcs = re.findall(r'<audio controls preload="none" src="([^"]+)"', html)
    step_ids = {s["interaction_id"] for s in data.steps}
    assert srcs and all(re.fullmatch(r"/-/audio/orchestrator/(\d+)/(prompt|reply)\.wav", s) for s in srcs)
    assert {int(s.split("/")[4]) for s in srcs} <= step_ids


def test_many_failures_are_summed_up_by_reason_first_and_folded_after_the_first_few() -> None:
    failed = [{"status": "timeout" if i % 4 == 0 else "no_response", "kind": "open", "error": None,
               "echo": f"echo-{i % 3 + 1}", "persona": "p", "step_index": i, "attempt": 0, "skill_name": "Cat Facts",
               "skill_id": "B01", "started_at": "2026-03-06T21:00:00.000Z", "prompt_text": "Alexa, open cat facts",
               "transcript": None, "interaction_id": i, "prompt_audio": None, "response_audio": None}
              for i in range(40)]
    summary = night_page.failure_summary(failed)
    assert [re.findall(r'class="badge"[^>]*>(\w+)<', r) for r in rows(summary)] == [["no_response"], ["timeout"]]
    assert ">30</td>" in summary and ">10</td>" in summary and "echo-1 10" in summary
    table = night_page.failure_table(failed, night_page.route_links("/a"))
    shown, folded = table.split("<details>")
    assert len(rows(shown)) == night_page.FAILURES_OPEN and len(rows(folded)) == 40 - night_page.FAILURES_OPEN
    assert night_page.failure_summary(failed[:night_page.FAILURES_OPEN]) == ""


def test_a_date_with_two_rounds_says_so(three_nights: Path, tmp_path: Path) -> None:
    made = night_page.page(three_nights, night_page.route_links("/a"))
    assert made is not None and made[0].rounds == 1 and "rounds</strong>" not in made[1]
    db = tmp_path / "twice.sqlite"
    db.write_bytes(three_nights.read_bytes())
    engine = log.open_log(db)
    pets = log.upsert_persona(engine, name="pets", interest="pets-animals")
    again = log.start_run(engine, persona_id=pets, device_id=log.upsert_device(engine, name="echo-1"),
                          audio_dir=tmp_path, config={}, asr_engine=None, asr_model=None, tts_engine=None,
                          tts_voice=None, tts_rate=None, audio_backend=None, scheduled_for=f"{NIGHT_3}T23:00:00Z")
    log.finish_run(engine, again, "failed", error="the Echo was unplugged")
    engine.dispose()
    made = night_page.page(db, night_page.route_links("/a"))
    assert made is not None and made[0].rounds == 2
    assert "This date holds 2 rounds</strong>" in made[1] and f"run {again} (round 2)" in made[1]
