"""The `orchestrator` command: its commands (main and one module per group), shared options, and the
operator's progress display."""
