"""Read-only SQL over the interaction log, for analysts (``orchestrator query "SELECT ..."``).

Three independent guards keep a query from changing the log while the lab writes to it:

1. the file is opened through a ``file:...?mode=ro`` URI, so SQLite refuses any write;
2. ``PRAGMA query_only`` is switched on before the user's SQL runs;
3. the authorizer of :mod:`orchestrator.analysis.sql_guard` admits reading, the usual functions and a few
   pragmas by name, and denies everything else *while the statement is prepared*, so ``ATTACH``,
   ``VACUUM INTO`` (which would write a new file), pragma writes and ``fts3_tokenizer`` are
   refused before they can run.

A query can have a time limit, counted while SQLite works on it and not while its rows wait for
a slow reader; inside :func:`ctrl_c_stops_queries` Ctrl-C stops it too. Both are looked at by a
progress handler every few thousand steps of SQLite's virtual machine: while SQLite works, Python
runs no signal handler of its own.

The log is in WAL mode, and SQLite cannot read it without a ``-wal`` and a ``-shm`` file beside it;
a read-only connection creates them and cannot remove them (that takes a checkpoint, a write).
When a query found no ``-wal``, a read-write connection that only reads one page is opened
after it and closed, so that SQLite's own rule removes them: the last connection to close does.
While a night writes, that connection is not the last and leaves the night's files alone; if a
night began and ended during the query, that close checkpoints the night's rows into the log as
the night's own close would have. (``immutable=1`` would create no files, but a night starting
during the query could then change pages under it unseen.)

Rows are streamed from the cursor, never fetched all at once, so a query over millions of
interactions prints with flat memory.
"""

from __future__ import annotations

import base64
import csv
import json
import signal
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain, islice
from pathlib import Path
from typing import IO, Any, Literal, TextIO, get_args

from orchestrator.analysis.sql_guard import Authorizer, allowed_summary, guard

OutputFormat = Literal["table", "csv", "json", "jsonl"]
FORMATS: tuple[str, ...] = get_args(OutputFormat)

#: How many leading rows the table format measures to choose its column widths.
TABLE_SAMPLE_ROWS = 1000

BUSY_TIMEOUT_S = 10.0

#: `orchestrator query`'s time limit unless --timeout says otherwise.
DEFAULT_TIMEOUT_S = 30.0

#: Virtual-machine steps between two looks at the clock and at Ctrl-C: a fraction of a millisecond,
#: for a few per cent of the query's time.
PROGRESS_STEPS = 10_000

INTERRUPTED = "query interrupted"


class QueryError(Exception):
    """A query that could not run: a missing file, bad SQL, or an attempt to change the log."""


class QueryTimeout(QueryError):
    """A query that ran longer than its time limit."""


class QueryInterrupted(QueryError):
    """A query stopped by Ctrl-C."""


def _query_error(error: sqlite3.Error, authorizer: Authorizer | None) -> QueryError:
    """sqlite's message, plus what is allowed when the authorizer was the one refusing."""
    message = str(error)
    refused = authorizer.refused if authorizer else None
    if refused and any(words in message for words in ("not authorized", "authorization denied",
                                                      "vtable constructor failed")):
        message += f" (the log is read-only here: {allowed_summary()})"
    return QueryError(message)


# ---------------------------------------------------------------------------------------------
# Time limit and Ctrl-C
# ---------------------------------------------------------------------------------------------


class _CtrlC:
    """Set by the SIGINT handler of ctrl_c_stops_queries; a plain attribute, safe in a handler."""

    pressed = False


_ctrl_c = _CtrlC()


@contextmanager
def ctrl_c_stops_queries() -> Iterator[None]:
    """While inside, Ctrl-C stops the running query with :class:`QueryInterrupted`.

    Python's own handler raises KeyboardInterrupt only when SQLite returns, which an endless query
    never does; this one sets a flag the progress handler reads. Outside the main thread, where
    signals cannot be handled, it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def press(_signum: int, _frame: object) -> None:
        _ctrl_c.pressed = True

    _ctrl_c.pressed = False
    previous = signal.signal(signal.SIGINT, press)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _ctrl_c.pressed = False


class _Watch:
    """How long SQLite has worked on one query, and whether it must stop; its progress handler."""

    def __init__(self, timeout_s: float | None) -> None:
        self.timeout_s = timeout_s
        self.stopped: QueryError | None = None
        self._spent = 0.0
        self._since: float | None = None

    def start(self) -> None:
        if self.timeout_s is not None:
            self._since = time.monotonic()

    def stop(self) -> None:
        if self._since is not None:
            self._spent += time.monotonic() - self._since
            self._since = None

    def progress(self) -> bool:
        """True stops the statement: sqlite3 then raises OperationalError('interrupted').

        SQLite counts the steps across the rows of a statement, so this runs however short each
        row's work is, and Ctrl-C pressed while rows were being written stops the next one.
        """
        if _ctrl_c.pressed:
            self.stopped = QueryInterrupted(INTERRUPTED)
        elif self.timeout_s is not None and self._since is not None:
            if self._spent + time.monotonic() - self._since > self.timeout_s:
                self.stopped = QueryTimeout(f"query stopped after {self.timeout_s:g} s")
        return self.stopped is not None

    def error(self, error: sqlite3.Error, authorizer: Authorizer | None) -> QueryError:
        return self.stopped or _query_error(error, authorizer)


# ---------------------------------------------------------------------------------------------
# Connections
# ---------------------------------------------------------------------------------------------


class LogConnection(sqlite3.Connection):
    """A guarded read-only connection to the log; see :func:`connect_read_only`."""

    authorizer: Authorizer | None = None
    #: The log, when this connection found no -wal beside it and must see it removed on close.
    _tidy: Path | None = None

    def close(self) -> None:
        super().close()
        path, self._tidy = self._tidy, None
        if path is not None and _wal(path).exists():
            _let_sqlite_remove_wal(path)


def _wal(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _let_sqlite_remove_wal(path: Path) -> None:
    """Open and close the log read-write, reading one page: if no one else has it open, SQLite
    checkpoints (nothing: no one wrote) and deletes the -wal and -shm files on that close."""
    try:
        connection = sqlite3.connect(path.as_uri() + "?mode=rw", uri=True, timeout=1.0, isolation_level=None)
    except sqlite3.Error:
        return  # the files stay; SQLite copes with them
    try:
        connection.execute("PRAGMA query_only = ON")
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error:
        pass
    finally:
        connection.close()


def connect_read_only(db_path: Path | str) -> LogConnection:
    """Open an existing log for reading only, with all three guards in place."""
    path = Path(db_path).expanduser()
    if not path.is_file():
        # Checked here because sqlite would otherwise report only "unable to open database file".
        raise QueryError(f"no database at {path}")
    path = path.resolve()
    found_wal = _wal(path).exists()
    try:
        connection = sqlite3.connect(path.as_uri() + "?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S,
                                     isolation_level=None, factory=LogConnection)
    except sqlite3.Error as error:
        raise QueryError(f"cannot open {path}: {error}") from error
    if not found_wal:
        connection._tidy = path
    try:
        # Set before the authorizer is installed, which would deny this pragma too.
        connection.execute("PRAGMA query_only = ON")
        connection.authorizer = guard(connection)
    except sqlite3.Error as error:
        connection.close()
        raise QueryError(f"cannot open {path}: {error}") from error
    return connection


class Rows(Iterator[tuple[Any, ...]]):
    """Rows as sqlite produces them; closes the connection when exhausted, closed or exited."""

    def __init__(self, connection: LogConnection, cursor: sqlite3.Cursor, watch: _Watch | None = None) -> None:
        self._connection = connection
        self._cursor = cursor
        self._watch = watch or _Watch(None)
        self._closed = False

    def __next__(self) -> tuple[Any, ...]:
        if self._closed:
            raise StopIteration
        try:
            self._watch.start()
            return next(self._cursor)
        except StopIteration:
            self.close()
            raise
        except QueryError:
            self.close()
            raise
        except sqlite3.Error as error:
            self.close()
            raise self._watch.error(error, self._connection.authorizer) from error
        finally:
            self._watch.stop()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._connection.close()

    def __enter__(self) -> Rows:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def run_query(
    db_path: Path | str, sql: str, params: Sequence[Any] | dict[str, Any] = (), *, timeout_s: float | None = None,
) -> tuple[list[str], Rows]:
    """Run one read-only statement; return its column names and an iterator over its rows.

    ``timeout_s`` limits the time SQLite spends on the statement, from its first step to its last
    row (:class:`QueryTimeout`); None: no limit. The connection stays open until the rows are
    exhausted or closed (``Rows`` is also a context manager), so a caller that stops early should
    close them.
    """
    connection = connect_read_only(db_path)
    watch = _Watch(timeout_s)
    connection.set_progress_handler(watch.progress, PROGRESS_STEPS)
    try:
        watch.start()
        cursor = connection.execute(sql, params)
    except QueryError:
        connection.close()
        raise
    except sqlite3.Error as error:
        connection.close()
        raise watch.error(error, connection.authorizer) from error
    finally:
        watch.stop()
    columns = [d[0] for d in cursor.description or ()]
    return columns, Rows(connection, cursor, watch)


# ---------------------------------------------------------------------------------------------
# Output formats
# ---------------------------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    # Blobs cannot be JSON; the wrapper is the one sqlite-utils uses, so its tools read it back.
    if isinstance(value, bytes):
        return {"$base64": True, "encoded": base64.b64encode(value).decode("ascii")}
    return value


def _text_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def _unique_keys(columns: Sequence[str]) -> list[str]:
    """JSON object keys for the columns; a repeated name (``a.id, b.id``) gets ``_2``, ``_3``."""
    seen: dict[str, int] = {}
    keys = []
    for name in columns:
        count = seen.get(name, 0) + 1
        seen[name] = count
        keys.append(name if count == 1 else f"{name}_{count}")
    return keys


def write_csv(out: IO[str], columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """CSV with a header row; NULL is written as an empty field."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_text_value(v) for v in row])


def write_jsonl(out: IO[str], columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """One JSON object per line, keyed by column name."""
    keys = _unique_keys(columns)
    for row in rows:
        out.write(json.dumps(dict(zip(keys, map(_json_value, row), strict=True)), ensure_ascii=False))
        out.write("\n")


def write_json(out: TextIO, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A JSON array of objects, written row by row rather than built in memory."""
    keys = _unique_keys(columns)
    out.write("[")
    for index, row in enumerate(rows):
        out.write(",\n " if index else "\n ")
        out.write(json.dumps(dict(zip(keys, map(_json_value, row), strict=True)), ensure_ascii=False))
    out.write("\n]\n")


def write_table(out: TextIO, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Aligned plain text. Widths come from the first rows, so output starts without reading
    everything; a longer value further down simply pushes its line wider."""
    iterator = iter(rows)
    sample = [[_text_value(v) for v in row] for row in islice(iterator, TABLE_SAMPLE_ROWS)]
    widths = [len(name) for name in columns]
    for cells in sample:
        widths = [max(w, len(c)) for w, c in zip(widths, cells, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip() + "\n"

    out.write(line(columns))
    out.write(line(["-" * width for width in widths]))
    rest = ([_text_value(v) for v in row] for row in iterator)
    for cells in chain(sample, rest):
        out.write(line(cells))


_WRITERS = {"table": write_table, "csv": write_csv, "json": write_json, "jsonl": write_jsonl}


def write_rows(
    out: TextIO, columns: Sequence[str], rows: Iterable[Sequence[Any]], fmt: OutputFormat = "table"
) -> None:
    """Write rows in one of :data:`FORMATS`."""
    try:
        writer = _WRITERS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}") from None
    writer(out, columns, rows)
