"""Read-only SQL over the interaction log, for analysts (``orchestrator query "SELECT ..."``).

Three independent guards keep a query from changing the log while the lab writes to it:

1. the file is opened through a ``file:...?mode=ro`` URI, so SQLite refuses any write;
2. ``PRAGMA query_only`` is switched on before the user's SQL runs;
3. an authorizer admits only reading actions (SELECT, column reads, functions, recursive CTEs and
   a few introspection pragmas) and denies everything else *while the statement is prepared*,
   so ``ATTACH``, ``VACUUM INTO`` (which would write a new file) and pragma writes such as
   ``PRAGMA journal_mode=DELETE`` are refused before they can run.

Rows are streamed from the cursor, never fetched all at once, so a query over millions of
interactions prints with flat memory. Table-valued pragma functions (``pragma_table_info(...)``)
are refused because SQLite prepares them with schema-update actions; the statement form
``PRAGMA table_info(interactions)`` works.
"""

from __future__ import annotations

import base64
import csv
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, islice
from pathlib import Path
from typing import Any, Literal, TextIO, get_args

OutputFormat = Literal["table", "csv", "json", "jsonl"]
FORMATS: tuple[str, ...] = get_args(OutputFormat)

#: Pragmas that only report on the schema or the library, whatever argument they are given.
READ_ONLY_PRAGMAS = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "collation_list",
        "function_list",
        "compile_options",
        "database_list",
    }
)

_READING_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)

#: How many leading rows the table format measures to choose its column widths.
TABLE_SAMPLE_ROWS = 1000

BUSY_TIMEOUT_S = 10.0


class QueryError(Exception):
    """A query that could not run: a missing file, bad SQL, or an attempt to change the log."""


def _query_error(error: sqlite3.Error) -> QueryError:
    """sqlite's message, plus what is allowed when the authorizer was the one refusing."""
    message = str(error)
    if message in ("not authorized", "authorization denied"):
        pragmas = ", ".join(sorted(READ_ONLY_PRAGMAS))
        message += f" (the log is read-only here: SELECT/WITH queries and PRAGMA {pragmas})"
    return QueryError(message)


def _authorize(
    action: int, arg1: str | None, arg2: str | None, db_name: str | None, trigger: str | None
) -> int:
    """sqlite3 authorizer callback: allow reading, deny everything else."""
    if action in _READING_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and arg1 is not None and arg1.lower() in READ_ONLY_PRAGMAS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def connect_read_only(db_path: Path | str) -> sqlite3.Connection:
    """Open an existing log for reading only, with all three guards in place."""
    path = Path(db_path).expanduser()
    if not path.is_file():
        # Checked here because sqlite would otherwise report only "unable to open database file".
        raise QueryError(f"no database at {path}")
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        # Set before the authorizer is installed, which would deny this pragma too.
        connection.execute("PRAGMA query_only = ON")
    except sqlite3.Error as error:
        raise QueryError(f"cannot open {path}: {error}") from error
    connection.set_authorizer(_authorize)
    return connection


class Rows(Iterator[tuple[Any, ...]]):
    """Rows as sqlite produces them; closes the connection when exhausted, closed or exited."""

    def __init__(self, connection: sqlite3.Connection, cursor: sqlite3.Cursor) -> None:
        self._connection = connection
        self._cursor = cursor
        self._closed = False

    def __next__(self) -> tuple[Any, ...]:
        if self._closed:
            raise StopIteration
        try:
            return next(self._cursor)
        except StopIteration:
            self.close()
            raise
        except sqlite3.Error as error:
            self.close()
            raise _query_error(error) from error

    def close(self) -> None:
        self._closed = True
        self._connection.close()

    def __enter__(self) -> Rows:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def run_query(
    db_path: Path | str, sql: str, params: Sequence[Any] | dict[str, Any] = ()
) -> tuple[list[str], Rows]:
    """Run one read-only statement; return its column names and an iterator over its rows.

    The connection stays open until the rows are exhausted or closed (``Rows`` is also a context
    manager), so a caller that stops early should close them.
    """
    connection = connect_read_only(db_path)
    try:
        cursor = connection.execute(sql, params)
    except sqlite3.Error as error:
        connection.close()
        raise _query_error(error) from error
    columns = [d[0] for d in cursor.description or ()]
    return columns, Rows(connection, cursor)


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


def write_csv(out: TextIO, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """CSV with a header row; NULL is written as an empty field."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_text_value(v) for v in row])


def write_jsonl(out: TextIO, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
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
