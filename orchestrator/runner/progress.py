"""What the operator sees while a night runs: a live line per Echo, a line per finished step, a summary.

Everything goes to stderr (stdout is for data). In a terminal each Echo has a progress bar with
the step it is on; in a log file, where nothing can be redrawn, only the finished steps are printed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.table import Table

if TYPE_CHECKING:
    from orchestrator.runner.run import RunSummary, StepEvent

STATUS_STYLE = {"ok": "green", "no_response": "yellow", "max_length": "cyan", "skipped": "dim"}


def operator_console() -> Console:
    """Messages on stderr; wide lines in logs, where there is no terminal to fit."""
    probe = Console(stderr=True)
    return Console(stderr=True, highlight=False, width=None if probe.is_terminal else 140)


class Progress:
    """Call it with each `StepEvent`; `phase()` for set-up messages; `summary()` at the end."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or operator_console()
        self.started = time.monotonic()
        self._live: RichProgress | None = None
        self._tasks: dict[str, TaskID] = {}
        if self.console.is_terminal:
            self._live = RichProgress(
                TextColumn("{task.fields[echo]:<8} {task.fields[persona]:<14}"), BarColumn(bar_width=20),
                MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"),
                console=self.console, transient=True,
            )

    def phase(self, message: str) -> None:
        self.console.print(f"[dim]{self._elapsed():6.1f}s[/] {message}", highlight=False)

    def __call__(self, event: StepEvent) -> None:
        if event.status == "running":
            self._show_current(event)
            return
        self._advance(event)
        style = STATUS_STYLE.get(event.status, "red")
        self.console.print(
            f"[dim]{self._elapsed():6.1f}s[/] {event.echo:<8} {event.persona:<14} "
            f"step #{event.index:<3} {event.kind:<8} [{style}]{event.status:<11}[/] "
            f"{event.audio_seconds:5.1f}s  {event.text}",
            highlight=False,
        )

    def _show_current(self, event: StepEvent) -> None:
        if event.echo not in self._tasks:
            self.phase(f"{event.echo}: {event.persona} begins ({event.total} steps)")
            if self._live is not None:
                if not self._tasks:
                    self._live.start()
                self._tasks[event.echo] = self._live.add_task("", total=event.total, echo=event.echo,
                                                              persona=event.persona)
            else:
                self._tasks[event.echo] = TaskID(-1)
        if self._live is not None:
            self._live.update(self._tasks[event.echo], description=f"{event.kind}: {event.text}")

    def _advance(self, event: StepEvent) -> None:
        if self._live is not None and event.echo in self._tasks:
            self._live.update(self._tasks[event.echo], completed=event.index + 1)

    def summary(self, summaries: list[RunSummary], db: Path, audio_dir: Path) -> None:
        if self._live is not None:
            self._live.stop()
        # The columns of `orchestrator report night`, under the same names.
        table = Table(title="Night summary")
        columns = ("persona", "echo", "run", "status", "steps", "ok", "no_answer", "max_length", "skipped", "errors",
                   "audio_minutes")
        for column in columns:
            table.add_column(column, justify="left" if column in ("persona", "echo", "status") else "right")
        for s in summaries:
            table.add_row(s.persona, s.echo, str(s.run_id), s.status, str(s.steps), str(s.ok), str(s.no_response),
                          str(s.max_length), str(s.skipped), str(s.errors), f"{s.audio_seconds / 60:.1f}")
        self.console.print(table)
        for s in summaries:
            if s.error:
                self.console.print(f"[red]{s.persona}: {s.error}[/]")
        self.console.print(f"log:   {db}\naudio: {audio_dir}")

    def _elapsed(self) -> float:
        return time.monotonic() - self.started
