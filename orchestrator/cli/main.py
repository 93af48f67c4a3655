"""The `orchestrator` command.

Data goes to stdout, messages and progress to stderr; errors print as `Error: …` and exit non-zero
(2 for bad input: a persona, lab file, catalog or model that cannot be used).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from orchestrator import __version__
from orchestrator.cli.options import (
    CONTEXT_SETTINGS,
    InputError,
    audio_dir_option,
    catalog_option,
    db_option,
    lab_option,
    model_option,
    reports_errors,
    resolve_model_setting,
    stderr,
)
from orchestrator.core import settings


class LazyGroup(click.Group):
    """Subcommands whose modules are imported only when one of them is asked for.

    `query` must start fast; the scheduler, the catalog and the analysts' commands bring in
    APScheduler, SQLAlchemy and pyarrow, which it does not need.
    """

    LAZY = {
        "serve": "orchestrator.cli.schedule:serve",
        "schedule": "orchestrator.cli.schedule:schedule_group",
        "status": "orchestrator.cli.schedule:status",
        "catalog": "orchestrator.cli.catalog:catalog",
        "query": "orchestrator.cli.analysis:query",
        "report": "orchestrator.cli.analysis:report",
        "export": "orchestrator.cli.analysis:export",
        "browse": "orchestrator.cli.analysis:browse",
        "audio": "orchestrator.cli.analysis:audio",
        "lab": "orchestrator.cli.lab:lab",
        "transcribe": "orchestrator.cli.transcribe:transcribe",
        "traffic": "orchestrator.cli.traffic:traffic",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.LAZY:
            module, attribute = self.LAZY[name].split(":")
            command: click.Command = getattr(importlib.import_module(module), attribute)
            return command
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="orchestrator")
def main() -> None:
    """Drive Amazon Echos with scripted personas, record and transcribe what they answer, and log it.

    \b
    First steps:
      orchestrator demo                 a demo night on virtual Echos (no hardware needed)
      orchestrator query "SELECT kind, status, transcript FROM interactions"
      orchestrator models list          speech models for transcription
      orchestrator lab check            can each Echo's microphone hear its own speaker, and no other?
    """


# -- demo -----------------------------------------------------------------------------------------


@main.command()
@db_option
@audio_dir_option
@model_option
@click.option("--echos", type=click.IntRange(1, 32), default=2, show_default=True,
              help="How many virtual Echos; the demo personas are repeated to fill them.")
@click.option("--backend", type=click.Choice(["sounddevice", "pyaudio"]), default="sounddevice", show_default=True,
              help="PortAudio binding used for every speaker and microphone.")
@click.option("--lab-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of the virtual lab (sound server, lab.yaml, the Echos' logs) [default: lab, beside --db].")
@click.option("--network", is_flag=True,
              help="Give the lab a network (root: a namespace per Echo, a resolver, TLS servers): the Echos reach "
                   "Alexa's and the skills' servers while answering, tcpdump captures it, and the night ends with "
                   "`traffic analyze` (docs/traffic.md).")
@reports_errors
def demo(db: Path, audio_dir: Path, model_setting: str | None, echos: int, backend: str, lab_dir: Path | None,
         network: bool) -> None:
    """Run a demo night on virtual Echos.

    Starts a private PulseAudio server with a speaker and a microphone per virtual Echo, simulated
    Echos that answer acoustically in an Echo-like voice, and the demo personas (persona_scripts/demo/):
    a pet lover who enables, opens and talks to skills, and the vanilla control. Every step is spoken
    with pyttsx3, recorded, transcribed (by default with an English Vosk model where one is installed,
    else with pocketsphinx's bundled English model), judged from its words and logged; a summary
    table closes the night.
    """
    from orchestrator.runner.progress import Progress
    from orchestrator.sim.demo import DemoSettings, run_demo

    model = resolve_model_setting(model_setting or "auto", audio_dir=audio_dir)
    progress = Progress(stderr)
    progress.phase(f"transcribing with {model} ({model.path})")
    summaries = run_demo(DemoSettings(db=db, audio_dir=audio_dir, model=model, echos=echos, backends=(backend,),
                                      lab_dir=lab_dir, network=network), progress)
    progress.summary(summaries, db, audio_dir)
    if any(s.status != "completed" for s in summaries):
        sys.exit(1)


# -- run and validate -----------------------------------------------------------------------------


@main.command()
@click.argument("personas", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@lab_option
@catalog_option
@db_option
@audio_dir_option
@model_option
@click.option("--dry-run", is_flag=True, help="Print each persona's plan, with the words to be spoken, and stop.")
@click.option("--resume", "resume_run", type=int, default=None, metavar="RUN_ID",
              help="Continue this interrupted run (one persona): done steps are kept, the interrupted one is "
                   "retried once.")
@click.option("--no-resume", is_flag=True,
              help="Start new runs even where a run of the persona was interrupted in the last 12 hours "
                   "(by default such a run is continued).")
@click.option("--virtual", is_flag=True,
              help="Rehearse on a virtual lab instead of the lab file's Echos: one simulated Echo per persona, "
                   "knowing the catalog's skills (some need account linking, some are answered by another skill).")
@click.option("--lab-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --virtual: the virtual lab's folder [default: lab, beside --db].")
@reports_errors
def run(personas: tuple[Path, ...], lab_path: Path, catalog_dir: Path, db: Path, audio_dir: Path,
        model_setting: str | None, dry_run: bool, resume_run: int | None, no_resume: bool, virtual: bool,
        lab_dir: Path | None) -> None:
    """Run persona files now, each on its Echo from the lab file, all at once.

    Each persona runs in a worker process of its own; Echos of one room take turns. SIGTERM or
    Ctrl-C let every Echo finish its current step and mark the runs interrupted; the next
    `run` continues them. With --virtual the personas rehearse their night on simulated Echos,
    recorded, transcribed and judged as on hardware (the speech model defaults to `auto`).

    \b
    orchestrator run persona_scripts/pets-animals.yaml --dry-run
    orchestrator run persona_scripts/*.yaml --lab lab.yaml
    orchestrator run persona_scripts/dating.yaml --resume 42
    orchestrator run persona_scripts/*.yaml --virtual --db rehearsal.sqlite
    """
    from orchestrator.catalog.skills import load_catalog
    from orchestrator.core.safe_text import for_terminal
    from orchestrator.lab.config import load_lab
    from orchestrator.plan.persona import compile_plan, load_personas
    from orchestrator.plan.validate import check_lab_bindings

    catalog = load_catalog(catalog_dir)
    loaded = load_personas(list(personas), catalog)
    if virtual and not dry_run:
        from orchestrator.sim.demo import lab_beside

        _rehearse(loaded, catalog, db, audio_dir, model_setting, lab_dir or lab_beside(db))
        return
    if not virtual:
        lab = load_lab(lab_path)  # a dry run checks what a real run would, the lab file included
        check_lab_bindings(lab, lab_path, loaded)
    if dry_run:
        for item in loaded:
            click.echo(for_terminal(f"# {item.persona.name} on {item.persona.echo} ({item.path})"))
            for step in compile_plan(item.persona, catalog):
                if step.kind == "pause":
                    words = f"(pause {step.pause_seconds:g} s)"
                else:
                    words = step.spoken(item.persona.wake.word)
                note = f"   ({step.note})" if step.note else ""
                click.echo(f"#{step.index:<3} {step.kind:<8} {for_terminal(words)}{for_terminal(note)}")
        return
    if resume_run is not None and len(loaded) != 1:
        raise InputError("--resume continues one run: give exactly one persona file")
    _run_personas(loaded, catalog, lab, db, audio_dir, model_setting, resume_run, not no_resume)


def _rehearse(loaded: list[Any], catalog: Any, db: Path, audio_dir: Path, model_setting: str | None,
              lab_dir: Path) -> None:
    from orchestrator.runner.progress import Progress
    from orchestrator.sim.demo import Rehearsal, rehearse

    model = resolve_model_setting(model_setting or "auto", audio_dir=audio_dir)
    progress = Progress(stderr)
    progress.phase(f"rehearsing on a virtual lab, transcribing with {model}")
    summaries = rehearse(loaded, catalog, Rehearsal(db, audio_dir, model, lab_dir), progress)
    progress.summary(summaries, db, audio_dir)
    if any(s.status != "completed" for s in summaries):
        sys.exit(1)


def _run_personas(loaded: list[Any], catalog: Any, lab: Any, db: Path, audio_dir: Path,
                  model_setting: str | None, resume_run: int | None, resume: bool) -> None:
    from orchestrator.runner.night import run_personas
    from orchestrator.runner.progress import Progress

    model = resolve_model_setting(model_setting, lab.speech_model, audio_dir)
    progress = Progress(stderr)
    summaries = run_personas(loaded, catalog, lab, db, audio_dir, model, progress, resume=resume,
                             resume_run_id=resume_run)
    progress.summary(summaries, db, audio_dir)
    if any(s.status != "completed" for s in summaries):
        sys.exit(1)


@main.command()
@click.argument("personas", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@lab_option
@catalog_option
@reports_errors
def validate(personas: tuple[Path, ...], lab_path: Path, catalog_dir: Path) -> None:
    """Check the lab file, the catalog and persona files together; every problem is listed.

    With no persona files, the study's personas (persona_scripts/*.yaml) are checked; the demo's
    (persona_scripts/demo/) bind to the Echos of the virtual lab the demo builds. Without a lab
    file (no --lab, and no lab.yaml yet), they are checked against lab.example.yaml. Exit code 2
    when anything is wrong, with the file, line and field of each problem.

    \b
    orchestrator validate
    orchestrator validate persona_scripts/dating.yaml --lab lab.yaml
    """
    from orchestrator.lab.config import EXAMPLE
    from orchestrator.plan.validate import validate_all

    home = settings.project_home()
    paths = list(personas) or sorted((home / "persona_scripts").glob("*.yaml"))
    if lab_path == settings.default_lab_file() and not lab_path.exists() and (home / EXAMPLE).is_file():
        stderr.print(f"no {lab_path.name} yet: checking against {EXAMPLE} (copy it to {lab_path.name} and put in "
                     "your devices' names)")
        lab_path = home / EXAMPLE
    report = validate_all(lab_path, catalog_dir, paths)
    click.echo(report)


# -- models -----------------------------------------------------------------------------------------


@main.group()
def models() -> None:
    """List the speech models of both engines (Vosk, pocketsphinx) and download Vosk ones."""


@models.command("list")
@audio_dir_option
def models_list(audio_dir: Path) -> None:
    """Known models of each engine, whether each is installed, and where; `*` marks the default."""
    from orchestrator.asr import models as asr_models

    for info in asr_models.list_models(settings.models_dir(audio_dir)):
        state = f"installed at {info.path}" if info.installed else "not installed"
        mark = "*" if info.default else " "
        click.echo(f"{mark} {info.name:<30} {info.engine:<13} {info.language:<6} {info.size_mb:>5} MB  {state}")


@models.command("download")
@click.argument("name", default=settings.DEFAULT_MODEL_NAME)
@audio_dir_option
@click.option("--url", default=None, help="Download from this address instead of the official one.")
@click.option("--sha256", default=None, help="Expected SHA-256 of the zip (overrides the published one).")
@click.option("--no-verify", is_flag=True, help="Install without a checksum (for models with no published one).")
@click.option("--force", is_flag=True, help="Download again even when the model is installed.")
@click.option("--if-missing", is_flag=True, help="Do nothing when the model is installed already.")
@reports_errors
def models_download(name: str, audio_dir: Path, url: str | None, sha256: str | None, no_verify: bool, force: bool,
                    if_missing: bool) -> None:
    """Download a model from the official Vosk model list, verify its checksum and install it."""
    from orchestrator.asr import models as asr_models

    target_dir = settings.models_dir(audio_dir)
    if if_missing and (target_dir / name).is_dir():
        stderr.print(f"{name} is installed at {target_dir / name}")
        return
    with _download_bar(name) as progress:
        try:
            path = asr_models.download(name, target_dir, url=url, sha256=sha256, progress=progress,
                                       verify=not no_verify, force=force)
        except asr_models.ModelDownloadError as exc:
            raise click.ClickException(str(exc)) from None
    stderr.print(f"installed {name} at {path}")


class _download_bar:  # noqa: N801 - used as a context manager like the rich progress it wraps
    def __init__(self, name: str) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        self._progress = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                                  TransferSpeedColumn(), console=stderr, transient=True)
        self._task = self._progress.add_task(name, total=None)

    def __enter__(self) -> Callable[[int, int | None], None]:
        self._progress.start()
        return lambda done, total: self._progress.update(self._task, completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


# -- devices ----------------------------------------------------------------------------------------


@main.command()
@click.option("--backend", type=click.Choice(["sounddevice", "pyaudio"]), default="sounddevice", show_default=True,
              help="PortAudio binding to ask; both see the same devices.")
@reports_errors
def devices(backend: str) -> None:
    """List the audio devices PortAudio sees, by name, with their channels and default rate."""
    from orchestrator.audio.devices import open_backend

    for d in open_backend(backend).devices():
        click.echo(f"{d.index:>3}  {d.name:<40} in {d.max_input_channels:>3}  out {d.max_output_channels:>3}  "
                   f"{d.default_rate:>7.0f} Hz")


if __name__ == "__main__":
    main()
