"""Checking a lab's files together before a night: lab file, catalog and personas.

Each file is checked on its own, then against the others (a persona's Echo must exist in the lab
file). Every problem found is reported in one `ConfigError`, so an operator fixes them all at once.
What may go wrong without being wrong (skills Alexa may confuse, prompts a voice may misread) is
reported as warnings, for the skills the personas' plans use.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from orchestrator.catalog.skills import Catalog, load_catalog
from orchestrator.catalog.utterances import odd_characters
from orchestrator.core.config_files import ConfigError, Issue
from orchestrator.lab.config import LabConfig, load_lab
from orchestrator.plan.persona import LoadedPersona, compile_plan, load_persona, load_personas

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
    report = (f"ok: lab file {lab_path} ({len(lab.echos)} Echos), catalog {catalog_dir} ({len(catalog)} skills), "
              f"{len(personas)} persona file(s)")
    return "\n".join([report, *(f"warning: {w}" for w in plan_warnings(personas, catalog))])


#: Other ids named in a warning; the rest are counted.
NAMED_IDS = 3


def plan_warnings(personas: list[LoadedPersona], catalog: Catalog) -> list[str]:
    """Skills of the plans that share an invocation name or are listed twice; prompts with odd characters."""
    warnings: list[str] = []
    seen: set[str] = set()
    for item in personas:
        for step in compile_plan(item.persona, catalog):
            where = f"{item.path}: plan step {step.index} ({step.kind})"
            if odd := odd_characters(step.text):
                warnings.append(f"{where}: {step.text!r} has characters a voice may misread: {' '.join(odd)}")
            if step.skill_id is None or step.skill_id in seen:
                continue
            seen.add(step.skill_id)
            skill = catalog[step.skill_id]
            if shared := catalog.sharing_invocation(skill):
                warnings.append(f"{where}: skill {skill.id} ({skill.name}): its invocation name "
                                f"{skill.invocation_name!r} is also that of {_ids(shared)}; Alexa opens whichever "
                                f"of them is enabled")
            if twins := catalog.sharing_identity(skill):
                warnings.append(f"{where}: skill {skill.id} ({skill.name}, {skill.developer or 'no developer'}) is "
                                f"listed again as {_ids(twins)} (another source?)")
    return warnings


def _ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:NAMED_IDS])
    return f"{shown} and {len(ids) - NAMED_IDS} more" if len(ids) > NAMED_IDS else shown


def _collect(issues: list[Issue], loader: Callable[[A], T], arg: A) -> T | None:
    try:
        return loader(arg)
    except ConfigError as exc:
        issues.extend(exc.issues)
        return None
