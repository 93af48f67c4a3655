"""Export a whole table or view of the log to CSV, JSON lines or Parquet, streaming.

Rows are read from one read-only cursor and written as they come (Parquet: turned into Arrow
arrays 10,000 at a time, one row group per 100,000 rows), so memory stays flat however many
millions of rows the log holds. The output is written to a temporary file beside ``FILE`` and
renamed over it at the end (:mod:`orchestrator.core.durable`): an interrupted export, or one that
fills the disk, leaves no file that looks complete and any earlier ``FILE`` as it was. A device,
a FIFO or a symbolic link at ``FILE``, or a folder that does not exist, is refused.

CSV output is for spreadsheets, which run a cell starting with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return as a formula: such text cells (and column names) get a leading ``'``
(:func:`orchestrator.safe_text.csv_cell`). JSON lines and Parquet keep every value as it is.

Parquet needs pyarrow, an optional dependency (``pip install 'echo-orchestrator[parquet]'``).
Column types come from the declared SQLite types (INTEGER, FLOAT, BOOLEAN, TEXT); view columns
computed by an expression have none, so their type is taken from the first rows read. The log's
text that has a type of its own gets it, so that pandas, DuckDB or Arrow read it without parsing:
instants (columns ending in ``_at``, and ``scheduled_for``) become UTC timestamps, ``night`` a
date, and a reply's words (``words_json``) a list of structs (word, start, end, conf). In JSON
lines the words are an array, not a string holding one; CSV keeps the log's text.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from orchestrator.analysis.query import QueryError, connect_read_only, run_query, write_csv, write_jsonl
from orchestrator.core.durable import check_target, replacing_file
from orchestrator.core.safe_text import csv_columns, csv_rows

if TYPE_CHECKING:
    import pyarrow as pa

ExportFormat = Literal["csv", "jsonl", "parquet"]
EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)

#: Rows per Parquet row group: large enough for good compression and fast reads.
ROW_GROUP_ROWS = 100_000
#: Rows read from SQLite at a time: Python holds a row in far more memory than Arrow does.
READ_ROWS = 10_000

PARQUET_EXTRA_HINT = "pip install 'echo-orchestrator[parquet]'"


class ExportError(QueryError):
    """An export that cannot be done: unknown table, missing pyarrow, a value of the wrong type."""


class ExportRequestError(ExportError):
    """What was asked for cannot be done as asked: unknown table or view, unknown format, Parquet to stdout."""


def format_for(path: Path, fmt: str | None) -> ExportFormat:
    """The format asked for, or the one the file's suffix names (``.csv``, ``.jsonl``, ``.parquet``)."""
    chosen = fmt or path.suffix.lstrip(".").lower()
    if chosen not in EXPORT_FORMATS:
        raise ExportRequestError(f"cannot tell the format of {path}: pass --format {'|'.join(EXPORT_FORMATS)}")
    return chosen  # type: ignore[return-value]


def relations(db_path: Path | str) -> dict[str, str]:
    """Every table and view of the log with its kind, ``'table'`` or ``'view'``."""
    _, rows = run_query(
        db_path,
        "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
        "AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    with rows:
        return dict(rows)


def declared_types(db_path: Path | str, name: str) -> list[tuple[str, str]]:
    """Each column of a table or view with its declared type (``''`` for computed view columns)."""
    connection = connect_read_only(db_path)
    try:
        quoted = name.replace('"', '""')
        return [(row[1], row[2]) for row in connection.execute(f'PRAGMA table_info("{quoted}")')]
    finally:
        connection.close()


def _checked_relation(db_path: Path | str, name: str) -> None:
    known = relations(db_path)
    if name not in known:
        raise ExportRequestError(f"no table or view called {name!r}; the log has: {', '.join(known)}")


def _select_all(name: str) -> str:
    quoted = name.replace('"', '""')
    return f'SELECT * FROM "{quoted}"'


def export(
    db_path: Path | str, name: str, out: Path | str, fmt: ExportFormat, *,
    row_group_rows: int = ROW_GROUP_ROWS, read_rows: int = READ_ROWS,
) -> int:
    """Write every row of table or view ``name`` to ``out`` (``'-'``: stdout, not for Parquet).

    Returns the number of rows written.
    """
    if str(out) != "-":
        check_target(Path(out))  # a target that cannot be replaced is refused before the log is opened
    _checked_relation(db_path, name)
    if fmt == "parquet":
        if str(out) == "-":
            raise ExportRequestError("Parquet cannot be written to stdout; give a file with --out")
        return _export_parquet(db_path, name, Path(out), row_group_rows, read_rows)
    columns, rows = run_query(db_path, _select_all(name))
    counted = _Counter(rows)
    header, cells = (csv_columns(columns), csv_rows(counted)) if fmt == "csv" else (columns, _json_words(columns,
                                                                                                       counted))
    writer = write_csv if fmt == "csv" else write_jsonl
    with rows:
        if str(out) == "-":
            writer(sys.stdout, header, cells)
        else:
            with replacing_file(Path(out)) as handle:
                writer(handle, header, cells)
    return counted.count


class _Counter(Iterator[tuple[Any, ...]]):
    """Counts rows as a writer consumes them."""

    def __init__(self, rows: Iterator[tuple[Any, ...]]) -> None:
        self._rows = rows
        self.count = 0

    def __next__(self) -> tuple[Any, ...]:
        row = next(self._rows)
        self.count += 1
        return row


# ---------------------------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------------------------


#: Text columns of the log whose values are the JSON list of a reply's recognised words.
WORD_COLUMNS = frozenset({"words_json"})
#: Text columns of the log that hold dates.
DATE_COLUMNS = frozenset({"night"})


def is_instant(column: str) -> bool:
    """A column of the log holding an instant as ISO-8601 UTC text."""
    return column.endswith("_at") or column == "scheduled_for"


def _json_words(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[Sequence[Any]]:
    """Rows whose word lists are lists, not the JSON text the log stores them as."""
    where = [i for i, column in enumerate(columns) if column in WORD_COLUMNS]
    for row in rows:
        if not where:
            yield row
            continue
        cells = list(row)
        for i in where:
            cells[i] = json.loads(cells[i]) if isinstance(cells[i], str) else cells[i]
        yield cells


def _import_pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ExportError(f"Parquet export needs pyarrow, which is not installed: {PARQUET_EXTRA_HINT}") from None
    return pyarrow


def _arrow_type(pa: Any, declared: str) -> pa.DataType | None:
    """The Arrow type for a declared SQLite type, by SQLite's own affinity rules; None if undeclared."""
    upper = declared.upper()
    if upper.startswith("BOOL"):
        return pa.bool_()
    if "INT" in upper:
        return pa.int64()
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")):
        return pa.string()
    if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
        return pa.float64()
    if "BLOB" in upper:
        return pa.binary()
    return None


def _inferred_type(pa: Any, values: Iterable[Any]) -> pa.DataType:
    """The Arrow type for a computed column, from the Python types sqlite returned for it."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds or kinds == {str}:
        return pa.string()
    if kinds <= {int}:
        return pa.int64()
    if kinds <= {int, float}:
        return pa.float64()
    if kinds == {bytes}:
        return pa.binary()
    return pa.string()


def _named_type(pa: Any, column: str) -> pa.DataType | None:
    """The Arrow type of a column whose name says what its text holds (see the module's docstring)."""
    if is_instant(column):
        return pa.timestamp("us", tz="UTC")
    if column in DATE_COLUMNS:
        return pa.date32()
    if column in WORD_COLUMNS:
        return pa.list_(pa.struct([("word", pa.string()), ("start", pa.float64()), ("end", pa.float64()),
                                   ("conf", pa.float64())]))
    return None


def _typed(pa: Any, values: Sequence[Any], type_: pa.DataType) -> list[Any]:
    """The log's text of instants, dates and word lists as the Python values Arrow takes for them."""
    if pa.types.is_timestamp(type_):
        return [None if v is None else datetime.fromisoformat(v) for v in values]
    if pa.types.is_date32(type_):
        return [None if v is None else date.fromisoformat(v) for v in values]
    return [None if v is None else json.loads(v) for v in values]


def _arrow_column(pa: Any, name: str, values: Sequence[Any], type_: pa.DataType) -> pa.Array:
    try:
        if pa.types.is_timestamp(type_) or pa.types.is_date32(type_) or pa.types.is_list(type_):
            return pa.array(_typed(pa, values, type_), type=type_)
        if type_ == pa.bool_():
            # sqlite stores booleans as 0/1, which Arrow will not take as bool directly.
            return pa.array(values, type=pa.int64()).cast(pa.bool_())
        if type_ == pa.string():
            return _string_column(pa, values)
        return pa.array(values, type=type_)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ValueError, TypeError) as error:
        raise ExportError(f"column {name!r} holds a value that is not {type_}: {error}") from None


def _string_column(pa: Any, values: Sequence[Any]) -> pa.Array:
    """Text as is; a number that SQLite's dynamic typing let into a text column as its text."""
    try:
        return pa.array(values, type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([v if v is None or isinstance(v, str) else str(v) for v in values], type=pa.string())


def _schema(pa: Any, columns: Sequence[str], declared: Sequence[tuple[str, str]],
            first: Sequence[Sequence[Any]]) -> pa.Schema:
    transposed = list(zip(*first, strict=True)) if first else [() for _ in columns]
    types = [
        _named_type(pa, column) or _arrow_type(pa, decl) or _inferred_type(pa, values)
        for column, (_, decl), values in zip(columns, declared, transposed, strict=True)
    ]
    return pa.schema([pa.field(column, type_) for column, type_ in zip(columns, types, strict=True)])


def _record_batch(pa: Any, schema: pa.Schema, rows: Sequence[Sequence[Any]]) -> pa.RecordBatch:
    transposed = list(zip(*rows, strict=True))
    arrays = [_arrow_column(pa, f.name, values, f.type) for f, values in zip(schema, transposed, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _export_parquet(db_path: Path | str, name: str, out: Path, row_group_rows: int, read_rows: int) -> int:
    """Rows are turned into Arrow arrays ``read_rows`` at a time, which hold them far more compactly
    than Python tuples, and written once a row group is full."""
    pa = _import_pyarrow()
    declared = declared_types(db_path, name)
    columns, rows = run_query(db_path, _select_all(name))
    written = 0
    with rows, replacing_file(out, binary=True) as handle:
        batch = list(islice(rows, min(read_rows, row_group_rows)))
        schema = _schema(pa, columns, declared, batch)
        with pa.parquet.ParquetWriter(handle, schema, compression="zstd") as writer:
            group: list[Any] = []  # pyarrow RecordBatches
            grouped = 0
            while batch:
                group.append(_record_batch(pa, schema, batch))
                grouped += len(batch)
                if grouped == row_group_rows:
                    writer.write_table(pa.Table.from_batches(group, schema), row_group_size=row_group_rows)
                    written += grouped
                    group, grouped = [], 0
                batch = list(islice(rows, min(read_rows, row_group_rows - grouped)))
            if group or not written:
                writer.write_table(pa.Table.from_batches(group, schema), row_group_size=row_group_rows)
                written += grouped
    return written
