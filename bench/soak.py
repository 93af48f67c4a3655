"""Soak: demo nights back to back on virtual Echos for a long time; is anything growing?

    .venv/bin/python bench/soak.py [--minutes 30] [--echos 4]

One lab, one set of simulated Echos and one loaded speech model serve every night, as weeks of
nightly runs would; each night starts fresh worker processes. Every 30 s the resident memory and
open file descriptors of the whole lab are sampled. Printed and written to bench/results/: the
first and last samples, the peak, and the growth per hour from a least-squares fit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_night import lab_footprint  # noqa: E402

from orchestrator.asr.models import resolve  # noqa: E402
from orchestrator.catalog.skills import load_catalog  # noqa: E402
from orchestrator.core.settings import project_home  # noqa: E402
from orchestrator.lab.config import EchoConfig, LabConfig  # noqa: E402
from orchestrator.runner.night import Night  # noqa: E402
from orchestrator.runner.run import RunRequest  # noqa: E402
from orchestrator.sim.demo import DEMO_ENDPOINTING, demo_personas, render_sim_voice, skills_used  # noqa: E402
from orchestrator.sim.echo import SCRIPT, SimScript, SimulatedEchos  # noqa: E402
from orchestrator.sim.lab import VirtualLab  # noqa: E402


def one_night(night: Night, requests: list[RunRequest], statuses: list[str]) -> None:
    statuses.extend(summary.status for summary in night.run(requests))


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    if len(samples) < 3:
        return float("nan")
    xs, ys = [s[0] / 3600 for s in samples], [s[1] for s in samples]
    return statistics.linear_regression(xs, ys).slope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--echos", type=int, default=4)
    parser.add_argument("--model", default="auto", help="speech model [default: auto]")
    args = parser.parse_args()
    root = Path(__file__).parent / "results" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}"
    catalog = load_catalog(project_home() / "skills_catalog")
    personas = demo_personas(project_home() / "persona_scripts" / "demo", catalog, args.echos)
    script = SimScript.load(SCRIPT).with_catalog(skills_used(personas, catalog))
    clips = render_sim_voice(script, root / "audio")
    names = [p.persona.echo for p in personas]
    model = resolve(args.model)
    samples: list[tuple[float, int, int]] = []
    nights, statuses = 0, []
    with VirtualLab(root / "lab", names) as vlab:
        vlab.activate()
        lab = LabConfig(echos=[EchoConfig(name=n, room=n, speaker=f"{n}_out", microphone=f"{n}_mic_mon")
                               for n in names], endpointing=DEMO_ENDPOINTING, virtual_lab=root / "lab",
                        reference_replies=True)
        with SimulatedEchos(root / "lab", names, script, clips, "sounddevice"), Night(model, root / "lab") as night:
            started = time.monotonic()
            next_sample = started
            while time.monotonic() - started < args.minutes * 60:
                requests = [RunRequest(p, lab, catalog, root / "log.sqlite", root / "audio", model,
                                       asr_socket=Path(), asr_authkey=b"") for p in personas]
                runner = threading.Thread(target=one_night, args=(night, requests, statuses))
                runner.start()
                while runner.is_alive():
                    if time.monotonic() >= next_sample:
                        rss, files = lab_footprint()
                        samples.append((time.monotonic() - started, rss, files))
                        print(f"{samples[-1][0]:7.0f}s  rss {rss / 2**20:7.1f} MB  files {files}", flush=True)
                        next_sample += 30
                    time.sleep(0.5)
                nights += 1
    report = {
        "minutes": args.minutes, "echos": args.echos, "nights": nights,
        "runs": {s: statuses.count(s) for s in set(statuses)},
        "rss_mb": {"first": samples[0][1] / 2**20, "last": samples[-1][1] / 2**20,
                   "peak": max(s[1] for s in samples) / 2**20,
                   "growth_per_hour": slope_per_hour([(t, r / 2**20) for t, r, _ in samples[2:]])},
        "open_files": {"first": samples[0][2], "last": samples[-1][2], "peak": max(s[2] for s in samples),
                       "growth_per_hour": slope_per_hour([(t, f) for t, _, f in samples[2:]])},
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "soak.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
