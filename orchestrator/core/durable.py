"""Writing files so that a crash, a power cut or a full disk never leaves half of one behind.

Every file the orchestrator writes (recordings, exports, the night page, the imported catalog, the
virtual lab's configuration) goes through `replacing`: the new content is written to a temporary
file in the target's folder, synced, renamed over the target, and the folder is synced (a rename
is only durable once its folder is). A reader sees the old file or the new one, never a mixture;
an interrupted write leaves the old file as it was.

The target is checked first, because a rename replaces whatever is at its path: a device node,
a FIFO or a symbolic link there is refused, and so is a folder that does not exist (a mistyped
path should not become a new folder tree). A full disk is reported as such, and the temporary
file is removed.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

#: Temporary files are ".NAME.XXXXXXXX.tmp" beside NAME; `stale_temporaries` finds them again.
TEMP_PREFIX = "."
TEMP_SUFFIX = ".tmp"
#: Errors that mean the file system has no room left for the file.
FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class OutputError(OSError):
    """A file that was not written; the previous file at its path, if any, is unchanged.

    An OSError, so that code guarding a write with `except OSError` still does.
    """

    def __init__(self, path: Path, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason
        self.errno = code

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class OutputRefused(OutputError):
    """The target cannot be replaced by a file: a device, a FIFO, a link, a folder, no folder."""


class DiskFull(OutputError):
    """The file system ran out of room while the file was written."""


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entries (a rename is only durable once its folder is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_target(target: Path) -> None:
    """Refuse a path a new regular file must not replace; a missing file is fine."""
    try:
        parent = os.stat(target.parent).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise OutputRefused(target, f"the folder {target.parent} does not exist") from None
    if not stat.S_ISDIR(parent):
        raise OutputRefused(target, f"{target.parent} is not a folder")
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise OutputRefused(target, "is a symbolic link; give the path of the file itself")
    if not stat.S_ISREG(mode):
        raise OutputRefused(target, f"is {file_kind(mode)}, not a regular file: refusing to replace it")


def file_kind(mode: int) -> str:
    """What a path that is not a regular file is, from its `st_mode`, for messages."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "something else"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextmanager
def replacing(target: Path, *, make_folder: bool = False) -> Iterator[Path]:
    """A temporary file beside `target` for the block to fill; it replaces `target` if the block ends.

    The block writes the file by its path (SQLite, pyarrow and the wave module open it themselves)
    and closes it; it is synced and renamed here. `make_folder` creates missing folders, for the
    writers whose folders are the orchestrator's own (recordings), never for a path given by hand.
    """
    try:
        if make_folder:
            target.parent.mkdir(parents=True, exist_ok=True)
        check_target(target)
        fd, name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    except OSError as exc:
        raise _failure(target, exc) from None
    temporary = Path(name)
    try:
        # mkstemp makes 0600; the file gets the mode the target has, or a new file's.
        os.fchmod(fd, _mode_for(target))
        os.close(fd)
        yield temporary
        fsync_path(temporary)
        check_target(target)  # again: the block may have taken long enough for the path to change
        os.replace(temporary, target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise _failure(target, exc) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    try:
        fsync_path(target.parent)
    except OSError as exc:
        raise _failure(target, exc) from None


def _mode_for(target: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_UMASK


def _failure(target: Path, exc: OSError) -> OutputError:
    if isinstance(exc, OutputError):
        return exc
    if exc.errno in FULL:
        return DiskFull(target, "disk full: the file was not written; any earlier version is left as it was",
                        exc.errno)
    return OutputError(target, f"cannot write: {exc.strerror or exc}", exc.errno)


@contextmanager
def replacing_file(target: Path, *, binary: bool = False, make_folder: bool = False) -> Iterator[IO[Any]]:
    """`replacing` with the temporary file open: bytes, or UTF-8 text with the caller's line endings."""
    with replacing(target, make_folder=make_folder) as temporary:
        # newline="": the csv module and the callers write their own line endings.
        options: dict[str, Any] = {"mode": "wb"} if binary else {"mode": "w", "encoding": "utf-8", "newline": ""}
        with open(temporary, **options) as handle:
            yield handle


def write_text_atomic(target: Path, text: str, *, make_folder: bool = False) -> Path:
    with replacing_file(target, make_folder=make_folder) as handle:
        handle.write(text)
    return target


def stale_temporaries(target: Path) -> list[Path]:
    """Temporary files `replacing` left beside `target` when its process was killed.

    Only the caller knows that no other process is writing `target` right now (a lock).
    """
    pattern = f"{TEMP_PREFIX}{target.name}.*{TEMP_SUFFIX}"
    return sorted(p for p in target.parent.glob(pattern) if p.is_file() and not p.is_symlink())
