"""A lab network made of network namespaces, for the virtual lab's Echos to talk to a pretend cloud.

    [echo1 netns] eth0 ─ veth ─┐
    [echo2 netns] eth0 ─ veth ─┼─ bridge (host side, no address: tcpdump listens here)
    [cloud netns] eth0 ─ veth ─┘   dnsmasq answers every name of the script; a TLS server on :443

Every address lives inside a namespace made here (10.203.0.0/16); the bridge in the host's own
namespace has none, so nothing on the machine can reach the lab network or be reached from it.
Each Echo has a fixed MAC and IP, which the virtual lab's lab file gives it, so the night's capture
and `orchestrator traffic analyze` find its packets as they would a real Echo's.

The simulated Echo (echo.py) talks from its own namespace through `EchoNetwork`: it asks the
resolver for a name (a real DNS query over UDP) and opens a TLS connection to the answer with the
name as SNI, the way a real Echo reaches Amazon's and a skill's servers while it answers.

Requires root (namespaces, veth pairs), `ip` (iproute2), `dnsmasq` and `openssl`. Everything is
torn down by the names and process ids made here; a lab whose owner is killed loses its processes
(they die with it) and its namespaces at the next start (`sweep`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing
import os
import queue
import random
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.core.processes import die_with_parent, end_with_parent, name_this_process

REQUIRED_PROGRAMS = ("ip", "dnsmasq", "openssl")
NETWORK_FILE = "network.json"
SUBNET_PREFIX = 16
RESOLVER = "10.203.0.1"
CLONE_NEWNET = 0x40000000
TLS_PORT = 443
#: A contact (resolve and handshake) that takes longer is given up; the lab's own network answers in ms.
CONTACT_TIMEOUT = 3.0
#: Namespaces and bridges made here carry this prefix, with the owner's tag.
PREFIX = "orchnet"


class NetworkError(RuntimeError):
    """The lab network could not be built."""


@dataclass(frozen=True)
class EchoAddress:
    namespace: str
    mac: str
    ip: str


@dataclass(frozen=True)
class NetworkPlan:
    """Names and addresses of one lab network; written to the lab folder for the Echos' processes."""

    tag: str
    bridge: str
    cloud: str  # the namespace of the resolver and the servers
    resolver: str
    echos: dict[str, EchoAddress]
    endpoints: dict[str, str]  # name -> address

    def save(self, folder: Path) -> None:
        (folder / NETWORK_FILE).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, folder: Path) -> NetworkPlan | None:
        try:
            data = json.loads((folder / NETWORK_FILE).read_text())
        except FileNotFoundError:
            return None
        data["echos"] = {name: EchoAddress(**values) for name, values in data["echos"].items()}
        return cls(**data)


def plan(echos: list[str], names: Iterable[str], tag: str | None = None) -> NetworkPlan:
    tag = tag or f"{os.getpid() % 0xFFFF:04x}"
    addresses = {}
    for index, name in enumerate(sorted(set(names))):
        addresses[name] = f"10.203.{2 + index // 250}.{1 + index % 250}"
    return NetworkPlan(
        tag=tag, bridge=f"{PREFIX}{tag}", cloud=f"{PREFIX}-{tag}-cloud", resolver=RESOLVER,
        echos={name: EchoAddress(f"{PREFIX}-{tag}-{i}", f"02:0e:c0:00:{i // 256:02x}:{i % 256:02x}",
                                 f"10.203.1.{i + 1}")
               for i, name in enumerate(echos)},
        endpoints=addresses,
    )


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class VirtualNetwork:
    """Builds the network of `plan` on entry and removes every part of it on exit."""

    def __init__(self, folder: Path, network: NetworkPlan) -> None:
        self.folder = folder
        self.plan = network
        self._processes: list[subprocess.Popen[bytes]] = []
        self._tls: Any = None
        self._made: list[tuple[str, str]] = []  # ("netns" | "link", name), removed in reverse

    def __enter__(self) -> VirtualNetwork:
        missing = [p for p in REQUIRED_PROGRAMS if shutil.which(p) is None]
        if missing:
            raise NetworkError(f"the lab network needs {', '.join(missing)} (Debian: iproute2, dnsmasq-base, openssl)")
        if os.geteuid() != 0:
            raise NetworkError("the lab network needs root: network namespaces and veth pairs")
        try:
            self._build()
            self._start_resolver()
            self._start_tls()
            self.plan.save(self.folder)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _build(self) -> None:
        p = self.plan
        _ip("link", "add", p.bridge, "type", "bridge")
        self._made.append(("link", p.bridge))
        _ip("link", "set", p.bridge, "addrgenmode", "none")
        _ip("link", "set", p.bridge, "up")
        cloud_addresses = [f"{p.resolver}/{SUBNET_PREFIX}"] + [f"{a}/{SUBNET_PREFIX}" for a in p.endpoints.values()]
        self._node(p.cloud, f"{PREFIX}{p.tag}c", None, cloud_addresses)
        for index, echo in enumerate(p.echos.values()):
            self._node(echo.namespace, f"{PREFIX}{p.tag}e{index}", echo.mac, [f"{echo.ip}/{SUBNET_PREFIX}"])

    def _node(self, namespace: str, host_side: str, mac: str | None, addresses: list[str]) -> None:
        _ip("netns", "add", namespace)
        self._made.append(("netns", namespace))
        _ip("link", "add", host_side, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        # No IPv6 link-local chatter: the capture holds only what the Echos say.
        _ip("link", "set", host_side, "addrgenmode", "none")
        _ip("link", "set", host_side, "master", self.plan.bridge, "up")
        _ip("-n", namespace, "link", "set", "eth0", "addrgenmode", "none")
        if mac is not None:
            _ip("-n", namespace, "link", "set", "eth0", "address", mac)
        for address in addresses:
            _ip("-n", namespace, "addr", "add", address, "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        _ip("-n", namespace, "link", "set", "lo", "up")

    def _start_resolver(self) -> None:
        p = self.plan
        records = [f"--address=/{name}/{address}" for name, address in sorted(p.endpoints.items())]
        command = ["ip", "netns", "exec", p.cloud, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                   "--no-resolv", "--no-hosts", "--no-poll", "--bind-interfaces", f"--listen-address={p.resolver}",
                   "--user=root", "--pid-file", f"--log-facility={self.folder / 'dnsmasq.log'}", *records]
        self._processes.append(subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL, start_new_session=True,
                                                preexec_fn=end_with_parent))
        _wait_for(lambda: _answers(p), f"dnsmasq did not answer in {p.cloud} (log: {self.folder / 'dnsmasq.log'})")

    def _start_tls(self) -> None:
        cert, key = self.folder / "cloud.crt", self.folder / "cloud.key"
        done = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                               "-subj", "/CN=lab cloud", "-keyout", str(key), "-out", str(cert)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise NetworkError(f"openssl could not make the cloud's certificate: {done.stderr.strip()[-300:]}")
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Event()
        server = ctx.Process(target=_serve_tls, name="lab-cloud", args=(self.plan.cloud, cert, key, ready),
                             daemon=True)
        server.start()
        self._tls = server
        if not ready.wait(20):
            raise NetworkError("the lab cloud's TLS server did not start")

    def __exit__(self, *exc: object) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._processes.clear()
        if self._tls is not None:
            self._tls.terminate()
            self._tls.join(5)
            if self._tls.is_alive():
                self._tls.kill()
                self._tls.join()
            self._tls = None
        for kind, name in reversed(self._made):
            with contextlib.suppress(NetworkError):
                _ip("netns", "del", name) if kind == "netns" else _ip("link", "del", name)
        self._made.clear()
        (self.folder / NETWORK_FILE).unlink(missing_ok=True)


def sweep(tag: str) -> None:
    """Remove the namespaces and bridge a killed owner with `tag` left behind."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(f"{PREFIX}-{tag}-"):
            with contextlib.suppress(NetworkError):
                _ip("netns", "del", name)
    with contextlib.suppress(NetworkError):
        _ip("link", "del", f"{PREFIX}{tag}")


def _wait_for(ready: Any, message: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    raise NetworkError(message)


def _answers(p: NetworkPlan) -> bool:
    """dnsmasq answers a query from inside the cloud namespace (asked from a thread that enters it)."""
    if not p.endpoints:
        return True
    name = next(iter(p.endpoints))
    found: list[str | None] = []

    def ask() -> None:
        enter_namespace(p.cloud)
        found.append(resolve(name, p.resolver, timeout=0.5))

    thread = threading.Thread(target=ask, name="resolver-check")
    thread.start()
    thread.join()
    return found == [p.endpoints[name]]


# -- inside a namespace -----------------------------------------------------------------------


def enter_namespace(namespace: str) -> None:
    """Move the calling thread into a network namespace made by `ip netns add`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise NetworkError(f"setns into {namespace}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


def resolve(name: str, resolver: str, timeout: float = CONTACT_TIMEOUT) -> str | None:
    """The IPv4 address the resolver gives `name`, by a plain DNS query over UDP; None without an answer."""
    import dpkt  # only an Echo on a lab network asks; every other simulated Echo starts without it

    ident = random.randrange(1, 0xFFFF)
    query = dpkt.dns.DNS(id=ident, rd=1, qd=[dpkt.dns.DNS.Q(name=name, type=dpkt.dns.DNS_A)])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(bytes(query), (resolver, 53))
        try:
            data, _ = sock.recvfrom(4096)
        except TimeoutError:
            return None
    reply = dpkt.dns.DNS(data)
    for answer in reply.an:
        if answer.type == dpkt.dns.DNS_A and reply.id == ident:
            return socket.inet_ntoa(answer.rdata)
    return None


def contact(name: str, resolver: str) -> bool:
    """Resolve `name`, open TLS to it with the name as SNI, send a request: what an Echo does for a reply."""
    address = resolve(name, resolver)
    if address is None:
        return False
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the lab cloud's certificate is made up; the name is what counts
    try:
        with socket.create_connection((address, TLS_PORT), timeout=CONTACT_TIMEOUT) as raw, \
                context.wrap_socket(raw, server_hostname=name) as tls:
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
            tls.recv(256)
    except (OSError, ssl.SSLError):
        return False
    return True


class EchoNetwork:
    """A simulated Echo's network side: one thread inside its namespace that contacts names on request.

    Every `heartbeat` seconds it also reports to `heartbeat_name` unprompted, as a real Echo does.
    """

    def __init__(self, network: NetworkPlan, echo: str, heartbeat_name: str | None = None,
                 heartbeat: float = 4.0) -> None:
        self.network = network
        self.namespace = network.echos[echo].namespace
        self.heartbeat_name = heartbeat_name
        self.heartbeat = heartbeat
        self._jobs: queue.Queue[tuple[tuple[str, ...], Future[list[str]]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name=f"network-{echo}", daemon=True)
        self._started = threading.Event()
        self._thread.start()
        self._started.wait(5)

    def contact(self, names: tuple[str, ...]) -> Future[list[str]]:
        """Contact each name in turn; the future holds the names that answered."""
        future: Future[list[str]] = Future()
        self._jobs.put((names, future))
        return future

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(5)

    def _serve(self) -> None:
        enter_namespace(self.namespace)
        self._started.set()
        next_beat = time.monotonic()
        while True:
            wait = max(0.0, next_beat - time.monotonic()) if self.heartbeat_name else None
            try:
                job = self._jobs.get(timeout=wait)
            except queue.Empty:
                assert self.heartbeat_name is not None
                contact(self.heartbeat_name, self.network.resolver)
                next_beat = time.monotonic() + self.heartbeat
                continue
            if job is None:
                return
            names, future = job
            future.set_result([name for name in names if contact(name, self.network.resolver)])


def _serve_tls(namespace: str, cert: Path, key: Path, ready: Any) -> None:
    """The lab cloud: completes TLS handshakes on :443 of every address, answers a line, closes."""
    die_with_parent()
    name_this_process()
    enter_namespace(namespace)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = socket.create_server(("0.0.0.0", TLS_PORT), backlog=64, reuse_port=False)
    ready.set()
    while True:
        connection, _ = server.accept()
        threading.Thread(target=_answer, args=(context, connection), daemon=True).start()


def _answer(context: ssl.SSLContext, connection: socket.socket) -> None:
    connection.settimeout(CONTACT_TIMEOUT)
    try:
        with context.wrap_socket(connection, server_side=True) as tls:
            tls.recv(1024)
            tls.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
    except (OSError, ssl.SSLError):
        connection.close()
