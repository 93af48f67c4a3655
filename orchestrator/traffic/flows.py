"""From a capture file to the flows of each Echo, reading one packet at a time.

A flow is one conversation of an Echo with a remote address and port: a TCP connection, or the
UDP packets between the same two ports. Its name comes from what the capture itself shows: the
TLS server name (SNI) of its first client message, the HTTP Host of its first request, the name a
DNS query asked for (port 53), or else the name a DNS answer seen earlier in the capture gave the
remote address. Nothing is looked up on the network.

Memory grows with the number of flows and of distinct addresses answered by DNS, never with the
number of packets: a night's capture of a few GB is read with flat memory (bench/traffic_parse.py).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import dpkt

#: TLS records of a ClientHello split over segments are gathered up to this many bytes.
MAX_HELLO_BYTES = 16_384
#: Client payload bytes looked at for a name; later packets of a flow are only counted.
NAME_PAYLOADS = 4
HTTP_REQUEST = re.compile(rb"^(GET|POST|PUT|HEAD|DELETE|OPTIONS|PATCH|CONNECT) \S+ HTTP/1\.[01]\r\n")
HTTP_HOST = re.compile(rb"\r\nhost:[ \t]*([^\r\n:]+)", re.IGNORECASE)
PROTOCOLS = {dpkt.ip.IP_PROTO_TCP: "tcp", dpkt.ip.IP_PROTO_UDP: "udp", dpkt.ip.IP_PROTO_ICMP: "icmp",
             dpkt.ip.IP_PROTO_ICMP6: "icmp6"}
DNS_PORT = 53


class CaptureFileError(ValueError):
    """A file that is not a capture this reader understands."""


@dataclass(frozen=True)
class Identity:
    """How one Echo's packets are recognised: its MAC, its IP, or both."""

    device_id: int
    mac: bytes | None = None
    ip: bytes | None = None  # packed, as it appears in the IP header

    @classmethod
    def of(cls, device_id: int, mac: str | None, ip: str | None) -> Identity:
        packed_ip = None
        if ip is not None:
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            packed_ip = socket.inet_pton(family, ip)
        return cls(device_id, bytes.fromhex(mac.replace(":", "")) if mac else None, packed_ip)


@dataclass
class FlowRecord:
    device_id: int
    protocol: str
    echo_address: str
    echo_port: int | None
    remote_address: str
    remote_port: int | None
    first: float
    last: float
    packets_out: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    bytes_in: int = 0
    name: str | None = None
    name_source: str | None = None
    _hello: bytearray = field(default_factory=bytearray, repr=False)
    _payloads: int = field(default=0, repr=False)

    def named(self, name: str, source: str) -> None:
        if self.name is None:
            self.name, self.name_source = name.rstrip(".").lower(), source


@dataclass
class CaptureSummary:
    packets: int = 0
    first: float | None = None
    last: float | None = None
    error: str | None = None


FlowKey = tuple[int, int, bytes, int, bytes, int]


class FlowTable:
    """The flows of every Echo in one capture, fed packet by packet."""

    def __init__(self, identities: Iterable[Identity]) -> None:
        self.identities = list(identities)
        self._by_mac = {i.mac: i for i in self.identities if i.mac}
        self._by_ip = {i.ip: i for i in self.identities if i.ip}
        self.flows: dict[FlowKey, FlowRecord] = {}
        # (device, remote address) -> the name a DNS answer gave it, latest first wins.
        self.answers: dict[tuple[int, bytes], str] = {}

    def add_frame(self, ts: float, frame: bytes, linktype: int) -> None:
        packet = _network_layer(frame, linktype)
        if packet is None:
            return
        src_mac, dst_mac, ip = packet
        if not isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6):
            return
        who, outbound = self._owner(src_mac, dst_mac, ip)
        if who is None:
            return
        self._add(ts, who, outbound, ip)

    def _owner(self, src_mac: bytes | None, dst_mac: bytes | None, ip: dpkt.Packet) -> tuple[Identity | None, bool]:
        if src_mac is not None and src_mac in self._by_mac:
            return self._by_mac[src_mac], True
        if dst_mac is not None and dst_mac in self._by_mac:
            return self._by_mac[dst_mac], False
        if ip.src in self._by_ip:
            return self._by_ip[ip.src], True
        if ip.dst in self._by_ip:
            return self._by_ip[ip.dst], False
        return None, False

    def _add(self, ts: float, who: Identity, outbound: bool, ip: dpkt.Packet) -> None:
        proto = ip.p if isinstance(ip, dpkt.ip.IP) else ip.nxt
        transport = ip.data
        sport = dport = 0
        if isinstance(transport, dpkt.tcp.TCP | dpkt.udp.UDP):
            sport, dport = transport.sport, transport.dport
        echo_addr, remote_addr = (ip.src, ip.dst) if outbound else (ip.dst, ip.src)
        echo_port, remote_port = (sport, dport) if outbound else (dport, sport)
        key = (who.device_id, proto, echo_addr, echo_port, remote_addr, remote_port)
        flow = self.flows.get(key)
        if flow is None:
            has_ports = isinstance(transport, dpkt.tcp.TCP | dpkt.udp.UDP)
            flow = FlowRecord(who.device_id, PROTOCOLS.get(proto, str(proto)), _text_ip(echo_addr),
                              echo_port if has_ports else None, _text_ip(remote_addr),
                              remote_port if has_ports else None, ts, ts)
            self.flows[key] = flow
        flow.last = max(flow.last, ts)
        flow.first = min(flow.first, ts)
        size = _ip_length(ip)
        if outbound:
            flow.packets_out += 1
            flow.bytes_out += size
        else:
            flow.packets_in += 1
            flow.bytes_in += size
        if isinstance(transport, dpkt.udp.UDP) and DNS_PORT in (sport, dport):
            self._dns(who, flow, bytes(transport.data), outbound)
        elif isinstance(transport, dpkt.tcp.TCP) and outbound and transport.data:
            self._client_payload(flow, bytes(transport.data))

    def _dns(self, who: Identity, flow: FlowRecord, payload: bytes, outbound: bool) -> None:
        try:
            message = dpkt.dns.DNS(payload)
        except (dpkt.UnpackError, IndexError, ValueError):
            return
        if not message.qd:
            return
        asked = message.qd[0].name
        flow.named(asked, "dns_query")
        if outbound or message.qr != dpkt.dns.DNS_R:
            return
        for answer in message.an:
            if answer.type == dpkt.dns.DNS_A and len(answer.rdata) == 4:
                self.answers[(who.device_id, answer.rdata)] = asked.rstrip(".").lower()
            elif answer.type == dpkt.dns.DNS_AAAA and len(answer.rdata) == 16:
                self.answers[(who.device_id, answer.rdata)] = asked.rstrip(".").lower()

    def _client_payload(self, flow: FlowRecord, payload: bytes) -> None:
        if flow.name_source in ("tls_sni", "http_host") or flow._payloads >= NAME_PAYLOADS:
            return
        flow._payloads += 1
        if flow._hello or payload[:1] == b"\x16":
            flow._hello += payload[: MAX_HELLO_BYTES - len(flow._hello)]
            name = server_name(bytes(flow._hello))
            if name is not None:
                flow.named(name, "tls_sni")
                flow._hello = bytearray()
            return
        if HTTP_REQUEST.match(payload):
            host = HTTP_HOST.search(payload)
            if host:
                flow.named(host.group(1).decode("ascii", "replace").strip(), "http_host")

    def finish(self) -> list[FlowRecord]:
        """Every flow, named from DNS answers where the capture showed nothing better."""
        out = []
        for key, flow in self.flows.items():
            if flow.name is None:
                answered = self.answers.get((key[0], key[4]))
                if answered is not None:
                    flow.named(answered, "dns_answer")
            flow._hello = bytearray()
            out.append(flow)
        return sorted(out, key=lambda f: (f.first, f.device_id))


def server_name(hello: bytes) -> str | None:
    """The server name of a TLS ClientHello (its SNI extension), or None."""
    try:
        record = dpkt.ssl.TLSRecord(hello)
        if record.type != 22:  # handshake
            return None
        handshake = dpkt.ssl.TLSHandshake(record.data)
        if not isinstance(handshake.data, dpkt.ssl.TLSClientHello):
            return None
        for kind, data in getattr(handshake.data, "extensions", []):
            if kind == 0 and len(data) > 5:  # server_name: list length, type 0 (host_name), length, name
                length = int.from_bytes(data[3:5], "big")
                return bytes(data[5 : 5 + length]).decode("ascii", "replace")
    except (dpkt.NeedData, dpkt.UnpackError, IndexError, ValueError, KeyError):
        return None
    return None


def _network_layer(frame: bytes, linktype: int) -> tuple[bytes | None, bytes | None, dpkt.Packet] | None:
    """The frame's MAC addresses (when the link has them) and its IP packet."""
    try:
        if linktype == dpkt.pcap.DLT_EN10MB:
            eth = dpkt.ethernet.Ethernet(frame)
            return eth.src, eth.dst, eth.data
        if linktype == dpkt.pcap.DLT_LINUX_SLL:
            sll = dpkt.sll.SLL(frame)
            return (bytes(sll.hdr[:6]) if sll.hlen == 6 else None), None, sll.data
        if linktype == dpkt.pcap.DLT_LINUX_SLL2:
            sll2 = dpkt.sll2.SLL2(frame)
            return None, None, sll2.data
        if linktype in (dpkt.pcap.DLT_RAW, 12, 14, dpkt.pcap.DLT_IPV4, dpkt.pcap.DLT_IPV6):
            version = frame[0] >> 4 if frame else 0
            return None, None, dpkt.ip.IP(frame) if version == 4 else dpkt.ip6.IP6(frame)
    except (dpkt.UnpackError, IndexError, ValueError):
        return None
    return None


def _ip_length(ip: dpkt.Packet) -> int:
    if isinstance(ip, dpkt.ip.IP):
        return int(ip.len)
    return int(ip.plen) + 40


def _text_ip(packed: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(packed) == 16 else socket.AF_INET, packed)


def packets(handle: BinaryIO) -> Iterator[tuple[float, bytes, int]]:
    """Each packet of a pcap or pcapng file: its time, its bytes and its link type."""
    try:
        reader = dpkt.pcap.UniversalReader(handle)
    except (ValueError, dpkt.UnpackError) as exc:  # a file shorter than a header is NeedData
        raise CaptureFileError(f"not a pcap or pcapng capture ({exc})") from None
    linktype = reader.datalink()
    for ts, frame in reader:
        yield float(ts), bytes(frame), linktype


def read_flows(path: Path, identities: Iterable[Identity]) -> tuple[list[FlowRecord], CaptureSummary]:
    """The flows of `path` for these Echos, and the file's packet count and first and last times.

    A file cut short inside a packet (a capture killed while writing) keeps what came before;
    `CaptureSummary.error` says where it ended.
    """
    table = FlowTable(identities)
    summary = CaptureSummary()
    with open(path, "rb") as handle:
        try:
            for ts, frame, linktype in packets(handle):
                summary.packets += 1
                summary.first = ts if summary.first is None else min(summary.first, ts)
                summary.last = ts if summary.last is None else max(summary.last, ts)
                table.add_frame(ts, frame, linktype)
        except (dpkt.NeedData, dpkt.UnpackError, EOFError) as exc:
            summary.error = f"the file ends inside packet {summary.packets + 1}: {exc or 'truncated'}"
    return table.finish(), summary
