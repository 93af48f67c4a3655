"""Reading the operator's YAML files, with errors that name the file, the line and the field.

Every configuration file (lab, personas, catalog) is parsed with PyYAML's composer, which keeps the
line of each node, and validated with a pydantic model. Validation errors are mapped back to the
line of the offending field, and all of them are reported at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Issue:
    file: Path
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else f"{self.file}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


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


def read_document(path: Path) -> Document:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Issue(path, None, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Issue(path, None, "", f"cannot read: {exc}")]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
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
    return Issue(path, line, "", f"not valid YAML: {detail}")


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
