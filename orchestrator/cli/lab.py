"""`orchestrator lab`: the rig self-test on demand.

The verdicts go to stdout as a table and to the log (`rig_checks`, `rig_check_results`,
`rig_check_levels`); exit code 1 when an Echo fails, 2 for a lab file that cannot be used.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestrator.cli.options import CONTEXT_SETTINGS, InputError, db_option, lab_option, reports_errors

if TYPE_CHECKING:
    from orchestrator.lab.config import LabConfig
    from orchestrator.lab.rig_check import RigReport


@click.group(context_settings=CONTEXT_SETTINGS)
def lab() -> None:
    """Check the speakers and microphones of the lab."""


@lab.command("check")
@lab_option
@db_option
@click.option("--echo", "echos", multiple=True, metavar="NAME",
              help="Probe only this Echo (repeatable) [default: every Echo of the lab file]. Every microphone "
                   "still listens for cross-talk.")
@click.option("--no-store", is_flag=True, help="Print the verdicts without writing them to the log.")
@reports_errors
def check(lab_path: Path, db: Path, echos: tuple[str, ...], no_store: bool) -> None:
    """Play a probe tone on each Echo's speaker and listen on every microphone.

    Each Echo's own microphone must hear its probe at `rig_check.min_level` dBFS or louder
    (default -40) and 10 dB above its noise; no microphone of another room may hear it at
    `rig_check.max_crosstalk` dBFS (default -50). Each Echo has a probe frequency of its own, so
    checks of two rooms may overlap. The same check runs before every night; an Echo that fails
    it has its persona's run recorded as failed instead of started.

    \b
    orchestrator lab check --lab lab.yaml
    orchestrator lab check --echo kitchen --no-store
    orchestrator query "SELECT * FROM rig_check_results ORDER BY id DESC LIMIT 5"
    """
    from orchestrator import log
    from orchestrator.lab.config import load_lab
    from orchestrator.lab.rig_check import self_test

    lab_config = load_lab(lab_path)
    known = [e.name for e in lab_config.echos]
    unknown = [name for name in echos if name not in known]
    if unknown:
        raise InputError(f"{lab_path}: no Echo named {', '.join(map(repr, unknown))}; the lab has {', '.join(known)}")
    click.echo(f"probing {len(echos) or len(known)} Echo(s) of {lab_path}", err=True)
    engine = None if no_store else log.open_log(db)
    report = self_test(lab_config, engine, "manual", list(echos) or None)
    _print_report(lab_config, report)
    if report.check_id is not None:
        click.echo(f"stored as rig check {report.check_id} in {db}", err=True)
    if not report.passed:
        sys.exit(1)


def _print_report(lab_config: LabConfig, report: RigReport) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Rig self-test")
    for column in ("echo", "room", "probe Hz", "own mic dBFS", "noise dBFS", "loudest other room dBFS", "verdict"):
        table.add_column(column, justify="right" if "Hz" in column or "dBFS" in column else "left")
    for verdict in report.verdicts:
        room = lab_config.echo(verdict.echo).room_key
        others = [h.level_dbfs for h in report.heard
                  if h.speaker == verdict.echo and lab_config.echo(h.microphone).room_key != room]
        table.add_row(verdict.echo, lab_config.echo(verdict.echo).room or "-", f"{verdict.probe_hz:.0f}",
                      _db(verdict.level_dbfs), _db(verdict.noise_dbfs), _db(max(others, default=None)),
                      verdict.status if verdict.ok else f"[bold red]{verdict.status}[/]")
    console = Console()
    console.print(table)
    for verdict in report.verdicts:
        if not verdict.ok:
            console.print(f"[bold red]{verdict.echo}[/]: {verdict.error}", highlight=False)


def _db(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
