"""Speech recognition provenance for any engine, and the skill heard when another one answered.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

``runs.vosk_model`` becomes three columns: ``asr_engine`` (vosk, pocketsphinx), ``asr_model`` (the
model folder) and ``asr_version`` (the recognizer library's version). Old runs keep their model
under ``asr_model`` with ``asr_engine = 'vosk'``; their library version was never recorded.
``interactions.reply_heard_skill`` holds the name a reply welcomed the user to when it was another
skill than the one invoked (``reply_outcome = 'other_skill'``).

The views read ``runs.vosk_model``: they are dropped before the column and created again with the
new columns (the views of 0003, otherwise unchanged).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_PROVENANCE = "    r.vosk_model AS vosk_model,\n"
NEW_PROVENANCE = ("    r.asr_engine AS asr_engine,\n    r.asr_model AS asr_model,\n"
                  "    r.asr_version AS asr_version,\n")
OLD_OUTCOME = "    i.reply_outcome AS reply_outcome,\n"
NEW_OUTCOME = OLD_OUTCOME + "    i.reply_heard_skill AS reply_heard_skill,\n"


def _views_of_0003() -> ModuleType:
    spec = importlib.util.spec_from_file_location("views_0003", Path(__file__).with_name("0003_views.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def views() -> dict[str, str]:
    """The views as this revision defines them."""
    old: dict[str, str] = _views_of_0003().VIEWS
    new = {name: sql.replace(OLD_PROVENANCE, NEW_PROVENANCE).replace(OLD_OUTCOME, NEW_OUTCOME)
           for name, sql in old.items()}
    assert new["run_details"] != old["run_details"] and new["interaction_details"] != old["interaction_details"]
    return new


def _drop_views() -> None:
    for name in reversed(list(views())):
        op.execute(f"DROP VIEW IF EXISTS {name}")


def upgrade() -> None:
    _drop_views()
    for column in ("asr_engine", "asr_model", "asr_version"):
        op.execute(f"ALTER TABLE runs ADD COLUMN {column} TEXT")
    op.execute("UPDATE runs SET asr_engine = 'vosk', asr_model = vosk_model WHERE vosk_model IS NOT NULL")
    op.execute("ALTER TABLE runs DROP COLUMN vosk_model")
    op.execute("ALTER TABLE interactions ADD COLUMN reply_heard_skill TEXT")
    for statement in views().values():
        op.execute(statement)


def downgrade() -> None:
    _drop_views()
    op.execute("ALTER TABLE interactions DROP COLUMN reply_heard_skill")
    op.execute("ALTER TABLE runs ADD COLUMN vosk_model TEXT")
    op.execute("UPDATE runs SET vosk_model = asr_model WHERE asr_engine = 'vosk'")
    for column in ("asr_version", "asr_model", "asr_engine"):
        op.execute(f"ALTER TABLE runs DROP COLUMN {column}")
    for statement in _views_of_0003().VIEWS.values():
        op.execute(statement)
