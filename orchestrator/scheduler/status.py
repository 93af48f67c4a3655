"""What runs now, as the log tells it: each running run with its Echo, room and latest step.

The log is opened read-only and is not migrated: `status` changes nothing, whichever version wrote
the log, and a log without tables yet means that nothing runs.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from orchestrator import log


@dataclass(frozen=True)
class RunningRun:
    run_id: int
    persona: str
    echo: str | None
    room: str | None
    started_at: str
    scheduled_for: str | None
    steps: int | None
    step_index: int | None
    kind: str | None
    step_status: str | None
    step_started_at: str | None
    prompt_text: str | None


RUNNING_SQL = """
SELECT r.id, p.name, d.name, d.room, r.started_at, r.scheduled_for, r.config_json,
       i.step_index, i.kind, i.status, i.started_at, i.prompt_text
FROM runs r
JOIN personas p ON p.id = r.persona_id
LEFT JOIN devices d ON d.id = r.device_id
LEFT JOIN interactions i ON i.id = (SELECT max(id) FROM interactions WHERE run_id = r.id)
WHERE r.status = 'running'
ORDER BY r.started_at
"""


def running_runs(db: Path) -> list[RunningRun]:
    """Runs the log says are running, each with its latest step (read-only; the log is not migrated)."""
    if not db.exists():
        return []
    connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=log.BUSY_TIMEOUT_S)
    try:
        rows = connection.execute(RUNNING_SQL).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        connection.close()
    return [RunningRun(row[0], row[1], row[2], row[3], row[4], row[5], _step_count(row[6]), *row[7:]) for row in rows]


def _step_count(config_json: str | None) -> int | None:
    try:
        return len(json.loads(config_json or "")["steps"])
    except (ValueError, KeyError, TypeError):
        return None
