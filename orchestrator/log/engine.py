"""The log's engine, its migrations and its sessions.

Several processes write to the same file, so every connection runs in WAL mode with a busy
timeout, and every transaction starts with ``BEGIN IMMEDIATE``: a writer takes the write lock up
front and waits for it, instead of failing with "database is locked" when a read transaction tries
to upgrade to a write. The schema is created and changed only by the Alembic migrations in
``orchestrator/log/migrations``; :func:`open_log` applies them.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: How long a connection waits for another process's write lock before giving up.
BUSY_TIMEOUT_S = 10.0
#: How often a connection tries again to put a fresh file in WAL mode while another process does.
WAL_SWITCH_RETRY = 0.02


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    """Per-connection settings; SQLite forgets all but journal_mode when a connection closes."""
    # Take transaction control away from the sqlite3 module so _on_begin decides how to BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        _use_wal(cursor)
        # NORMAL survives an application crash; only a power loss may lose the last commits.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _use_wal(cursor: Any) -> None:
    """Put the file in WAL mode unless it is already.

    Processes that open a fresh log together race for the switch, which needs the file to
    themselves, and SQLite answers that race with "database is locked" at once instead of waiting
    for its busy timeout: so it is tried again, for as long as the busy timeout would have waited.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(WAL_SWITCH_RETRY)


def _on_begin(connection: Connection) -> None:
    """Start every transaction holding the write lock, waiting up to the busy timeout for it."""
    if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(db_path: Path | str) -> Engine:
    """An engine for an existing log file, with the pragmas and locking described above.

    Use :func:`open_log` instead unless the schema must not be touched (e.g. in a migration).
    """
    url = URL.create("sqlite", database=str(db_path))
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
    event.listen(engine, "connect", _on_connect)
    event.listen(engine, "begin", _on_begin)
    return engine


def alembic_config(db_path: Path | str | None = None) -> Config:
    """An Alembic ``Config`` for the packaged migrations; no alembic.ini is needed.

    With ``db_path``, Alembic commands (``command.revision(cfg, autogenerate=True, ...)``,
    ``command.current(cfg)``) can be run against that file directly.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if db_path is not None:
        url = URL.create("sqlite", database=str(db_path)).render_as_string()
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


#: Alembic keeps its migration context in module globals: one migration at a time per process.
_MIGRATION_LOCK = threading.Lock()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` inside one ``BEGIN IMMEDIATE`` transaction.

    Holding the write lock for the whole upgrade means two processes starting at once cannot
    both try to create the tables: the second waits, then finds the schema already current.
    """
    config = alembic_config()
    with _MIGRATION_LOCK, engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def open_log(db_path: Path | str) -> Engine:
    """Open (creating if needed) the log at ``db_path`` and migrate it to the current schema."""
    path = Path(db_path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(path)
    upgrade(engine)
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (the runner keeps rows it wrote)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A session in one transaction that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session
