"""The analysts' standing questions about the log, as SQL over the views of ``docs/log.md``.

Each report is plain SQL with named parameters, so the same text runs from ``orchestrator report``
and as a stored query in the Datasette web view (:mod:`orchestrator.analysis.web`). Datasette passes an
empty string for a parameter left blank, so every filter here treats ``''`` as "not set" and the
command line does the same.

Parameters shared by the reports:

* ``night``: one night (``YYYY-MM-DD``, see the ``night`` column of the views);
* ``since``: every night from this one on;
* ``persona``: one persona by name;
* ``grep``: words that must all appear in a transcript (the search report only);
* ``skill``: one skill by id or name, any case (the skill history only).

Reports that sum over nights can instead give a row per night (``--by night``): their SQL comes in
two versions, the second grouped by ``night`` and ``night_round`` as well (a night's round tells
apart two nights run on one date; see docs/log.md). The stored queries of the web view are the
first versions.

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
    r.night_round,
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
GROUP BY r.night, r.night_round, r.persona, r.echo
ORDER BY r.night, r.night_round, r.persona, r.echo
"""

# The install outcomes that have a column of their own; `other` counts the rest, NULL included.
_COUNTED_OUTCOMES = ", ".join(
    f"'{outcome}'"
    for outcome in ("enabled", "already_enabled", "not_found", "account_linking", "permission_required",
                    "not_available", "no_response")
)


def _by(by_night: bool, alias: str = "") -> str:
    """The leading group columns of a report that can be given per night."""
    return f"{alias}night, {alias}night_round, " if by_night else ""


def install_outcomes(by_night: bool = False) -> str:
    """Per persona and skill (and night), the install attempts and what their replies meant."""
    by = _by(by_night)
    return f"""
WITH picked AS (
    -- Only the columns used, so the view's join to the install's step is left out.
    SELECT install_id, night, night_round, persona, skill_id, skill_name, action, outcome, created_at
    FROM install_details
    WHERE {PICKED_RUNS}
),
ranked AS (
    SELECT *, row_number() OVER (
        PARTITION BY {by}persona, skill_id, action ORDER BY created_at DESC, install_id DESC
    ) AS recency
    FROM picked
)
SELECT
    {by}persona,
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
GROUP BY {by}persona, skill_id, action
ORDER BY {by}persona, skill_id, action
"""


#: A step that got a reply: it ended by itself or ran to the maximum length.
REPLIED = "status IN ('ok', 'max_length')"
#: Words in a transcript: its spaces and one, as recognizers put one space between words (the views'
#: ``transcript_words``, which trims first, counts the same); 0 for none. For the reports that read
#: the interactions table itself: a million trims cost seconds.
TRANSCRIPT_WORDS = "coalesce(length(transcript) - length(replace(transcript, ' ', '')) + (transcript <> ''), 0)"
#: What a step without a skill is listed as: Alexa answered it herself (the control's steps are such).
NO_SKILL = "(no skill: Alexa)"


def reply_stats(by_night: bool = False) -> str:
    """Per skill (and night): steps, replies, latency, length and words of the replies.

    Steps without a skill (the control persona's questions, an interest persona's "ask") are one
    row of their own, with ``skill_id`` NULL, listed last.
    """
    by = _by(by_night, "r.")
    return f"""
WITH picked AS (
    SELECT run_id, night, night_round
    FROM run_details
    WHERE (:night = '' OR night = :night) AND (:since = '' OR night >= :since)
      AND (:persona = '' OR persona = :persona)
),
run_cells AS (
    -- Each run's steps per skill, from the index ix_interactions_replies alone and in its order
    -- (see persona_vs_control); the words of each reply are counted once, in the subquery.
    SELECT run_id, skill_id,
           count(*) AS steps,
           count(CASE WHEN {REPLIED} THEN 1 END) AS replies,
           count(CASE WHEN status = 'no_response' THEN 1 END) AS no_answer,
           count(CASE WHEN status = 'max_length' THEN 1 END) AS max_length,
           total(latency) AS latency_sum, count(latency) AS latency_n, max(latency) AS latency_max,
           total(length) AS length_sum, count(length) AS length_n, max(length) AS length_max,
           total(words) AS words_sum, count(words) AS words_n, max(words) AS words_max
    FROM (
        SELECT run_id, skill_id, status,
               CASE WHEN {REPLIED} THEN response_latency_seconds END AS latency,
               CASE WHEN {REPLIED} THEN response_seconds END AS length,
               CASE WHEN {REPLIED} THEN {TRANSCRIPT_WORDS} END AS words
        FROM interactions
        WHERE run_id IN (SELECT run_id FROM picked)
        LIMIT -1  -- kept a subquery: flattened, the words would be counted twice
    )
    GROUP BY run_id, skill_id
)
SELECT
    {by}c.skill_id,
    CASE WHEN c.skill_id IS NULL THEN '{NO_SKILL}' ELSE s.name END AS skill_name,
    s.category AS skill_category,
    sum(c.steps) AS steps,
    sum(c.replies) AS replies,
    sum(c.no_answer) AS no_answer,
    sum(c.max_length) AS max_length,
    round(sum(c.latency_sum) / nullif(sum(c.latency_n), 0), 2) AS latency_mean_s,
    round(max(c.latency_max), 2) AS latency_max_s,
    round(sum(c.length_sum) / nullif(sum(c.length_n), 0), 2) AS length_mean_s,
    round(max(c.length_max), 2) AS length_max_s,
    round(sum(c.words_sum) / nullif(sum(c.words_n), 0), 1) AS words_mean,
    max(c.words_max) AS words_max
FROM run_cells AS c
JOIN picked AS r ON r.run_id = c.run_id
LEFT JOIN skills AS s ON s.id = c.skill_id
GROUP BY {by}c.skill_id
ORDER BY {by}c.skill_id IS NULL, c.skill_id
"""


def _same_night(by_night: bool, left: str, right: str) -> str:
    return f" AND {left}.night = {right}.night AND {left}.night_round = {right}.night_round" if by_night else ""


def persona_vs_control(by_night: bool = False) -> str:
    """Each interest persona beside the control over the same nights (or night by night).

    A step's subject is its skill, or its words for a step without one (the control's questions);
    its verdict is its reply's outcome, or its status when no outcome was read. Skipped steps were
    never said and are left out. ``differing`` lists the subjects the persona and the control both
    asked whose most frequent verdicts differ.
    """
    by, by_p = _by(by_night), _by(by_night, "p.")
    return f"""
WITH picked AS (
    SELECT run_id, night, night_round, persona, persona_interest, is_control
    FROM run_details
    WHERE (:night = '' OR night = :night) AND (:since = '' OR night >= :since)
      AND (:persona = '' OR persona = :persona OR is_control)
),
run_cells AS (
    -- Each run's steps summed by what they were and what was heard, read from the index
    -- ix_interactions_replies alone, in its order (so without sorting a million steps); the
    -- joins to persona, night and skill are made on these sums, not on every step.
    SELECT run_id, skill_id, prompt_text, status, reply_outcome,
           count(*) AS steps,
           count(CASE WHEN {REPLIED} THEN 1 END) AS replies,
           total(CASE WHEN {REPLIED} THEN response_latency_seconds END) AS latency_sum,
           count(CASE WHEN {REPLIED} THEN response_latency_seconds END) AS latency_n,
           total(CASE WHEN {REPLIED} THEN response_seconds END) AS length_sum,
           count(CASE WHEN {REPLIED} THEN response_seconds END) AS length_n,
           total(CASE WHEN {REPLIED} THEN {TRANSCRIPT_WORDS} END) AS words_sum
    FROM interactions
    WHERE status <> 'skipped' AND run_id IN (SELECT run_id FROM picked)
    GROUP BY run_id, skill_id, prompt_text, status, reply_outcome
),
cells AS (
    -- Per side (an interest persona, or '' for the controls together), subject and verdict.
    SELECT
        {_by(by_night, "r.")}CASE WHEN r.is_control THEN '' ELSE r.persona END AS side,
        max(r.persona) AS name,
        max(r.persona_interest) AS interest,
        coalesce(s.name, c.skill_id, c.prompt_text) AS subject,
        coalesce(c.reply_outcome, c.status) AS verdict,
        sum(c.steps) AS steps,
        sum(c.replies) AS replies,
        sum(c.latency_sum) AS latency_sum,
        sum(c.latency_n) AS latency_n,
        sum(c.length_sum) AS length_sum,
        sum(c.length_n) AS length_n,
        sum(c.words_sum) AS words_sum
    FROM run_cells AS c
    JOIN picked AS r ON r.run_id = c.run_id
    LEFT JOIN skills AS s ON s.id = c.skill_id
    GROUP BY {_by(by_night, "r.")}side, subject, verdict
),
sides AS (
    SELECT {by}side, max(name) AS name, max(interest) AS interest, sum(steps) AS steps, sum(replies) AS replies,
           sum(latency_sum) / nullif(sum(latency_n), 0) AS latency,
           sum(length_sum) / nullif(sum(length_n), 0) AS length,
           sum(words_sum) / nullif(sum(replies), 0) AS words
    FROM cells
    GROUP BY {by}side
),
outcomes AS (
    SELECT {by}side, group_concat(verdict || ' ' || steps, ', ') AS outcomes
    FROM (SELECT {by}side, verdict, sum(steps) AS steps FROM cells GROUP BY {by}side, verdict
          ORDER BY steps DESC, verdict)
    GROUP BY {by}side
),
usual AS (
    -- Each side's most frequent verdict per subject.
    SELECT * FROM (
        SELECT {by}side, subject, verdict,
               row_number() OVER (PARTITION BY {by}side, subject ORDER BY steps DESC, verdict) AS rank
        FROM cells
    )
    WHERE rank = 1
),
differing AS (
    SELECT {by_p}p.side, group_concat(p.subject || ': ' || p.verdict || ' (control: ' || c.verdict || ')', '; ')
           AS subjects
    FROM (SELECT * FROM usual ORDER BY subject) AS p
    JOIN usual AS c ON c.side = '' AND c.subject = p.subject{_same_night(by_night, "c", "p")}
    WHERE p.side <> '' AND p.verdict <> c.verdict
    GROUP BY {by_p}p.side
)
SELECT
    {by_p}p.side AS persona,
    p.interest AS persona_interest,
    c.name AS control,
    p.steps,
    c.steps AS control_steps,
    p.replies,
    c.replies AS control_replies,
    round(100.0 * p.replies / p.steps, 1) AS reply_pct,
    round(100.0 * c.replies / c.steps, 1) AS control_reply_pct,
    round(p.latency, 2) AS latency_mean_s,
    round(c.latency, 2) AS control_latency_mean_s,
    round(p.length, 2) AS length_mean_s,
    round(c.length, 2) AS control_length_mean_s,
    round(p.words, 1) AS words_mean,
    round(c.words, 1) AS control_words_mean,
    po.outcomes AS outcomes,
    co.outcomes AS control_outcomes,
    d.subjects AS differing
FROM sides AS p
LEFT JOIN sides AS c ON c.side = ''{_same_night(by_night, "c", "p")}
LEFT JOIN outcomes AS po ON po.side = p.side{_same_night(by_night, "po", "p")}
LEFT JOIN outcomes AS co ON co.side = ''{_same_night(by_night, "co", "p")}
LEFT JOIN differing AS d ON d.side = p.side{_same_night(by_night, "d", "p")}
WHERE p.side <> ''
ORDER BY {by_p}p.side
"""


#: A skill's history: one row per skill, persona and night (each persona is an account of its own,
#: which a skill may answer differently), and whether its answers changed since that persona's
#: previous night with it.
SKILL_HISTORY = f"""
WITH picked AS (
    SELECT run_id, night, night_round, persona
    FROM run_details
    WHERE (:night = '' OR night = :night) AND (:since = '' OR night >= :since)
      AND (:persona = '' OR persona = :persona)
),
run_cells AS (
    -- Each run's steps by skill, verdict and reply, from the index alone (see persona_vs_control).
    SELECT run_id, skill_id,
           coalesce(reply_outcome, status) AS verdict,
           CASE WHEN {REPLIED} THEN transcript END AS reply,
           count(*) AS steps,
           count(CASE WHEN {REPLIED} THEN 1 END) AS replies,
           total(CASE WHEN {REPLIED} THEN response_latency_seconds END) AS latency_sum,
           count(CASE WHEN {REPLIED} THEN response_latency_seconds END) AS latency_n,
           total(CASE WHEN {REPLIED} THEN response_seconds END) AS length_sum,
           count(CASE WHEN {REPLIED} THEN response_seconds END) AS length_n
    FROM interactions
    WHERE skill_id IS NOT NULL AND status <> 'skipped'
      AND (:skill = '' OR skill_id IN (SELECT id FROM skills WHERE id = :skill OR lower(name) = lower(:skill)))
      AND run_id IN (SELECT run_id FROM picked)
    GROUP BY run_id, skill_id, prompt_text, status, reply_outcome, transcript
),
sums AS (
    SELECT run_id, skill_id, sum(steps) AS steps, sum(replies) AS replies,
           sum(latency_sum) / nullif(sum(latency_n), 0) AS latency,
           sum(length_sum) / nullif(sum(length_n), 0) AS length
    FROM run_cells
    GROUP BY run_id, skill_id
),
verdicts AS (
    SELECT run_id, skill_id, verdict, sum(steps) AS steps,
           row_number() OVER (PARTITION BY run_id, skill_id ORDER BY sum(steps) DESC, verdict) AS rank
    FROM run_cells
    GROUP BY run_id, skill_id, verdict
),
outcomes AS (
    SELECT run_id, skill_id, max(CASE WHEN rank = 1 THEN verdict END) AS outcome,
           group_concat(verdict || ' ' || steps, ', ') AS outcomes
    FROM (SELECT * FROM verdicts ORDER BY run_id, skill_id, rank)
    GROUP BY run_id, skill_id
),
replies AS (
    SELECT run_id, skill_id, max(CASE WHEN rank = 1 THEN reply END) AS reply, count(*) AS distinct_replies
    FROM (
        SELECT run_id, skill_id, reply,
               row_number() OVER (PARTITION BY run_id, skill_id ORDER BY sum(steps) DESC, reply) AS rank
        FROM run_cells
        WHERE reply IS NOT NULL
        GROUP BY run_id, skill_id, reply
    )
    GROUP BY run_id, skill_id
),
history AS (
    -- LEFT JOINs keep `sums` the outer loop, the others looked up by an automatic index.
    SELECT t.skill_id, r.persona, r.night, r.night_round, t.steps, t.replies, t.latency, t.length,
           o.outcome, o.outcomes, p.reply, coalesce(p.distinct_replies, 0) AS distinct_replies
    FROM sums AS t
    JOIN picked AS r ON r.run_id = t.run_id
    LEFT JOIN outcomes AS o ON o.run_id = t.run_id AND o.skill_id = t.skill_id
    LEFT JOIN replies AS p ON p.run_id = t.run_id AND p.skill_id = t.skill_id
)
SELECT
    h.skill_id,
    s.name AS skill_name,
    h.persona,
    h.night,
    h.night_round,
    h.steps,
    h.replies,
    h.outcome,
    h.outcomes,
    h.distinct_replies,
    h.reply AS usual_reply,
    round(h.latency, 2) AS latency_mean_s,
    round(h.length, 2) AS length_mean_s,
    CASE WHEN lag(h.night) OVER earlier IS NULL THEN NULL
         WHEN lag(h.outcome) OVER earlier IS NOT h.outcome OR lag(h.reply) OVER earlier IS NOT h.reply THEN 1
         ELSE 0
    END AS changed
FROM history AS h
LEFT JOIN skills AS s ON s.id = h.skill_id
WINDOW earlier AS (PARTITION BY h.skill_id, h.persona ORDER BY h.night, h.night_round)
ORDER BY h.skill_id, h.persona, h.night, h.night_round
"""


# Steps that did not get a complete reply, then runs that did not complete (kind 'run').
NIGHT_FAILURES = f"""
WITH {CHOSEN_NIGHTS}
SELECT * FROM (
    SELECT night, night_round, persona, echo, run_id, interaction_id, step_index, attempt, kind, skill_id,
           status, error, reply_outcome, started_at, prompt_text, response_audio_path
    FROM interaction_details
    WHERE status NOT IN ('ok', 'max_length') AND {CHOSEN_RUNS}
    UNION ALL
    SELECT night, night_round, persona, echo, run_id, NULL, NULL, NULL, 'run', NULL,
           status, error, NULL, started_at, NULL, NULL
    FROM run_details
    WHERE night IN (SELECT night FROM chosen)
      AND status <> 'completed'
      AND (:persona = '' OR persona = :persona)
)
ORDER BY night, night_round, echo, started_at
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

# Traffic (docs/traffic.md). A DNS query's flow goes to the resolver, not to the name it asks for:
# the endpoints are the flows that carried the conversation itself.
ENDPOINT_FLOWS = "f.name IS NOT NULL AND f.name_source <> 'dns_query'"

SKILL_ENDPOINTS = f"""
SELECT
    i.skill_id,
    s.name AS skill,
    f.domain,
    f.name,
    count(DISTINCT r.night) AS nights,
    count(DISTINCT f.interaction_id) AS steps,
    count(*) AS flows,
    sum(f.bytes_out) AS bytes_out,
    sum(f.bytes_in) AS bytes_in,
    max(f.tracker) AS tracker
FROM flows f
JOIN interactions i ON i.id = f.interaction_id
JOIN run_details r ON r.run_id = i.run_id
LEFT JOIN skills s ON s.id = i.skill_id
WHERE i.skill_id IS NOT NULL AND {ENDPOINT_FLOWS}
  AND i.{PICKED_RUNS}
GROUP BY i.skill_id, f.domain, f.name
ORDER BY skill, i.skill_id, f.domain, f.name
"""

#: Domains an interest persona's steps reached that the control never reached, in a step or in the
#: background of an Echo it ran on.
PERSONA_ONLY_ENDPOINTS = f"""
WITH control_devices AS (
    SELECT DISTINCT device_id FROM runs WHERE persona_id IN (SELECT id FROM personas WHERE is_control)
),
control_domains AS (
    SELECT DISTINCT f.domain FROM flows f
    LEFT JOIN interactions i ON i.id = f.interaction_id
    LEFT JOIN personas p ON p.id = i.persona_id
    WHERE f.domain IS NOT NULL
      AND (p.is_control OR (f.interaction_id IS NULL AND f.device_id IN (SELECT device_id FROM control_devices)))
)
SELECT
    p.name AS persona,
    p.interest,
    f.domain,
    group_concat(DISTINCT f.name) AS names,
    count(DISTINCT i.skill_id) AS skills,
    count(DISTINCT f.interaction_id) AS steps,
    count(*) AS flows,
    max(f.tracker) AS tracker
FROM flows f
JOIN interactions i ON i.id = f.interaction_id
JOIN personas p ON p.id = i.persona_id
WHERE NOT p.is_control AND {ENDPOINT_FLOWS} AND f.domain IS NOT NULL
  AND f.domain NOT IN (SELECT domain FROM control_domains)
  AND i.{PICKED_RUNS}
GROUP BY p.name, f.domain
ORDER BY p.name, f.domain
"""

BACKGROUND_NIGHT = "date(f.first_packet_at, '-12 hours')"

BACKGROUND_TRAFFIC = f"""
SELECT
    {BACKGROUND_NIGHT} AS night,
    d.name AS echo,
    count(*) AS flows,
    count(DISTINCT f.domain) AS domains,
    group_concat(DISTINCT f.domain) AS domain_list,
    sum(f.bytes_out) AS bytes_out,
    sum(f.bytes_in) AS bytes_in,
    coalesce(sum(f.tracker), 0) AS tracker_flows
FROM flows f
JOIN devices d ON d.id = f.device_id
WHERE f.link = 'background'
  AND (:night = '' OR {BACKGROUND_NIGHT} = :night)
  AND (:since = '' OR {BACKGROUND_NIGHT} >= :since)
GROUP BY night, echo
ORDER BY night, echo
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
    #: The same report with a row per night (``--by night``), for those that sum over nights.
    sql_by_night: str | None = None


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
            install_outcomes(), ("night", "since", "persona"), install_outcomes(by_night=True),
        ),
        Report(
            "replies", "reply_stats", "Replies per skill",
            "Per skill: steps, replies, no answer, and the replies' latency, length in seconds and words. "
            f"Steps without a skill (the control's questions) are the last row, {NO_SKILL}.",
            reply_stats(), ("night", "since", "persona"), reply_stats(by_night=True),
        ),
        Report(
            "compare", "persona_vs_control", "Personas beside the control",
            "Per interest persona, beside the control persona over the same nights: steps, replies, reply "
            "rate, latency, length and words of the replies, the verdicts of the replies, and the subjects "
            "(a skill, or the words of a step without one) both asked whose usual verdict differs.",
            persona_vs_control(), ("night", "since", "persona"), persona_vs_control(by_night=True),
        ),
        Report(
            "skill-history", "skill_history", "A skill night after night",
            "Per skill, persona and night: steps, replies, the usual verdict and reply, how many different "
            "replies, and whether the verdict or the usual reply changed since that persona's previous night "
            "with the skill.",
            SKILL_HISTORY, ("night", "since", "persona", "skill"),
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
        Report(
            "endpoints", "skill_endpoints", "Endpoints per skill",
            "Per skill: the names and registrable domains its steps' traffic reached (TLS server name, HTTP Host "
            "or DNS answer), on how many nights and steps, with bytes each way and the tracker flag.",
            SKILL_ENDPOINTS, ("night", "since", "persona"),
        ),
        Report(
            "persona-endpoints", "persona_only_endpoints", "Endpoints only interest personas reached",
            "Per interest persona: the domains its steps reached that the control persona never did, in its "
            "steps or in its Echo's background traffic.",
            PERSONA_ONLY_ENDPOINTS, ("night", "since", "persona"),
        ),
        Report(
            "background", "background_traffic", "Background traffic",
            "Per night and Echo: the flows no step was under way for, their domains and bytes each way.",
            BACKGROUND_TRAFFIC, ("night", "since"),
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
    skill: str | None = None
    by: str | None = None  # 'night': a row per night, for the reports that have it


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
        "skill": filters.skill,
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
    if filters.skill is not None and "skill" not in report.params:
        raise ReportError(f"--skill applies to the skill-history report only, not to {name!r}")
    sql = _sql(report, filters.by)
    try:
        return run_query(db_path, sql, parameters(report, filters))
    except QueryError as exc:
        if "no such column" in str(exc) or "no such table" in str(exc):
            raise ReportError(f"{exc}: {older_log(db_path)}") from None
        raise


def older_log(db_path: Path | str) -> str:
    """Why a report's columns are missing: the log's schema is older than this version's, or unknown."""
    # Here, not at the top: alembic stays out of every report's start-up.
    from alembic.script import ScriptDirectory

    from orchestrator.log.engine import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    try:
        _, rows = run_query(db_path, "SELECT version_num FROM alembic_version")
        with rows:
            version = next(rows, (None,))[0]
    except QueryError:
        version = None
    if version == head:
        return "the log's schema is current, so the report itself is wrong"
    return (f"the log's schema is {version or 'unknown'}, older than this version's {head}; the reports read "
            "it read-only and never change it, but any command that writes to the log (run, demo, serve, "
            "lab check) brings it up to date")


#: What ``--by`` can ask for.
GROUPINGS = ("night",)


def _sql(report: Report, by: str | None) -> str:
    if by is None:
        return report.sql
    if by not in GROUPINGS:
        raise ReportError(f"--by {by!r}: expected one of {', '.join(GROUPINGS)}")
    if report.sql_by_night is None:
        with_by = ", ".join(name for name, r in REPORTS.items() if r.sql_by_night is not None)
        raise ReportError(f"--by night applies to {with_by}; {report.name!r} has a row per night already or "
                          "is about single steps")
    return report.sql_by_night


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
