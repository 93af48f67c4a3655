"""The Datasette plugin of ``orchestrator browse``, loaded into its Datasette through ``--plugins-dir``.

* Every connection Datasette opens gets the authorizer of :mod:`orchestrator.analysis.sql_guard`, the
  one ``orchestrator query`` has: Datasette lets only SELECT statements through, but calls
  whatever function they name, ``fts3_tokenizer`` among them.
* A refused query or a missing page is logged as the one line of the access log. Datasette's own
  exception handler prints every exception, 4xx included, as a traceback with its local variables
  (rows of the log among them) whenever ``rich`` can be imported, which it can here; told that
  rich is missing, it prints tracebacks of server errors only, plainly.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from datasette import handle_exception as default_exception_handler
from datasette import hookimpl

from orchestrator.analysis.sql_guard import guard

if TYPE_CHECKING:
    from datasette.app import Datasette

#: SQL functions Datasette registers itself and calls from its pages (table search).
DATASETTE_FUNCTIONS = ("escape_fts",)

#: Datasette's own bookkeeping database: it writes there, and no visitor can query it.
INTERNAL_DATABASE = "_internal"

# As if rich were not installed: Datasette then prints tracebacks of server errors only (see above).
default_exception_handler.rich = None


@hookimpl  # type: ignore[untyped-decorator]
def prepare_connection(conn: sqlite3.Connection, database: str, datasette: Datasette) -> None:
    # Every database a visitor can query. Not the scratch connection Datasette opens for its
    # /-/versions page, under a name it does not serve, to try creating tables of each FTS version.
    if database in datasette.databases and database != INTERNAL_DATABASE:
        guard(conn, DATASETTE_FUNCTIONS)
