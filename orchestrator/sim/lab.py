"""A sound card made of software: a private PulseAudio server with two null sinks per virtual Echo.

For Echo `echo1`:

    echo1_out   the speaker beside the Echo: the persona plays into it, the Echo hears its monitor
    echo1_mic   the Echo's own voice: the Echo plays into it, the persona's microphone is its monitor

An ALSA configuration file names every sink and monitor as a PCM (`echo1_out`, `echo1_out_mon`,
`echo1_mic`, `echo1_mic_mon`), so PortAudio (sounddevice, pyaudio) selects them by name exactly as
it would select a USB speaker in a physical lab.

Everything lives inside one folder and is torn down by the PIDs started here. The environment
variables that point clients at the server must be set before PortAudio initialises, which is why
`VirtualLab.client_env()` exists and `activate()` writes it into `os.environ`.

Between a speaker and a microphone there is no air: the microphone hears only the Echo. A rig
self-test needs the air, so `acoustic_coupling()` lays a loopback from a speaker to a microphone
for as long as the test lasts; kept for a whole night, it would cost a resampler per Echo.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.durable import write_text_atomic
from orchestrator.core.processes import end_with_parent

REQUIRED_PROGRAMS = ("pulseaudio", "pactl", "pacat")
#: Enough to keep a sink out of its idle 2-second blocks. The recorders on its monitor ask for their
#: own, lower latency, which the sink then follows; a 20 ms silence stream per sink would cost
#: PulseAudio about 0.05 cores per Echo for nothing.
SILENCE_LATENCY_MSEC = 200
READY_LATENCY_USEC = 250_000
# Unix socket paths are limited to 108 bytes (sun_path); leave room for "/native".
MAX_SOCKET_DIR = 90
#: Where a running lab tells other processes how to reach its sound server.
SERVER_FILE = "server.json"
COUPLING_LATENCY_MSEC = 20
SERVER_OPEN_FILES = 8192
#: PulseAudio serves at most 64 clients; an Echo brings six (two silence streams, the persona's
#: speaker and microphone, the simulated Echo's) and short-lived ones come and go.
ECHOS_PER_SERVER = 8


class LabError(RuntimeError):
    """The virtual lab could not be started or changed."""


@dataclass(frozen=True)
class VirtualEcho:
    """The PortAudio device names of one virtual Echo."""

    name: str

    @property
    def speaker(self) -> str:
        return f"{self.name}_out"

    @property
    def speaker_monitor(self) -> str:
        return f"{self.name}_out_mon"

    @property
    def voice(self) -> str:
        return f"{self.name}_mic"

    @property
    def microphone(self) -> str:
        return f"{self.name}_mic_mon"

    def sinks(self) -> tuple[str, str]:
        return (self.speaker, self.voice)


class _SoundServer:
    """One PulseAudio process of the lab, the sinks it holds, and the silence streams that keep them awake."""

    def __init__(self, index: int, runtime: Path, rate: int) -> None:
        self.index = index
        self.runtime = runtime
        self.rate = rate
        self.process: subprocess.Popen[bytes] | None = None
        self.keepalive: dict[str, subprocess.Popen[bytes]] = {}
        self.modules: dict[str, int] = {}

    def env(self, alsa_config: Path) -> dict[str, str]:
        return {
            "PULSE_SERVER": f"unix:{self.runtime / 'native'}",
            "PULSE_RUNTIME_PATH": str(self.runtime),
            "PULSE_STATE_PATH": str(self.runtime / "state"),
            "PULSE_COOKIE": str(self.runtime / "cookie"),
            "XDG_RUNTIME_DIR": str(self.runtime),
            "ALSA_CONFIG_PATH": str(alsa_config),
        }

    @property
    def address(self) -> str:
        return f"unix:{self.runtime / 'native'}"

    def pactl(self, *args: str) -> str:
        return _pactl({"PULSE_SERVER": self.address, "PULSE_COOKIE": str(self.runtime / "cookie")}, *args)

    def start(self, timeout: float) -> None:
        runtime = self.runtime
        (runtime / "home").mkdir(exist_ok=True)
        (runtime / "state").mkdir(exist_ok=True)
        # PulseAudio caps itself at 256 open files; each client holds several (memfd pools), and
        # eight Echos bring some fifty clients: the server would refuse the last ones.
        daemon_conf = runtime / "home" / ".config" / "pulse" / "daemon.conf"
        daemon_conf.parent.mkdir(parents=True, exist_ok=True)
        daemon_conf.write_text(f"rlimit-nofile = {SERVER_OPEN_FILES}\n")
        (runtime / "pa.conf").write_text(
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={runtime / 'native'}\n"
            # pacmd talks to this one: it alone can end a stream, as an unplugged device does.
            f"load-module module-cli-protocol-unix socket={runtime / 'cli'}\n"
        )
        env = {**os.environ, **self.env(runtime / "asound.conf"), "HOME": str(runtime / "home")}
        log = open(runtime / "pulseaudio.log", "wb")  # noqa: SIM115 - owned by the server process
        self.process = subprocess.Popen(
            [
                "pulseaudio", "-n", "-F", str(runtime / "pa.conf"), "--daemonize=no",
                "--exit-idle-time=-1", "--disallow-exit", "--use-pid-file=no",
                "--log-level=warning",
            ],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=end_with_parent,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (runtime / "pulseaudio.log").read_text(errors="replace")[-2000:]
                raise LabError(f"pulseaudio exited with code {self.process.returncode}:\n{tail}")
            if (runtime / "native").exists():
                try:
                    self.pactl("info")
                    return
                except LabError:
                    pass
            time.sleep(0.05)
        raise LabError(f"pulseaudio did not answer within {timeout} s (log: {runtime / 'pulseaudio.log'})")

    def stop(self) -> None:
        for proc in self.keepalive.values():
            _terminate(proc)
        self.keepalive.clear()
        if self.process is not None:
            _terminate(self.process)
            self.process = None
        self.modules.clear()

    def add_sink(self, sink: str) -> None:
        module = self.pactl(
            "load-module", "module-null-sink", f"sink_name={sink}",
            f"rate={self.rate}", "channels=1", f"sink_properties=device.description={sink}",
        )
        self.modules[sink] = int(module.strip())
        self.keepalive[sink] = subprocess.Popen(
            [
                "pacat", "-p", f"--device={sink}", f"--latency-msec={SILENCE_LATENCY_MSEC}",
                "--format=s16le", f"--rate={self.rate}", "--channels=1", "/dev/zero",
            ],
            env={**os.environ, "PULSE_SERVER": self.address}, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=end_with_parent,
        )

    def remove_sinks(self, sinks: set[str]) -> None:
        """Unplug sinks: their streams end first, as a vanished device ends them (PulseAudio would move them)."""
        self._kill_streams("sink-inputs", "sinks", sinks)
        self._kill_streams("source-outputs", "sources", {f"{sink}.monitor" for sink in sinks})
        for sink in sinks:
            proc = self.keepalive.pop(sink, None)
            if proc is not None:
                _terminate(proc)
            self.pactl("unload-module", str(self.modules.pop(sink)))

    def _kill_streams(self, streams: str, devices: str, names: set[str]) -> None:
        indices = {line.split()[0] for line in self.pactl("list", "short", devices).splitlines()
                   if len(line.split()) > 1 and line.split()[1] in names}
        for line in self.pactl("list", "short", streams).splitlines():
            fields = line.split()
            if len(fields) > 1 and fields[1] in indices:
                kind = "kill-sink-input" if streams == "sink-inputs" else "kill-source-output"
                self._cli(f"{kind} {fields[0]}")

    def _cli(self, command: str) -> None:
        """One command on PulseAudio's text protocol (what pacmd speaks, without its PID file check)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(str(self.runtime / "cli"))
            conn.sendall(f"{command}\n".encode())
            # Without a terminal the server sends no prompt, and a kill that worked prints nothing.
            conn.settimeout(0.3)
            try:
                reply = conn.recv(4096).decode(errors="replace").strip()
            except TimeoutError:
                reply = ""
        if reply:
            raise LabError(f"PulseAudio refused {command!r}: {reply}")

    def sink_latencies(self) -> dict[str, int]:
        latencies: dict[str, int] = {}
        name = None
        for line in self.pactl("list", "sinks").splitlines():
            line = line.strip()
            if line.startswith("Name:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("Latency:") and name:
                match = re.search(r"(\d+) usec", line)
                if match:
                    latencies[name] = int(match.group(1))
        return latencies


@dataclass
class VirtualLab:
    """Start with `with VirtualLab(folder, ["echo1", "echo2"]) as lab:`; stopped on exit."""

    folder: Path
    echo_names: list[str]
    # Everything the lab plays or records is 16 or 22.05 kHz speech: sinks at 16 kHz spare
    # PulseAudio most of its resampling, which is most of its CPU with many Echos.
    rate: int = 16000
    echos: dict[str, VirtualEcho] = field(default_factory=dict, init=False)
    _servers: list[_SoundServer] = field(default_factory=list, init=False, repr=False)
    _server_of: dict[str, _SoundServer] = field(default_factory=dict, init=False, repr=False)
    _saved_env: dict[str, str | None] = field(default_factory=dict, init=False, repr=False)

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> VirtualLab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, ready_timeout: float = 10.0) -> None:
        check_programs()
        for name in self.echo_names:
            validate_echo_name(name)
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            for name in self.echo_names:
                self._add_sinks(name, ready_timeout)
            self._write_alsa_config()
            self.wait_until_ready(ready_timeout)
            self._write_server_file()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process started here and remove the runtime files; safe to call twice."""
        for server in self._servers:
            server.stop()
        self.deactivate()
        for server in self._servers:
            shutil.rmtree(server.runtime, ignore_errors=True)
        self._servers.clear()
        self._server_of.clear()
        shutil.rmtree(self.folder / "alsa", ignore_errors=True)
        (self.folder / SERVER_FILE).unlink(missing_ok=True)
        self.echos.clear()

    # -- clients ------------------------------------------------------------------------------

    @property
    def runtime(self) -> Path:
        """The first sound server's folder: its socket, its log, and the lab's ALSA configuration."""
        if not self._servers:
            raise LabError("the virtual lab is not running")
        return self._servers[0].runtime

    @property
    def alsa_config(self) -> Path:
        return self.runtime / "asound.conf"

    def client_env(self) -> dict[str, str]:
        """What a process needs in its environment to use this lab's devices.

        Every device names its own server in the ALSA configuration; `PULSE_SERVER` is the first
        one, for tools such as pactl.
        """
        if not self._servers:
            raise LabError("the virtual lab is not running")
        return self._servers[0].env(self.alsa_config)

    def activate(self) -> None:
        """Point this process's future PortAudio sessions at the lab."""
        for key, value in self.client_env().items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def deactivate(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()

    # -- changing the rig while it runs ---------------------------------------------------------

    def add_echo(self, name: str) -> VirtualEcho:
        validate_echo_name(name)
        self._add_sinks(name, 10.0)
        self._write_alsa_config()
        self._write_server_file()
        return self.echos[name]

    def remove_echo(self, name: str) -> None:
        """Unplug an Echo's speaker and microphone, as a pulled USB cable would."""
        echo = self.echos.pop(name)
        self._server_of.pop(name).remove_sinks(set(echo.sinks()))

    def pactl(self, *args: str, echo: str | None = None) -> str:
        """pactl on the server of `echo` (default: the first server)."""
        server = self._server_of[echo] if echo is not None else self._servers[0]
        return server.pactl(*args)

    def mute_speaker(self, name: str, muted: bool = True) -> None:
        """Silence an Echo's speaker, as a switched-off or unplugged loudspeaker would be."""
        self.pactl("set-sink-mute", self.echos[name].speaker, "1" if muted else "0", echo=name)

    def sink_latencies(self) -> dict[str, int]:
        """Current latency of every sink in microseconds, as PulseAudio reports it."""
        latencies: dict[str, int] = {}
        for server in self._servers:
            latencies.update(server.sink_latencies())
        return latencies

    def wait_until_ready(self, timeout: float) -> None:
        """Wait until every sink has left its idle 2-second blocks.

        An idle null sink works in 2-second blocks, so a recorder on its monitor would get its
        first audio 1.3-1.9 s late. With the silence stream playing into it, a sink follows the
        latency its monitor's recorders ask for (a few ms for a microphone's).
        """
        wanted = {sink for echo in self.echos.values() for sink in echo.sinks()}
        deadline = time.monotonic() + timeout
        latencies: dict[str, int] = {}
        while time.monotonic() < deadline:
            latencies = self.sink_latencies()
            if all(0 < latencies.get(s, 10**9) < READY_LATENCY_USEC for s in wanted):
                return
            time.sleep(0.1)
        slow = {s: latencies.get(s) for s in wanted if latencies.get(s, 10**9) >= READY_LATENCY_USEC}
        raise LabError(f"sinks did not reach low latency within {timeout} s: {slow}")

    # -- internals ----------------------------------------------------------------------------

    def _add_sinks(self, name: str, timeout: float) -> None:
        if name in self.echos:
            raise LabError(f"virtual Echo {name!r} exists already")
        server = self._server_with_room(timeout)
        echo = VirtualEcho(name)
        for sink in echo.sinks():
            server.add_sink(sink)
        self.echos[name] = echo
        self._server_of[name] = server

    def _server_with_room(self, timeout: float) -> _SoundServer:
        """PulseAudio serves at most 64 clients: each server holds ECHOS_PER_SERVER Echos."""
        for server in self._servers:
            if sum(1 for s in self._server_of.values() if s is server) < ECHOS_PER_SERVER:
                return server
        server = _SoundServer(len(self._servers), self._make_runtime_dir(len(self._servers)), self.rate)
        self._servers.append(server)
        server.start(timeout)
        return server

    def _make_runtime_dir(self, index: int) -> Path:
        runtime = self.folder / ("pulse" if index == 0 else f"pulse-{index}")
        if len(str(runtime.resolve())) > MAX_SOCKET_DIR:
            return Path(tempfile.mkdtemp(prefix="orch-lab-"))
        if runtime.exists():
            shutil.rmtree(runtime)
        runtime.mkdir(parents=True)
        return runtime.resolve()

    def _write_server_file(self) -> None:
        servers = {"servers": [server.env(self.alsa_config) for server in self._servers],
                   "echos": {name: server.index for name, server in self._server_of.items()}}
        write_text_atomic(self.folder / SERVER_FILE, json.dumps(servers, indent=2) + "\n")

    def alsa_config_for(self, echo: str, side: str) -> Path:
        """An ALSA configuration naming only the two devices one side of one Echo uses.

        `side` is "persona" (its speaker and microphone) or "echo" (what the simulated Echo hears
        and says). PortAudio opens every device it is told about when it starts; a process that
        sees only its own two starts in a fraction of the time, whatever the size of the lab.
        """
        return alsa_config_path(self.folder, echo, side)

    def _pcm(self, echo: str, name: str, device: str) -> str:
        return f'pcm.{name} {{ type pulse device "{device}" server "{self._server_of[echo].address}" }}'

    def _write_alsa_config(self) -> None:
        lines = ["</usr/share/alsa/alsa.conf>", ""]
        for echo in self.echos.values():
            for sink in echo.sinks():
                lines.append(self._pcm(echo.name, sink, sink))
                lines.append(self._pcm(echo.name, f"{sink}_mon", f"{sink}.monitor"))
            self._write_side_configs(echo)
        write_text_atomic(self.alsa_config, "\n".join(lines) + "\n")

    def _write_side_configs(self, echo: VirtualEcho) -> None:
        sides = {"persona": [(echo.speaker, echo.speaker), (echo.microphone, f"{echo.voice}.monitor")],
                 "echo": [(echo.speaker_monitor, f"{echo.speaker}.monitor"), (echo.voice, echo.voice)]}
        for side, pcms in sides.items():
            lines = ["</usr/share/alsa/alsa.conf>", ""]
            lines += [self._pcm(echo.name, name, device) for name, device in pcms]
            path = self.alsa_config_for(echo.name, side)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, "\n".join(lines) + "\n")


@contextlib.contextmanager
def acoustic_coupling(folder: Path, pairs: Iterable[tuple[str, str]]) -> Iterator[None]:
    """While inside, each (speaker Echo, microphone Echo) pair has air between them.

    The microphone of the second Echo hears the speaker of the first at the level it was played,
    about 20 ms late. Works from any process: the lab in `folder` is found through its server file.
    Both Echos must be on one sound server (the first eight Echos share one, and so on).
    """
    servers = _read_server_file(folder)
    loaded: list[tuple[dict[str, str], str]] = []
    try:
        for speaker, microphone in pairs:
            env = _env_of(servers, folder, speaker)
            if env != _env_of(servers, folder, microphone):
                raise LabError(f"{speaker} and {microphone} are on different sound servers: no air between them")
            loaded.append((env, _pactl(
                env, "load-module", "module-loopback", f"source={VirtualEcho(speaker).speaker}.monitor",
                f"sink={VirtualEcho(microphone).voice}", f"latency_msec={COUPLING_LATENCY_MSEC}",
                "source_dont_move=true", "sink_dont_move=true",
            ).strip()))
        yield
    finally:
        for env, module in loaded:
            with contextlib.suppress(LabError, subprocess.TimeoutExpired):
                _pactl(env, "unload-module", module)


def server_env(folder: Path, echo: str | None = None) -> dict[str, str]:
    """The client environment of the virtual lab running in `folder` (of `echo`'s sound server)."""
    return _env_of(_read_server_file(folder), folder, echo)


def _read_server_file(folder: Path) -> dict[str, Any]:
    path = folder / SERVER_FILE
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise LabError(f"no virtual lab is running in {folder} ({path} is missing): a virtual lab lives only as "
                       "long as the `orchestrator demo` that started it; run the demo again") from None


def _env_of(servers: dict[str, Any], folder: Path, echo: str | None) -> dict[str, str]:
    if echo is not None and echo not in servers["echos"]:
        raise LabError(f"the virtual lab in {folder} has no Echo {echo!r}")
    return dict(servers["servers"][servers["echos"][echo] if echo is not None else 0])


def _pactl(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(["pactl", *args], env={**os.environ, **env}, capture_output=True, text=True,
                            timeout=10)
    if result.returncode != 0:
        raise LabError(f"pactl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def alsa_config_path(folder: Path, echo: str, side: str) -> Path:
    return folder / "alsa" / f"{echo}-{side}.conf"


def use_own_devices(folder: Path | None, echo: str, side: str) -> None:
    """In a process of one Echo of a virtual lab: let PortAudio see only that Echo's devices."""
    if folder is not None and (path := alsa_config_path(folder, echo, side)).exists():
        os.environ["ALSA_CONFIG_PATH"] = str(path)


def validate_echo_name(name: str) -> None:
    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,30}", name):
        raise LabError(f"virtual Echo name {name!r}: use lower-case letters, digits, '-' and '_'")


def check_programs() -> None:
    missing = [p for p in REQUIRED_PROGRAMS if shutil.which(p) is None]
    if missing:
        raise LabError(
            f"the virtual lab needs {', '.join(missing)}; install the Debian packages "
            "pulseaudio pulseaudio-utils libasound2-plugins (make setup does this)"
        )


def _terminate(proc: subprocess.Popen[bytes], timeout: float = 3.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
