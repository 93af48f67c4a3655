"""How exact the log's reply starts are: each logged `response_started_at` against the moment the
simulated Echo's reply began to sound (its truth log's `wall_started`).

    .venv/bin/orchestrator demo --db /tmp/acc/log.sqlite --audio-dir /tmp/acc/audio --lab-dir /tmp/acc/lab
    .venv/bin/python bench/timestamp_accuracy.py --db /tmp/acc/log.sqlite --lab-dir /tmp/acc/lab

Prints every spoken reply's error (logged minus true, seconds) with its kind, and the summary that
docs/traffic.md quotes; writes bench/results/timestamp_accuracy.json. Also shows the error against
the moment the Echo decided to speak (`wall_start`, before its speaker's buffer), the measure that
gave the earlier "0.13-0.19 s late".
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
from datetime import datetime
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from orchestrator.sim.echo import read_truth, truth_path  # noqa: E402


def errors(db_path: Path, lab_dir: Path) -> list[dict[str, object]]:
    db = sqlite3.connect(db_path)
    out: list[dict[str, object]] = []
    for (echo,) in db.execute("SELECT DISTINCT d.name FROM devices d JOIN interactions i ON i.device_id = d.id"):
        rows = db.execute(
            "SELECT i.kind, i.response_started_at FROM interactions i JOIN devices d ON d.id = i.device_id "
            "WHERE d.name = ? AND i.status <> 'skipped' ORDER BY i.step_index, i.attempt", (echo,)).fetchall()
        for said, (kind, logged) in zip(read_truth(truth_path(lab_dir, echo)), rows, strict=False):
            if logged is None or said.wall_started is None or said.duration <= 0:
                continue
            moment = datetime.fromisoformat(logged).timestamp()
            out.append({"echo": echo, "step": kind, "reply": said.kind, "error": moment - said.wall_started,
                        "after_decision": moment - said.wall_start})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--lab-dir", type=Path, required=True)
    args = parser.parse_args()
    found = errors(args.db, args.lab_dir)
    for row in found:
        print(f"{row['echo']:8} {row['step']:8} {row['reply']:16} {row['error']:+.3f} s "
              f"(after the decision to speak: {row['after_decision']:+.3f} s)")
    spoken = [float(r["error"]) for r in found if r["reply"] != "stream"]  # type: ignore[arg-type]
    summary = {"replies": len(spoken), "median": statistics.median(spoken), "min": min(spoken), "max": max(spoken),
               "within_0_1": sum(abs(e) <= 0.1 for e in spoken),
               "streams": [float(r["error"]) for r in found if r["reply"] == "stream"],  # type: ignore[arg-type]
               "after_decision_median": statistics.median(float(r["after_decision"]) for r in found)}  # type: ignore[arg-type]
    print(json.dumps(summary, indent=1))
    out = PROJECT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "timestamp_accuracy.json").write_text(json.dumps({"summary": summary, "replies": found}, indent=1))


if __name__ == "__main__":
    main()
