"""One night on one HTML page, for the operator's morning look: what ran, what failed, and where.

The page is self-contained (inline CSS and SVG, no script, nothing fetched), so it can be mailed
or opened from a file share. It shows, for the night asked for:

* runs that did not complete (missed, failed, interrupted, still running), first and in red;
* per Echo, a bar of its steps' statuses and a timeline with one mark per step, coloured by
  status, with the step's details in the mark's tooltip;
* the replies' outcomes, the night summary table, and the failed steps with their errors.

Every value from the log goes through :func:`html.escape`. The page is written whole or not at all
(:mod:`orchestrator.core.durable`): a full disk leaves the previous page as it was.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

from orchestrator.analysis.reports import (
    NIGHT_RUNS,
    NIGHT_STEPS,
    REPORTS,
    Filters,
    fetch_dicts,
    latest_night,
    parameters,
)
from orchestrator.core.durable import write_text_atomic
from orchestrator.log import utcnow_iso

STATUS_COLOURS = {
    "ok": "#2e7d32",
    "max_length": "#1565c0",
    "no_response": "#f9a825",
    "timeout": "#ef6c00",
    "error": "#c62828",
    "interrupted": "#6a1b9a",
    "started": "#9e9e9e",
}
OTHER_COLOUR = "#616161"

#: Failed steps listed on the page; the rest are counted and left to `orchestrator report failures`.
MAX_FAILURES_LISTED = 300

TIMELINE_WIDTH = 960
SHARE_BAR_WIDTH = 300
#: Room right of the timeline for the last tick's label.
RIGHT_MARGIN = 30
LABEL_WIDTH = 130
ROW_HEIGHT = 22
#: Narrowest mark, so a step of a second stays visible on a timeline of hours.
MIN_MARK_WIDTH = 1.0

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #212121; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
.meta { color: #616161; }
.alert { background: #ffebee; border-left: 4px solid #c62828; padding: 0.5rem 1rem; margin: 0.5rem 0; }
.fine { background: #e8f5e9; border-left: 4px solid #2e7d32; padding: 0.5rem 1rem; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { border: 1px solid #ddd; padding: 0.2rem 0.4rem; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
td.num { text-align: right; }
.legend span { display: inline-block; margin-right: 1rem; }
.swatch { display: inline-block; width: 0.8rem; height: 0.8rem; margin-right: 0.3rem; vertical-align: middle; }
svg text { font-size: 11px; fill: #212121; }
"""


@dataclass(frozen=True)
class NightData:
    """Everything the page shows, read from the log once."""

    night: str
    persona: str | None
    runs: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    summary_columns: list[str]
    summary: list[dict[str, Any]]
    failures: list[dict[str, Any]]


def load_night(db_path: Path | str, night: str | None = None, persona: str | None = None) -> NightData | None:
    """The night's rows (the latest night when ``night`` is None); None when the log has no run at all."""
    night = night or latest_night(db_path)
    if night is None:
        return None
    filters = Filters(night=night, persona=persona)
    params = {"night": night, "persona": persona or ""}
    summary_report, failures_report = REPORTS["night"], REPORTS["failures"]
    summary = fetch_dicts(db_path, summary_report.sql, parameters(summary_report, filters))
    return NightData(
        night=night,
        persona=persona,
        runs=fetch_dicts(db_path, NIGHT_RUNS, params),
        steps=fetch_dicts(db_path, NIGHT_STEPS, params),
        summary_columns=list(summary[0]) if summary else [],
        summary=summary,
        failures=fetch_dicts(db_path, failures_report.sql, parameters(failures_report, filters)),
    )


# ---------------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------------


def _colour(status: str | None) -> str:
    return STATUS_COLOURS.get(status or "", OTHER_COLOUR)


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _cell(value: Any) -> str:
    if value is None:
        return "<td></td>"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td class="num">{escape(str(value))}</td>'
    return f"<td>{escape(str(value))}</td>"


def html_table(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(row.get(c)) for c in columns) + "</tr>\n" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>"


def legend(statuses: Iterable[str]) -> str:
    items = "".join(
        f'<span><span class="swatch" style="background:{_colour(s)}"></span>{escape(s)}</span>' for s in statuses
    )
    return f'<p class="legend">{items}</p>'


def status_bars(steps_by_echo: Mapping[str, list[dict[str, Any]]]) -> str:
    """Per Echo, a bar split by the share of each status, and the counts beside it."""
    statuses = _ordered(Counter(step["status"] for steps in steps_by_echo.values() for step in steps))
    head = "".join(f"<th>{escape(s)}</th>" for s in ["Echo", "steps", *statuses, ""])
    rows = []
    for echo, steps in steps_by_echo.items():
        counts = Counter(step["status"] for step in steps)
        cells = "".join(_cell(counts.get(status, 0)) for status in statuses)
        rows.append(f"<tr><td>{escape(echo)}</td>{_cell(len(steps))}{cells}<td>{_share_bar(echo, counts)}</td></tr>")
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(rows) + "\n</table>"


def _share_bar(echo: str, counts: Counter[str]) -> str:
    total = sum(counts.values())
    x = 0.0
    parts = []
    for status in _ordered(counts):
        width = SHARE_BAR_WIDTH * counts[status] / total
        parts.append(
            f'<rect x="{x:.1f}" y="0" width="{width:.1f}" height="14" fill="{_colour(status)}">'
            f"<title>{escape(echo)}: {counts[status]} {escape(status)}</title></rect>"
        )
        x += width
    return f'<svg width="{SHARE_BAR_WIDTH}" height="14" role="img">{"".join(parts)}</svg>'


def outcome_bars(steps: Sequence[Mapping[str, Any]]) -> str:
    """How many replies the classifier judged to mean each outcome, as labelled bars."""
    counts = Counter(step["reply_outcome"] or "(none)" for step in steps)
    if not counts:
        return "<p>No steps.</p>"
    bar_width = TIMELINE_WIDTH - LABEL_WIDTH - 80
    largest = max(counts.values())
    rows = []
    for row, (outcome, count) in enumerate(counts.most_common()):
        y = row * ROW_HEIGHT
        width = max(MIN_MARK_WIDTH, bar_width * count / largest)
        rows.append(
            f'<text x="0" y="{y + 15}">{escape(outcome)}</text>'
            f'<rect x="{LABEL_WIDTH}" y="{y + 3}" width="{width:.1f}" height="{ROW_HEIGHT - 6}" fill="#546e7a"/>'
            f'<text x="{LABEL_WIDTH + width + 6:.1f}" y="{y + 15}">{count}</text>'
        )
    return f'<svg width="{TIMELINE_WIDTH}" height="{len(rows) * ROW_HEIGHT}" role="img">{"".join(rows)}</svg>'


def _step_tooltip(step: Mapping[str, Any]) -> str:
    parts = [
        (step["started_at"] or "")[11:19],
        f"{step['persona']} step {step['step_index'] + 1}" + (f" (retry {step['attempt']})" if step["attempt"] else ""),
        f"{step['kind']} {step['skill_id'] or ''}".strip(),
        step["status"],
    ]
    if step["error"]:
        parts.append(step["error"])
    if step["prompt_text"]:
        parts.append(f"said: {step['prompt_text']}")
    return escape(" | ".join(parts))


def timeline(steps_by_echo: Mapping[str, list[dict[str, Any]]]) -> str:
    """Per Echo, one mark per step from its start to its end on a shared time axis, with hour ticks."""
    starts = [m for steps in steps_by_echo.values() for s in steps if (m := _moment(s["started_at"]))]
    if not starts:
        return "<p>No steps.</p>"
    ends = [m for steps in steps_by_echo.values() for s in steps if (m := _moment(s["finished_at"]))]
    first, last = min(starts), max([*starts, *ends])
    span = max((last - first).total_seconds(), 1.0)
    scale = (TIMELINE_WIDTH - LABEL_WIDTH - RIGHT_MARGIN) / span
    axis_y = len(steps_by_echo) * ROW_HEIGHT
    parts = _hour_ticks(first, span, scale, axis_y)
    for row, (echo, steps) in enumerate(steps_by_echo.items()):
        y = row * ROW_HEIGHT
        parts.append(f'<text x="0" y="{y + 15}">{escape(echo)}</text>')
        # Replies first, so a failure drawn later is never painted over by a neighbour's mark.
        for step in sorted(steps, key=lambda s: s["status"] not in ("ok", "max_length")):
            start = _moment(step["started_at"])
            if start is None:
                continue
            end = _moment(step["finished_at"]) or start
            x = LABEL_WIDTH + (start - first).total_seconds() * scale
            width = max(MIN_MARK_WIDTH, (end - start).total_seconds() * scale)
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 3}" width="{width:.1f}" height="{ROW_HEIGHT - 6}" '
                f'fill="{_colour(step["status"])}"><title>{_step_tooltip(step)}</title></rect>'
            )
    return f'<svg width="{TIMELINE_WIDTH}" height="{axis_y + 20}" role="img">{"".join(parts)}</svg>'


def _tick_step(span: float) -> timedelta:
    """The smallest round interval that puts at most a dozen ticks on the axis."""
    for seconds in (60, 300, 600, 1800, 3600, 7200, 21600):
        if span / seconds <= 12:
            return timedelta(seconds=seconds)
    return timedelta(days=1)


def _hour_ticks(first: datetime, span: float, scale: float, axis_y: int) -> list[str]:
    """A light line and a UTC label at every round time inside the timeline."""
    step = _tick_step(span)
    midnight = first.replace(hour=0, minute=0, second=0, microsecond=0)
    tick = midnight + step * -(-(first - midnight) // step)  # the first round time at or after `first`
    ticks = []
    while (offset := (tick - first).total_seconds()) <= span:
        x = LABEL_WIDTH + offset * scale
        ticks.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{axis_y}" stroke="#e0e0e0"/>'
                     f'<text x="{x:.1f}" y="{axis_y + 14}" text-anchor="middle">{tick:%H:%M}</text>')
        tick += step
    return ticks


def _ordered(counts: Mapping[str, int]) -> list[str]:
    """Statuses in the legend's order, unknown ones last."""
    known = [s for s in STATUS_COLOURS if s in counts]
    return known + sorted(set(counts) - set(known))


def natural_key(name: str) -> list[Any]:
    """Sort key that puts echo-2 before echo-10."""
    return [(int(part), "") if part.isdigit() else (0, part) for part in re.split(r"(\d+)", name)]


def by_echo(steps: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Steps grouped per Echo, the Echos in natural order."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for step in steps:
        grouped.setdefault(step["echo"] or "(no Echo)", []).append(step)
    return {echo: grouped[echo] for echo in sorted(grouped, key=natural_key)}


def run_alerts(runs: Sequence[Mapping[str, Any]]) -> str:
    bad = [r for r in runs if r["status"] != "completed"]
    if not runs:
        return '<p class="alert">No runs are recorded for this night: was the scheduler running?</p>'
    if not bad:
        return f'<p class="fine">All {len(runs)} runs completed.</p>'
    items = "".join(
        f"<li>{escape(r['echo'] or '(no Echo)')} / {escape(r['persona'])}: run {r['run_id']} "
        f"<strong>{escape(r['status'])}</strong>{': ' + escape(r['error']) if r['error'] else ''}</li>"
        for r in bad
    )
    return f'<div class="alert">{len(bad)} of {len(runs)} runs did not complete:<ul>{items}</ul></div>'


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------


def render(data: NightData, db_path: Path | str, generated_at: str) -> str:
    grouped = by_echo(data.steps)
    statuses = _ordered(Counter(step["status"] for step in data.steps)) or list(STATUS_COLOURS)
    failed_steps = [f for f in data.failures if f["kind"] != "run"]
    listed = failed_steps[:MAX_FAILURES_LISTED]
    more = len(failed_steps) - len(listed)
    more_note = (f"<p>… and {more} more: <code>orchestrator report failures --night {escape(data.night)}</code></p>"
                 if more else "")
    failure_columns = ["echo", "persona", "started_at", "step_index", "attempt", "kind", "skill_id", "status",
                       "error", "prompt_text", "response_audio_path"]
    title = f"Night {data.night}" + (f", persona {data.persona}" if data.persona else "")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(title)}</title>
<style>{CSS}</style>
</head>
<body>
<h1>{escape(title)}</h1>
<p class="meta">{len(data.runs)} runs, {len(data.steps)} steps on {len(grouped)} Echos. Times are UTC.
Log: {escape(str(db_path))}. Made {escape(generated_at)}.</p>
{run_alerts(data.runs)}
<h2>Steps per Echo</h2>
{legend(statuses)}
{status_bars(grouped)}
<h2>Timeline</h2>
<p class="meta">One mark per step, from its start to its end; hover a mark for the step.</p>
{timeline(grouped)}
<h2>What the replies meant</h2>
{outcome_bars(data.steps)}
<h2>Summary</h2>
{html_table(data.summary_columns, data.summary)}
<h2>Failed steps ({len(failed_steps)})</h2>
{html_table(failure_columns, listed) if listed else "<p>None.</p>"}
{more_note}
</body>
</html>
"""


def write_night_page(
    db_path: Path | str, out: Path, night: str | None = None, persona: str | None = None,
    generated_at: str | None = None,
) -> NightData | None:
    """Write the page of ``night`` (default: the latest) to ``out``; None, and no file, for an empty log."""
    data = load_night(db_path, night, persona)
    if data is None:
        return None
    write_text_atomic(out, render(data, db_path, generated_at or utcnow_iso()))
    return data
