"""The virtual lab's side of the lab-hooks seam (orchestrator/lab/hooks.py)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.lab.hooks import LabHooks
from orchestrator.sim.echo import SideChannel, said_path
from orchestrator.sim.lab import acoustic_coupling, server_env, use_own_devices


@dataclass(frozen=True)
class VirtualLabHooks(LabHooks):
    folder: Path
    _channels: dict[str, SideChannel] = field(default_factory=dict, compare=False, repr=False)

    def in_process(self, echo: str | None, side: str) -> None:
        # Its devices from any shell, not only the one that started the lab; one Echo's only, if named.
        os.environ.update(server_env(self.folder))
        if echo is not None:
            use_own_devices(self.folder, echo, side)

    def before_prompt(self, echo: str, text: str, duration: float) -> None:
        channel = self._channels.setdefault(echo, SideChannel(said_path(self.folder, echo)))
        channel.announce(text, duration)

    @contextlib.contextmanager
    def air(self, echos: Sequence[str]) -> Iterator[None]:
        with acoustic_coupling(self.folder, [(name, name) for name in echos]):
            yield
