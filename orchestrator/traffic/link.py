"""Which step a flow belongs to: the step of its Echo whose window holds the flow's first packet.

A step's window runs from the start of its prompt to the end of its reply, plus a tail: an Echo
keeps talking to its cloud for a moment after it stops speaking (reports, metrics, the skill's
card). Where windows overlap (a tail reaching into the next step), the later step wins: the new
prompt is what the Echo reacts to. A flow outside every window is background traffic.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

#: Seconds after a reply's end that still count as the step's traffic (`--tail`).
DEFAULT_TAIL = 5.0


@dataclass(frozen=True)
class Window:
    device_id: int
    interaction_id: int
    start: float  # POSIX seconds
    end: float


class Windows:
    """Every step window, per Echo, sorted by start for a binary search."""

    def __init__(self, windows: Iterable[Window], tail: float = DEFAULT_TAIL) -> None:
        self.tail = tail
        self._starts: dict[int, list[float]] = {}
        self._windows: dict[int, list[Window]] = {}
        for window in sorted(windows, key=lambda w: (w.device_id, w.start)):
            self._starts.setdefault(window.device_id, []).append(window.start)
            self._windows.setdefault(window.device_id, []).append(window)

    def step_at(self, device_id: int, moment: float) -> int | None:
        """The interaction whose window (tail included) holds `moment`, the latest to start; else None."""
        starts = self._starts.get(device_id, [])
        index = bisect.bisect_right(starts, moment)
        windows = self._windows.get(device_id, [])
        # The latest window starting at or before the moment; an earlier one whose reply (plus its
        # tail) lasted longer would have been cut by this one's prompt.
        for candidate in reversed(windows[max(0, index - 1) : index]):
            if moment <= candidate.end + self.tail:
                return candidate.interaction_id
        return None
