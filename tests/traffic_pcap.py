"""Small captures written packet by packet with dpkt, for the traffic tests.

The TLS ClientHello is a real one, made by Python's own TLS client into a memory buffer, so the
server-name parsing meets what a real client sends.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import dpkt

ECHO_MAC = bytes.fromhex("020000000a01")
GATEWAY_MAC = bytes.fromhex("020000000afe")
OTHER_MAC = bytes.fromhex("020000000a02")


@lru_cache(maxsize=1)
def _context() -> ssl.SSLContext:
    return ssl.create_default_context()


def client_hello(server_name: str) -> bytes:
    """The first bytes a TLS client sends to `server_name`."""
    context = _context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def ip4(text: str) -> bytes:
    return socket.inet_aton(text)


@dataclass
class PcapWriter:
    """Frames between an Echo (by MAC and address) and the world, written in time order."""

    path: Path
    echo_ip: str = "10.77.0.2"
    echo_mac: bytes = ECHO_MAC
    frames: list[tuple[float, bytes]] = field(default_factory=list)

    def _frame(self, ts: float, src_ip: str, dst_ip: str, transport: dpkt.Packet, proto: int,
               outbound: bool, src_mac: bytes | None = None) -> None:
        ip = dpkt.ip.IP(src=ip4(src_ip), dst=ip4(dst_ip), p=proto, data=transport, ttl=64)
        ip.len = len(ip)
        src = src_mac or (self.echo_mac if outbound else GATEWAY_MAC)
        dst = GATEWAY_MAC if outbound else self.echo_mac
        eth = dpkt.ethernet.Ethernet(src=src, dst=dst, type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
        self.frames.append((ts, bytes(eth)))

    def udp(self, ts: float, remote: str, sport: int, dport: int, payload: bytes, outbound: bool = True) -> None:
        udp = dpkt.udp.UDP(sport=sport if outbound else dport, dport=dport if outbound else sport, data=payload)
        udp.ulen = len(udp)
        src, dst = (self.echo_ip, remote) if outbound else (remote, self.echo_ip)
        self._frame(ts, src, dst, udp, dpkt.ip.IP_PROTO_UDP, outbound)

    def tcp(self, ts: float, remote: str, sport: int, dport: int, payload: bytes = b"", outbound: bool = True) -> None:
        tcp = dpkt.tcp.TCP(sport=sport if outbound else dport, dport=dport if outbound else sport,
                           flags=dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, data=payload)
        src, dst = (self.echo_ip, remote) if outbound else (remote, self.echo_ip)
        self._frame(ts, src, dst, tcp, dpkt.ip.IP_PROTO_TCP, outbound)

    def dns(self, ts: float, resolver: str, sport: int, name: str, answer: str) -> None:
        query = dpkt.dns.DNS(id=sport, qd=[dpkt.dns.DNS.Q(name=name, type=dpkt.dns.DNS_A)])
        self.udp(ts, resolver, sport, 53, bytes(query))
        reply = dpkt.dns.DNS(id=sport, qr=dpkt.dns.DNS_R, qd=[dpkt.dns.DNS.Q(name=name, type=dpkt.dns.DNS_A)],
                             an=[dpkt.dns.DNS.RR(name=name, type=dpkt.dns.DNS_A, rdata=ip4(answer), ttl=60)])
        self.udp(ts + 0.01, resolver, sport, 53, bytes(reply), outbound=False)

    def tls(self, ts: float, remote: str, sport: int, server_name: str | None, replies: int = 2) -> None:
        self.tcp(ts, remote, sport, 443, client_hello(server_name) if server_name else b"\x17\x03\x03\x00\x01x")
        for n in range(replies):
            self.tcp(ts + 0.02 * (n + 1), remote, sport, 443, b"s" * 100, outbound=False)

    def write(self, pcapng: bool = False) -> Path:
        with open(self.path, "wb") as handle:
            writer = dpkt.pcapng.Writer(handle) if pcapng else dpkt.pcap.Writer(handle)
            for ts, frame in sorted(self.frames, key=lambda f: f[0]):
                writer.writepkt(frame, ts=ts)
        return self.path
