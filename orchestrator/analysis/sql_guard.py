"""What an analyst's SQL may do with the log: read it, and nothing else.

SQLite asks an *authorizer* about every action while it prepares a statement; this one answers
from allow-lists, so whatever SQLite adds later is refused until someone decides otherwise:

* reading any table or view, ``SELECT``, ``WITH`` and recursive CTEs;
* the usual scalar, aggregate, window, date and time, math and JSON functions, by name: not
  ``fts3_tokenizer`` (which hands out and accepts raw memory addresses), ``load_extension``,
  ``randomblob``/``zeroblob`` (gigabytes in one call), or anything a plugin registers unasked;
* ``json_each`` and ``json_tree``, and the pragmas below in their table-valued form
  (``pragma_table_info('runs')``);
* pragmas that describe the schema or check the file, with any argument (``table_info(runs)``,
  ``integrity_check``), and pragmas that report a setting, without one (``user_version``, but not
  ``user_version = 3``).

Writes, ``ATTACH``, ``VACUUM INTO``, transactions and every other pragma are denied.

Both ``orchestrator query`` and the Datasette of ``orchestrator browse`` guard their connections
with :func:`guard`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field

_CORE = """abs char coalesce concat concat_ws format glob hex ifnull iif instr length like likelihood likely
    lower ltrim max min nullif octet_length printf quote random replace round rtrim sign soundex substr
    substring trim typeof unhex unicode unlikely upper sqlite_version sqlite_source_id"""
_AGGREGATE_AND_WINDOW = """avg count group_concat string_agg sum total row_number rank dense_rank percent_rank
    cume_dist ntile lag lead first_value last_value nth_value"""
_DATE_AND_TIME = "date time datetime julianday unixepoch strftime timediff current_date current_time current_timestamp"
_MATH = """acos acosh asin asinh atan atan2 atanh ceil ceiling cos cosh degrees exp floor ln log log10 log2 mod
    pi pow power radians sin sinh sqrt tan tanh trunc"""
_JSON = """json json_array json_array_length json_error_position json_extract json_insert json_object json_patch
    json_pretty json_quote json_remove json_replace json_set json_type json_valid json_group_array
    json_group_object -> ->>"""

#: SQL functions a query may call (``->`` and ``->>`` are how SQLite names the JSON operators).
FUNCTIONS = frozenset(" ".join((_CORE, _AGGREGATE_AND_WINDOW, _DATE_AND_TIME, _MATH, _JSON)).split())

#: Table-valued functions a query may read from, besides the pragmas'.
TABLE_FUNCTIONS = ("json_each", "json_tree")

#: Pragmas that describe the schema or check the file, whatever argument they are given.
DESCRIBING_PRAGMAS = frozenset(
    """table_info table_xinfo table_list index_list index_info index_xinfo foreign_key_list
    foreign_key_check integrity_check quick_check""".split()
)

#: Pragmas that report a setting when given no argument (and would change it when given one).
SETTING_PRAGMAS = frozenset(
    """application_id collation_list compile_options data_version database_list encoding freelist_count
    function_list journal_mode max_page_count module_list page_count page_size pragma_list schema_version
    user_version""".split()
)


def allowed_pragma(name: str, argument: str | None) -> bool:
    name = name.lower()
    return name in DESCRIBING_PRAGMAS or (name in SETTING_PRAGMAS and argument is None)


@dataclass
class Authorizer:
    """The authorizer callback; remembers what it refused last, so the error can say."""

    functions: frozenset[str] = FUNCTIONS
    refused: str | None = field(default=None, init=False)

    def __call__(self, action: int, arg1: str | None, arg2: str | None, _db: str | None,
                 _source: str | None) -> int:
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION and arg2 is not None and arg2.lower() in self.functions:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA and arg1 is not None and allowed_pragma(arg1, arg2):
            return sqlite3.SQLITE_OK
        self.refused = _describe(action, arg1, arg2)
        return sqlite3.SQLITE_DENY


_ACTION_NAMES = {
    getattr(sqlite3, name): name.removeprefix("SQLITE_").replace("_", " ")
    for name in dir(sqlite3)
    if name.startswith("SQLITE_") and name not in ("SQLITE_OK", "SQLITE_DENY", "SQLITE_IGNORE")
    and isinstance(getattr(sqlite3, name), int)
}


def _describe(action: int, arg1: str | None, arg2: str | None) -> str:
    if action == sqlite3.SQLITE_FUNCTION:
        return f"the function {arg2}()"
    if action == sqlite3.SQLITE_PRAGMA:
        return f"PRAGMA {arg1}" + (f" = {arg2}" if arg2 is not None else "")
    name = _ACTION_NAMES.get(action, str(action))
    return f"{name} {arg1}" if arg1 else name


#: The largest string or blob a query may make or read: far above any cell of the log (a reply's
#: words are a few kB), far below what would exhaust the machine's memory.
MAX_VALUE_BYTES = 16 * 2**20


def allowed_summary() -> str:
    return (f"SELECT and WITH over tables and views, the usual functions, json_each and json_tree, "
            f"PRAGMA {', '.join(sorted(DESCRIBING_PRAGMAS))}, and reading a setting such as PRAGMA user_version")


def guard(connection: sqlite3.Connection, extra_functions: Iterable[str] = ()) -> Authorizer:
    """Install the authorizer on ``connection``; ``extra_functions`` are the host's own harmless ones."""
    # SQLite builds a table-valued function's table the first time a connection uses it, and asks
    # the authorizer to let that build update sqlite_master: built here, before there is an
    # authorizer, the tables stay built for the connection's life, and no update is ever allowed.
    for name in (*TABLE_FUNCTIONS, *(f"pragma_{pragma}" for pragma in DESCRIBING_PRAGMAS | SETTING_PRAGMAS)):
        try:
            connection.execute(f"SELECT * FROM {name} WHERE 0").close()
        except sqlite3.OperationalError:
            pass  # not in this SQLite: a query naming it gets "no such table"
    authorizer = Authorizer(FUNCTIONS | {name.lower() for name in extra_functions})
    connection.set_authorizer(authorizer)
    # A query may not build strings or blobs beyond this, as printf('%.*c', 1000000000, 'x') would.
    connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    return authorizer
