"""Benchmark a demo night on virtual Echos: how much time do we add on top of the audio itself?

    .venv/bin/python bench/demo_night.py [--echos 2] [--model NAME|PATH|auto] [--out bench/results]

Reported, for the interactions that got a reply:
* overhead ratio: wall time of the step (row inserted -> row finished) divided by its audio time
  (prompt + the Echo's latency + its reply);
* end-of-reply delay: from the reply's last speech to the moment the runner knew it had ended,
  and whether any reply was cut short compared with what the simulated Echo really said;
* transcript delay: from the end being known to the transcript being ready;
* the recognizer's real-time factor: during the night (wall clock in the server, shared cores) and
  offline on one core (the recorded replies decoded one after another by a single recognizer);
* how often the log's verdict (what a reply meant) agrees with what the simulated Echo meant.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sqlite3
import statistics
import sys
import threading
import time
import wave
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.asr import SpeechModel  # noqa: E402
from orchestrator.asr.engine import engine_for  # noqa: E402
from orchestrator.asr.models import resolve  # noqa: E402
from orchestrator.runner.progress import Progress  # noqa: E402
from orchestrator.sim.demo import DemoSettings, run_demo  # noqa: E402
from orchestrator.sim.echo import OUTCOME_OF_KIND, read_truth, truth_path  # noqa: E402

CUT_TOLERANCE = 0.3


def seconds_between(start: str, end: str) -> float:
    parse = lambda text: datetime.fromisoformat(text.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(ordered), "median": statistics.median(ordered), "p90": pick(0.9), "max": ordered[-1],
            "mean": statistics.fmean(ordered)}


def night_figures(db_path: Path, lab_dir: Path) -> dict[str, object]:
    db = sqlite3.connect(db_path)
    db.row_factory = sqlite3.Row
    rows = db.execute(
        "SELECT i.*, d.name AS echo FROM interactions i JOIN devices d ON d.id = i.device_id ORDER BY echo, step_index"
    ).fetchall()
    answered = [r for r in rows if r["status"] == "ok"]
    ratios = [seconds_between(r["started_at"], r["finished_at"])
              / (r["prompt_seconds"] + r["response_latency_seconds"] + r["response_seconds"]) for r in answered]
    overheads = [seconds_between(r["started_at"], r["finished_at"])
                 - (r["prompt_seconds"] + r["response_latency_seconds"] + r["response_seconds"]) for r in answered]
    return {
        "interactions": len(rows),
        "statuses": {s: sum(1 for r in rows if r["status"] == s) for s in {r["status"] for r in rows}},
        "overhead_ratio": quantiles(ratios),
        "overhead_seconds": quantiles(overheads),
        "end_detect_delay": quantiles([r["end_detect_delay"] for r in answered]),
        "transcript_ready_delay": quantiles([r["transcript_ready_delay"] for r in rows
                                             if r["transcript_ready_delay"] is not None]),
        "night_asr_rtf": quantiles([r["asr_rtf"] for r in rows if r["asr_rtf"] is not None]),
        "cut_short": cut_short(rows, lab_dir),
        "underflows": sum(r["output_underflows"] or 0 for r in rows),
        "overflows": sum(r["input_overflows"] or 0 for r in rows),
    }


def cut_short(rows: list[sqlite3.Row], lab_dir: Path) -> list[dict[str, object]]:
    """Replies the runner recorded as shorter than what the simulated Echo said."""
    cut = []
    for echo in sorted({r["echo"] for r in rows}):
        truth = read_truth(truth_path(lab_dir, echo))
        mine = [r for r in rows if r["echo"] == echo and r["status"] != "skipped"]  # a skipped step is not said
        for said, row in zip(truth, mine, strict=False):
            if row["status"] == "ok" and row["response_seconds"] < said.duration - CUT_TOLERANCE:
                cut.append({"echo": echo, "step": row["step_index"], "said": said.duration,
                            "recorded": row["response_seconds"]})
    return cut


def verdict_agreement(db_path: Path, lab_dir: Path) -> dict[str, object]:
    """Per outcome the simulated Echo meant: how many replies the log judged the same way."""
    db = sqlite3.connect(db_path)
    db.row_factory = sqlite3.Row
    per_outcome: dict[str, list[int]] = {}
    mistakes = []
    for (echo,) in db.execute("SELECT DISTINCT name FROM devices"):
        rows = db.execute("SELECT i.* FROM interactions i JOIN devices d ON d.id = i.device_id "
                          "WHERE d.name = ? AND i.status != 'skipped' ORDER BY step_index, attempt", (echo,)).fetchall()
        for said, row in zip(read_truth(truth_path(lab_dir, echo)), rows, strict=False):
            meant = OUTCOME_OF_KIND.get(said.kind)
            if row["reply_outcome"] is None or meant is None:
                continue
            per_outcome.setdefault(meant, [0, 0])[row["reply_outcome"] == meant] += 1
            if row["reply_outcome"] != meant:
                mistakes.append({"meant": meant, "judged": row["reply_outcome"], "heard": row["transcript"]})
    return {"per_outcome": {k: {"right": v[1], "of": sum(v)} for k, v in sorted(per_outcome.items())},
            "mistakes": mistakes}


def offline_rtf(model: SpeechModel, audio_dir: Path, db_path: Path) -> dict[str, float]:
    """Decode every recorded reply with one recognizer on one core, as fast as it goes."""
    recognizer = engine_for(model).load(model.path).recognizer()
    db = sqlite3.connect(db_path)
    paths = [audio_dir / p for (p,) in db.execute("SELECT response_audio FROM interactions WHERE status = 'ok'")]
    audio_seconds = decode_seconds = 0.0
    for path in paths:
        with wave.open(str(path)) as wav:
            pcm = wav.readframes(wav.getnframes())
        audio_seconds += len(pcm) / 32000
        started = time.process_time()
        for i in range(0, len(pcm), 8000):
            recognizer.accept(pcm[i : i + 8000])
        recognizer.finish()
        decode_seconds += time.process_time() - started
    return {"files": len(paths), "audio_seconds": audio_seconds, "cpu_seconds": decode_seconds,
            "rtf_per_core": decode_seconds / audio_seconds if audio_seconds else float("nan")}


class LabSampler:
    """Resident memory of every process of the lab (this one and its descendants), once a second,
    and the CPU time of each process, by its part in the night."""

    def __init__(self) -> None:
        self.peak_rss = 0
        self.samples: list[tuple[float, int, int]] = []  # (seconds, rss bytes, open files)
        self._cpu: dict[int, tuple[str, float]] = {}  # pid -> (role, CPU seconds so far)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> LabSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds per part of the lab (a process's last second before it ended is not seen)."""
        totals: dict[str, float] = {}
        for role, seconds in self._cpu.values():
            totals[role] = totals.get(role, 0.0) + seconds
        return dict(sorted(totals.items(), key=lambda item: -item[1]))

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            pids = descendants(os.getpid())
            rss, files = lab_footprint(pids)
            self.peak_rss = max(self.peak_rss, rss)
            self.samples.append((time.monotonic() - self._started, rss, files))
            for pid in pids:
                with contextlib.suppress(OSError, IndexError, ValueError):
                    self._cpu[pid] = (process_role(pid), process_cpu_seconds(pid))


#: Process names (orchestrator/core/processes.py) and programs, by their part in the night.
ROLES = {"pulseaudio": "PulseAudio", "pacat": "silence streams (pacat)", "asr-server": "transcription",
         "transcriber": "background transcription",
         "tts-": "speech synthesis", "persona-": "persona workers", "sim-": "simulated Echos"}


def process_role(pid: int) -> str:
    """What a process of the lab is, from the name it gave itself."""
    if pid == os.getpid():
        return "night (this process)"
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    return next((role for prefix, role in ROLES.items() if comm.startswith(prefix)), "other helpers")


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(root: int) -> set[int]:
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = {root}, [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def lab_footprint(pids: set[int] | None = None) -> tuple[int, int]:
    """Total resident memory (bytes) and open file descriptors of `pids` (default: this process tree)."""
    rss = files = 0
    for pid in pids if pids is not None else descendants(os.getpid()):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
            files += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return rss, files


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--echos", type=int, default=2)
    parser.add_argument("--model", default="auto",
                        help="speech model, as `orchestrator --model` takes it [default: auto]")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    model = resolve(args.model)
    root = args.out / f"demo-night-{args.echos}-{time.strftime('%Y%m%d-%H%M%S')}"
    options = DemoSettings(db=root / "log.sqlite", audio_dir=root / "audio", model=model, echos=args.echos,
                           lab_dir=root / "lab")
    started, cpu_before = time.monotonic(), cpu_seconds()
    with LabSampler() as sampler:
        run_demo(options, Progress())
    wall = time.monotonic() - started
    figures = {"echos": args.echos, "night_seconds": wall, "model": str(model),
               "lab_cpu_cores": (cpu_seconds() - cpu_before) / wall, "lab_peak_rss_mb": sampler.peak_rss / 2**20,
               "cpu_cores_by_role": {role: seconds / wall for role, seconds in sampler.cpu_by_role().items()},
               **night_figures(options.db, options.lab_dir),
               "verdicts": verdict_agreement(options.db, options.lab_dir),
               "offline_asr": offline_rtf(model, options.audio_dir, options.db)}
    (root / "figures.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
