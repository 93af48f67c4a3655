"""One night on one HTML page, for the operator's morning look: read in ten seconds what failed and why.

From the top:

* a row of figures (runs completed, failed steps, skills enabled, the rig self-test), each with the
  previous night's value beside it;
* runs that did not complete, in red;
* the failed steps with why each failed (its error, or what its status means) and its audio; steps
  whose silence is the normal answer ("Alexa, stop") and skipped steps are counted apart, not as failures;
* the install outcomes by skill name, problems first, with what the Echo said;
* what the replies meant, as labelled bars coloured by whether the outcome is a problem;
* the rig self-test that cleared the night's runs, per Echo;
* the comparison with the previous night, and install outcomes that changed since;
* per Echo, a bar of its steps' statuses and a timeline with one mark per step;
* the summary table, and every step with its prompt and reply audio (folded).

The page has no script and fetches nothing from elsewhere. Audio is linked relative to the page's
folder when written to a file, or through the web view's audio route when served there
(:mod:`orchestrator.analysis.web_plugin`); a path that would leave its run's audio folder gets no link.
Every value from the log goes through :func:`html.escape`. A page written to a file is written whole
or not at all (:mod:`orchestrator.core.durable`): a full disk leaves the previous page as it was.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from orchestrator.analysis.night_data import (
    GOOD_OUTCOMES,
    PROBLEM_OUTCOMES,
    REPLY_STATUSES,
    NightData,
    NightFigures,
    figures,
    install_changes,
    load_night,
    outcome_counts,
    previous_night,
    skill_label,
    why,
)
from orchestrator.core.durable import write_text_atomic

STATUS_COLOURS = {
    "ok": "#2e7d32",
    "max_length": "#1565c0",
    "no_response": "#f9a825",
    "timeout": "#ef6c00",
    "error": "#c62828",
    "interrupted": "#6a1b9a",
    "started": "#9e9e9e",
    "skipped": "#bdbdbd",
}
OTHER_COLOUR = "#616161"
GOOD_COLOUR, PROBLEM_COLOUR, NEUTRAL_COLOUR = "#2e7d32", "#c62828", "#78909c"

#: Failed steps listed on the page; the rest are counted and left to `orchestrator report failures`.
MAX_FAILURES_LISTED = 300
#: Failed steps shown before the fold; with more, a summary by reason comes first.
FAILURES_OPEN = 15
#: Steps listed under "Every step"; a night of the study has a few thousand.
MAX_STEPS_LISTED = 5000

TIMELINE_WIDTH = 960
SHARE_BAR_WIDTH = 300
#: Room right of the timeline for the last tick's label.
RIGHT_MARGIN = 40
LABEL_WIDTH = 180
ROW_HEIGHT = 26
FONT_PX = 14
#: Narrowest mark, so a step of a second stays visible on a timeline of hours.
MIN_MARK_WIDTH = 1.5

#: A step's audio link: (step row, "prompt" or "reply") -> the URL to it, or None.
AudioLinks = Callable[[Mapping[str, Any], str], str | None]

CSS = f"""
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #212121; font-size: 16px; max-width: 1400px; }}
h1 {{ margin-bottom: 0.2rem; }} h2 {{ margin-top: 2rem; border-bottom: 1px solid #ddd; }}
.meta {{ color: #616161; }}
.alert {{ background: #ffebee; border-left: 4px solid #c62828; padding: 0.5rem 1rem; margin: 0.5rem 0; }}
.fine {{ background: #e8f5e9; border-left: 4px solid #2e7d32; padding: 0.5rem 1rem; }}
.note {{ background: #f5f5f5; border-left: 4px solid #9e9e9e; padding: 0.5rem 1rem; }}
.tiles {{ display: flex; flex-wrap: wrap; gap: 0.8rem; margin: 1rem 0; }}
.tile {{ border: 1px solid #ddd; border-top: 6px solid #9e9e9e; padding: 0.5rem 0.9rem; min-width: 10rem; }}
.tile.good {{ border-top-color: {GOOD_COLOUR}; }} .tile.bad {{ border-top-color: {PROBLEM_COLOUR}; }}
.tile .value {{ font-size: 1.8rem; font-weight: 600; }}
.tile .label {{ font-size: 0.95rem; }} .tile .before {{ color: #616161; font-size: 0.9rem; }}
table {{ border-collapse: collapse; font-size: 0.9rem; }}
th, td {{ border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }}
th {{ background: #f5f5f5; }} table + table {{ margin-top: 1rem; }}
td.num {{ text-align: right; }} td.short {{ white-space: nowrap; }}
td.why {{ max-width: 28rem; }} td.heard {{ max-width: 24rem; color: #424242; }}
.badge {{ display: inline-block; padding: 0 0.4rem; border-radius: 3px; color: #fff; white-space: nowrap; }}
audio {{ height: 2rem; width: 13rem; vertical-align: middle; }}
.legend span {{ display: inline-block; margin-right: 1rem; }}
.swatch {{ display: inline-block; width: 0.9rem; height: 0.9rem; margin-right: 0.3rem; vertical-align: middle; }}
svg text {{ font-size: {FONT_PX}px; fill: #212121; }}
svg text.inbar {{ fill: #fff; }}
details summary {{ cursor: pointer; font-weight: 600; margin: 1rem 0; }}
"""


# ---------------------------------------------------------------------------------------------
# Audio links
# ---------------------------------------------------------------------------------------------

_AUDIO_COLUMN = {"prompt": "prompt_audio", "reply": "response_audio"}


def file_links(page: Path) -> AudioLinks:
    """Links relative to the page's folder, to files inside their run's audio folder only.

    The check is on the path's text (``..`` and absolute paths), not on the file system: a night has
    thousands of steps, and resolving each one's files costs a second. The web view's audio route
    resolves links as it serves.
    """
    folder = page.resolve().parent

    def link(step: Mapping[str, Any], which: str) -> str | None:
        relative, audio_dir = step[_AUDIO_COLUMN[which]], step["audio_dir"]
        if not relative or not audio_dir:
            return None
        root = Path(os.path.normpath(audio_dir))
        path = Path(os.path.normpath(root / relative))
        if not path.is_relative_to(root):
            return None
        return quote(Path(os.path.relpath(path, folder)).as_posix())

    return link


def route_links(base: str) -> AudioLinks:
    """Links to the web view's audio route: ``BASE/STEP_ID/prompt.wav`` (the route does its own checks)."""

    def link(step: Mapping[str, Any], which: str) -> str | None:
        return f"{base}/{int(step['interaction_id'])}/{which}.wav" if step[_AUDIO_COLUMN[which]] else None

    return link


def player(step: Mapping[str, Any] | None, which: str, links: AudioLinks) -> str:
    """A player for the step's prompt or reply; nothing when it has no such audio (or no safe link to it)."""
    href = links(step, which) if step is not None else None
    if href is None:
        return ""
    return f'<br><audio controls preload="none" src="{escape(href)}" title="{which}"></audio>'


def said_cell(step: Mapping[str, Any], links: AudioLinks) -> str:
    return f"<td>{escape(step['prompt_text'] or '')}{player(step, 'prompt', links)}</td>"


def heard_cell(text: str | None, step: Mapping[str, Any] | None, links: AudioLinks) -> str:
    return f'<td class="heard">{escape(text or "")}{player(step, "reply", links)}</td>'


def audio_anchors(step: Mapping[str, Any], links: AudioLinks) -> str:
    return " ".join(f'<a href="{escape(href)}">{which}</a>' for which in ("prompt", "reply")
                    if (href := links(step, which)) is not None)


# ---------------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------------


def _colour(status: str | None) -> str:
    return STATUS_COLOURS.get(status or "", OTHER_COLOUR)


def outcome_colour(outcome: str | None) -> str:
    if outcome in GOOD_OUTCOMES:
        return GOOD_COLOUR
    return PROBLEM_COLOUR if outcome in PROBLEM_OUTCOMES else NEUTRAL_COLOUR


def badge(text: str | None, colour: str) -> str:
    return f'<span class="badge" style="background:{colour}">{escape(text or "none")}</span>'


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


def _rows_table(head: Sequence[str], rows: Iterable[str]) -> str:
    """A table whose rows are already HTML."""
    cells = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f"<table>\n<tr>{cells}</tr>\n" + "\n".join(rows) + "\n</table>"


def legend(statuses: Iterable[str]) -> str:
    items = "".join(
        f'<span><span class="swatch" style="background:{_colour(s)}"></span>{escape(s)}</span>' for s in statuses
    )
    return f'<p class="legend">{items}</p>'


def plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


def _step_name(step: Mapping[str, Any]) -> str:
    retry = f" (retry {step['attempt']})" if step["attempt"] else ""
    return f"{step['step_index'] + 1}{retry}"


# -- figures ----------------------------------------------------------------------------------


def _tile(label: str, value: str, before: str | None, tone: str) -> str:
    shown = f'<div class="before">previous night: {escape(before)}</div>' if before is not None else ""
    return (f'<div class="tile {tone}"><div class="value">{escape(value)}</div>'
            f'<div class="label">{escape(label)}</div>{shown}</div>')


def tiles(data: NightData, now: NightFigures, before: NightFigures | None) -> str:
    def prev(text: Callable[[NightFigures], str]) -> str | None:
        return text(before) if before is not None else None

    failed = data.failed_steps
    rig = rig_verdict(data)
    items = [
        _tile("runs completed", f"{now.runs_completed} of {now.runs}",
              prev(lambda f: f"{f.runs_completed} of {f.runs}"),
              "good" if now.runs and now.runs_completed == now.runs else "bad"),
        _tile("failed steps", str(len(failed)), prev(lambda f: str(f.failed_steps)), "bad" if failed else "good"),
        _tile("steps with a reply", f"{now.replies} of {now.steps}", prev(lambda f: f"{f.replies} of {f.steps}"), ""),
        _tile("skills enabled", f"{now.installs_enabled} of {now.installs}",
              prev(lambda f: f"{f.installs_enabled} of {f.installs}"),
              "good" if now.installs_enabled == now.installs else "bad"),
        _tile("rig self-test", rig[0], None, rig[1]),
    ]
    return f'<div class="tiles">{"".join(items)}</div>'


def rig_verdict(data: NightData) -> tuple[str, str]:
    """(what the tile says, its tone) for the self-tests that cleared the night's runs."""
    if not data.rig_checks:
        return "not run", ""
    if all(c["passed"] for c in data.rig_checks):
        return "passed", "good"
    return "failed", "bad"


# -- runs and failures ------------------------------------------------------------------------


def rounds_note(data: NightData) -> str:
    if data.rounds < 2:
        return ""
    return (f" <strong>This date holds {data.rounds} rounds</strong> (a persona ran more than once: two nights "
            "run on one date, or a run again by hand): the page counts them together; the views' "
            "<code>night_round</code> tells them apart.")


def _round(run: Mapping[str, Any]) -> str:
    return f" (round {run['night_round']})" if (run["night_round"] or 1) > 1 else ""


def run_alerts(runs: Sequence[Mapping[str, Any]]) -> str:
    bad = [r for r in runs if r["status"] != "completed"]
    if not runs:
        return '<p class="alert">No runs are recorded for this night: was the scheduler running?</p>'
    if not bad:
        said = f"All {len(runs)} runs completed." if len(runs) > 1 else "The run completed."
        return f'<p class="fine">{said}</p>'
    items = "".join(
        f"<li>{escape(r['echo'] or '(no Echo)')} / {escape(r['persona'])}: run {r['run_id']}{_round(r)} "
        f"<strong>{escape(r['status'])}</strong>{': ' + escape(r['error']) if r['error'] else ''}</li>"
        for r in bad
    )
    return f'<div class="alert">{len(bad)} of {len(runs)} runs did not complete:<ul>{items}</ul></div>'


def failure_table(failed: Sequence[Mapping[str, Any]], links: AudioLinks) -> str:
    """The failed steps, each with why and its sound: the first few open, the rest folded under them."""
    if not failed:
        return '<p class="fine">No step failed.</p>'
    head = ["time", "Echo", "persona", "step", "kind", "skill", "status", "why", "said", "heard"]
    rows = [
        f"<tr><td>{escape((s['started_at'] or '')[11:19])}</td><td class=\"short\">{escape(s['echo'] or '')}</td>"
        f"<td>{escape(s['persona'])}</td><td class=\"num short\">{escape(_step_name(s))}</td>"
        f"<td>{escape(s['kind'])}</td><td>{escape(skill_label(s))}</td><td>{badge(s['status'], _colour(s['status']))}"
        f"</td><td class=\"why\">{escape(why(s))}</td>{said_cell(s, links)}{heard_cell(s['transcript'], s, links)}</tr>"
        for s in failed
    ]
    shown = _rows_table(head, rows[:FAILURES_OPEN])
    if len(rows) <= FAILURES_OPEN:
        return shown
    rest = _rows_table(head, rows[FAILURES_OPEN:])
    return f"{shown}<details><summary>{len(rows) - FAILURES_OPEN} more failed steps</summary>{rest}</details>"


def failure_summary(failed: Sequence[Mapping[str, Any]]) -> str:
    """With many failures, first how many failed for each reason, and on which Echos."""
    if len(failed) <= FAILURES_OPEN:
        return ""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for step in failed:
        groups.setdefault((step["status"], why(step)), []).append(step)
    rows = []
    for (status, reason), steps in sorted(groups.items(), key=lambda item: -len(item[1])):
        echos = Counter(s["echo"] or "(no Echo)" for s in steps).most_common()
        where = ", ".join(f"{echo} {count}" for echo, count in echos[:6]) + (" …" if len(echos) > 6 else "")
        rows.append(f"<tr><td>{badge(status, _colour(status))}</td><td class=\"why\">{escape(reason)}</td>"
                    f"{_cell(len(steps))}<td>{escape(where)}</td></tr>")
    return _rows_table(["status", "why", "steps", "on which Echos"], rows)


def not_failures(data: NightData) -> str:
    """The steps that look like failures in the statuses but are not, counted with the reason."""
    parts = []
    if silences := data.expected_silences:
        kinds = ", ".join(sorted({f'"{s["kind"]}"' for s in silences}))
        parts.append(f"{plural(len(silences), 'step')} got no answer after {escape(kinds)}: Alexa says nothing then, "
                     "so the silence is the expected answer")
    if skipped := data.skipped_steps:
        reasons = Counter(why(s) for s in skipped).most_common(3)
        said = "; ".join(f"{escape(reason)} ({count})" for reason, count in reasons)
        parts.append(f"{plural(len(skipped), 'step')} skipped because an earlier step made them pointless: {said}")
    if not parts:
        return ""
    return '<p class="note">Not counted as failures: ' + ". ".join(parts) + ".</p>"


# -- installs ---------------------------------------------------------------------------------


def install_table(installs: Sequence[Mapping[str, Any]], steps: Sequence[Mapping[str, Any]], links: AudioLinks) -> str:
    """Install outcomes by skill name, with what the Echo said and its audio: problems open, the rest folded."""
    if not installs:
        return "<p>No skill was enabled or disabled this night.</p>"
    step_of = {s["interaction_id"]: s for s in steps}
    head = ["skill", "persona", "action", "outcome", "what the Echo said"]

    def row(install: Mapping[str, Any]) -> str:
        step = step_of.get(install["interaction_id"])
        return (f"<tr><td><strong>{escape(skill_label(install))}</strong></td><td>{escape(install['persona'])}</td>"
                f"<td>{escape(install['action'])}</td>"
                f"<td>{badge(install['outcome'], outcome_colour(install['outcome']))}</td>"
                f"{heard_cell(install['reply_transcript'], step, links)}</tr>")

    ordered = sorted(installs, key=lambda i: skill_label(i).lower())
    problems = [row(i) for i in ordered if i["outcome"] not in GOOD_OUTCOMES]
    fine = [row(i) for i in ordered if i["outcome"] in GOOD_OUTCOMES]
    shown = (_rows_table(head, problems[:FAILURES_OPEN]) if problems
             else '<p class="fine">Every install did what was asked.</p>')
    more = problems[FAILURES_OPEN:]
    folded = "".join(
        f"<details><summary>{summary}</summary>{_rows_table(head, rows)}</details>"
        for summary, rows in ((f"{len(more)} more that did not", more),
                              (f"{plural(len(fine), 'install')} that did what was asked", fine))
        if rows
    )
    return shown + folded


def install_summary(installs: Sequence[Mapping[str, Any]]) -> str:
    """One sentence: how many enables worked, and for each problem how many and which skills, by name."""
    enables = [i for i in installs if i["action"] == "enable"]
    if not enables:
        return ""
    enabled = sum(i["outcome"] in ("enabled", "already_enabled") for i in enables)
    problems: dict[str, list[str]] = {}
    for install in enables:
        if install["outcome"] not in ("enabled", "already_enabled"):
            problems.setdefault(install["outcome"] or "no verdict", []).append(skill_label(install))
    detail = "".join(f"; <strong>{escape(outcome)}</strong> ({len(names)}): {escape(_some(sorted(set(names))))}"
                     for outcome, names in sorted(problems.items(), key=lambda item: -len(item[1])))
    return f"<p>{enabled} of {len(enables)} enables worked{detail}.</p>"


def _some(names: Sequence[str], most: int = 5) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


# -- charts -----------------------------------------------------------------------------------


def outcome_bars(steps: Sequence[Mapping[str, Any]]) -> str:
    """What the replies meant, as one named bar per verdict with its count, coloured by kind of verdict."""
    counts = outcome_counts(steps)
    replies = sum(s["status"] in REPLY_STATUSES for s in steps)
    unjudged = replies - sum(counts.values())
    note = (f'<p class="meta">{plural(replies, "step")} got a reply; {plural(unjudged, "reply", "replies")} to '
            f"questions and dialog turns carry no verdict and {plural(len(steps) - replies, 'step')} got no reply: "
            "neither is drawn.</p>")
    if not counts:
        return "<p>No reply was judged.</p>" + note
    bar_width = TIMELINE_WIDTH - LABEL_WIDTH - 60
    largest = max(counts.values())
    rows = []
    for row, (outcome, count) in enumerate(counts.most_common()):
        y = row * ROW_HEIGHT
        width = max(MIN_MARK_WIDTH, bar_width * count / largest)
        rows.append(
            f'<text x="0" y="{y + 18}">{escape(outcome)}</text>'
            f'<rect x="{LABEL_WIDTH}" y="{y + 3}" width="{width:.1f}" height="{ROW_HEIGHT - 6}" '
            f'fill="{outcome_colour(outcome)}"><title>{escape(outcome)}: {count}</title></rect>'
            f'<text x="{LABEL_WIDTH + width + 6:.1f}" y="{y + 18}">'
            f"{count}{escape(_named_skills(steps, outcome))}</text>"
        )
    key = (f'<p class="legend"><span><span class="swatch" style="background:{GOOD_COLOUR}"></span>did what was '
           f'asked</span><span><span class="swatch" style="background:{PROBLEM_COLOUR}"></span>a problem</span>'
           f'<span><span class="swatch" style="background:{NEUTRAL_COLOUR}"></span>other answers</span></p>')
    svg = f'<svg width="{TIMELINE_WIDTH}" height="{len(rows) * ROW_HEIGHT}" role="img">{"".join(rows)}</svg>'
    return key + svg + note


def _named_skills(steps: Sequence[Mapping[str, Any]], outcome: str) -> str:
    """For a problem, which skills it was: a finding is read by its skills' names."""
    if outcome not in PROBLEM_OUTCOMES:
        return ""
    names = sorted({skill_label(s) for s in steps if s["reply_outcome"] == outcome and skill_label(s)})
    return f": {_some(names, 4)}" if names else ""


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
        label = (f'<text class="inbar" x="{x + width / 2:.1f}" y="15" text-anchor="middle">{counts[status]}</text>'
                 if width >= 24 else "")
        parts.append(
            f'<rect x="{x:.1f}" y="0" width="{width:.1f}" height="20" fill="{_colour(status)}">'
            f"<title>{escape(echo)}: {counts[status]} {escape(status)}</title></rect>{label}"
        )
        x += width
    return f'<svg width="{SHARE_BAR_WIDTH}" height="20" role="img">{"".join(parts)}</svg>'


def _step_tooltip(step: Mapping[str, Any]) -> str:
    parts = [
        (step["started_at"] or "")[11:19],
        f"{step['persona']} step {_step_name(step)}",
        f"{step['kind']} {skill_label(step)}".strip(),
        step["status"],
    ]
    if step["error"]:
        parts.append(step["error"])
    if step["prompt_text"]:
        parts.append(f"said: {step['prompt_text']}")
    if step["transcript"]:
        parts.append(f"heard: {step['transcript']}")
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
        parts.append(f'<text x="0" y="{y + 18}">{escape(echo)}</text>')
        # Replies first, so a failure drawn later is never painted over by a neighbour's mark.
        for step in sorted(steps, key=lambda s: s["status"] not in REPLY_STATUSES):
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
    return f'<svg width="{TIMELINE_WIDTH}" height="{axis_y + 24}" role="img">{"".join(parts)}</svg>'


def _tick_step(span: float) -> timedelta:
    """The smallest round interval that puts at most eight ticks on the axis."""
    for seconds in (60, 300, 600, 1800, 3600, 7200, 21600):
        if span / seconds <= 8:
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
                     f'<text x="{x:.1f}" y="{axis_y + 18}" text-anchor="middle">{tick:%H:%M}</text>')
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


# -- rig self-test and the previous night -----------------------------------------------------


def rig_section(data: NightData) -> str:
    if not data.rig_checks:
        return ('<p class="note">No rig self-test cleared this night\'s runs (the night skipped it); '
                "<code>orchestrator lab check</code> runs one.</p>")
    parts = []
    for check in data.rig_checks:
        verdict = "passed" if check["passed"] else "FAILED"
        parts.append(f'<p class="{"fine" if check["passed"] else "alert"}">Self-test of '
                     f"{escape((check['started_at'] or '')[:19].replace('T', ' '))} ({escape(check['trigger'])}): "
                     f"<strong>{verdict}</strong>. Each Echo's microphone had to hear its own speaker's probe "
                     f"at {check['min_level_dbfs']:g} dBFS or louder, {check['min_snr_db']:g} dB above its noise, "
                     f"and no other room's microphone above {check['max_crosstalk_dbfs']:g} dBFS.</p>")
        rows = [
            f"<tr><td>{escape(r['echo'] or '')}</td>"
            f"<td>{badge(r['status'], GOOD_COLOUR if r['status'] == 'ok' else PROBLEM_COLOUR)}"
            f"</td>{_cell(_rounded(r['level_dbfs']))}{_cell(_rounded(r['noise_dbfs']))}"
            f"<td>{escape(r['error'] or '')}</td></tr>"
            for r in data.rig_results if r["rig_check_id"] == check["id"]
        ]
        parts.append(_rows_table(["Echo", "verdict", "heard, dBFS", "noise, dBFS", "why"], rows))
    return "\n".join(parts)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def comparison(now: NightFigures, before: NightFigures | None, previous: str | None,
               changes: Sequence[Any]) -> str:
    if before is None or previous is None:
        return "<p>No earlier night in the log to compare with.</p>"
    rows = []
    for attribute, label in NightFigures.LABELS:
        this, that = getattr(now, attribute), getattr(before, attribute)
        change = "" if this is None or that is None else _signed(this - that)
        rows.append(f"<tr><td>{escape(label)}</td>{_cell(this)}{_cell(that)}<td class=\"num\">{change}</td></tr>")
    table = _rows_table(["", "this night", f"previous night ({previous})", "change"], rows)
    if not changes:
        return table + "<p>Every skill tried on both nights was installed with the same outcome.</p>"
    items = "".join(
        f"<li><strong>{escape(c.skill)}</strong> ({escape(c.persona)}, {escape(c.action)}): "
        f"{badge(c.before, outcome_colour(c.before))} then {badge(c.now, outcome_colour(c.now))}</li>"
        for c in changes
    )
    return table + f"<p>Install outcomes that changed since the previous night:</p><ul>{items}</ul>"


def _signed(value: float) -> str:
    if value == 0:
        return "="
    return f"{value:+g}" if isinstance(value, int) else f"{value:+.2f}"


# -- every step -------------------------------------------------------------------------------


def step_list(steps: Sequence[Mapping[str, Any]], links: AudioLinks) -> str:
    listed = steps[:MAX_STEPS_LISTED]
    rows = [
        f"<tr><td>{escape((s['started_at'] or '')[11:19])}</td><td>{escape(s['echo'] or '')}</td>"
        f"<td>{escape(s['persona'])}</td><td class=\"num\">{escape(_step_name(s))}</td><td>{escape(s['kind'])}</td>"
        f"<td>{escape(skill_label(s))}</td><td>{badge(s['status'], _colour(s['status']))}</td>"
        f"<td>{escape(s['reply_outcome'] or '')}</td><td>{escape(s['prompt_text'] or '')}</td>"
        f"<td class=\"heard\">{escape(s['transcript'] or '')}</td><td>{audio_anchors(s, links)}</td></tr>"
        for s in listed
    ]
    more = len(steps) - len(listed)
    note = f"<p>… and {more} more: <code>orchestrator query</code> has them all.</p>" if more else ""
    table = _rows_table(["time", "Echo", "persona", "step", "kind", "skill", "status", "reply meant", "said",
                         "heard", "audio"], rows)
    summary = f"Every step ({len(steps)}), with its prompt and reply audio"
    return f"<details><summary>{summary}</summary>{table}{note}</details>"


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------


def render(data: NightData, db_path: Path | str, generated_at: str, links: AudioLinks,
           before: NightData | None = None) -> str:
    grouped = by_echo(data.steps)
    statuses = _ordered(Counter(step["status"] for step in data.steps)) or list(STATUS_COLOURS)
    failed = data.failed_steps
    listed = failed[:MAX_FAILURES_LISTED]
    more = len(failed) - len(listed)
    more_note = (f"<p>… and {more} more: <code>orchestrator report failures --night {escape(data.night)}</code></p>"
                 if more else "")
    now = figures(data)
    earlier = figures(before) if before is not None else None
    changes = install_changes(data.installs, before.installs) if before is not None else []
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
<p class="meta">{plural(len(data.runs), "run")}, {plural(len(data.steps), "step")} on {plural(len(grouped), "Echo")}.
Times are UTC.{rounds_note(data)}
Log: {escape(str(db_path))}. Made {escape(generated_at)}.</p>
{tiles(data, now, earlier)}
{run_alerts(data.runs)}
<h2>Failed steps ({len(failed)})</h2>
{failure_summary(failed)}
{failure_table(listed, links)}
{more_note}
{not_failures(data)}
<h2>Skills installed</h2>
{install_summary(data.installs)}
{install_table(data.installs, data.steps, links)}
<h2>What the replies meant</h2>
{outcome_bars(data.steps)}
<h2>Rig self-test</h2>
{rig_section(data)}
<h2>Compared with the previous night</h2>
{comparison(now, earlier, before.night if before else None, changes)}
<h2>Steps per Echo</h2>
{legend(statuses)}
{status_bars(grouped)}
<h2>Timeline</h2>
<p class="meta">One mark per step, from its start to its end; hover a mark for the step.</p>
{timeline(grouped)}
<h2>Summary per persona and Echo</h2>
{html_table(data.summary_columns, data.summary)}
<h2>Steps</h2>
{step_list(data.steps, links)}
</body>
</html>
"""


def page(db_path: Path | str, links: AudioLinks, night: str | None = None, persona: str | None = None,
         generated_at: str | None = None) -> tuple[NightData, str] | None:
    """The night's data and page (default: the latest night); None for an empty log."""
    data = load_night(db_path, night, persona)
    if data is None:
        return None
    previous = previous_night(db_path, data.night)
    before = load_night(db_path, previous, persona) if previous is not None else None
    # Not orchestrator.log's clock: importing the log's models (SQLAlchemy) would take most of a second.
    made_at = generated_at or datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return data, render(data, db_path, made_at, links, before)


def write_night_page(
    db_path: Path | str, out: Path, night: str | None = None, persona: str | None = None,
    generated_at: str | None = None,
) -> NightData | None:
    """Write the page of ``night`` (default: the latest) to ``out``; None, and no file, for an empty log."""
    made = page(db_path, file_links(out), night, persona, generated_at)
    if made is None:
        return None
    write_text_atomic(out, made[1])
    return made[0]
