"""`orchestrator traffic`: the Echos' network traffic beside the steps of the log."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli.options import CONTEXT_SETTINGS, InputError, db_option, reports_errors, stderr
from orchestrator.traffic.link import DEFAULT_TAIL


@click.group(context_settings=CONTEXT_SETTINGS)
def traffic() -> None:
    """Network traffic of the Echos: captures in the log, read into flows linked to the steps.

    \b
    A night with `capture:` in the lab file records its own tcpdump files. Captures made elsewhere
    (the access point) are imported; `analyze` then reads every capture into the `flows` table:
      orchestrator traffic import ap-night.pcapng --echo kitchen --clock-offset -0.8
      orchestrator traffic analyze --trackers trackers.txt
      orchestrator query "SELECT name, domain, link FROM flows WHERE tracker"
    See docs/traffic.md.
    """


@traffic.command("import", context_settings=CONTEXT_SETTINGS)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--echo", metavar="NAME", default=None,
              help="The one Echo whose traffic the file holds (its mac or ip in the log tells its packets apart). "
                   "Default: every Echo with a network identity.")
@click.option("--clock-offset", type=float, default=0.0, show_default=True, metavar="SECONDS",
              help="Added to the file's packet times to put them on this machine's clock: if the capturing "
                   "machine's clock was 0.8 s ahead, give -0.8.")
@db_option
@reports_errors
def import_(file: Path, echo: str | None, clock_offset: float, db: Path) -> None:
    """Record a pcap or pcapng FILE made elsewhere in the log's captures (path, SHA-256, packets, times)."""
    from orchestrator import log
    from orchestrator.traffic.store import TrafficError, import_capture

    engine = log.open_log(db)
    try:
        capture_id = import_capture(engine, file, echo, clock_offset)
    except TrafficError as exc:
        raise InputError(str(exc)) from None
    finally:
        engine.dispose()
    stderr.print(f"capture {capture_id}: {file} recorded; `orchestrator traffic analyze` reads it into flows")


@traffic.command(context_settings=CONTEXT_SETTINGS)
@click.option("--capture", "capture_ids", type=int, multiple=True, metavar="ID",
              help="Analyze this capture (repeatable). Default: every capture not analyzed yet.")
@click.option("--again", is_flag=True, help="Analyze every capture again, replacing its flows.")
@click.option("--tail", type=click.FloatRange(0, 600), default=DEFAULT_TAIL, show_default=True, metavar="SECONDS",
              help="Seconds after a reply's end that still count as its step's traffic.")
@click.option("--trackers", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
              help="An advertising/tracking list (domains, hosts-file or Adblock `||domain^` lines) to flag flows by.")
@db_option
@reports_errors
def analyze(capture_ids: tuple[int, ...], again: bool, tail: float, trackers: Path | None, db: Path) -> None:
    """Read captures into `flows`: per Echo, each conversation with its names, domain and step (or background)."""
    from orchestrator import log
    from orchestrator.traffic.domains import TrackerListError, load_tracker_list
    from orchestrator.traffic.store import TrafficError
    from orchestrator.traffic.store import analyze as analyze_captures

    try:
        listed = load_tracker_list(trackers) if trackers is not None else None
    except TrackerListError as exc:
        raise InputError(str(exc)) from None
    engine = log.open_log(db)
    try:
        results = analyze_captures(engine, capture_ids, again=again, tail=tail, trackers=listed)
    except TrafficError as exc:
        raise InputError(str(exc)) from None
    finally:
        engine.dispose()
    if not results:
        stderr.print("no capture to analyze (`--again` analyzes every capture again)")
    for result in results:
        note = f" ({result.error})" if result.error else ""
        stderr.print(f"capture {result.capture_id}: {result.flows} flows: {result.linked} during steps, "
                     f"{result.background} background{note}")
