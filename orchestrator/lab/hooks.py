"""What a lab's surroundings need from the runner, the night and the rig self-test.

A physical lab needs nothing: its Echos hear the air, its devices are the machine's. A virtual lab
(orchestrator/sim) needs three things, and this seam is the only place the rest of the
orchestrator meets it:

* each worker process sees only its own Echo's devices (`in_process`);
* a simulated Echo learns the words of each prompt just before it is played (`before_prompt`),
  since it has no ears for the personas' voice; it still acts only on what it hears;
* the rig self-test needs air between each speaker and its own microphone (`air`).

The hooks are plain data, so they travel to worker processes with the run request.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LabHooks:
    """A physical lab's hooks: none of them does anything."""

    def in_process(self, echo: str | None, side: str) -> None:
        """Called first in a process that will open `echo`'s devices (None: every Echo's)."""

    def before_prompt(self, echo: str, text: str, duration: float) -> None:
        """Called right before a prompt of `duration` seconds is played to `echo`."""

    @contextlib.contextmanager
    def air(self, echos: Sequence[str]) -> Iterator[None]:
        """While inside, each of `echos` has its speaker heard by its own microphone."""
        yield


def hooks_for(virtual_lab: Path | None) -> LabHooks:
    """The hooks of the lab file's lab: a virtual lab's when it names the folder of one."""
    if virtual_lab is None:
        return LabHooks()
    # Named by text: the simulation sits above the runner, and a physical lab never loads it.
    simulation = importlib.import_module("orchestrator.sim.hooks")
    hooks: LabHooks = simulation.VirtualLabHooks(Path(virtual_lab))
    return hooks
