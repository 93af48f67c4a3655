"""Benchmark the analysts' side on a large synthetic log: reports, Parquet export, `query` start-up.

    .venv/bin/python bench/analyst_queries.py [--interactions 1000000] [--db PATH] [--out bench/results]

The log has the real schema (made by ``open_log``): 10 personas (nine interests and the control),
one Echo each, 60 nights, one run per persona and night, about 50 skills per interest persona, and
the steps of each run spread over the night; about 1 % of the runs are missed and 2 % fail, and
the interactions are shared among the runs that were not missed. Rows are inserted with
``executemany`` inside one transaction. An existing ``--db`` of the requested size is reused.

Reported: each report's time (goals: under 1 s for the night summary and the install outcomes;
for the reports across nights, ``compare``, ``skill-history`` and ``--by night``, under 1 s for one
night and under 3 s for all 60), the query plans of the night summary, the install outcomes and the
two reports across nights, a Parquet export of ``interaction_details`` (time, peak resident
memory of the exporting process and of a process that only imports pyarrow, file size) and the
start-up time of ``python -m orchestrator query "select 1"``.
Figures go to bench/results/analyst.json and are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator import log  # noqa: E402
from orchestrator.analysis.query import run_query  # noqa: E402
from orchestrator.analysis.reports import REPORTS, Filters, latest_night, run_report  # noqa: E402

INTERESTS = [
    "connected-car", "dating", "fashion-style", "pets-animals", "religion-spirituality", "smart-home",
    "wine-beverages", "health-fitness", "navigation-trip-planners",
]
NIGHTS = 60
SKILLS_PER_PERSONA = 50
FIRST_NIGHT = datetime(2026, 1, 5, 21, 0, tzinfo=UTC)
STEP_SECONDS = 12.0

# (status, weight, reply_outcome)
STATUSES = [
    ("ok", 80, "skill_opened"), ("no_response", 12, "no_response"), ("max_length", 2, "other"),
    ("timeout", 2, None), ("error", 3, None), ("interrupted", 1, None),
]
INSTALL_OUTCOMES = [
    ("enabled", 70), ("already_enabled", 15), ("not_found", 6), ("account_linking", 5),
    ("permission_required", 2), ("no_response", 2),
]
REPLIES = [
    "welcome to the skill what would you like to do",
    "here is your fact of the day cats sleep for sixteen hours a day",
    "sorry i don't know that",
    "to use this skill please link your account in the alexa app",
    "okay",
    "i couldn't find that skill",
    "your car is locked and the battery is at eighty percent",
    "here is a prayer for the evening may you find peace and rest tonight and wake up refreshed",
    "the weather today is sunny with a high of twenty two degrees",
    "playing lab radio",
]


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def words_json(transcript: str) -> str:
    words = [{"word": w, "start": round(i * 0.4, 2), "end": round(i * 0.4 + 0.35, 2), "conf": 0.9}
             for i, w in enumerate(transcript.split())]
    return json.dumps(words, separators=(",", ":"))


WORDS_JSON = {reply: words_json(reply) for reply in REPLIES}


def step_kinds(persona_is_control: bool, steps: int) -> Iterator[tuple[str, int | None]]:
    """(kind, skill number) for each step: per skill enable, open, says, stop; the control only asks."""
    if persona_is_control:
        for _ in range(steps):
            yield "ask", None
        return
    per_skill = steps // SKILLS_PER_PERSONA
    emitted = 0
    for skill in range(SKILLS_PER_PERSONA):
        count = per_skill if skill < SKILLS_PER_PERSONA - 1 else steps - emitted
        for position in range(count):
            if position in (0, 1):
                yield ("enable", "open")[position], skill
            else:
                yield ("stop" if position == count - 1 else "say"), skill
        emitted += count


def setup(engine: Any) -> tuple[list[tuple[int, int, bool]], list[list[str]]]:
    personas = []
    skills: list[list[str]] = []
    for index, interest in enumerate([*INTERESTS, None]):
        name = interest or "vanilla"
        persona_id = log.upsert_persona(engine, name=name, interest=interest, is_control=interest is None)
        device_id = log.upsert_device(engine, name=f"echo-{index + 1}", room=f"room-{index // 2 + 1}")
        personas.append((persona_id, device_id, interest is None))
        ids = [f"B{index:02d}{number:07d}" for number in range(SKILLS_PER_PERSONA)]
        for number, skill_id in enumerate(ids):
            log.upsert_skill(engine, id=skill_id, name=f"{name} skill {number}", invocation_name=f"{name} {number}",
                             category=interest)
        skills.append(ids)
    return personas, skills


RUN_COLUMNS = ("id", "persona_id", "device_id", "status", "started_at", "finished_at", "scheduled_for",
               "tool_version", "config_sha256", "config_json", "audio_dir", "host", "error")
INTERACTION_COLUMNS = (
    "id", "run_id", "persona_id", "device_id", "step_index", "attempt", "skill_id", "kind", "prompt_text",
    "prompt_audio", "status", "error", "started_at", "prompt_started_at", "prompt_ended_at", "response_started_at",
    "response_ended_at", "finished_at", "prompt_seconds", "response_latency_seconds", "response_seconds",
    "response_audio", "recorded_seconds", "end_detect_delay", "transcript", "words_json", "confidence",
    "input_overflows", "output_underflows", "reply_outcome", "reply_outcome_score",
)
INSTALL_COLUMNS = ("id", "run_id", "persona_id", "skill_id", "interaction_id", "action", "outcome", "created_at")


def insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


class Generator:
    """The synthetic night after night: runs first, then their steps as a stream, installs on the side."""

    def __init__(self, personas: list[tuple[int, int, bool]], skills: list[list[str]], total: int, seed: int) -> None:
        self.personas = personas
        self.skills = skills
        self.rng = random.Random(seed)
        self.status_choices = [s for s, w, _ in STATUSES for _ in range(w)]
        self.outcome_of = {s: o for s, _, o in STATUSES}
        self.install_choices = [o for o, w in INSTALL_OUTCOMES for _ in range(w)]
        self.runs: list[tuple[Any, ...]] = []
        self.installs: list[tuple[Any, ...]] = []
        self._plan_runs(total)

    def _plan_runs(self, total: int) -> None:
        slots = [(night, index) for night in range(NIGHTS) for index in range(len(self.personas))]
        statuses = ["missed" if self.rng.random() < 0.01 else "failed" if self.rng.random() < 0.02 else "completed"
                    for _ in slots]
        per_run, extra = divmod(total, sum(status != "missed" for status in statuses))
        active = 0
        for run_id, ((night, index), status) in enumerate(zip(slots, statuses, strict=True), start=1):
            persona_id, device_id, _ = self.personas[index]
            scheduled = FIRST_NIGHT + timedelta(days=night, minutes=7 * index)
            steps = 0
            if status != "missed":
                active += 1
                steps = per_run + (1 if active <= extra else 0)
            finished = scheduled + timedelta(seconds=steps * STEP_SECONDS)
            self.runs.append((run_id, persona_id, device_id, status, iso(scheduled), iso(finished), iso(scheduled),
                              "bench", "0" * 64, "{}", "/lab/audio", "bench-host",
                              "the Echo's microphone disappeared" if status == "failed" else None))

    def interactions(self) -> Iterator[tuple[Any, ...]]:
        rng = self.rng
        interaction_id = 0
        for run_id, persona_id, device_id, status, scheduled_text, finished_text, *_ in self.runs:
            index = (run_id - 1) % len(self.personas)
            is_control = self.personas[index][2]
            scheduled = datetime.fromisoformat(scheduled_text)
            steps = round((datetime.fromisoformat(finished_text) - scheduled).total_seconds() / STEP_SECONDS)
            for step, (kind, skill) in enumerate(step_kinds(is_control, steps)):
                interaction_id += 1
                status = rng.choice(self.status_choices)
                begin = scheduled + timedelta(seconds=step * STEP_SECONDS)
                replied = status in ("ok", "max_length")
                reply = rng.choice(REPLIES) if replied else None
                latency = round(rng.uniform(0.6, 3.5), 3) if replied else 0.0
                length = round(rng.uniform(0.8, 9.0), 3) if replied else 0.0
                skill_id = self.skills[index][skill] if skill is not None else None
                yield (
                    interaction_id, run_id, persona_id, device_id, step, 1 if rng.random() < 0.03 else 0, skill_id,
                    kind, f"Alexa, {kind} something", f"tts-cache/{step % 97:02x}.wav", status,
                    f"{status} at run.py:412" if status in ("error", "timeout") else None,
                    iso(begin), iso(begin + timedelta(seconds=0.2)), iso(begin + timedelta(seconds=1.9)),
                    iso(begin + timedelta(seconds=1.9 + latency)) if replied else None,
                    iso(begin + timedelta(seconds=1.9 + latency + length)) if replied else None,
                    iso(begin + timedelta(seconds=11.0)), 1.7, latency if replied else None,
                    length if replied else None, f"recordings/{run_id}/{step:04d}-{kind}.wav", 9.0,
                    0.75 if replied else None, reply, WORDS_JSON[reply] if reply else None,
                    0.9 if replied else None, 0, 0, self.outcome_of[status], 80.0,
                )
                if kind == "enable":
                    self.installs.append((len(self.installs) + 1, run_id, persona_id, skill_id, interaction_id,
                                          "enable", rng.choice(self.install_choices),
                                          iso(begin + timedelta(seconds=11.0))))


def generate(db_path: Path, total: int, seed: int = 7) -> dict[str, Any]:
    """Fill a fresh log with ``total`` interactions (fewer if a run was missed); return counts and time."""
    started = time.perf_counter()
    engine = log.open_log(db_path)
    personas, skills = setup(engine)
    engine.dispose()
    generator = Generator(personas, skills, total, seed)
    db = sqlite3.connect(db_path, isolation_level=None)
    # A fresh file that is thrown away on failure: no journal, so each page is written once, not
    # to the WAL and again at the checkpoint. The log's own WAL mode is restored at the end.
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -262144")
    db.execute("BEGIN IMMEDIATE")
    db.executemany(insert_sql("runs", RUN_COLUMNS), generator.runs)
    db.executemany(insert_sql("interactions", INTERACTION_COLUMNS), generator.interactions())
    db.executemany(insert_sql("skill_installs", INSTALL_COLUMNS), generator.installs)
    db.execute("COMMIT")
    db.execute("PRAGMA journal_mode = WAL")
    (interactions,) = db.execute("SELECT count(*) FROM interactions").fetchone()
    db.close()
    return {"seconds": round(time.perf_counter() - started, 1), "runs": len(generator.runs),
            "interactions": interactions, "skill_installs": len(generator.installs)}


def count_interactions(db_path: Path) -> int:
    _, rows = run_query(db_path, "SELECT count(*) FROM interactions")
    with rows:
        return next(rows)[0]


def timed_report(db_path: Path, name: str, filters: Filters, repeats: int = 3) -> dict[str, Any]:
    """Best of ``repeats`` wall times to read every row of a report, with the row count."""
    times, count = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        _, rows = run_report(db_path, name, filters)
        with rows:
            count = sum(1 for _ in rows)
        times.append(time.perf_counter() - start)
    return {"seconds": round(min(times), 3), "rows": count}


def query_plan(db_path: Path, name: str, filters: Filters) -> list[str]:
    from orchestrator.analysis.reports import parameters

    report = REPORTS[name]
    _, rows = run_query(db_path, "EXPLAIN QUERY PLAN " + report.sql, parameters(report, filters))
    with rows:
        return [row[-1] for row in rows]


# The peak is read from VmHWM: getrusage's ru_maxrss survives fork and exec on Linux, so a child
# would report this (larger) benchmark process's peak instead of its own.
PEAK_RSS = """
def peak_rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
"""

EXPORT_CHILD = PEAK_RSS + """
import sys, time
from orchestrator.analysis.export import export
start = time.perf_counter()
rows = export(sys.argv[1], sys.argv[2], sys.argv[3], "parquet")
print(rows, time.perf_counter() - start, peak_rss_kib())
"""

BASELINE_CHILD = PEAK_RSS + """
import pyarrow, pyarrow.parquet, orchestrator.analysis.export
print(peak_rss_kib())
"""


def timed_export(db_path: Path, name: str, out: Path) -> dict[str, Any]:
    """Export in a fresh process, so its peak resident memory is the export's own."""
    result = subprocess.run([sys.executable, "-c", EXPORT_CHILD, str(db_path), name, str(out)], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    rows, seconds, peak_kib = result.stdout.split()
    baseline = subprocess.run([sys.executable, "-c", BASELINE_CHILD], cwd=ROOT, capture_output=True, text=True,
                              check=True)
    return {"table": name, "rows": int(rows), "seconds": round(float(seconds), 2),
            "peak_rss_mb": round(int(peak_kib) / 1024, 1),
            "rss_after_imports_mb": round(int(baseline.stdout) / 1024, 1),
            "file_mb": round(out.stat().st_size / 2**20, 1)}


def startup_seconds(db_path: Path, repeats: int = 5) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "orchestrator", "query", "select 1", "--db", str(db_path)],
                       cwd=ROOT, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return {"median": round(statistics.median(times), 3), "min": round(min(times), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=None, help="Log to create or reuse [default: a temporary file].")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--reports-only", action="store_true",
                        help="Time the reports only: no Parquet export, no start-up time (a shorter lab lock).")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        db_path = args.db or Path(scratch) / "analyst.sqlite"
        if db_path.exists() and count_interactions(db_path) == args.interactions:
            log.open_log(db_path).dispose()  # a log made by an older version gets this one's views and indexes
            generation: dict[str, Any] = {"reused": str(db_path)}
        else:
            db_path.unlink(missing_ok=True)
            generation = generate(db_path, args.interactions)
        print(f"log: {db_path} ({db_path.stat().st_size / 2**20:.0f} MB) {generation}", file=sys.stderr)

        night = latest_night(db_path)
        first = "2026-01-05"
        cases = {
            "night_summary (latest night)": ("night", Filters()),
            "night_summary (all 60 nights)": ("night", Filters(since=first)),
            "install_outcomes": ("installs", Filters()),
            "reply_stats": ("replies", Filters()),
            "reply_stats (one night)": ("replies", Filters(night=night)),
            "night_failures (latest night)": ("failures", Filters()),
            "transcript_search (2 words)": ("search", Filters(grep="link account")),
        }
        # The reports across nights, each for one night and for all 60 (goals: 1 s and 3 s).
        across = {
            "installs --by night": ("installs", Filters(by="night")),
            "replies --by night": ("replies", Filters(by="night")),
            "compare": ("compare", Filters()),
            "compare --by night": ("compare", Filters(by="night")),
            "compare --persona": ("compare", Filters(persona="pets-animals")),
            "skill-history --skill": ("skill-history", Filters(skill="pets-animals skill 7")),
            "skill-history (every skill)": ("skill-history", Filters()),
        }
        goals: dict[str, float] = {}
        for label, (name, filters) in across.items():
            cases[f"{label} (one night)"] = (name, replace(filters, night=night))
            cases[f"{label} (all 60 nights)"] = (name, filters)
            goals.update({f"{label} (one night)": 1.0, f"{label} (all 60 nights)": 3.0})
        reports = {}
        for label, (name, filters) in cases.items():
            reports[label] = timed_report(db_path, name, filters)
            goal = goals.get(label)
            if goal is not None:
                reports[label]["goal_seconds"] = goal
            verdict = "" if goal is None else "  ok" if reports[label]["seconds"] < goal else f"  OVER {goal:.0f} s"
            print(f"{label:<44} {reports[label]['seconds']:>7.3f} s  {reports[label]['rows']:>6} rows{verdict}",
                  file=sys.stderr)
        plans = {name: query_plan(db_path, name, Filters())
                 for name in ("night", "installs", "compare", "skill-history")}
        export_figures = None if args.reports_only else timed_export(
            db_path, "interaction_details", Path(scratch) / "interaction_details.parquet")
        figures = {
            "interactions": args.interactions,
            "generation": generation,
            "db_mb": round(db_path.stat().st_size / 2**20, 1),
            "reports_seconds": reports,
            "query_plans": plans,
            "export_parquet": export_figures,
            "query_startup_seconds": None if args.reports_only else startup_seconds(db_path),
            "python": sys.version.split()[0],
            # Other work on the machine slows every figure; this says how busy it was.
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(),
            "sqlite": sqlite3.sqlite_version,
            "bench_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "analyst.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
