"""The demo night: the demo personas on virtual Echos, with real audio, speech and decoding.

A private PulseAudio server provides the speaker and microphone of every virtual Echo
(virtual_lab.py); a separate process plays the Echos themselves (echo_sim.py); the personas run
exactly as they would in a physical lab (night.py, run.py).
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchestrator import settings
from orchestrator.audio import read_wav
from orchestrator.catalog import Catalog, Skill, load_catalog
from orchestrator.echo_sim import EchoBrain, SideChannel, SimScript, SimulatedEcho, phrases
from orchestrator.lab import EchoConfig, Endpointing, LabConfig
from orchestrator.night import Night
from orchestrator.persona import LoadedPersona, compile_plan, load_personas
from orchestrator.progress import Progress
from orchestrator.run import RunRequest, RunSummary
from orchestrator.sound import open_backend, redirect_native_stderr
from orchestrator.speech import Synthesizer, Voice
from orchestrator.transcribe import check_model
from orchestrator.virtual_lab import VirtualLab, use_own_devices
from orchestrator.vosk_models import model_language

SIM_SCRIPT = Path(__file__).parent / "demo" / "echo_sim.yaml"
#: Short enough that the demo's radio stream is cut quickly; long enough for every spoken reply.
DEMO_ENDPOINTING = Endpointing(no_answer_timeout=6.0, max_reply=10.0, hangover=0.7)


@dataclass(frozen=True)
class DemoSettings:
    db: Path
    audio_dir: Path
    model: Path
    echos: int = 2
    backends: tuple[str, ...] = ("sounddevice",)  # Echo i uses backends[i % len(backends)]
    lab_dir: Path | None = None
    personas_dir: Path | None = None
    catalog_dir: Path | None = None
    sim_script: Path = SIM_SCRIPT  # what the simulated Echos answer


def demo_personas(folder: Path, catalog: Catalog, echos: int) -> list[LoadedPersona]:
    """The demo personas, bound to echo1..echoN; with more Echos than personas they repeat."""
    templates = load_personas(sorted(folder.glob("*.yaml")), catalog)
    templates.sort(key=lambda p: p.persona.echo)
    chosen = []
    for i in range(echos):
        template = templates[i % len(templates)]
        suffix = "" if i < len(templates) else f"-{i // len(templates) + 1}"
        persona = template.persona.model_copy(update={"name": template.persona.name + suffix, "echo": f"echo{i + 1}"})
        chosen.append(replace(template, persona=persona))
    return chosen


def run_demo(options: DemoSettings, progress: Progress) -> list[RunSummary]:
    home = settings.project_home()
    catalog = load_catalog(options.catalog_dir or home / "skills_catalog")
    personas = demo_personas(options.personas_dir or home / "persona_scripts" / "demo", catalog, options.echos)
    check_model(options.model)
    lab_dir = options.lab_dir or settings.data_dir() / "lab"
    night = Night(options.model, lab_dir, on_event=progress, on_phase=progress.phase)
    try:
        return _demo_night(options, progress, night, catalog, personas, lab_dir)
    finally:
        night.close()


def _demo_night(options: DemoSettings, progress: Progress, night: Night, catalog: Catalog,
                personas: list[LoadedPersona], lab_dir: Path) -> list[RunSummary]:
    night.begin_loading()
    script = SimScript.load(options.sim_script).with_catalog(skills_used(personas, catalog))
    progress.phase("rendering the simulated Echos' voice")
    clips = render_sim_voice(script, options.audio_dir)
    names = [p.persona.echo for p in personas]
    progress.phase(f"starting a virtual lab with {len(names)} Echos in {lab_dir}")
    with VirtualLab(lab_dir, names) as vlab:
        vlab.activate()
        _reset_lab_logs(lab_dir, names)
        lab = LabConfig(
            audio_backend=options.backends[0],  # type: ignore[arg-type]
            echos=[EchoConfig(name=n, room=n, speaker=vlab.echos[n].speaker, microphone=vlab.echos[n].microphone,
                              backend=options.backends[i % len(options.backends)])  # type: ignore[arg-type]
                   for i, n in enumerate(names)],
            endpointing=DEMO_ENDPOINTING, virtual_lab=lab_dir,
            reference_replies=not model_language(options.model).startswith("en"),
        )
        (lab_dir / "lab.yaml").write_text(_lab_yaml(lab))
        progress.phase("starting the simulated Echos")
        with SimulatedEchos(lab_dir, names, script, clips, options.backends[0]):
            requests = [RunRequest(p, lab, catalog, options.db, options.audio_dir, options.model,
                                   asr_socket=Path(), asr_authkey=b"") for p in personas]
            return night.run(requests)


def skills_used(personas: list[LoadedPersona], catalog: Catalog) -> list[Skill]:
    ids = {step.skill_id for p in personas for step in compile_plan(p.persona, catalog) if step.skill_id}
    return [catalog[skill_id] for skill_id in sorted(ids)]


def render_sim_voice(script: SimScript, audio_dir: Path) -> dict[str, Path]:
    with Synthesizer(settings.tts_cache_dir(audio_dir), Voice(script.voice, script.rate)) as synth:
        return synth.render_many(phrases(script))


def _reset_lab_logs(lab_dir: Path, names: list[str]) -> None:
    for name in names:
        for suffix in ("said", "truth", "replies"):
            (lab_dir / f"{name}.{suffix}.jsonl").unlink(missing_ok=True)


def _lab_yaml(lab: LabConfig) -> str:
    import yaml

    return yaml.safe_dump(lab.model_dump(mode="json"), sort_keys=False)


# -- the simulated Echos, in a process of their own -----------------------------------------------


class SimulatedEchos:
    """Runs each virtual Echo's `SimulatedEcho` in a process of its own, as separate devices would be."""

    def __init__(self, lab_dir: Path, names: list[str], script: SimScript, clips: dict[str, Path],
                 backend: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._ready = [ctx.Event() for _ in names]
        self._processes = [
            ctx.Process(target=_serve_echo, name=f"simulated-{name}",
                        args=(lab_dir, name, script, clips, backend, self._stop, ready))
            for name, ready in zip(names, self._ready, strict=True)
        ]

    def __enter__(self) -> SimulatedEchos:
        for process in self._processes:
            process.start()
        deadline = time.monotonic() + 60
        if not all(ready.wait(max(0.0, deadline - time.monotonic())) for ready in self._ready):
            self.__exit__()
            raise RuntimeError("the simulated Echos did not start within 60 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for process in self._processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()


def _serve_echo(lab_dir: Path, name: str, script: SimScript, clip_paths: dict[str, Path], backend_name: str,
                stop: Any, ready: Any) -> None:
    redirect_native_stderr(lab_dir / "logs" / f"simulated-{name}.log")
    use_own_devices(lab_dir, name, "echo")
    clips = {text: read_wav(path) for text, path in clip_paths.items()}
    echo = SimulatedEcho(name, EchoBrain(script), clips, SideChannel(lab_dir / f"{name}.said.jsonl"),
                         lab_dir / f"{name}.truth.jsonl", open_backend(backend_name),
                         hears=f"{name}_out_mon", speaks=f"{name}_mic")
    thread = threading.Thread(target=echo.serve, name=name)
    thread.start()
    ready.set()
    stop.wait()
    echo.stop()
    thread.join(5)
