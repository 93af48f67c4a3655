"""What the night page shows, read from the log: a night's runs, steps, installs and rig self-test,
and the verdicts an operator wants at a glance (what failed and why, which silences were expected).

Kept apart from the HTML (:mod:`orchestrator.analysis.night_page`) so the judgements below are plain
functions over rows, tested without a page.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

from orchestrator.analysis.reports import REPORTS, Filters, fetch_dicts, latest_night, parameters

#: Step kinds after which Alexa normally says nothing: their silence is the expected answer, not a failure.
SILENT_KINDS = frozenset({"stop"})

#: Step statuses that mean the step did not get what it went for.
FAILED_STATUSES = frozenset({"no_response", "timeout", "error", "interrupted", "started"})
REPLY_STATUSES = frozenset({"ok", "max_length"})

#: What a status means when the step's row has no error text of its own.
STATUS_MEANING = {
    "no_response": "the Echo said nothing within the no-answer timeout",
    "timeout": "no complete reply within the step's time limit",
    "error": "the step failed without an error message",
    "interrupted": "the run ended before this step finished",
    "started": "the process ended during this step (its run is not finished, or died)",
    "skipped": "not attempted: an earlier step made it pointless",
}

#: Reply outcomes that mean a skill did not do what the persona asked; the rest are fine or neutral.
PROBLEM_OUTCOMES = frozenset({"not_found", "account_linking", "permission_required", "not_available",
                              "unreachable", "other_skill", "not_understood", "error", "no_response"})
GOOD_OUTCOMES = frozenset({"enabled", "already_enabled", "disabled", "skill_opened"})

# Steps of one night, with what the page needs to link each step's audio: the paths as logged
# (relative to the run's audio folder) and that folder. Picked through their runs, as the reports do.
STEPS_SQL = """
SELECT d.echo, d.persona, d.run_id, d.interaction_id, d.step_index, d.attempt, d.kind, d.skill_id, d.skill_name,
       d.status, d.error, d.reply_outcome, d.reply_heard_skill, d.started_at, d.finished_at, d.prompt_text,
       d.transcript, d.response_latency_seconds, d.prompt_seconds, d.recorded_seconds,
       i.prompt_audio, i.response_audio, r.audio_dir
FROM interaction_details AS d
JOIN interactions AS i ON i.id = d.interaction_id
JOIN runs AS r ON r.id = d.run_id
WHERE d.run_id IN (SELECT run_id FROM run_details WHERE night = :night AND (:persona = '' OR persona = :persona))
ORDER BY d.echo, d.started_at, d.interaction_id
"""

RUNS_SQL = """
SELECT run_id, night_round, persona, is_control, echo, status, scheduled_for, started_at, finished_at, error,
       rig_check_id
FROM run_details
WHERE night = :night AND (:persona = '' OR persona = :persona)
ORDER BY echo, started_at
"""

INSTALLS_SQL = """
SELECT install_id, persona, echo, skill_id, skill_name, action, outcome, interaction_id, step_status,
       reply_transcript, created_at
FROM install_details
WHERE run_id IN (SELECT run_id FROM run_details WHERE night = :night AND (:persona = '' OR persona = :persona))
ORDER BY created_at, install_id
"""

RIG_CHECKS_SQL = """
SELECT id, started_at, finished_at, trigger, passed, min_level_dbfs, max_crosstalk_dbfs, min_snr_db
FROM rig_checks
WHERE id IN (SELECT rig_check_id FROM runs WHERE id IN (
    SELECT run_id FROM run_details WHERE night = :night AND (:persona = '' OR persona = :persona)))
ORDER BY started_at
"""

RIG_RESULTS_SQL = """
SELECT res.rig_check_id, dev.name AS echo, res.probe_hz, res.status, res.level_dbfs, res.noise_dbfs, res.error
FROM rig_check_results AS res LEFT JOIN devices AS dev ON dev.id = res.device_id
WHERE res.rig_check_id IN (SELECT rig_check_id FROM runs WHERE id IN (
    SELECT run_id FROM run_details WHERE night = :night AND (:persona = '' OR persona = :persona)))
ORDER BY res.rig_check_id, dev.name
"""

PREVIOUS_NIGHT_SQL = "SELECT max(night) FROM run_details WHERE night < :night"


@dataclass(frozen=True)
class NightData:
    """Everything the page shows of one night, read from the log once."""

    night: str
    persona: str | None
    runs: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    installs: list[dict[str, Any]]
    rig_checks: list[dict[str, Any]]
    rig_results: list[dict[str, Any]]
    summary_columns: list[str]
    summary: list[dict[str, Any]]

    @property
    def rounds(self) -> int:
        """How many times a persona ran this night: 2 when two nights were run on one date (see night_round)."""
        return max((r["night_round"] or 1 for r in self.runs), default=1)

    @property
    def failed_steps(self) -> list[dict[str, Any]]:
        return [s for s in self.steps if is_failure(s)]

    @property
    def expected_silences(self) -> list[dict[str, Any]]:
        return [s for s in self.steps if is_expected_silence(s)]

    @property
    def skipped_steps(self) -> list[dict[str, Any]]:
        return [s for s in self.steps if s["status"] == "skipped"]


@dataclass(frozen=True)
class NightFigures:
    """The few numbers the page compares from one night to the one before."""

    runs: int
    runs_completed: int
    steps: int
    replies: int
    failed_steps: int
    expected_silences: int
    skipped: int
    installs: int
    installs_enabled: int
    latency_mean_s: float | None
    audio_minutes: float

    #: (attribute, label) in the order the page lists them.
    LABELS = (
        ("runs", "runs"), ("runs_completed", "runs completed"), ("steps", "steps"),
        ("replies", "steps with a reply"), ("failed_steps", "failed steps"),
        ("expected_silences", "expected silences (after stop)"), ("skipped", "skipped steps"),
        ("installs", "install attempts"), ("installs_enabled", "skills enabled"),
        ("latency_mean_s", "mean reply latency, s"), ("audio_minutes", "audio, minutes"),
    )


def is_expected_silence(step: Mapping[str, Any]) -> bool:
    """A step whose silence is the normal answer: "Alexa, stop" is not answered."""
    return step["status"] == "no_response" and step["kind"] in SILENT_KINDS


def is_failure(step: Mapping[str, Any]) -> bool:
    return step["status"] in FAILED_STATUSES and not is_expected_silence(step)


def why(step: Mapping[str, Any]) -> str:
    """The step's error, or what its status means when it has none: never empty for a failure."""
    return step.get("error") or STATUS_MEANING.get(step["status"], "")


def figures(data: NightData) -> NightFigures:
    latencies = [s["response_latency_seconds"] for s in data.steps
                 if s["status"] in REPLY_STATUSES and s["response_latency_seconds"] is not None]
    seconds = sum((s["prompt_seconds"] or 0) + (s["recorded_seconds"] or 0) for s in data.steps)
    return NightFigures(
        runs=len(data.runs),
        runs_completed=sum(r["status"] == "completed" for r in data.runs),
        steps=len(data.steps),
        replies=sum(s["status"] in REPLY_STATUSES for s in data.steps),
        failed_steps=len(data.failed_steps),
        expected_silences=len(data.expected_silences),
        skipped=len(data.skipped_steps),
        installs=len(data.installs),
        installs_enabled=sum(i["outcome"] in ("enabled", "already_enabled") for i in data.installs),
        latency_mean_s=round(mean(latencies), 2) if latencies else None,
        audio_minutes=round(seconds / 60, 1),
    )


def outcome_counts(steps: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """What the replies meant: steps that got a reply judged by the classifier, by its verdict.

    Replies to questions and dialog turns get no verdict (their check is ``expectation_met``); they
    are left out rather than drawn as one large bar of nothing."""
    return Counter(s["reply_outcome"] for s in steps if s["status"] in REPLY_STATUSES and s["reply_outcome"])


def skill_label(row: Mapping[str, Any]) -> str:
    """A skill as people call it: its listed name, else its id; empty for a step without a skill."""
    return row.get("skill_name") or row.get("skill_id") or ""


@dataclass(frozen=True)
class OutcomeChange:
    persona: str
    skill: str
    action: str
    before: str | None
    now: str | None


def install_changes(now: Sequence[Mapping[str, Any]], before: Sequence[Mapping[str, Any]]) -> list[OutcomeChange]:
    """Installs whose last outcome differs from the previous night's, for skills both nights tried."""

    def last(installs: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str], Mapping[str, Any]]:
        return {(i["persona"], i["skill_id"], i["action"]): i for i in installs}  # rows come oldest first

    earlier = last(before)
    return [
        OutcomeChange(key[0], skill_label(row), key[2], earlier[key]["outcome"], row["outcome"])
        for key, row in last(now).items()
        if key in earlier and earlier[key]["outcome"] != row["outcome"]
    ]


def load_night(db_path: Path | str, night: str | None = None, persona: str | None = None) -> NightData | None:
    """The night's rows (the latest night when ``night`` is None); None when the log has no run at all."""
    night = night or latest_night(db_path)
    if night is None:
        return None
    params = {"night": night, "persona": persona or ""}
    summary_report = REPORTS["night"]
    summary = fetch_dicts(db_path, summary_report.sql, parameters(summary_report, Filters(night=night,
                                                                                          persona=persona)))
    return NightData(
        night=night,
        persona=persona,
        runs=fetch_dicts(db_path, RUNS_SQL, params),
        steps=fetch_dicts(db_path, STEPS_SQL, params),
        installs=fetch_dicts(db_path, INSTALLS_SQL, params),
        rig_checks=fetch_dicts(db_path, RIG_CHECKS_SQL, params),
        rig_results=fetch_dicts(db_path, RIG_RESULTS_SQL, params),
        summary_columns=list(summary[0]) if summary else [],
        summary=summary,
    )


def previous_night(db_path: Path | str, night: str) -> str | None:
    (row,) = fetch_dicts(db_path, PREVIOUS_NIGHT_SQL, {"night": night})
    value = next(iter(row.values()))
    return str(value) if value is not None else None
