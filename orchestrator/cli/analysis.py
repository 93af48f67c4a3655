"""The analysts' commands: `orchestrator query`, `report`, `export` and `browse`.

Like the rest of the command line: data on stdout, messages on stderr, errors as `Error: …` with
a non-zero exit code (2 for a file that must not be written: a device, a FIFO, a symbolic link, a
folder that does not exist). All four only read the log.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from orchestrator.analysis.export import EXPORT_FORMATS, ExportRequestError
from orchestrator.analysis.query import DEFAULT_TIMEOUT_S, FORMATS, QueryError
from orchestrator.analysis.reports import GROUPINGS, REPORTS, Filters, ReportError, check_date
from orchestrator.cli.options import CONTEXT_SETTINGS, InputError, db_option
from orchestrator.core.durable import OutputError, OutputRefused
from orchestrator.core.safe_text import for_output, for_terminal


def _night_date(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_date(value)
    except ReportError as exc:
        raise click.BadParameter(str(exc)) from None


def _info(message: str) -> None:
    click.echo(message, err=True)


@contextmanager
def _reported_errors() -> Iterator[None]:
    """The log's and the output file's errors as `Error: …`, without a traceback."""
    try:
        yield
    except (OutputRefused, ExportRequestError) as exc:  # what the operator asked for cannot be done as asked
        raise InputError(str(exc)) from None
    except (QueryError, OutputError) as exc:
        raise click.ClickException(str(exc)) from None


# -- query ------------------------------------------------------------------------------------------


class _Interrupted(click.ClickException):
    exit_code = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("sql")
@db_option
@click.option("-p", "--param", "params", type=(str, str), multiple=True, metavar="NAME VALUE",
              help="A value for the named parameter :NAME in the SQL, as text; repeat for more "
                   "(-p id 3 -p status ok).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="Output format.")
@click.option("--timeout", type=click.FloatRange(min=0), default=DEFAULT_TIMEOUT_S, show_default=True,
              metavar="SECONDS", help="Stop the query once SQLite has worked on it this long; 0: no limit.")
def query(sql: str, db: Path, params: tuple[tuple[str, str], ...], fmt: str, timeout: float) -> None:
    """Run a read-only SQL query against the interaction log.

    The database is opened read-only and only reading is allowed: SELECT and WITH, the usual
    functions (json_each and json_tree too) and the PRAGMAs that describe the schema or check the
    file (table_info, index_list, integrity_check, ...). Ctrl-C stops a running query (exit code 130).

    \b
    orchestrator query "SELECT status, count(*) FROM interactions GROUP BY status"
    orchestrator query "SELECT * FROM interactions WHERE run_id = :run" -p run 3
    orchestrator query "SELECT * FROM runs" --format csv > runs.csv
    """
    from orchestrator.analysis.query import QueryInterrupted, QueryTimeout, ctrl_c_stops_queries, run_query, write_rows

    named = {name.lstrip(":@$"): value for name, value in params}
    try:
        with ctrl_c_stops_queries():
            columns, rows = run_query(db, sql, named, timeout_s=timeout or None)
            with rows:
                write_rows(sys.stdout, *for_output(columns, rows, fmt), fmt)  # type: ignore[arg-type]
    except QueryInterrupted as exc:
        raise _Interrupted(str(exc)) from None
    except QueryTimeout as exc:
        raise click.ClickException(f"{exc} (--timeout)") from None
    except QueryError as exc:
        hint = " (give it with -p NAME VALUE)" if "value for binding parameter" in str(exc) else ""
        raise click.ClickException(f"{exc}{hint}") from None


# -- report -----------------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("name", type=click.Choice(list(REPORTS)), metavar="NAME")
@db_option
@click.option("--night", callback=_night_date, metavar="DATE",
              help="One night, YYYY-MM-DD [default for night and failures: the latest night].")
@click.option("--since", callback=_night_date, metavar="DATE", help="Every night from this one on.")
@click.option("--persona", metavar="NAME", help="One persona, by name (compare: one persona beside the control).")
@click.option("--by", type=click.Choice(GROUPINGS), default=None,
              help="For installs, replies and compare: a row per night (and round) instead of one over all nights.")
@click.option("--skill", metavar="ID_OR_NAME", help="For skill-history: one skill, by id or name (any case).")
@click.option("--grep", metavar="WORDS", help="For search: words that must all appear in the transcript.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="Output format.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="For night: write the night's page to this file: what failed and why, installs by skill, "
                   "the rig self-test, the previous night, charts, every step's audio (linked relative to it).")
def report(name: str, db: Path, night: str | None, since: str | None, persona: str | None, by: str | None,
           skill: str | None, grep: str | None, fmt: str, html_path: Path | None) -> None:
    """Run a standing report over the log (read-only).

    \b
    night          per night, persona and Echo: runs, steps, ok, no answer, errors, audio minutes
    installs       per persona and skill: install attempts and what the replies meant
    replies        per skill: steps, replies, and the replies' latency, length and words;
                   steps without a skill (the control's questions) are the last row
    compare        each interest persona beside the control over the same nights: steps, replies,
                   reply rate, latency, length, words, verdicts, and what both asked but got
                   different answers to
    skill-history  per skill and night: the usual verdict and reply, how many different replies,
                   and whether they changed since the skill's previous night
    failures       steps of a night without a complete reply, with their errors; runs that did not complete
    search         steps whose transcript contains every word of --grep

    A night is the UTC date of the evening its runs began; two nights run on one date (two demo
    nights) are told apart by their round, night_round (see docs/log.md, Views). Without --night or
    --since, installs, replies, compare and skill-history cover every night; --by night gives a row
    per night instead.

    \b
    orchestrator report night
    orchestrator report night --html night.html
    orchestrator report installs --by night --since 2026-03-01
    orchestrator report replies --persona vanilla
    orchestrator report compare --night 2026-03-05
    orchestrator report compare --persona pets-animals --by night --format csv > pets-vs-control.csv
    orchestrator report skill-history --skill "Cat Facts"
    orchestrator report failures --night 2026-03-05 --format csv > failures.csv
    orchestrator report search --grep "link account" --persona dating
    """
    from orchestrator.analysis.query import write_rows
    from orchestrator.analysis.reports import run_report

    if html_path is not None:
        _night_page(name, db, night, since, persona, html_path)
        return
    with _reported_errors():
        columns, rows = run_report(db, name, Filters(night=night, since=since, persona=persona, grep=grep,
                                                     skill=skill, by=by))
        with rows:
            write_rows(sys.stdout, *for_output(columns, rows, fmt), fmt)  # type: ignore[arg-type]


def _night_page(name: str, db: Path, night: str | None, since: str | None, persona: str | None,
                out: Path) -> None:
    from orchestrator.analysis.night_page import write_night_page

    if name != "night":
        raise click.UsageError("--html makes the page of a night: orchestrator report night --html FILE")
    if since is not None:
        raise click.UsageError("the page shows one night: pick it with --night, not --since")
    with _reported_errors():
        data = write_night_page(db, out, night, persona)
    if data is None:
        raise click.ClickException(f"no runs in {db} yet: nothing to show")
    _info(f"night {data.night}: {len(data.runs)} runs, {len(data.steps)} steps -> {out}")


# -- export -----------------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("name", metavar="TABLE_OR_VIEW")
@db_option
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default=None,
              help="Output format [default: from the suffix of --out].")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path, allow_dash=True),
              help="The file to write; - for stdout (csv and jsonl only).")
def export(name: str, db: Path, fmt: str | None, out: Path) -> None:
    """Export a whole table or view of the log, streaming, with flat memory.

    The file appears only when the export is complete; a full disk leaves an earlier file as it was.
    A device, a FIFO or a symbolic link at --out, or a folder that does not exist, is refused (exit 2).
    CSV cells that a spreadsheet would run as a formula (starting with = + - @, a tab or a carriage
    return) get a leading '. Parquet needs pyarrow
    (pip install 'echo-orchestrator[parquet]'); it gets one row group per 100,000 rows.

    \b
    orchestrator export interaction_details --out steps.parquet
    orchestrator export runs --format csv --out - | head
    """
    from orchestrator.analysis.export import export as export_relation
    from orchestrator.analysis.export import format_for

    with _reported_errors():
        chosen = format_for(out, fmt)
        count = export_relation(db, name, out, chosen)
    _info(f"exported {count} rows of {name} to {'stdout' if str(out) == '-' else out} ({chosen})")


# -- browse -----------------------------------------------------------------------------------------


@contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (kill, a service manager) stops browse as Ctrl-C does, so Datasette is stopped and the
    scratch folder removed; Python's default for SIGTERM is to end at once, cleaning up nothing."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command(context_settings=CONTEXT_SETTINGS)
@db_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback lets the network read the log.")
@click.option("--port", type=click.IntRange(0, 65535), default=8001, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--live", is_flag=True,
              help="Open the log read-only with SQLite's locking instead of immutable, so rows the lab wrote "
                   "since its last checkpoint show too (needs the -wal/-shm files beside the log).")
def browse(db: Path, host: str, port: int, live: bool) -> None:
    """Serve the log read-only in Datasette, with the reports as stored queries.

    Stored queries (the reports): night_summary, install_outcomes, reply_stats, persona_vs_control,
    skill_history, night_failures, transcript_search, and of the traffic skill_endpoints,
    persona_only_endpoints, background_traffic. Every column has its description from docs/log.md.
    Needs Datasette (pip install 'echo-orchestrator[web]').

    \b
    orchestrator browse                      http://127.0.0.1:8001/orchestrator
    orchestrator browse --host 0.0.0.0       inside a container whose port is published on loopback only
    """
    from orchestrator.analysis import web

    if not web.is_loopback(host):
        _info(f"warning: listening on {host}, not loopback: anyone who can reach this machine can read the log")
    if not live and (unseen := web.unseen_wal_bytes(db)):
        _info(f"warning: {unseen} bytes of the log are still in its -wal file and are not shown; --live shows them")
    try:
        with _sigterm_as_ctrl_c(), web.datasette_process(db, host=host, port=port, immutable=not live) as process:
            _info(f"serving {db} read-only at {web.url(host, port, db)}; Ctrl-C stops it")
            try:
                code = process.wait()
            except KeyboardInterrupt:
                code = 0
    except web.WebError as exc:
        raise click.ClickException(str(exc)) from None
    if code:
        raise click.ClickException(f"datasette stopped with exit code {code}")


# -- audio ------------------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("step_id", type=int, metavar="STEP_ID")
@db_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the exchange to this WAV file: the prompt, half a second of silence, the reply.")
@click.option("--play", is_flag=True, help="Play the exchange on a speaker of this machine.")
@click.option("--device", default="default", show_default=True,
              help="With --play: the output device, as `orchestrator devices` names it (a unique part is enough).")
def audio(step_id: int, db: Path, out: Path | None, play: bool, device: str) -> None:
    """The audio of one step: the prompt played to the Echo, and its reply as recorded.

    STEP_ID is an interaction's id (`interaction_id` in the views). Prints where both files are,
    with what was said and what was heard, so a verdict can be checked by ear.

    \b
    orchestrator audio 42
    orchestrator audio 42 --out step42.wav
    orchestrator audio 42 --play
    """
    # Here, not at the top: numpy and the sound stack stay out of `query`'s start-up.
    from orchestrator.analysis import step_audio
    from orchestrator.audio.clip import write_wav_atomic
    from orchestrator.core.durable import check_target

    with _reported_errors():
        try:
            found = step_audio.find(db, step_id)
        except step_audio.StepAudioError as exc:
            raise InputError(str(exc)) from None
        for line in (f"step {found.step_id} ({found.kind}, {found.status})", f"  said:   {found.prompt_text or ''}",
                     f"  heard:  {found.transcript or ''}", f"  prompt: {found.prompt or '(none)'}",
                     f"  reply:  {found.reply or '(none: nothing was recorded)'}"):
            click.echo(for_terminal(line))
        if out is None and not play:
            return
        clip = step_audio.exchange(found)
        if out is not None:
            check_target(out)
            write_wav_atomic(out, clip)
            _info(f"wrote {out} ({clip.duration:.1f} s)")
    if play:
        _play(clip, device)


def _play(clip: Any, device: str) -> None:  # an audio.clip.Clip
    from orchestrator.audio.devices import DeviceError, open_backend

    try:
        speaker = open_backend("sounddevice").open_speaker(device, clip.format)
        try:
            speaker.play(clip)
        finally:
            speaker.close()
    except DeviceError as exc:
        raise click.ClickException(f"cannot play on {device!r}: {exc}") from None
