"""The nightly scheduler: jobs rebuilt from persona files, missed runs in the log, rooms taking turns, DST.

Most tests inject the job function (`fake_job`, referenced by text as the job store requires) or the
night (`persona_jobs.start_night`), so no audio runs; the last test runs a real night on a virtual lab.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from click.testing import CliRunner

from orchestrator import log
from orchestrator.asr import SpeechModel
from orchestrator.cli.schedule import schedule_group, serve, status
from orchestrator.plan import schedule as plan_schedule
from orchestrator.plan.persona import Schedule
from orchestrator.scheduler import jobs as persona_jobs
from orchestrator.scheduler import runtime, store
from orchestrator.scheduler import service as serving

PROJECT = Path(__file__).resolve().parents[1]
FAKE_JOB = f"{__name__}:fake_job"
BLOCKING_JOB = f"{__name__}:blocking_job"
LONDON = "Europe/London"
YEARLY = "0 3 1 1 *"  # never due while a test runs

CALLS: list[tuple[str, datetime]] = []
RELEASE = threading.Event()


def fake_job(persona: str, *paths: str) -> str:
    CALLS.append((persona, runtime.scheduled_time()))
    return f"{persona}: fake"


def blocking_job(persona: str, *paths: str) -> str:
    CALLS.append((persona, runtime.scheduled_time()))
    RELEASE.wait(10)
    return f"{persona}: released"


@pytest.fixture(autouse=True)
def fresh_state(tmp_path, monkeypatch):
    CALLS.clear()
    RELEASE.clear()
    monkeypatch.setenv("ORCHESTRATOR_HOME", str(tmp_path / "home"))
    yield
    RELEASE.set()


# -- a small lab: rooms a (two Echos) and b ---------------------------------------------------------


def write_persona(folder: Path, name: str, echo: str, cron: str = YEARLY, tz: str = LONDON, jitter: int = 0) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\ncontrol: true\necho: {echo}\n"
                    f'schedule: {{cron: "{cron}", timezone: {tz}, jitter_minutes: {jitter}}}\nplan: []\n')
    return path


@dataclass
class Files:
    root: Path

    def __post_init__(self) -> None:
        for folder in (self.personas, self.catalog, self.model):
            folder.mkdir(parents=True, exist_ok=True)
        (self.catalog / "pets-animals.yaml").write_text(
            "category: pets-animals\nskills:\n- {id: B017OBJI46, name: Cat Facts, invocation_name: cat facts, "
            "category: pets-animals}\n")
        self.lab.write_text("echos:\n"
                            "  - {name: a1, room: a, speaker: a1_out, microphone: a1_mic}\n"
                            "  - {name: a2, room: a, speaker: a2_out, microphone: a2_mic}\n"
                            "  - {name: b1, room: b, speaker: b1_out, microphone: b1_mic}\n")
        for name, echo in (("p-a1", "a1"), ("p-a2", "a2"), ("p-b1", "b1")):
            write_persona(self.personas, name, echo)

    personas = property(lambda self: self.root / "personas")
    catalog = property(lambda self: self.root / "catalog")
    model = property(lambda self: self.root / "model")
    lab = property(lambda self: self.root / "lab.yaml")
    db = property(lambda self: self.root / "log.sqlite")
    audio = property(lambda self: self.root / "audio")
    jobs_db = property(lambda self: self.root / "scheduler.sqlite")

    def jobs(self, func: str = FAKE_JOB) -> list[store.PersonaJob]:
        return serving.load_persona_jobs(self.personas, self.lab, self.catalog, self.db, self.audio,
                                          SpeechModel("vosk", self.model, "model"), func)

    def serve_args(self, model: Path) -> list[str]:
        return ["--personas", str(self.personas), "--lab", str(self.lab), "--catalog", str(self.catalog),
                "--db", str(self.db), "--audio-dir", str(self.audio), "--model", str(model),
                "--jobs-db", str(self.jobs_db)]


@pytest.fixture
def files(tmp_path) -> Files:
    return Files(tmp_path)


@pytest.fixture
def services() -> Iterator[Callable[..., serving.SchedulerService]]:
    started: list[serving.SchedulerService] = []

    def start(files: Files, func: str = FAKE_JOB, **options: Any) -> serving.SchedulerService:
        service = serving.SchedulerService(serving.ServeConfig(files.jobs(func), files.jobs_db, **options))
        service.report = service.start()  # type: ignore[attr-defined]
        started.append(service)
        return service

    yield start
    for service in started:
        if service.lock._file is not None:
            service.stop()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def wait_for(condition: Callable[[], Any], timeout: float = 8.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def stored_jobs(jobs_db: Path) -> dict[str, Any]:
    with store.open_store(jobs_db) as scheduler:
        return {job.id: job for job in scheduler.get_jobs()}


def run_rows(db: Path) -> list[sqlite3.Row]:
    if not db.exists():
        return []
    connection = sqlite3.connect(db)
    connection.row_factory = sqlite3.Row
    try:
        return connection.execute("SELECT r.*, p.name AS persona FROM runs r JOIN personas p ON p.id = r.persona_id "
                                  "ORDER BY r.scheduled_for").fetchall()
    except sqlite3.OperationalError:  # the log is being created
        return []
    finally:
        connection.close()


# -- jobs rebuilt from the persona files -----------------------------------------------------------------


def test_job_arguments_name_the_engine_and_old_ones_still_load(files):
    args = persona_jobs.JobArgs("p-a1", files.root / "p.yaml", files.lab, files.catalog, files.db, files.audio,
                            SpeechModel("pocketsphinx", files.model, "model"))
    stored = args.as_args()
    assert stored[-1] == f"pocketsphinx:{files.model.resolve()}"
    assert persona_jobs.JobArgs.from_args(stored).model == SpeechModel("pocketsphinx", files.model.resolve(), "model")
    # A job stored before there were two engines holds a bare Vosk model folder.
    old = persona_jobs.JobArgs.from_args([*stored[:-1], str(files.model.resolve())])
    assert (old.model.engine, old.model.path) == ("vosk", files.model.resolve())


def test_jobs_are_rebuilt_with_ids_at_every_start_without_duplicates(files, services):
    for _ in range(2):
        services(files).stop()
    jobs = stored_jobs(files.jobs_db)
    assert sorted(jobs) == ["persona:p-a1", "persona:p-a2", "persona:p-b1"]
    job = jobs["persona:p-a1"]
    assert job.func_ref == FAKE_JOB
    *paths, model = job.args[1:]
    assert job.args[0] == "p-a1" and all(isinstance(a, str) and Path(a).is_absolute() for a in paths)
    assert model == f"vosk:{files.model.resolve()}"
    assert isinstance(job.trigger, plan_schedule.NightlyTrigger) and str(job.trigger.timezone) == LONDON
    assert job.next_run_time.astimezone(job.trigger.timezone).strftime("%m-%d %H:%M") == "01-01 03:00"


def test_the_real_job_function_is_referenced_by_text(files):
    job = files.jobs(persona_jobs.JOB_FUNC)[0]
    assert job.func == "orchestrator.scheduler.jobs:run_persona_job"
    assert job.args.as_args()[1] == str(files.personas / "p-a1.yaml")


@pytest.mark.parametrize("old_func", ["orchestrator.schedule:run_persona_job"])
def test_jobs_stored_by_earlier_versions_still_load(files, old_func):
    # APScheduler deletes a stored job whose function does not import, losing its pause and due time.
    jobs_db = files.jobs_db
    writer = store.StoreEditor(jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{jobs_db}")}, timezone=UTC)
    writer.start(paused=True)
    args = persona_jobs.JobArgs("p-a1", files.personas / "p-a1.yaml", files.lab, files.catalog, files.db, files.audio,
                                SpeechModel("vosk", files.model, "model"))
    writer.add_job(old_func, trigger=plan_schedule.nightly_trigger(Schedule(cron=YEARLY, timezone=LONDON)),
                   id="persona:p-a1", name="p-a1", args=args.as_args())
    writer.shutdown(wait=False)
    connection = sqlite3.connect(jobs_db)
    try:
        (state,) = connection.execute("SELECT job_state FROM apscheduler_jobs WHERE id = 'persona:p-a1'").fetchone()
    finally:
        connection.close()
    assert pickle.loads(state)["func"] == old_func

    job = stored_jobs(jobs_db)["persona:p-a1"]
    assert job.func_ref == old_func and job.func is persona_jobs.run_persona_job


def test_nightly_settings_misfire_grace_coalescing_one_instance(files, services):
    services(files).stop()
    assert {(j.misfire_grace_time, j.coalesce, j.max_instances) for j in stored_jobs(files.jobs_db).values()} == {
        (3600, True, 1)}
    services(files, misfire_grace=120).stop()
    assert {j.misfire_grace_time for j in stored_jobs(files.jobs_db).values()} == {120}


def test_jitter_is_stored_in_seconds(files, services):
    write_persona(files.personas, "p-b1", "b1", jitter=20)
    services(files).stop()
    assert stored_jobs(files.jobs_db)["persona:p-b1"].trigger.jitter == 1200


def test_an_edited_schedule_replaces_the_old_trigger(files, services):
    services(files).stop()
    write_persona(files.personas, "p-a1", "a1", cron="30 4 * * *")
    report = services(files).report
    job = stored_jobs(files.jobs_db)["persona:p-a1"]
    assert "p-a1" in report.replaced
    assert "hour='4', minute='30'" in repr(job.trigger)
    assert job.next_run_time.astimezone(job.trigger.timezone).strftime("%H:%M") == "04:30"


def test_a_removed_persona_loses_its_job_and_its_queued_runs(files, services):
    services(files).stop()
    with store.open_store(files.jobs_db) as scheduler:
        queued = store.queue_trigger(scheduler, "p-b1")
    (files.personas / "p-b1.yaml").unlink()
    service = services(files)
    service.stop()
    assert sorted(stored_jobs(files.jobs_db)) == ["persona:p-a1", "persona:p-a2"]
    assert set(service.report.removed) == {"persona:p-b1", queued.id}
    assert CALLS == []


def test_serve_refuses_a_broken_persona_folder(files):
    (files.personas / "p-a2.yaml").write_text("name: p-a2\ncontrol: true\necho: nowhere\n")
    write_persona(files.personas, "p-b1", "b1", cron="0 1 1 * 1")
    with pytest.raises(Exception) as failure:
        files.jobs()
    assert "day of the month or the day of the week, not both" in str(failure.value)  # found by validation
    write_persona(files.personas, "p-b1", "b1")
    with pytest.raises(Exception, match="Echo 'nowhere' is not in the lab file"):
        files.jobs()


# -- runs that did not happen are in the log -------------------------------------------------------------


def test_runs_missed_while_the_scheduler_was_down_are_recorded(files, services):
    now = datetime.now(UTC)
    cron = f"0 {(now.hour + 12) % 24} * * *"  # the latest due time is about 12 hours ago
    write_persona(files.personas, "p-a1", "a1", cron=cron, tz="UTC")
    services(files).stop()
    trigger = plan_schedule.nightly_trigger(Schedule(cron=cron, timezone="UTC"))
    first = trigger.get_next_fire_time(None, now - timedelta(days=3))
    with store.open_store(files.jobs_db) as scheduler:
        scheduler.modify_job("persona:p-a1", next_run_time=first)
    due = plan_schedule.fire_times(trigger, first, datetime.now(UTC))
    assert len(due) == 3

    service = services(files)
    rows = wait_for(lambda: len(r := run_rows(files.db)) == 3 and r)
    assert [r["scheduled_for"] for r in rows] == [log.to_iso(t) for t in due]
    assert {r["status"] for r in rows} == {"missed"} and {r["persona"] for r in rows} == {"p-a1"}
    assert [r["error"] for r in rows[:2]] == ["the scheduler was not running"] * 2
    assert "beyond the misfire grace of 3600 s" in rows[2]["error"]
    assert all(r["device_id"] for r in rows)  # the Echo is known from the lab file
    assert CALLS == []
    assert service.next_runs()["persona:p-a1"] > datetime.now(UTC)


def test_a_run_due_within_the_grace_still_runs_after_a_restart(files, services):
    services(files).stop()
    due = datetime.now(UTC) - timedelta(minutes=10)
    with store.open_store(files.jobs_db) as scheduler:
        scheduler.modify_job("persona:p-a1", next_run_time=due)
    services(files)
    wait_for(lambda: CALLS)
    assert CALLS == [("p-a1", due)]
    assert run_rows(files.db) == []


def test_a_run_skipped_because_the_previous_one_still_runs_is_recorded(files, services):
    service = services(files, func=BLOCKING_JOB)
    first = datetime.now(UTC)
    service.scheduler.modify_job("persona:p-b1", next_run_time=first)
    service.wakeup()
    wait_for(lambda: CALLS)
    second = datetime.now(UTC)
    service.scheduler.modify_job("persona:p-b1", next_run_time=second)
    service.wakeup()
    (row,) = wait_for(lambda: run_rows(files.db))
    RELEASE.set()
    assert (row["persona"], row["status"], row["scheduled_for"]) == ("p-b1", "missed", log.to_iso(second))
    assert row["error"] == "skipped: the persona's previous run was still going"


def test_a_job_that_fails_before_its_run_starts_is_recorded_as_failed(files, services, monkeypatch):
    monkeypatch.setattr(persona_jobs, "start_night", lambda *a: pytest.fail("the night must not start"))
    service = services(files, func=persona_jobs.JOB_FUNC)
    (files.personas / "p-a2.yaml").write_text("name: p-a2\ncontrol: true\necho: nowhere\n")
    with store.open_store(files.jobs_db) as scheduler:
        queued = store.queue_trigger(scheduler, "p-a2")
    service.wakeup()
    (row,) = wait_for(lambda: run_rows(files.db))
    assert (row["persona"], row["status"], row["scheduled_for"]) == ("p-a2", "failed", log.to_iso(queued.next_run_time))
    assert row["error"].startswith("the run could not start: ConfigError:")
    assert "Echo 'nowhere' is not in the lab file" in row["error"]


# -- pause, resume, trigger, list --------------------------------------------------------------------------


def test_pause_and_resume_persist_across_restarts(files, services, runner):
    services(files).stop()
    result = runner.invoke(schedule_group, ["pause", "p-a1", "--jobs-db", str(files.jobs_db)])
    assert result.exit_code == 0, result.output
    assert stored_jobs(files.jobs_db)["persona:p-a1"].next_run_time is None

    service = services(files)
    assert service.report.paused == ["p-a1"]
    assert service.next_runs()["persona:p-a1"] is None and service.next_runs()["persona:p-a2"] is not None
    service.stop()
    listing = runner.invoke(schedule_group, ["list", "--jobs-db", str(files.jobs_db)])
    assert "p-a1" in listing.stdout and " paused " in listing.stdout.splitlines()[1]
    assert "`orchestrator serve` is not running" in listing.stderr

    result = runner.invoke(schedule_group, ["resume", "p-a1", "--jobs-db", str(files.jobs_db)])
    assert result.exit_code == 0 and "next run 20" in result.stderr
    service = services(files)
    assert service.report.paused == []
    assert service.next_runs()["persona:p-a1"] is not None


def test_pause_while_serve_runs_keeps_the_job_id(files, services, runner):
    service = services(files)
    runner.invoke(schedule_group, ["pause", "p-b1", "--jobs-db", str(files.jobs_db)])
    service.wakeup()
    assert service.next_runs()["persona:p-b1"] is None
    assert "persona:p-b1" in service.next_runs()


def test_list_shows_each_persona_with_its_next_run_and_schedule(files, services, runner):
    write_persona(files.personas, "p-b1", "b1", cron="25 1 * * *", jitter=20)
    services(files)
    result = runner.invoke(schedule_group, ["list", "--jobs-db", str(files.jobs_db)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["PERSONA", "STATE", "NEXT", "RUN", "SCHEDULE"]
    assert lines[1].split()[:2] == ["p-a1", "scheduled"] and lines[1].endswith("0 3 1 1 * Europe/London")
    assert lines[3].endswith("25 1 * * * Europe/London +0..20 min")
    assert result.stderr == ""


def test_list_before_serve_ever_ran_shows_the_runs_the_persona_files_ask_for(files, runner):
    write_persona(files.personas, "p-b1", "b1", cron="25 1 * * *", jitter=20)
    result = runner.invoke(schedule_group, ["list", "--jobs-db", str(files.jobs_db), "--personas", str(files.personas)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines[1:]] == [["p-a1", "not"], ["p-a2", "not"], ["p-b1", "not"]]
    assert "-01-01 03:00:00 GMT" in lines[1] and lines[1].endswith("0 3 1 1 * Europe/London")
    assert lines[3].endswith("25 1 * * * Europe/London +0..20 min")
    assert "`orchestrator serve` has not run yet" in result.stderr
    assert not files.jobs_db.exists()  # listing makes no job store


def test_trigger_queues_a_run_that_the_running_serve_picks_up(files, services, runner):
    service = services(files, wakeup_seconds=0.2)
    stop = threading.Event()
    loop = threading.Thread(target=service.serve_forever, args=(stop,))
    loop.start()
    try:
        before = datetime.now(UTC)
        result = runner.invoke(schedule_group, ["trigger", "p-a1", "--jobs-db", str(files.jobs_db)])
        assert result.exit_code == 0, result.output
        assert "queued p-a1" in result.stderr and "within seconds" in result.stderr
        wait_for(lambda: CALLS)
    finally:
        stop.set()
        loop.join()
    ((persona, scheduled_for),) = CALLS
    assert persona == "p-a1" and before <= scheduled_for <= datetime.now(UTC)
    assert sorted(service.next_runs()) == ["persona:p-a1", "persona:p-a2", "persona:p-b1"]  # the one-off is gone


def test_trigger_without_serve_runs_in_the_foreground(files, services, runner):
    services(files).stop()
    result = runner.invoke(schedule_group, ["trigger", "p-b1", "--jobs-db", str(files.jobs_db)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "p-b1: fake\n"
    assert "no scheduler is running: running p-b1 here" in result.stderr
    assert [c[0] for c in CALLS] == ["p-b1"]
    assert runtime.lock_holder(files.jobs_db) is None


def test_trigger_of_an_unknown_persona_names_the_known_ones(files, services, runner):
    services(files).stop()
    result = runner.invoke(schedule_group, ["trigger", "nope", "--jobs-db", str(files.jobs_db)])
    assert result.exit_code == 1
    assert "no scheduled persona 'nope' (known: p-a1, p-a2, p-b1)" in result.stderr


def test_commands_without_a_job_store_say_how_to_make_one(files, runner):
    # `list` shows the persona files' runs instead (see above); the commands that change the store cannot.
    result = runner.invoke(schedule_group, ["pause", "p-a1", "--jobs-db", str(files.jobs_db)])
    assert result.exit_code == 1
    assert "start `orchestrator serve` once" in result.stderr


# -- one scheduler per job store --------------------------------------------------------------------------


def test_a_second_serve_fails_with_a_clear_message(files, services, runner, ko_model):
    services(files)
    result = runner.invoke(serve, files.serve_args(ko_model))
    assert result.exit_code == 1
    assert f"is in use by `orchestrator serve` (pid {os.getpid()}" in result.stderr
    assert "only one scheduler may use it" in result.stderr


def test_the_lock_is_released_when_serve_stops(files, services):
    services(files).stop()
    assert runtime.lock_holder(files.jobs_db) is None
    services(files)
    assert runtime.lock_holder(files.jobs_db)["role"] == "serve"


def test_serve_stops_on_sigterm_within_seconds(files, ko_model):
    # faulthandler: should it hang, SIGABRT makes it print where every thread is.
    process = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-c", "from orchestrator.cli.schedule import serve; serve()",
         *files.serve_args(ko_model)],
        stderr=subprocess.PIPE, text=True, cwd=PROJECT,
    )
    try:
        lines = []
        while "scheduler running" not in (line := process.stderr.readline()):
            assert line, "".join(lines)
            lines.append(line)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            pytest.fail(f"serve did not stop within 10 s of SIGTERM; its threads:\n{process.stderr.read()}")
        assert process.returncode == 0
        assert "stopped" in process.stderr.read()
    finally:
        process.kill()
        process.stderr.close()
    assert runtime.lock_holder(files.jobs_db) is None


# -- rooms take turns; stopping --------------------------------------------------------------------------


@dataclass
class FakeNights:
    """Stands in for night.py: each night lasts `seconds` and writes its run's row."""

    seconds: float = 0.5
    intervals: list[tuple[str, str, float, float, datetime]] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.intervals = []

    def __call__(self, loaded, catalog, lab, args, scheduled_for):
        name = loaded.persona.name
        start = time.monotonic()
        time.sleep(self.seconds)
        self.intervals.append((name, lab.echo(loaded.persona.echo).room_key, start, time.monotonic(), scheduled_for))
        run_id = log_run(args.db, name, loaded.persona.echo, scheduled_for, "completed")
        return [SimpleNamespace(persona=name, run_id=run_id, status="completed", error=None)]


def log_run(db: Path, persona: str, echo: str, scheduled_for: datetime | None, outcome: str) -> int:
    """The rows a real night writes for its run (serve has created the log)."""
    engine = persona_jobs.log_engine(db)
    run_id = log.start_run(engine, persona_id=log.upsert_persona(engine, name=persona, interest=None),
                           device_id=log.upsert_device(engine, name=echo), audio_dir=db.parent,
                           config={"steps": []}, asr_engine=None, asr_model=None, tts_engine=None, tts_voice=None,
                           tts_rate=None,
                           audio_backend=None, scheduled_for=scheduled_for)
    if outcome != "running":
        log.finish_run(engine, run_id, outcome)  # type: ignore[arg-type]
    engine.dispose()
    return run_id


def worker(seconds: float, graceful: bool, ready: Path) -> None:
    """A persona worker: like night.py's, a graceful one ends its step and exits on SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, (lambda *_: stop.set()) if graceful else signal.SIG_IGN)
    ready.touch()
    stop.wait(seconds)


class WorkerNights:
    """Stands in for night.py with a real worker process named as night.py names them."""

    def __init__(self, graceful: bool, folder: Path) -> None:
        self.graceful = graceful
        self.ready = folder / "worker-ready"
        self.exit_codes: dict[str, int | None] = {}

    def __call__(self, loaded, catalog, lab, args, scheduled_for):
        name = loaded.persona.name
        process = multiprocessing.get_context("spawn").Process(target=worker, args=(30, self.graceful, self.ready),
                                                               name=f"persona-{name}")
        process.start()
        process.join()
        self.exit_codes[name] = process.exitcode
        outcome = "interrupted" if process.exitcode == 0 else "failed"
        run_id = log_run(args.db, name, loaded.persona.echo, scheduled_for, outcome)
        return [SimpleNamespace(persona=name, run_id=run_id, status=outcome, error=None)]


def workers_alive() -> list[str]:
    return [c.name for c in multiprocessing.active_children() if c.name.startswith("persona-")]


def queue_all(jobs_db: Path, *personas: str) -> dict[str, datetime]:
    with store.open_store(jobs_db) as scheduler:
        return {p: store.queue_trigger(scheduler, p).next_run_time for p in personas}


def test_personas_of_one_room_take_turns_and_rooms_run_in_parallel(files, services, monkeypatch):
    nights = FakeNights(seconds=0.5)
    monkeypatch.setattr(persona_jobs, "start_night", nights)
    service = services(files, func=persona_jobs.JOB_FUNC)
    due = queue_all(files.jobs_db, "p-a1", "p-a2", "p-b1")
    service.wakeup()
    wait_for(lambda: len(nights.intervals) == 3)
    spans = {name: (start, end) for name, _room, start, end, _due in nights.intervals}
    (a_first, a_second) = sorted([spans["p-a1"], spans["p-a2"]])
    assert a_second[0] >= a_first[1]  # room a: one after the other
    assert spans["p-b1"][0] < a_first[1]  # room b: alongside room a
    assert {name: when for name, _r, _s, _e, when in nights.intervals} == due  # runs.scheduled_for


def test_stopping_lets_running_nights_finish_and_records_runs_still_waiting(files, services, monkeypatch):
    nights = WorkerNights(graceful=True, folder=files.root)
    monkeypatch.setattr(persona_jobs, "start_night", nights)
    service = services(files, func=persona_jobs.JOB_FUNC)
    queue_all(files.jobs_db, "p-a1", "p-a2")
    service.wakeup()
    wait_for(nights.ready.exists)
    started = time.monotonic()
    assert service.stop() is True
    assert time.monotonic() - started < 3
    assert list(nights.exit_codes.values()) == [0]  # finished its step and exited
    rows = {row["status"]: row for row in run_rows(files.db)}
    assert sorted(rows) == ["interrupted", "missed"]
    assert rows["interrupted"]["persona"] == next(iter(nights.exit_codes))
    assert rows["missed"]["persona"] == ({"p-a1", "p-a2"} - set(nights.exit_codes)).pop()
    assert rows["missed"]["error"] == "the scheduler stopped while it waited for room 'a' before the run could start"


def test_workers_that_do_not_stop_in_time_are_ended(files, services, monkeypatch):
    nights = WorkerNights(graceful=False, folder=files.root)
    monkeypatch.setattr(persona_jobs, "start_night", nights)
    service = services(files, func=persona_jobs.JOB_FUNC, stop_timeout=0.5)
    queue_all(files.jobs_db, "p-b1")
    service.wakeup()
    wait_for(nights.ready.exists)
    started = time.monotonic()
    assert service.stop() is False
    assert time.monotonic() - started < 3
    assert nights.exit_codes == {"p-b1": -signal.SIGKILL}
    assert workers_alive() == []


def test_a_night_that_failed_before_its_run_started_is_recorded(files, services, monkeypatch):
    def night_failing_early(loaded, catalog, lab, args, scheduled_for):
        return [SimpleNamespace(persona=loaded.persona.name, run_id=0, status="failed",
                                error="SynthesisError: no audio")]

    monkeypatch.setattr(persona_jobs, "start_night", night_failing_early)
    service = services(files, func=persona_jobs.JOB_FUNC)
    due = queue_all(files.jobs_db, "p-b1")["p-b1"]
    service.wakeup()
    (row,) = wait_for(lambda: run_rows(files.db))
    assert (row["persona"], row["status"], row["scheduled_for"]) == ("p-b1", "failed", log.to_iso(due))
    assert row["error"] == "the night ended before its run started: p-b1: failed (SynthesisError: no audio)"


# -- status ------------------------------------------------------------------------------------------------


def test_status_shows_serve_and_what_runs_now(files, services, runner):
    result = runner.invoke(status, ["--db", str(files.db), "--jobs-db", str(files.jobs_db)])
    assert result.stdout == "scheduler: not running\nno run is running\n"

    engine = log.open_log(files.db)
    persona_id = log.upsert_persona(engine, name="p-a1", interest=None, is_control=True)
    device_id = log.upsert_device(engine, name="a1", room="a")
    run_id = log.start_run(engine, persona_id=persona_id, device_id=device_id, audio_dir=files.audio,
                           config={"steps": ["Alexa, what time is it", "Alexa, stop"]}, asr_engine=None, asr_model=None,
                           tts_engine=None, tts_voice=None, tts_rate=None, audio_backend=None)
    log.start_interaction(engine, run_id=run_id, step_index=0, kind="ask", prompt_text="Alexa, what time is it")
    engine.dispose()
    services(files)
    result = runner.invoke(status, ["--db", str(files.db), "--jobs-db", str(files.jobs_db)])
    assert result.exit_code == 0, result.output
    first, second = result.stdout.splitlines()
    assert first.startswith(f"scheduler: up: `orchestrator serve` (pid {os.getpid()} on ")
    assert second.startswith(f"run {run_id}: p-a1 on a1 (room a), running since 20")
    assert "; step 1/2 ask started since 20" in second and second.endswith(": Alexa, what time is it")


# -- when a persona fires ---------------------------------------------------------------------------------


def london(cron: str, jitter: int = 0) -> plan_schedule.NightlyTrigger:
    return plan_schedule.nightly_trigger(Schedule(cron=cron, timezone=LONDON, jitter_minutes=jitter))


def fires(trigger: plan_schedule.NightlyTrigger, start: datetime, days: int = 4) -> list[datetime]:
    """In UTC: a local time in a fold or gap never compares equal to a time in another zone."""
    times = plan_schedule.fire_times(trigger, trigger.get_next_fire_time(None, start), start + timedelta(days=days))
    return [t.astimezone(UTC) for t in times]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


SPRING = utc("2026-03-27T12:00")  # clocks go forward at 01:00 GMT on 2026-03-29
AUTUMN = utc("2026-10-23T12:00")  # clocks go back at 02:00 BST on 2026-10-25


def test_spring_forward_fires_once_each_night():
    assert fires(london("30 2 * * *"), SPRING) == [
        utc("2026-03-28T02:30"), utc("2026-03-29T01:30"), utc("2026-03-30T01:30"), utc("2026-03-31T01:30")]
    # 01:25 does not exist on 2026-03-29: the run comes at 02:25 BST, once.
    assert fires(london("25 1 * * *"), SPRING) == [
        utc("2026-03-28T01:25"), utc("2026-03-29T01:25"), utc("2026-03-30T00:25"), utc("2026-03-31T00:25")]


def test_fall_back_fires_once_at_the_first_of_the_repeated_wall_times():
    assert fires(london("25 1 * * *"), AUTUMN) == [
        utc("2026-10-24T00:25"), utc("2026-10-25T00:25"), utc("2026-10-26T01:25"), utc("2026-10-27T01:25")]
    assert fires(london("30 2 * * *"), AUTUMN) == [
        utc("2026-10-24T01:30"), utc("2026-10-25T02:30"), utc("2026-10-26T02:30"), utc("2026-10-27T02:30")]


def test_with_jitter_each_night_still_fires_once_within_its_window():
    random.seed(7)
    trigger = london("25 1 * * *", jitter=20)
    zone = trigger.timezone
    for _ in range(50):
        times = fires(trigger, AUTUMN)
        local = [t.astimezone(zone) for t in times]
        assert [t.date().day for t in local] == [24, 25, 26, 27]
        assert all(t.replace(tzinfo=None).time() >= datetime(1, 1, 1, 1, 25).time() for t in local)
        assert all(t.replace(tzinfo=None).time() <= datetime(1, 1, 1, 1, 45).time() for t in local)


def test_crontab_weekdays_count_from_sunday():
    # APScheduler 3's own from_crontab would read 0 as Monday.
    sunday = london("0 1 * * 0").get_next_fire_time(None, utc("2026-01-01T00:00"))
    assert sunday.strftime("%A %F") == "Sunday 2026-01-04"
    assert plan_schedule.crontab_weekdays("1-5") == "mon,tue,wed,thu,fri"
    assert plan_schedule.crontab_weekdays("5-7") == "fri,sat,sun"
    assert plan_schedule.crontab_weekdays("*/2") == "tue,thu,sat,sun"


def test_a_stored_trigger_keeps_its_behaviour():
    import pickle

    trigger = pickle.loads(pickle.dumps(london("25 1 * * *", jitter=5)))
    assert isinstance(trigger, plan_schedule.NightlyTrigger) and trigger.jitter == 300
    assert len(fires(trigger, AUTUMN)) == 4


# -- a real night through the scheduler -------------------------------------------------------------------


@pytest.mark.lab
def test_a_triggered_persona_really_runs_through_the_scheduler(tmp_path, ko_model, catalog_dir):
    import yaml

    from orchestrator.lab.config import EchoConfig, LabConfig
    from orchestrator.sim.demo import DEMO_ENDPOINTING, render_sim_voice
    from orchestrator.sim.echo import SCRIPT as SIM_SCRIPT
    from orchestrator.sim.echo import SimScript, SimulatedEchos
    from orchestrator.sim.lab import VirtualLab

    files = Files(tmp_path)
    for path in files.personas.glob("*.yaml"):
        path.unlink()
    (files.personas / "night.yaml").write_text(
        f'name: night\ncontrol: true\necho: echo1\nschedule: {{cron: "{YEARLY}", timezone: UTC}}\n'
        "plan:\n  - ask: what time is it\n")
    script = SimScript.load(SIM_SCRIPT).with_catalog([])
    clips = render_sim_voice(script, files.audio)
    lab_dir = tmp_path / "vlab"
    with VirtualLab(lab_dir, ["echo1"]) as vlab:
        vlab.activate()
        echo = vlab.echos["echo1"]
        lab = LabConfig(echos=[EchoConfig(name="echo1", room="r1", speaker=echo.speaker, microphone=echo.microphone)],
                        endpointing=DEMO_ENDPOINTING, virtual_lab=lab_dir)
        files.lab.write_text(yaml.safe_dump(lab.model_dump(mode="json")))
        with SimulatedEchos(lab_dir, ["echo1"], script, clips, "sounddevice"):
            jobs = serving.load_persona_jobs(files.personas, files.lab, catalog_dir, files.db, files.audio, ko_model)
            service = serving.SchedulerService(serving.ServeConfig(jobs, files.jobs_db))
            service.start()
            try:
                due = queue_all(files.jobs_db, "night")["night"]
                service.wakeup()
                (run,) = wait_for(lambda: [r for r in run_rows(files.db) if r["status"] != "running"], timeout=240)
            finally:
                service.stop()
    assert (run["persona"], run["status"], run["scheduled_for"]) == ("night", "completed", log.to_iso(due)), \
        run["error"]
    connection = sqlite3.connect(files.db)
    steps = connection.execute("SELECT kind, status FROM interactions WHERE run_id = ?", (run["id"],)).fetchall()
    assert steps == [("ask", "ok")]
