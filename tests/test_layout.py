"""The folders of orchestrator/ are the parts of the system, and dependencies point one way.

Each part may import only itself and the parts of the layers below it; every import counts, at
the top of a module or inside a function. The one way up is the lab hooks' factory, which names
the simulation's hooks by text (lab/hooks.py): a physical lab never loads the simulation.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "orchestrator"

#: Lowest first. A part may import the parts of any earlier layer, and itself.
LAYERS: list[set[str]] = [
    {"core"},
    {"audio", "log"},
    {"asr", "catalog", "lab", "analysis"},
    {"traffic"},
    {"plan"},
    {"runner"},
    {"scheduler"},
    {"sim"},
    {"cli"},
]
LAYER_OF = {part: level for level, parts in enumerate(LAYERS) for part in parts}
#: "schedule" is the job function's old module path, still named by job stores written before the parts.
TOP_LEVEL_MODULES = {"__init__", "__main__", "schedule"}


def part_of(module: str) -> str | None:
    """`orchestrator.audio.vad` -> `audio`; None for a module outside the package."""
    names = module.split(".")
    return names[1] if names[0] == "orchestrator" and len(names) > 1 else None


def imports(path: Path) -> set[str]:
    """Every orchestrator module `path` imports, wherever the import statement stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                raise AssertionError(f"{path}: relative import; name the module in full")
            found.add(node.module)
            if node.module == "orchestrator":
                found.update(f"orchestrator.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "orchestrator"}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


def test_every_module_lives_in_a_part() -> None:
    loose = [p.stem for p in PACKAGE.glob("*.py") if p.stem not in TOP_LEVEL_MODULES]
    assert loose == []
    parts = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert parts == set(LAYER_OF)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_dependencies_point_down(path: Path) -> None:
    own = path.relative_to(PACKAGE).parts[0] if len(path.relative_to(PACKAGE).parts) > 1 else None
    if own is None:
        return  # orchestrator/__main__.py starts the command line
    upward = [name for name in imports(path)
              if (part := part_of(name)) in LAYER_OF and part != own and LAYER_OF[part] >= LAYER_OF[own]]
    assert upward == [], f"{path.relative_to(PACKAGE)} reaches up or sideways to {upward}"


def test_the_rule_can_fail(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from orchestrator.runner.night import Night\n")
    assert imports(sample) == {"orchestrator.runner.night"}


def test_loading_a_persona_file_pulls_in_neither_the_log_nor_the_scheduler() -> None:
    code = ("import sys; from orchestrator.plan.persona import load_persona; "
            "print(sorted(m for m in ('sqlalchemy', 'apscheduler.schedulers', 'orchestrator.runner', "
            "'orchestrator.log') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
