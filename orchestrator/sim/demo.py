"""The demo night: the demo personas on virtual Echos, with real audio, speech and decoding.

A private PulseAudio server provides the speaker and microphone of every virtual Echo
(sim/lab.py); a separate process plays the Echos themselves, in an Echo-like voice (sim/echo.py,
sim/voice.py); the personas run exactly as they would in a physical lab (night.py, run.py), and
what each reply meant is read from its transcript.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator import log
from orchestrator.asr import SpeechModel, check
from orchestrator.catalog.skills import Catalog, Skill, load_catalog
from orchestrator.core import settings
from orchestrator.lab.config import Capture, EchoConfig, Endpointing, LabConfig
from orchestrator.plan.persona import LoadedPersona, compile_plan, load_personas
from orchestrator.runner.night import Night
from orchestrator.runner.progress import Progress
from orchestrator.runner.run import RunRequest, RunSummary
from orchestrator.sim import network, voice
from orchestrator.sim.echo import SCRIPT, SimScript, SimulatedEchos, phrases, said_path, truth_path
from orchestrator.sim.lab import VirtualLab
from orchestrator.sim.network import VirtualNetwork

#: Short enough that the demo's radio stream is cut quickly; long enough for every spoken reply.
DEMO_ENDPOINTING = Endpointing(no_answer_timeout=6.0, max_reply=10.0, hangover=0.7)


@dataclass(frozen=True)
class DemoSettings:
    db: Path
    audio_dir: Path
    model: SpeechModel
    echos: int = 2
    backends: tuple[str, ...] = ("sounddevice",)  # Echo i uses backends[i % len(backends)]
    lab_dir: Path | None = None  # default: lab_beside(db)
    personas_dir: Path | None = None
    catalog_dir: Path | None = None
    sim_script: Path = SCRIPT  # what the simulated Echos answer
    #: A lab network (sim/network.py): the Echos reach their cloud while answering, and the night captures it.
    network: bool = False


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


@dataclass(frozen=True)
class Rehearsal:
    """A night of any persona files on a virtual lab, before it meets hardware."""

    db: Path
    audio_dir: Path
    model: SpeechModel
    lab_dir: Path
    endpointing: Endpointing = Endpointing()
    backends: tuple[str, ...] = ("sounddevice",)  # Echo i uses backends[i % len(backends)]
    sim_script: Path = SCRIPT
    #: Catalog skills answer as a store's do: some are answered by another skill, a few unreachable.
    varied: bool = True
    network: bool = False


def lab_beside(db: Path) -> Path:
    """The virtual lab's folder when none is named: beside the log, so a demo or a rehearsal pointed at
    other folders than the defaults writes nothing into the project's data folder."""
    return db.parent / "lab"


def run_demo(options: DemoSettings, progress: Progress) -> list[RunSummary]:
    home = settings.project_home()
    catalog = load_catalog(options.catalog_dir or home / "skills_catalog")
    personas = demo_personas(options.personas_dir or home / "persona_scripts" / "demo", catalog, options.echos)
    rehearsal = Rehearsal(options.db, options.audio_dir, options.model, options.lab_dir or lab_beside(options.db),
                          DEMO_ENDPOINTING, options.backends, options.sim_script, varied=False,
                          network=options.network)
    return rehearse(personas, catalog, rehearsal, progress)


def rehearse(personas: list[LoadedPersona], catalog: Catalog, options: Rehearsal,
             progress: Progress) -> list[RunSummary]:
    """Run `personas` on a virtual lab of one simulated Echo per persona, heard and judged as a real night."""
    check(options.model)
    night = Night(options.model, options.lab_dir, on_event=progress, on_phase=progress.phase)
    try:
        return _virtual_night(options, progress, night, catalog, personas)
    finally:
        night.close()


def _virtual_night(options: Rehearsal, progress: Progress, night: Night, catalog: Catalog,
                   personas: list[LoadedPersona]) -> list[RunSummary]:
    night.begin_loading()
    with virtual_lab(personas, catalog, options, progress) as lab:
        requests = [RunRequest(p, lab, catalog, options.db, options.audio_dir, options.model,
                               asr_socket=Path(), asr_authkey=b"") for p in personas]
        summaries = night.run(requests)
    if options.network:
        _analyze_traffic(options.db, progress)
    return summaries


@contextmanager
def virtual_lab(personas: list[LoadedPersona], catalog: Catalog, options: Rehearsal,
                progress: Progress) -> Iterator[LabConfig]:
    """A virtual lab with one simulated Echo per persona, answering; as a lab file would describe it."""
    lab_dir = options.lab_dir
    script = SimScript.load(options.sim_script).with_catalog(skills_used(personas, catalog), varied=options.varied)
    progress.phase("rendering the simulated Echos' voice")
    clips = render_sim_voice(script, options.audio_dir)
    names = [p.persona.echo for p in personas]
    progress.phase(f"starting a virtual lab with {len(names)} Echos in {lab_dir}")
    with VirtualLab(lab_dir, names) as vlab, _network(options, lab_dir, names, script, progress) as net:
        vlab.activate()
        _reset_lab_logs(lab_dir, names)
        addresses = net.plan.echos if net is not None else {}
        lab = LabConfig(
            audio_backend=options.backends[0],
            echos=[EchoConfig(name=n, room=n, speaker=vlab.echos[n].speaker, microphone=vlab.echos[n].microphone,
                              backend=options.backends[i % len(options.backends)],
                              mac=addresses[n].mac if n in addresses else None,
                              ip=addresses[n].ip if n in addresses else None)
                   for i, n in enumerate(names)],
            endpointing=options.endpointing, virtual_lab=lab_dir,
            capture=Capture(interface=net.plan.bridge, rotate_megabytes=10, folder=lab_dir / "captures")
            if net is not None else None,
        )
        (lab_dir / "lab.yaml").write_text(_lab_yaml(lab))
        progress.phase("starting the simulated Echos")
        with SimulatedEchos(lab_dir, names, script, clips, options.backends[0]):
            yield lab


@contextmanager
def _network(options: Rehearsal, lab_dir: Path, names: list[str], script: SimScript,
             progress: Progress) -> Iterator[VirtualNetwork | None]:
    if not options.network:
        yield None
        return
    progress.phase("building the lab network: a namespace per Echo, a resolver and TLS servers")
    lab_dir.mkdir(parents=True, exist_ok=True)
    with VirtualNetwork(lab_dir, network.plan(names, script.endpoints())) as net:
        yield net


def _analyze_traffic(db: Path, progress: Progress) -> None:
    from orchestrator.traffic.store import analyze  # the packet library, only for a night with a network

    engine = log.open_log(db)
    try:
        for result in analyze(engine):
            progress.phase(f"traffic: capture {result.capture_id}: {result.flows} flows, {result.linked} during "
                           f"steps, {result.background} background")
    finally:
        engine.dispose()


def skills_used(personas: list[LoadedPersona], catalog: Catalog) -> list[Skill]:
    ids = {step.skill_id for p in personas for step in compile_plan(p.persona, catalog) if step.skill_id}
    return [catalog[skill_id] for skill_id in sorted(ids)]


def render_sim_voice(script: SimScript, audio_dir: Path) -> dict[str, Path]:
    return voice.render_many(phrases(script), settings.tts_cache_dir(audio_dir))


def _reset_lab_logs(lab_dir: Path, names: list[str]) -> None:
    for name in names:
        said_path(lab_dir, name).unlink(missing_ok=True)
        truth_path(lab_dir, name).unlink(missing_ok=True)


def _lab_yaml(lab: LabConfig) -> str:
    import yaml

    return yaml.safe_dump(lab.model_dump(mode="json"), sort_keys=False)
