"""The Datasette plugin of ``orchestrator browse``, loaded into its Datasette through ``--plugins-dir``.

* Every connection Datasette opens gets the authorizer of :mod:`orchestrator.analysis.sql_guard`, the
  one ``orchestrator query`` has: Datasette lets only SELECT statements through, but calls
  whatever function they name, ``fts3_tokenizer`` among them.
* Every audio column (a step's prompt and reply) is shown as a player; its sound is served by
  ``/-/audio/DATABASE/STEP_ID/prompt|reply``, read-only, only from inside the step's run's audio
  folder (a path that would leave it is refused, as `orchestrator audio` refuses it).
* ``/-/night/DATABASE`` is the night page of ``orchestrator report night --html`` (``?night=YYYY-MM-DD``
  for another night than the latest, ``&persona=NAME`` for one persona), its audio played from that route.
* Table pages open on their rows: the column descriptions move below them, folded, and onto the
  column headers; a reply's ``words_json`` is folded to its word count.
* A refused query or a missing page is logged as the one line of the access log. Datasette's own
  exception handler prints every exception, 4xx included, as a traceback with its local variables
  (rows of the log among them) whenever ``rich`` can be imported, which it can here; told that
  rich is missing, it prints tracebacks of server errors only, plainly.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from html import escape
from typing import TYPE_CHECKING, Any

from datasette import handle_exception as default_exception_handler
from datasette import hookimpl
from datasette.utils.asgi import Response
from markupsafe import Markup

from orchestrator.analysis import night_page, step_audio
from orchestrator.analysis.reports import ReportError, check_date
from orchestrator.analysis.sql_guard import guard

if TYPE_CHECKING:
    from datasette.app import Datasette

#: SQL functions Datasette registers itself and calls from its pages (table search).
DATASETTE_FUNCTIONS = ("escape_fts",)

#: The tables and views with audio columns, and the column that holds each row's step id.
STEP_ID_COLUMN = {"interactions": "id", "interaction_details": "interaction_id"}
#: Audio columns, and which of a step's two sounds each holds.
AUDIO_COLUMNS = {"prompt_audio": "prompt", "response_audio": "reply", "prompt_audio_path": "prompt",
                 "response_audio_path": "reply"}
AUDIO_ROUTE = r"^/-/audio/(?P<database>[^/]+)/(?P<step_id>[0-9]+)/(?P<which>prompt|reply)\.wav$"
#: The night page of `orchestrator report night --html`, its audio played through AUDIO_ROUTE.
NIGHT_ROUTE = r"^/-/night/(?P<database>[^/]+)$"

#: The column of a reply's words with their timings, as JSON.
WORDS_COLUMN = "words_json"

# Datasette lists every column's description above a table's rows: thirty lines before the first row.
# This moves the list below the rows, folded, and puts each description on its column's header.
# (Datasette has no setting for it, and its table template puts the list inside its one content block.)
ROWS_FIRST_SCRIPT = """
(function () {
  // Long texts wrap in a wider column instead of making their row a screen tall.
  var style = document.createElement("style");
  style.textContent = "td.col-transcript, td.col-error, td.col-reply_transcript { min-width: 22em; }";
  document.head.appendChild(style);
})();
document.querySelectorAll("th[data-column-description]").forEach(function (th) {
  th.title = th.dataset.columnDescription;
});
(function () {
  var list = document.querySelector("dl.column-descriptions");
  if (!list) return;
  var folded = document.createElement("details");
  folded.className = "column-descriptions";
  var summary = document.createElement("summary");
  summary.textContent = "What the columns mean";
  folded.appendChild(summary);
  var rows = document.querySelector(".table-wrapper, p.zero-results");
  list.parentNode.insertBefore(folded, list);
  folded.appendChild(list);
  if (rows) rows.parentNode.insertBefore(folded, rows.nextSibling);
})();
"""

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


@hookimpl  # type: ignore[untyped-decorator]
def render_cell(row: Any, value: Any, column: str, table: str | None, database: str,
                datasette: Datasette) -> Markup | None:
    if column == WORDS_COLUMN and isinstance(value, str):
        return folded_words(value)
    which = AUDIO_COLUMNS.get(column)
    id_column = STEP_ID_COLUMN.get(table or "")
    if which is None or id_column is None or not value or id_column not in row.keys():
        return None
    url = datasette.urls.path(f"/-/audio/{database}/{int(row[id_column])}/{which}.wav")
    return Markup(f'<audio controls preload="none" src="{escape(url)}" title="{escape(str(value))}"></audio>')


def folded_words(value: str) -> Markup:
    """A reply's words with their timings, folded to one line: unfolded, they make every row a page tall."""
    try:
        words = len(json.loads(value))
        count = f"{words} word" if words == 1 else f"{words} words"
    except (ValueError, TypeError):
        count = "words"
    return Markup(f"<details><summary>{escape(count)}</summary><code>{escape(value)}</code></details>")


@hookimpl  # type: ignore[untyped-decorator]
def extra_body_script(template: str) -> str:
    return ROWS_FIRST_SCRIPT if template == "table.html" else ""


@hookimpl  # type: ignore[untyped-decorator]
def register_routes(datasette: Datasette) -> list[tuple[str, Any]]:
    async def serve_audio(request: Any) -> Response:
        names = request.url_vars
        if names["database"] not in datasette.databases or names["database"] == INTERNAL_DATABASE:
            return Response.text("no such database", status=404)
        path = datasette.get_database(names["database"]).path
        try:
            # In a thread: the step is looked up with a query of its own, and the file read whole.
            found = await asyncio.to_thread(step_audio.find, path, int(names["step_id"]))
        except step_audio.StepAudioError as exc:
            return Response.text(str(exc), status=404)
        sound = found.prompt if names["which"] == "prompt" else found.reply
        if sound is None:
            return Response.text("this step has no such audio", status=404)
        body = await asyncio.to_thread(sound.read_bytes)
        return Response(body, content_type="audio/wav", headers={"Cache-Control": "private, max-age=3600"})

    async def serve_night(request: Any) -> Response:
        database = request.url_vars["database"]
        if database not in datasette.databases or database == INTERNAL_DATABASE:
            return Response.text("no such database", status=404)
        try:
            night = check_date(request.args["night"]) if request.args.get("night") else None
        except ReportError as exc:
            return Response.text(f"night: {exc}", status=400)
        links = night_page.route_links(datasette.urls.path(f"/-/audio/{database}"))
        path = datasette.get_database(database).path
        made = await asyncio.to_thread(night_page.page, path, links, night, request.args.get("persona") or None)
        if made is None:
            return Response.text("no runs in this log yet: nothing to show", status=404)
        return Response.html(made[1])

    return [(AUDIO_ROUTE, serve_audio), (NIGHT_ROUTE, serve_night)]
