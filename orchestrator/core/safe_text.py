"""Text from files and from the log, made safe for where it goes: speech, a terminal, a spreadsheet.

* Words the Echos hear (catalog names, invocation names, sample utterances, a persona's `say`,
  `ask` and `listen`) must not hold characters a terminal acts on (C0 and C1 controls, DEL: an
  ESC can clear the screen or rewrite what a dry run shows) or that hide or reorder text (bidi
  controls such as U+202E, zero-width characters): `check_clean` refuses them when the files are
  validated (config_files.CleanText). This module imports nothing heavy: `query` starts fast.
* Anything printed to a terminal from data goes through `for_terminal`, which shows such
  characters as escapes (`\\x1b`, `\\u202e`) instead of letting the terminal act on them.
* A CSV cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return is run as a formula by
  spreadsheet programs (`=HYPERLINK(...)`); `csv_cell` prefixes it with a single quote, as the
  OWASP advice on CSV injection says.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

#: C0 controls but tab and newline, DEL, and the C1 controls (U+009B is a CSI to some terminals).
CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f"
#: Characters that reorder the text around them (the "Trojan Source" ones, and the marks).
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
#: Characters that take no room: two strings that look the same can differ by them.
ZERO_WIDTH = "\u200b-\u200d\u2060\ufeff"

UNSAFE = re.compile(f"[{CONTROLS}{BIDI_CONTROLS}{ZERO_WIDTH}]")
#: What a terminal line must not hold: the above, and line breaks, which could fake further lines.
UNSAFE_ON_A_LINE = re.compile(f"[\t\n{CONTROLS}{BIDI_CONTROLS}{ZERO_WIDTH}\u2028\u2029]")

#: First characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def describe(char: str) -> str:
    """``U+202E (RIGHT-TO-LEFT OVERRIDE)``; controls have no Unicode name, so they are called that."""
    return f"U+{ord(char):04X} ({unicodedata.name(char, 'a control character')})"


def check_clean(value: str) -> str:
    """`value` unchanged, or ValueError naming the first character that may not be in it."""
    found = UNSAFE.search(value)
    if found is not None:
        raise ValueError(f"contains {describe(found.group())} at character {found.start() + 1}; "
                         "control, bidirectional and zero-width characters are not allowed")
    return value


def _escape(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def for_terminal(value: Any) -> str:
    """`value` as text for one line of a terminal: every unsafe character and line break escaped."""
    text = value if isinstance(value, str) else "" if value is None else str(value)
    return UNSAFE_ON_A_LINE.sub(_escape, text)


def terminal_rows(rows: Iterable[Sequence[Any]]) -> Iterator[tuple[Any, ...]]:
    """Rows for a table on a terminal: text escaped, numbers and NULLs left for the writer to show."""
    for row in rows:
        yield tuple(for_terminal(v) if isinstance(v, str) else v for v in row)


def csv_cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, with a leading ``'``; anything else unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_rows(rows: Iterable[Sequence[Any]]) -> Iterator[tuple[Any, ...]]:
    """Rows for CSV output, every text cell through `csv_cell` (numbers, however negative, stay numbers)."""
    for row in rows:
        yield tuple(map(csv_cell, row))


def csv_columns(columns: Sequence[str]) -> list[str]:
    """The header row for CSV output: a column may be named anything in SQL (``AS "=1+1"``)."""
    return [csv_cell(name) for name in columns]


def for_output(columns: Sequence[str], rows: Iterable[Sequence[Any]],
               fmt: str) -> tuple[list[str], Iterable[Sequence[Any]]]:
    """Columns and rows as `query.write_rows` should get them for `fmt`: CSV cells neutralised,
    a table's text escaped for the terminal, JSON as it is (for programs; its encoder escapes C0)."""
    if fmt == "csv":
        return csv_columns(columns), csv_rows(rows)
    if fmt == "table":
        return [for_terminal(name) for name in columns], terminal_rows(rows)
    return list(columns), rows
