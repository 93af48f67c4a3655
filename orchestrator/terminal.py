"""Where the operator reads: stderr, formatted by rich, never mixed into data on stdout."""

from __future__ import annotations

from rich.console import Console


def operator_console() -> Console:
    """Messages on stderr; wide lines in logs, where there is no terminal to fit."""
    probe = Console(stderr=True)
    return Console(stderr=True, highlight=False, width=None if probe.is_terminal else 140)
