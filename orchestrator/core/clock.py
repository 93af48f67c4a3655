"""The host clock: is it kept in step with a time source, and how exact are the log's moments?

Traffic captured on another machine (the lab's access point) is lined up with the log's steps by
time, so each run records the host clock's state as the system reports it: chrony (`chronyc
tracking`) when it runs, else systemd (`timedatectl show`), else "unknown". Nothing here sets the
clock or asks the network.

`TIMESTAMP_ACCURACY_SECONDS` is how far a logged moment of a step may be from when it really
happened on the host clock (measured against the simulated Echo's own record of when it spoke;
docs/traffic.md, "How exact the log's moments are").
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Literal

ClockSync = Literal["synchronized", "unsynchronized", "unknown"]

#: How far a logged reply start may be from the moment its sound began (docs/traffic.md measures it).
TIMESTAMP_ACCURACY_SECONDS = 0.1
#: A clock tool that does not answer within this is treated as absent.
TOOL_TIMEOUT = 2.0


@dataclass(frozen=True)
class ClockState:
    sync: ClockSync
    source: str | None = None  # chrony | timedatectl
    offset_seconds: float | None = None  # the clock's offset from its source, as the tool reports it


def host_clock() -> ClockState:
    """The host clock's synchronisation as chrony, else timedatectl, reports it; "unknown" without either."""
    for reader in (_chrony, _timedatectl):
        state = reader()
        if state is not None:
            return state
    return ClockState("unknown")


def _run(*command: str) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _chrony() -> ClockState | None:
    text = _run("chronyc", "-n", "tracking")
    return None if text is None else parse_chrony(text)


def _timedatectl() -> ClockState | None:
    text = _run("timedatectl", "show", "--property=NTPSynchronized")
    return None if text is None else parse_timedatectl(text)


def parse_chrony(text: str) -> ClockState | None:
    """`chronyc tracking`: synchronised unless its leap status says otherwise; the offset is "System time"."""
    leap = re.search(r"^Leap status\s*:\s*(.+)$", text, re.MULTILINE)
    if leap is None:
        return None
    offset = re.search(r"^System time\s*:\s*([\d.]+) seconds (fast|slow)", text, re.MULTILINE)
    seconds = None
    if offset is not None:
        # "fast" means the system clock is ahead of true time.
        seconds = float(offset.group(1)) * (1 if offset.group(2) == "fast" else -1)
    synced = leap.group(1).strip().lower() != "not synchronised"
    return ClockState("synchronized" if synced else "unsynchronized", "chrony", seconds)


def parse_timedatectl(text: str) -> ClockState | None:
    match = re.search(r"^NTPSynchronized=(yes|no)$", text, re.MULTILINE)
    if match is None:
        return None
    return ClockState("synchronized" if match.group(1) == "yes" else "unsynchronized", "timedatectl")
