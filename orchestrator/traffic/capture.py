"""The night's traffic capture: one tcpdump, filtered to the lab's Echos, for as long as the night lasts.

tcpdump (Debian's) writes pcap files that rotate by size (`-C`) and/or time (`-G`), taking each
packet from the kernel as it comes (`--immediate-mode`) and writing it at once (`-U`), so a night
stopped or killed outright loses none of its last packets. It is started before the
first persona and stopped after the last: with SIGINT, upon which it writes its last packets and
reports its counts on stderr ("N packets dropped by kernel"), which the log keeps. It never
outlives the night: it is started in a session of its own (a Ctrl-C meant for the night does not
cut it short) and asks the kernel to end it when the thread that started it ends
(`core.processes.end_with_parent`), so even a night killed with SIGKILL leaves no capture behind.

A capture that cannot start (no such interface, no permission) is a `CaptureError` before any
persona speaks, unless the lab file marks it optional.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import Engine

from orchestrator import log
from orchestrator.core.processes import end_with_parent
from orchestrator.lab.config import Capture, EchoConfig

#: How long tcpdump may take to open the interface and say it is listening.
START_TIMEOUT = 10.0
#: How long it may take to write its last packets and exit after SIGINT.
STOP_TIMEOUT = 10.0
DROPPED = re.compile(r"^(\d+) packets? dropped by kernel", re.MULTILINE)
LISTENING = "listening on "


class CaptureError(RuntimeError):
    """The night's capture could not start (or ended by itself); nothing of the night was started."""


def capture_filter(echos: Iterable[EchoConfig]) -> str:
    """A pcap filter that keeps the packets to and from the Echos: by MAC where known, else by IP."""
    terms = []
    for echo in echos:
        if echo.mac is not None:
            terms.append(f"ether host {echo.mac}")
        if echo.ip is not None:
            terms.append(f"host {echo.ip}")
    if not terms:
        raise CaptureError("none of the night's Echos has a `mac` or `ip` in the lab file: a capture would keep "
                           "nothing of theirs")
    return " or ".join(terms)


@dataclass
class NightCapture:
    """One tcpdump for one night; `start()`, then `stop()` records every file it wrote in the log."""

    settings: Capture
    echos: list[EchoConfig]
    folder: Path
    program: str = "tcpdump"
    filter: str = field(init=False)
    prefix: str = field(init=False)
    started_at: datetime | None = field(default=None, init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _stderr: list[str] = field(default_factory=list, init=False, repr=False)
    _listening: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _reader: threading.Thread | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.filter = capture_filter(self.echos)
        # Nights of different rooms may start in one process within one second (the scheduler).
        self.prefix = f"night-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{secrets.token_hex(3)}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def command(self) -> list[str]:
        s = self.settings
        rotating = s.rotate_seconds is not None
        # With -G the name must hold a time pattern, or each rotation would overwrite the last file.
        name = f"{self.prefix}-%Y%m%dT%H%M%S.pcap" if rotating else f"{self.prefix}.pcap"
        # Immediate mode: without it the kernel hands packets over in blocks of up to a second, and
        # those still in a block when the night stops tcpdump would be lost.
        command = [self.program, "-i", s.interface, "-n", "-U", "--immediate-mode", "-s", str(s.snap_length),
                   "-w", str(self.folder / name)]
        if s.rotate_megabytes is not None:
            command += ["-C", str(s.rotate_megabytes)]
        if rotating:
            command += ["-G", str(s.rotate_seconds)]
        if os.geteuid() == 0:
            command += ["-Z", "root"]  # Debian's tcpdump would drop to a user that cannot write here
        return [*command, self.filter]

    def start(self) -> None:
        """Start tcpdump and wait until it listens; a CaptureError says why it could not."""
        if shutil.which(self.program) is None:
            raise CaptureError(f"{self.program} is not installed (Debian: apt-get install tcpdump)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.started_at = log.utcnow()
        try:
            self._process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True, preexec_fn=end_with_parent)
        except OSError as exc:
            raise CaptureError(f"{self.program} could not be started: {exc}") from None
        self._reader = threading.Thread(target=self._read_stderr, name="tcpdump-stderr", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._listening.wait(0.05):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self._kill()
                said = " ".join(line for line in self._stderr if line).strip() or "no message"
                raise CaptureError(f"the capture on {self.settings.interface} could not start: {said}")

    def _read_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        for raw in self._process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self._stderr.append(line)
            if LISTENING in line:
                self._listening.set()

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> tuple[int | None, str | None]:
        """Stop tcpdump cleanly; its dropped-packet count and, if it ended by itself, why."""
        process = self._process
        if process is None:
            return None, None
        ended_early = process.poll() is not None
        if not ended_early:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._kill()
        if self._reader is not None:
            self._reader.join(STOP_TIMEOUT)
        self._process = None
        text = "\n".join(self._stderr)
        dropped = DROPPED.search(text)
        error = None
        if ended_early:
            error = f"tcpdump ended during the night (code {process.returncode}): {text[-500:]}"
        return (int(dropped.group(1)) if dropped else None), error

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def files(self) -> list[Path]:
        """The files this capture wrote, in the order tcpdump wrote them."""
        return sorted(self.folder.glob(f"{self.prefix}*.pcap*"), key=lambda p: (p.stat().st_mtime, p.name))

    def finish(self, engine: Engine) -> list[int]:
        """Stop the capture and record each of its files in the log; the capture ids."""
        # The packet reader is loaded only by a night that captured: a night without one never needs it.
        from orchestrator.traffic.store import TrafficError, record_capture

        dropped, error = self.stop()
        finished = log.utcnow()
        files = self.files()
        ids = []
        for index, path in enumerate(files):
            last = index == len(files) - 1
            try:
                ids.append(record_capture(
                    engine, path, source="night", interface=self.settings.interface, capture_filter=self.filter,
                    snap_length=self.settings.snap_length, started_at=self.started_at, finished_at=finished,
                    packets_dropped=dropped if last else None, error=error if last else None))
            except TrafficError:
                continue  # an empty file tcpdump opened as it was stopped; nothing of the night is in it
        return ids


def night_capture(settings: Capture | None, echos: list[EchoConfig], db_path: Path) -> NightCapture | None:
    """The capture the lab file asks for, of the night's own Echos, its files beside the log unless it names a folder.

    The scheduler runs each persona's night on its own (rooms run at once): each night captures its
    own Echos, so no packet is captured twice.
    """
    if settings is None:
        return None
    folder = settings.folder or db_path.parent / "captures"
    return NightCapture(settings, echos, folder)
