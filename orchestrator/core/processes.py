"""Linux housekeeping for the lab's many processes.

A night runs a process per persona, per simulated Echo, per speech synthesizer, and one for
transcription; `name_this_process()` lets `top` and `ps -o comm` tell them apart (and lets the
benchmarks measure each part). `end_with_parent()` makes a helper program end with its owner, and
`die_with_parent()` does the same for a Python child process that must not outlive its night.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
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


def die_with_parent() -> None:
    """In a multiprocessing child: be killed when the thread that started it ends.

    A night's persona worker or simulated Echo that outlived a killed night would go on speaking to
    its Echo unsupervised, and a restarted night would then have two processes speaking to one
    Echo. SIGKILL, not SIGTERM: what the worker has recorded is safe (audio before rows, and the
    next night resumes a run the log still shows as running). A parent that died before the
    request took effect is caught by comparing the parent's pid.
    """
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(1)


def _prctl(option: int, value: object) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(option, value, 0, 0, 0)
