"""The analysts' standing questions about the log, as SQL over the views of ``docs/log.md``.

Each report is plain SQL with named parameters, so the same text runs from ``orchestrator report``
and as a stored query in the Datasette web view (:mod:`orchestrator.analysis.web`). Datasette passes an
empty string for a parameter left blank, so every filter here treats ``''`` as "not set" and the
command line does the same.

Parameters shared by the reports:

* ``night``: one night (``YYYY-MM-DD``, see the ``night`` column of the views);
* ``since``: every night from this one on;
* ``persona``: one persona by name;
* ``grep``: words that must all appear in a transcript (the search report only).

The night summary and the failures show the latest night in the log when neither ``night`` nor
``since`` is given, which is what an operator wants to see in the morning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from orchestrator.analysis.query import QueryError, Rows, run_query

#: Nights picked by the ``night`` and ``since`` parameters, or the latest night when both are blank.
CHOSEN_NIGHTS = """
chosen(night) AS (
    SELECT DISTINCT night FROM run_details
    WHERE (:night <> '' AND night = :night AND (:since = '' OR night >= :since))
       OR (:night = '' AND :since <> '' AND night >= :since)
    UNION
    SELECT max(night) FROM run_details WHERE :night = '' AND :since = ''
)"""

# Steps are picked through their run: the planner then reads the few runs of the nights asked for
# and their steps by ix_interactions_run_id, instead of scanning every step of the log.
PICKED_RUNS = """run_id IN (
    SELECT run_id FROM run_details
    WHERE (:night = '' OR night = :night)
      AND (:since = '' OR night >= :since)
      AND (:persona = '' OR persona = :persona)
)"""

CHOSEN_RUNS = """run_id IN (
    SELECT run_id FROM run_details
    WHERE night IN (SELECT night FROM chosen) AND (:persona = '' OR persona = :persona)
)"""

NIGHT_SUMMARY = f"""
WITH {CHOSEN_NIGHTS}
SELECT
    r.night,
    r.persona,
    r.echo,
    count(DISTINCT r.run_id) AS runs,
    count(DISTINCT CASE WHEN r.status IN ('failed', 'missed', 'interrupted') THEN r.run_id END) AS runs_failed,
    count(i.id) AS steps,
    count(CASE WHEN i.status = 'ok' THEN 1 END) AS ok,
    count(CASE WHEN i.status = 'no_response' THEN 1 END) AS no_answer,
    count(CASE WHEN i.status = 'max_length' THEN 1 END) AS max_length,
    count(CASE WHEN i.status IN ('error', 'timeout') THEN 1 END) AS errors,
    count(CASE WHEN i.status IN ('interrupted', 'started') THEN 1 END) AS interrupted,
    count(CASE WHEN i.attempt > 0 THEN 1 END) AS retries,
    round((total(i.prompt_seconds) + total(i.recorded_seconds)) / 60.0, 1) AS audio_minutes,
    min(i.started_at) AS first_step_at,
    max(i.finished_at) AS last_step_at
FROM run_details AS r
LEFT JOIN interactions AS i ON i.run_id = r.run_id
WHERE r.night IN (SELECT night FROM chosen)
  AND (:persona = '' OR r.persona = :persona)
GROUP BY r.night, r.persona, r.echo
ORDER BY r.night, r.persona, r.echo
"""

# The install outcomes that have a column of their own; `other` counts the rest, NULL included.
_COUNTED_OUTCOMES = ", ".join(
    f"'{outcome}'"
    for outcome in ("enabled", "already_enabled", "not_found", "account_linking", "permission_required",
                    "not_available", "no_response")
)

INSTALL_OUTCOMES = f"""
WITH picked AS (
    -- Only the columns used, so the view's join to the install's step is left out.
    SELECT install_id, persona, skill_id, skill_name, action, outcome, created_at
    FROM install_details
    WHERE {PICKED_RUNS}
),
ranked AS (
    SELECT *, row_number() OVER (
        PARTITION BY persona, skill_id, action ORDER BY created_at DESC, install_id DESC
    ) AS recency
    FROM picked
)
SELECT
    persona,
    skill_id,
    skill_name,
    action,
    count(*) AS attempts,
    count(CASE WHEN outcome IN ('enabled', 'already_enabled') THEN 1 END) AS enabled,
    count(CASE WHEN outcome = 'not_found' THEN 1 END) AS not_found,
    count(CASE WHEN outcome = 'account_linking' THEN 1 END) AS account_linking,
    count(CASE WHEN outcome = 'permission_required' THEN 1 END) AS permission_required,
    count(CASE WHEN outcome = 'not_available' THEN 1 END) AS not_available,
    count(CASE WHEN outcome = 'no_response' THEN 1 END) AS no_answer,
    count(CASE WHEN outcome IS NULL OR outcome NOT IN ({_COUNTED_OUTCOMES}) THEN 1 END) AS other,
    max(CASE WHEN recency = 1 THEN outcome END) AS last_outcome,
    max(created_at) AS last_at
FROM ranked
GROUP BY persona, skill_id, action
ORDER BY persona, skill_id, action
"""

# Statistics cover the steps that got a reply (status ok or max_length).
REPLY_STATS = f"""
SELECT
    skill_id,
    skill_name,
    skill_category,
    count(*) AS steps,
    count(CASE WHEN status IN ('ok', 'max_length') THEN 1 END) AS replies,
    count(CASE WHEN status = 'no_response' THEN 1 END) AS no_answer,
    count(CASE WHEN status = 'max_length' THEN 1 END) AS max_length,
    round(avg(CASE WHEN status IN ('ok', 'max_length') THEN response_latency_seconds END), 2) AS latency_mean_s,
    round(max(CASE WHEN status IN ('ok', 'max_length') THEN response_latency_seconds END), 2) AS latency_max_s,
    round(avg(CASE WHEN status IN ('ok', 'max_length') THEN response_seconds END), 2) AS length_mean_s,
    round(max(CASE WHEN status IN ('ok', 'max_length') THEN response_seconds END), 2) AS length_max_s,
    round(avg(CASE WHEN status IN ('ok', 'max_length') THEN transcript_words END), 1) AS words_mean,
    max(CASE WHEN status IN ('ok', 'max_length') THEN transcript_words END) AS words_max
FROM interaction_details
WHERE skill_id IS NOT NULL AND {PICKED_RUNS}
GROUP BY skill_id
ORDER BY skill_id
"""

# Steps that did not get a complete reply, then runs that did not complete (kind 'run').
NIGHT_FAILURES = f"""
WITH {CHOSEN_NIGHTS}
SELECT * FROM (
    SELECT night, persona, echo, run_id, interaction_id, step_index, attempt, kind, skill_id,
           status, error, reply_outcome, started_at, prompt_text, response_audio_path
    FROM interaction_details
    WHERE status NOT IN ('ok', 'max_length') AND {CHOSEN_RUNS}
    UNION ALL
    SELECT night, persona, echo, run_id, NULL, NULL, NULL, 'run', NULL,
           status, error, NULL, started_at, NULL, NULL
    FROM run_details
    WHERE night IN (SELECT night FROM chosen)
      AND status <> 'completed'
      AND (:persona = '' OR persona = :persona)
)
ORDER BY night, echo, started_at
"""

# The words of :grep, split on spaces by a recursive CTE so the whole search stays one statement.
TRANSCRIPT_SEARCH = f"""
WITH RECURSIVE words(word, rest) AS (
    SELECT '', trim(:grep) || ' '
    UNION ALL
    SELECT substr(rest, 1, instr(rest, ' ') - 1), ltrim(substr(rest, instr(rest, ' ') + 1))
    FROM words WHERE rest <> ''
),
-- Materialized so it is computed once, not again for every transcript the NOT EXISTS below looks at.
wanted(word) AS MATERIALIZED (SELECT DISTINCT lower(word) FROM words WHERE word <> '')
SELECT night, persona, echo, interaction_id, kind, skill_id, prompt_text, transcript, status,
       reply_outcome, started_at, response_audio_path
FROM interaction_details AS i
WHERE trim(:grep) <> ''
  AND i.transcript IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM wanted WHERE instr(lower(i.transcript), wanted.word) = 0)
  AND {PICKED_RUNS}
ORDER BY i.started_at
"""

#: Every step of one night in time order, for the HTML page's timelines.
NIGHT_STEPS = """
SELECT echo, persona, run_id, interaction_id, step_index, attempt, kind, skill_id, status, error,
       reply_outcome, started_at, finished_at, prompt_text, transcript
FROM interaction_details
WHERE run_id IN (SELECT run_id FROM run_details WHERE night = :night AND (:persona = '' OR persona = :persona))
ORDER BY echo, started_at, interaction_id
"""

#: Every run of one night, including missed runs that have no steps.
NIGHT_RUNS = """
SELECT run_id, persona, echo, status, scheduled_for, started_at, finished_at, error
FROM run_details
WHERE night = :night AND (:persona = '' OR persona = :persona)
ORDER BY echo, started_at
"""

LATEST_NIGHT = "SELECT max(night) FROM run_details"


@dataclass(frozen=True)
class Report:
    """One standing question: its command-line name, its stored-query name and its SQL."""

    name: str
    query_name: str
    title: str
    description: str
    sql: str
    params: tuple[str, ...]


REPORTS: dict[str, Report] = {
    report.name: report
    for report in (
        Report(
            "night", "night_summary", "Night summary",
            "Per night, persona and Echo: runs, steps, replies, no answer, errors, retries and minutes of "
            "audio. The latest night unless a night or a first night (since) is given.",
            NIGHT_SUMMARY, ("night", "since", "persona"),
        ),
        Report(
            "installs", "install_outcomes", "Install outcomes",
            "Per persona and skill: how often it was enabled or disabled, what the Echo's replies meant, "
            "and the latest outcome.",
            INSTALL_OUTCOMES, ("night", "since", "persona"),
        ),
        Report(
            "replies", "reply_stats", "Replies per skill",
            "Per skill: steps, replies, no answer, and the replies' latency, length in seconds and words.",
            REPLY_STATS, ("night", "since", "persona"),
        ),
        Report(
            "failures", "night_failures", "Failures of a night",
            "Steps without a complete reply (no answer, timeout, error, interrupted) with their errors, "
            "then runs that did not complete. The latest night unless a night or since is given.",
            NIGHT_FAILURES, ("night", "since", "persona"),
        ),
        Report(
            "search", "transcript_search", "Transcript search",
            "Steps whose transcript contains every word of grep (case-insensitive, in any order).",
            TRANSCRIPT_SEARCH, ("grep", "night", "since", "persona"),
        ),
    )
}


class ReportError(QueryError):
    """A report asked for with filters it cannot use."""


@dataclass(frozen=True)
class Filters:
    """The command line's filters; ``None`` means not set."""

    night: str | None = None
    since: str | None = None
    persona: str | None = None
    grep: str | None = None


def check_date(text: str) -> str:
    """``text`` as a canonical ``YYYY-MM-DD`` night, or a ReportError."""
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise ReportError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def parameters(report: Report, filters: Filters) -> dict[str, str]:
    """The report's named parameters, with ``''`` for every filter that is not set."""
    values: Mapping[str, Any] = {
        "night": filters.night,
        "since": filters.since,
        "persona": filters.persona,
        "grep": filters.grep,
    }
    return {name: values[name] or "" for name in report.params}


def run_report(db_path: Path | str, name: str, filters: Filters | None = None) -> tuple[list[str], Rows]:
    """Run the report called ``name`` read-only; return its columns and streamed rows."""
    filters = filters or Filters()
    try:
        report = REPORTS[name]
    except KeyError:
        raise ReportError(f"unknown report {name!r}; expected one of {', '.join(REPORTS)}") from None
    if filters.grep is not None and "grep" not in report.params:
        raise ReportError(f"--grep applies to the search report only, not to {name!r}")
    if "grep" in report.params and not (filters.grep or "").strip():
        raise ReportError("the search report needs words to look for (--grep WORDS)")
    return run_query(db_path, report.sql, parameters(report, filters))


def latest_night(db_path: Path | str) -> str | None:
    """The most recent night with a run, or None for an empty log."""
    _, rows = run_query(db_path, LATEST_NIGHT)
    with rows:
        night = next(rows)[0]
    return str(night) if night is not None else None


def fetch_dicts(db_path: Path | str, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """All rows of a small query as dictionaries (for the HTML page, never for whole tables)."""
    columns, rows = run_query(db_path, sql, dict(params))
    with rows:
        return [dict(zip(columns, row, strict=True)) for row in rows]
