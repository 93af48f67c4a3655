"""Benchmark the study's whole lab on this host: its persona files on as many virtual Echos at once.

    .venv/bin/python bench/study_night.py [--echos 10|16] [--top 3] [--model NAME|PATH|auto] [--out bench/results]

The study's ten persona files (persona_scripts/*.yaml: nine interest personas and the vanilla
control) are shortened to the top `--top` skills each and rehearsed together on simulated Echos,
as `orchestrator run persona_scripts/*.yaml --virtual` does. With `--echos 16`, six more interest
personas join them (a second persona for six categories, taking the best-rated skills instead of
the most reviewed). Reported:

* step overhead ratio: a step's wall time (row inserted -> row finished) over its audio time
  (prompt + the Echo's latency + its reply), median and p90, for the steps that got a reply;
* reactive transcript delay: for replies decoded while recorded (the plan reacts to them), from
  the end being known to the transcript being ready, median and p90;
* deferred lag: from the night's last step to the last background transcript stored (seconds), and
  any reply left queued or failed;
* CPU (cores) and peak resident memory by part of the lab, and the lab's total peak;
* runs by status (a failure-budget abort shows as failed), audio under/overflows, cut replies.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_night import (  # noqa: E402
    LabSampler,
    cpu_seconds,
    cut_short,
    descendants,
    process_role,
    quantiles,
    seconds_between,
)

from orchestrator.asr.models import resolve  # noqa: E402
from orchestrator.catalog.skills import load_catalog  # noqa: E402
from orchestrator.core.settings import project_home  # noqa: E402
from orchestrator.plan.persona import load_personas  # noqa: E402
from orchestrator.runner.progress import Progress  # noqa: E402
from orchestrator.sim.demo import Rehearsal, rehearse  # noqa: E402

#: The extra interest personas of the 16-Echo case: categories with enough skills for a second persona.
EXTRA = ["health-fitness", "navigation-trip-planners", "pets-animals", "religion-spirituality", "smart-home",
         "wine-beverages"]


def study_files(folder: Path, top: int, echos: int) -> list[Path]:
    """The study's persona files, shortened to `top` skills, plus extra personas up to `echos`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in sorted((project_home() / "persona_scripts").glob("*.yaml")):
        persona = yaml.safe_load(source.read_text())
        for step in persona.get("plan", []):
            if isinstance(step, dict) and "generate" in step:
                step["generate"]["top"] = min(step["generate"]["top"], top)
        paths.append(_write(folder / source.name, persona))
    for number, category in enumerate(EXTRA[: max(0, echos - len(paths))]):
        persona = {"name": f"{category}-2", "interest": category, "echo": f"echo-{category}-2",
                   "voice": {"name": "gmw/en-us", "rate": 160}, "wake": {"word": "Alexa", "alone": False},
                   "seed": 2001 + number, "shuffle": True, "jitter": [1.0, 4.0],
                   "plan": [{"generate": {"top": top, "rank": "rating"}}]}
        paths.append(_write(folder / f"{category}-2.yaml", persona))
    return paths[:echos]


def _write(path: Path, persona: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(persona, sort_keys=False))
    return path


class RoleMemory:
    """Peak resident memory per part of the lab, sampled once a second."""

    def __init__(self) -> None:
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RoleMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            now: dict[str, int] = {}
            for pid in descendants(os.getpid()):
                try:
                    role = process_role(pid)
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            now[role] = now.get(role, 0) + int(line.split()[1]) * 1024
                except OSError:
                    continue
            for role, rss in now.items():
                self.peak[role] = max(self.peak.get(role, 0), rss)


def figures(db_path: Path, lab_dir: Path) -> dict[str, Any]:
    db = sqlite3.connect(db_path)
    db.row_factory = sqlite3.Row
    rows = db.execute("SELECT i.*, d.name AS echo FROM interactions i JOIN devices d ON d.id = i.device_id "
                      "ORDER BY echo, step_index, attempt").fetchall()
    answered = [r for r in rows if r["status"] == "ok"]
    ratios = [_ratio(r) for r in answered]
    reactive = [r["transcript_ready_delay"] for r in rows if r["transcript_ready_delay"] is not None]
    last_step = max(r["finished_at"] for r in rows if r["finished_at"])
    last_deferred = db.execute(
        "SELECT max(t.created_at) FROM transcripts t JOIN interactions i ON i.id = t.interaction_id "
        "WHERE i.transcript_ready_delay IS NULL").fetchone()[0]
    runs = db.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall()
    return {
        **overhead_parts(answered),
        "runs": {status: count for status, count in runs},
        "run_errors": [e for (e,) in db.execute("SELECT error FROM runs WHERE error IS NOT NULL")],
        "interactions": len(rows),
        "statuses": {s: sum(1 for r in rows if r["status"] == s) for s in sorted({r["status"] for r in rows})},
        "reactive_steps": len(reactive),
        "deferred_steps": sum(1 for r in rows if r["response_audio"] and r["transcript_ready_delay"] is None),
        "overhead_ratio": quantiles(ratios),
        "reactive_transcript_delay": quantiles(reactive),
        "deferred_lag_seconds": seconds_between(last_step, last_deferred) if last_deferred else None,
        "transcript_states": {s or "none": n for s, n in db.execute(
            "SELECT transcript_state, count(*) FROM interactions GROUP BY transcript_state")},
        "underflows": sum(r["output_underflows"] or 0 for r in rows),
        "overflows": sum(r["input_overflows"] or 0 for r in rows),
        "cut_short": cut_short(rows, lab_dir),
    }


def overhead_parts(answered: list[sqlite3.Row]) -> dict[str, Any]:
    """Where a step's time beyond its audio goes, median seconds, for the replies decoded at once and later.

    * before the prompt: the row written to the prompt's first sample leaving the speaker;
    * end detection: the reply's last sound to its end being known, the endpointing hangover
      (lab.yaml `endpointing.hangover`) plus the microphone's latency;
    * after the end: from the end being known to the row finished (the transcript a reactive step
      waits for, the recording written, the row).
    """
    parts: dict[str, Any] = {}
    for path, rows in (("reactive", [r for r in answered if r["transcript_ready_delay"] is not None]),
                       ("deferred", [r for r in answered if r["transcript_ready_delay"] is None])):
        if not rows:
            continue
        parts[f"overhead_ratio_{path}"] = quantiles([_ratio(r) for r in rows])
        parts[f"overhead_seconds_{path}"] = {
            "before_prompt": quantiles([seconds_between(r["started_at"], r["prompt_started_at"]) for r in rows]),
            "end_detection": quantiles([r["end_detect_delay"] for r in rows]),
            "after_end": quantiles([seconds_between(r["response_ended_at"], r["finished_at"]) - r["end_detect_delay"]
                                    for r in rows]),
        }
    return parts


def _ratio(row: sqlite3.Row) -> float:
    """A step's wall time (row inserted -> row finished) over its audio: prompt, the Echo's latency, its reply."""
    audio = row["prompt_seconds"] + row["response_latency_seconds"] + row["response_seconds"]
    return seconds_between(row["started_at"], row["finished_at"]) / float(audio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--echos", type=int, default=10, help="10: the study's files; up to 16 with extra personas")
    parser.add_argument("--top", type=int, default=3, help="skills per persona [default: 3]")
    parser.add_argument("--model", default="auto", help="speech model, as `orchestrator --model` takes it")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    model = resolve(args.model)
    root = args.out / f"study-night-{args.echos}-{model.engine}-{time.strftime('%Y%m%d-%H%M%S')}"
    catalog = load_catalog(project_home() / "skills_catalog")
    personas = load_personas(study_files(root / "personas", args.top, args.echos), catalog)
    options = Rehearsal(root / "log.sqlite", root / "audio", model, root / "lab")
    started, cpu_before = time.monotonic(), cpu_seconds()
    with LabSampler() as sampler, RoleMemory() as memory:
        summaries = rehearse(personas, catalog, options, Progress())
    wall = time.monotonic() - started
    report = {"echos": len(personas), "top": args.top, "model": str(model), "night_seconds": wall,
              "run_summaries": [{"persona": s.persona, "status": s.status, "steps": s.steps, "errors": s.errors,
                                 "error": s.error} for s in summaries],
              **figures(options.db, options.lab_dir),
              "lab_cpu_cores": (cpu_seconds() - cpu_before) / wall,
              "cpu_cores_by_role": {role: seconds / wall for role, seconds in sampler.cpu_by_role().items()},
              "lab_peak_rss_mb": sampler.peak_rss / 2**20,
              "peak_rss_mb_by_role": {role: rss / 2**20 for role, rss in sorted(memory.peak.items())}}
    (root / "figures.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
