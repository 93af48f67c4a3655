"""`orchestrator transcribe`: finish a night's queued transcripts, or hear a night again with another model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from orchestrator.cli.options import (
    CONTEXT_SETTINGS,
    InputError,
    audio_dir_option,
    db_option,
    model_option,
    reports_errors,
    resolve_model_setting,
    stderr,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from orchestrator.asr import SpeechModel


@click.command(context_settings=CONTEXT_SETTINGS)
@db_option
@audio_dir_option
@model_option
@click.option("--pending", is_flag=True,
              help="Decode every reply still queued (transcript_state 'pending', or 'working' for a transcriber "
                   "that died).")
@click.option("--run", "run_id", type=int, default=None, metavar="RUN_ID",
              help="Decode every recording of this run again with --model, adding transcripts.")
@click.option("--keep-current", is_flag=True,
              help="With --run: store the new transcripts beside the current ones without making them current.")
@reports_errors
def transcribe(db: Path, audio_dir: Path, model_setting: str | None, pending: bool, run_id: int | None,
               keep_current: bool) -> None:
    """Transcribe recorded replies: what a night left queued, or a whole night again with another model.

    During a night, replies the plan does not react to are decoded by a background transcriber; a
    night that was killed leaves some queued in the log. --pending decodes them, with --model or
    else the model their night used, and judges each reply as the night would have. Two
    transcribers never take the same reply.

    --run N --model M decodes every recording of run N with model M and stores each transcript
    beside the earlier ones (`transcript_details` lists them all). The new transcripts become the
    current ones (what `interactions.transcript` and `interaction_details` show) unless
    --keep-current. Verdicts (reply_outcome) are not judged again: they are what the plan acted on.
    A recording that already has a transcript by model M is skipped, so a second run adds nothing.

    \b
    orchestrator transcribe --pending
    orchestrator transcribe --run 12 --model pocketsphinx
    orchestrator query "SELECT step_index, model, is_current, transcript FROM transcript_details WHERE run_id = 12"
    """
    if pending == (run_id is not None):
        raise InputError("give either --pending or --run RUN_ID")
    if keep_current and run_id is None:
        raise InputError("--keep-current goes with --run")
    if not db.is_file():
        raise InputError(f"no log at {db}")
    if pending:
        _pending(db, audio_dir, model_setting)
    else:
        assert run_id is not None
        _again(db, run_id, resolve_model_setting(model_setting, audio_dir=audio_dir), not keep_current)


def _pending(db: Path, audio_dir: Path, model_setting: str | None) -> None:
    from orchestrator import log
    from orchestrator.runner.deferred import work_through_queue

    engine = log.open_log(db)
    try:
        count = log.queued(engine)
        if count == 0:
            click.echo("0 transcribed: no reply is queued")
            return
        model = resolve_model_setting(model_setting, audio_dir=audio_dir) if model_setting else _night_model(engine)
    finally:
        engine.dispose()
    if model is None:
        model = resolve_model_setting(None, audio_dir=audio_dir)
    stderr.print(f"{count} replies queued; transcribing with {model}")
    failed = 0

    def report(reply: log.QueuedReply, ok: bool) -> None:
        nonlocal failed
        failed += not ok
        stderr.print(f"  step {reply.interaction_id} ({reply.kind}): {'done' if ok else 'failed'}")

    done = work_through_queue(db, model, on_reply=report)
    click.echo(f"{done - failed} transcribed, {failed} failed")
    if failed:
        sys.exit(1)


def _night_model(engine: Engine) -> SpeechModel | None:
    """The speech model of the latest night that left replies queued, if its folder is still there."""
    from sqlalchemy import select

    from orchestrator import log
    from orchestrator.asr import ModelError, SpeechModel, check

    stmt = (select(log.Run.asr_engine, log.Run.asr_model).join(log.Interaction, log.Interaction.run_id == log.Run.id)
            .where(log.Interaction.transcript_state.in_(("pending", "working")), log.Run.asr_model.is_not(None))
            .order_by(log.Run.id.desc()).limit(1))
    with engine.connect() as connection:
        found = connection.execute(stmt).first()
    if found is None or found.asr_engine is None:
        return None
    try:
        model = SpeechModel(found.asr_engine, Path(found.asr_model), Path(found.asr_model).name)
        check(model)
    except ModelError as exc:
        stderr.print(f"the night's model cannot be used ({exc}); using the default")
        return None
    return model


def _again(db: Path, run_id: int, model: SpeechModel, current: bool) -> None:
    from orchestrator.runner.deferred import retranscribe

    stderr.print(f"transcribing run {run_id} again with {model}")

    def report(interaction_id: int, text: str | None) -> None:
        stderr.print(f"  step {interaction_id}: {text}")

    try:
        result = retranscribe(db, run_id, model, current=current, on_reply=report)
    except LookupError as exc:
        raise InputError(str(exc)) from None
    click.echo(f"{result.added} transcripts added ({'current' if current else 'not current'}), "
               f"{result.already} already had one by this model, {result.queued} still queued, "
               f"{result.failed} failed")
    if result.failed:
        sys.exit(1)
