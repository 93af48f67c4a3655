"""Reading the log, never writing it: read-only SQL (query, guarded by sql_guard), exports, reports,
the night page, and the Datasette web view (web, web_plugin)."""
