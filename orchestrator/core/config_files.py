"""Reading the operator's YAML files, with errors that name the file, the line and the field.

Every configuration file (lab, personas, catalog, reply rules) is parsed with PyYAML's composer,
which keeps the line of each node, and validated with a pydantic model. Validation errors are
mapped back to the line of the offending field, and all of them are reported at once.

A configuration file is read within bounds, so a wrong or hostile file is an error and never a
hung or exhausted machine: only a regular file (not a FIFO or a device), at most MAX_CONFIG_BYTES,
nested at most MAX_DEPTH deep, with at most MAX_NODES values and no aliases (`*name`; the project's
files use none, and an alias can expand a small file into gigabytes). `read_limited` is the one
reader of input files; the catalog import reads crawls through it too.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ValidationError

from orchestrator.core.durable import file_kind
from orchestrator.core.safe_text import check_clean, for_terminal

Model = TypeVar("Model", bound=BaseModel)
Loc = tuple[str | int, ...]

#: Bytes a configuration file may hold; the curated catalog's largest file has 8 kB.
MAX_CONFIG_BYTES = 1024 * 1024
#: Levels of nesting, the innermost value counted; the project's files have at most 7.
MAX_DEPTH = 32
#: Values (scalars, lists, mappings) in one file; a catalog file of 40 skills has about 300.
MAX_NODES = 100_000
#: Characters of an integer: longer ones cost quadratic time to convert (sexagesimal `1:2:3:...`),
#: and Python refuses to convert decimal ones of more than 4300 digits anyway.
MAX_INTEGER_CHARS = 4300

#: A field whose words are spoken to an Echo or printed: no control, bidi or zero-width characters.
CleanText = Annotated[str, AfterValidator(check_clean)]


@dataclass(frozen=True)
class Issue:
    file: Path
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        # Printed to the operator's terminal, and a message may quote the file's text.
        where = f"{self.file}:{self.line}" if self.line else f"{self.file}"
        text = f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        return for_terminal(text)


class ConfigError(ValueError):
    """One or more problems in the operator's files; `issues` lists each with its place."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


@dataclass
class Document:
    """A parsed YAML file: its data, and the line where each field was written."""

    path: Path
    data: Any
    lines: dict[Loc, int]

    def line_of(self, loc: Loc) -> int | None:
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return None

    def issue(self, loc: Loc, message: str) -> Issue:
        return Issue(self.path, self.line_of(loc), format_loc(loc), message)


def format_loc(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class UnreadableFile(ValueError):
    """An input file that is not read at all: missing, not a regular file, too large."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def read_limited(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes.

    A FIFO would block the reader forever and a device (/dev/zero) never ends: both are refused
    before they are opened, and the open does not block should the path change in between.
    """
    try:
        _check_regular(path, os.stat(path).st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UnreadableFile(path, "file not found") from None
    except OSError as exc:
        raise UnreadableFile(path, f"cannot read: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        _check_regular(path, os.fstat(fd).st_mode)
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise UnreadableFile(path, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise UnreadableFile(path, f"larger than {format_size(limit)}, the most this file may hold")
    return data


def _check_regular(path: Path, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    raise UnreadableFile(path, f"not a regular file ({file_kind(mode)}); give the path of a file")


def format_size(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


class _Refused(yaml.MarkedYAMLError):
    """YAML that parses, but is more than a configuration file may hold."""

    def __init__(self, problem: str, mark: Any) -> None:  # a yaml Mark, from the pure or the C parser
        super().__init__(problem=problem, problem_mark=mark)


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases and bounding depth, size and integers.

    The composer recurses once per level of nesting, so depth is checked before Python's own
    recursion limit could be reached.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # PyYAML's stubs leave it untyped
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(f"aliases (*{event.anchor}) are not allowed in configuration files; write the value out",
                           event.start_mark)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES} values in one file", event.start_mark)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} deep", event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # A value the constructors cannot convert (an integer too long for int(), a 13th month)
        # raises ValueError without a line; the node knows its line.
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(None, None, f"cannot read the value: {exc}",
                                                    node.start_mark) from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > MAX_INTEGER_CHARS:
            raise _Refused(f"an integer of {len(node.value)} characters; at most {MAX_INTEGER_CHARS}",
                           node.start_mark)
        return super().construct_yaml_int(node)


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def parse_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (with lines) and the data of one YAML document, within the bounds above."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    finally:
        loader.dispose()


def read_document(path: Path) -> Document:
    try:
        raw = read_limited(path, MAX_CONFIG_BYTES)
    except UnreadableFile as exc:
        raise ConfigError([Issue(path, None, "", exc.reason)]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([Issue(path, line, "", f"cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})")
                           ]) from None
    try:
        node, data = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_issue(path, exc)]) from None
    lines: dict[Loc, int] = {}
    issues: list[Issue] = []
    if node is not None:
        _collect_lines(node, (), lines, path, issues)
    if issues:
        raise ConfigError(issues)
    return Document(path, data, lines)


def _yaml_issue(path: Path, exc: yaml.YAMLError) -> Issue:
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    # An unclosed quote or bracket is reported where the parser gave up (often past the end of
    # the file); where it was opened is what the operator needs.
    mark = getattr(exc, "context_mark", None) if context else None
    mark = mark or getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    detail = f"{context}: {problem}" if context else problem
    return Issue(path, line, "", detail if isinstance(exc, _Refused) else f"not valid YAML: {detail}")


def _collect_lines(node: yaml.Node, loc: Loc, lines: dict[Loc, int], path: Path, issues: list[Issue]) -> None:
    """Record the line of every field; a key given twice is an error (YAML would keep the last)."""
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*loc, str(key.value))
            if child in lines and child != loc:
                issues.append(Issue(path, key.start_mark.line + 1, format_loc(child),
                                    f"given twice (first on line {lines[child]})"))
                continue
            lines[child] = key.start_mark.line + 1
            _collect_lines(value, child, lines, path, issues)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _collect_lines(item, (*loc, index), lines, path, issues)


def validate(document: Document, model: type[Model]) -> Model:
    """Validate a document against a pydantic model; every error is reported with its line."""
    try:
        return model.model_validate(document.data if document.data is not None else {})
    except ValidationError as exc:
        raise ConfigError([_issue_from(document, err) for err in exc.errors()]) from None


def load(path: Path, model: type[Model]) -> Model:
    return validate(read_document(path), model)


def _issue_from(document: Document, error: Any) -> Issue:
    loc = tuple(part for part in error["loc"] if not _is_union_tag(part))
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field (check its spelling)"
    return document.issue(loc, message)


#: Names pydantic adds to a location for the tagged-union member it tried ("EnableStep").
UNION_TAGS: set[str] = set()


def _is_union_tag(part: str | int) -> bool:
    return isinstance(part, str) and part in UNION_TAGS
