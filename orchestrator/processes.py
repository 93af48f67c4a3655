"""Linux housekeeping for the lab's many processes.

A night runs a process per persona, per simulated Echo, per speech synthesizer, and one for
transcription; `name_this_process()` lets `top` and `ps -o comm` tell them apart (and lets the
benchmarks measure each part). `end_with_parent()` makes a helper program end with its owner.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import signal

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PR_SET_NAME = 15
COMM_LENGTH = 15  # the kernel keeps 16 bytes, with the terminating NUL


def name_this_process(name: str | None = None) -> None:
    """Show this process as `name` (default: its multiprocessing name), cut to 15 characters."""
    title = (name or multiprocessing.current_process().name)[:COMM_LENGTH]
    _prctl(PR_SET_NAME, ctypes.c_char_p(title.encode()))


def end_with_parent() -> None:
    """In a child before it runs a program: receive SIGTERM when the thread that started it ends.

    An owner killed before its cleanup (SIGKILL, or SIGTERM outside a night) must not leave a
    sound server and its silence streams running.
    """
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _prctl(option: int, value: object) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(option, value, 0, 0, 0)
