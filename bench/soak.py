"""Soak: nights back to back on virtual Echos for a long time; is any process growing?

    .venv/bin/python bench/soak.py [--minutes 30] [--echos 4] [--model auto]

One lab, one set of simulated Echos and one set of transcription servers serve every night, as a
scheduler service running for weeks would; each night starts fresh persona workers. Every 30 s
the resident memory and open file descriptors of every process of the lab are sampled and
grouped by the name each process gives itself (`ps -o comm`): this script (the night's own
threads), `asr-server` (every server together), `persona-*`, `sim-*`, the sound server and its helpers. Printed and
written to bench/results/soak-*/soak.json: per group the first, last and peak resident memory,
and for the processes that live across nights the growth per hour from a least-squares fit of
the samples after the warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_night import descendants  # noqa: E402

from orchestrator.asr.models import resolve  # noqa: E402
from orchestrator.catalog.skills import load_catalog  # noqa: E402
from orchestrator.core.settings import project_home  # noqa: E402
from orchestrator.runner.night import Night  # noqa: E402
from orchestrator.runner.progress import Progress  # noqa: E402
from orchestrator.runner.run import RunRequest  # noqa: E402
from orchestrator.sim.demo import DEMO_ENDPOINTING, Rehearsal, demo_personas, virtual_lab  # noqa: E402

#: Samples in the first minutes (model loading, caches filling) are left out of the fit.
WARM_UP_SECONDS = 300
#: A process's group: persona workers and simulated Echos of every Echo count as one part each.
GROUPS = [(re.compile(r"^persona-"), "persona-*"), (re.compile(r"^sim-"), "sim-*")]


def group_of(comm: str, pid: int) -> str:
    if pid == os.getpid():
        return "night (this process)"
    return next((name for pattern, name in GROUPS if pattern.match(comm)), comm)


def footprint() -> dict[str, tuple[int, int]]:
    """Resident bytes and open descriptors of each group of this process tree."""
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for pid in descendants(os.getpid()):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            rss = next(int(line.split()[1]) * 1024 for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                       if line.startswith("VmRSS:"))
            files = len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, StopIteration):
            continue  # ended between the listing and the reading
        totals = groups[group_of(comm, pid)]
        totals[0] += rss
        totals[1] += files
    return {name: (rss, files) for name, (rss, files) in groups.items()}


def slope_per_hour(samples: list[tuple[float, float]]) -> float | None:
    if len(samples) < 3:
        return None
    return statistics.linear_regression([t / 3600 for t, _ in samples], [v for _, v in samples]).slope


def summary(samples: list[tuple[float, dict[str, tuple[int, int]]]]) -> dict[str, dict[str, float | None]]:
    """Per group: first, last and peak memory; growth per hour for the groups that live across nights.

    A night's own processes (persona workers, synthesizers, spawn helpers) start fresh each night:
    their samples rise and fall with the nights, so only their peak says anything.
    """
    names = sorted({name for _, groups in samples for name in groups})
    settled = [(t, groups) for t, groups in samples if t >= WARM_UP_SECONDS]
    report: dict[str, dict[str, float | None]] = {}
    for name in names:
        rss = [(t, groups[name][0] / 2**20) for t, groups in samples if name in groups]
        lasting = bool(settled) and all(name in groups for _, groups in settled)
        fitted = [(t, groups[name][0] / 2**20) for t, groups in settled] if lasting else []
        files = [(t, float(groups[name][1])) for t, groups in settled] if lasting else []
        report[name] = {"first_mb": rss[0][1], "last_mb": rss[-1][1], "peak_mb": max(v for _, v in rss),
                        "mb_per_hour": slope_per_hour(fitted), "files_per_hour": slope_per_hour(files)}
    return report


def one_night(night: Night, requests: list[RunRequest], statuses: list[str]) -> None:
    statuses.extend(summary.status for summary in night.run(requests))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--echos", type=int, default=4)
    parser.add_argument("--model", default="auto", help="speech model [default: auto]")
    args = parser.parse_args()
    root = Path(__file__).parent / "results" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}"
    catalog = load_catalog(project_home() / "skills_catalog")
    personas = demo_personas(project_home() / "persona_scripts" / "demo", catalog, args.echos)
    model = resolve(args.model)
    options = Rehearsal(root / "log.sqlite", root / "audio", model, root / "lab", DEMO_ENDPOINTING, varied=False)
    samples: list[tuple[float, dict[str, tuple[int, int]]]] = []
    nights, statuses = 0, []
    with Night(model, options.lab_dir) as night, virtual_lab(personas, catalog, options, Progress()) as lab:
        started = next_sample = time.monotonic()
        while time.monotonic() - started < args.minutes * 60:
            requests = [RunRequest(p, lab, catalog, options.db, options.audio_dir, model,
                                   asr_socket=Path(), asr_authkey=b"") for p in personas]
            runner = threading.Thread(target=one_night, args=(night, requests, statuses))
            runner.start()
            while runner.is_alive():
                if time.monotonic() >= next_sample:
                    samples.append((time.monotonic() - started, footprint()))
                    shown = "  ".join(f"{name} {rss / 2**20:.0f}" for name, (rss, _) in sorted(samples[-1][1].items()))
                    print(f"{samples[-1][0]:6.0f}s MB: {shown}", flush=True)
                    next_sample += 30
                time.sleep(0.5)
            nights += 1
    totals = [(t, {"whole lab": (sum(r for r, _ in g.values()), sum(f for _, f in g.values()))}) for t, g in samples]
    report = {"minutes": args.minutes, "echos": args.echos, "nights": nights, "model": str(model.path),
              "runs": {s: statuses.count(s) for s in set(statuses)},
              "processes": summary(samples), "lab": summary(totals)["whole lab"]}
    root.mkdir(parents=True, exist_ok=True)
    (root / "soak.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
