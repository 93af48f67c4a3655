"""Checking a lab's files together before a night: lab file, catalog and personas.

Each file is checked on its own, then against the others (a persona's Echo must exist in the lab
file). Every problem found is reported in one `ConfigError`, so an operator fixes them all at once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from orchestrator.catalog.skills import Catalog, load_catalog
from orchestrator.core.config_files import ConfigError, Issue
from orchestrator.lab.config import LabConfig, load_lab
from orchestrator.plan.persona import LoadedPersona, load_persona, load_personas

A = TypeVar("A")
T = TypeVar("T")


def check_lab_bindings(lab: LabConfig, lab_path: Path, personas: list[LoadedPersona]) -> None:
    issues = binding_issues(lab, lab_path, personas)
    if issues:
        raise ConfigError(issues)


def binding_issues(lab: LabConfig, lab_path: Path, personas: list[LoadedPersona]) -> list[Issue]:
    known = {echo.name for echo in lab.echos}
    return [
        item.document.issue(("echo",), f"Echo {item.persona.echo!r} is not in the lab file {lab_path} "
                                       f"(it has: {', '.join(sorted(known))})")
        for item in personas
        if item.persona.echo not in known
    ]


def validate_all(lab_path: Path, catalog_dir: Path, persona_paths: list[Path]) -> str:
    """Check everything; return a one-line report, or raise ConfigError listing every problem."""
    issues: list[Issue] = []
    lab = _collect(issues, load_lab, lab_path)
    catalog = _collect(issues, load_catalog, catalog_dir)
    personas: list[LoadedPersona] = []
    if catalog is not None:
        personas = _collect(issues, lambda paths: load_personas(paths, catalog), persona_paths) or []
    else:  # without a catalog, skills cannot be checked; syntax and fields still can
        for path in persona_paths:
            _collect(issues, load_persona, path)
    if lab is not None and personas:
        issues.extend(binding_issues(lab, lab_path, personas))
    if issues:
        raise ConfigError(issues)
    assert lab is not None and isinstance(catalog, Catalog)
    return (f"ok: lab file {lab_path} ({len(lab.echos)} Echos), catalog {catalog_dir} ({len(catalog)} skills), "
            f"{len(personas)} persona file(s)")


def _collect(issues: list[Issue], loader: Callable[[A], T], arg: A) -> T | None:
    try:
        return loader(arg)
    except ConfigError as exc:
        issues.extend(exc.issues)
        return None
