"""Captures and flows in the log: recording a capture file, and analysing it into flows.

A capture file is recorded once (its path, SHA-256, size, packet count and first and last packet
times); `analyze` reads it into `flows`, replacing what an earlier analysis of it left, so it can
be run again with another tail or tracker list.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dpkt
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine

from orchestrator import log
from orchestrator.traffic.domains import is_tracker, registrable_domain
from orchestrator.traffic.flows import CaptureFileError, CaptureSummary, FlowRecord, Identity, packets, read_flows
from orchestrator.traffic.link import DEFAULT_TAIL, Window, Windows

HASH_CHUNK = 1 << 20
#: Steps this far before a capture's first packet or after its last are not looked at for links.
WINDOW_MARGIN = timedelta(hours=1)


class TrafficError(ValueError):
    """A capture or an Echo that cannot be used as asked."""


@dataclass(frozen=True)
class FileFacts:
    sha256: str
    size: int
    summary: CaptureSummary


def file_facts(path: Path) -> FileFacts:
    """The file's SHA-256 and size, and its packets: count, first and last time (one streaming pass)."""
    digest = hashlib.sha256()
    summary = CaptureSummary()
    with open(path, "rb") as handle:
        try:
            for ts, _frame, _link in packets(handle):
                summary.packets += 1
                summary.first = ts if summary.first is None else min(summary.first, ts)
                summary.last = ts if summary.last is None else max(summary.last, ts)
        except (dpkt.NeedData, dpkt.UnpackError, EOFError) as exc:
            summary.error = f"the file ends inside packet {summary.packets + 1}: {exc or 'truncated'}"
        handle.seek(0)
        size = 0
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return FileFacts(digest.hexdigest(), size, summary)


def moment(posix: float | None, offset: float = 0.0) -> datetime | None:
    return None if posix is None else datetime.fromtimestamp(posix + offset, UTC)


def record_capture(engine: Engine, path: Path, *, source: str, interface: str | None = None,
                   capture_filter: str | None = None, snap_length: int | None = None, device_id: int | None = None,
                   clock_offset: float = 0.0, started_at: datetime | None = None,
                   finished_at: datetime | None = None, packets_dropped: int | None = None,
                   error: str | None = None) -> int:
    """Record one capture file in `captures` and return its id."""
    path = path.resolve()
    try:
        facts = file_facts(path)
    except CaptureFileError as exc:
        raise TrafficError(f"{path}: {exc}") from None
    except OSError as exc:
        raise TrafficError(f"{path}: cannot read: {exc.strerror or exc}") from None
    errors = "; ".join(e for e in (error, facts.summary.error) if e) or None
    row = log.Capture(
        source=source, path=str(path), sha256=facts.sha256, bytes=facts.size, interface=interface,
        filter=capture_filter, snap_length=snap_length, device_id=device_id, clock_offset_seconds=clock_offset,
        started_at=started_at or log.utcnow(), finished_at=finished_at or log.utcnow(),
        first_packet_at=moment(facts.summary.first, clock_offset),
        last_packet_at=moment(facts.summary.last, clock_offset), packets=facts.summary.packets,
        packets_dropped=packets_dropped, host=socket.gethostname(), error=errors,
    )
    with log.write_session(engine) as session:
        session.add(row)
        session.flush()
        return row.id


def import_capture(engine: Engine, path: Path, echo: str | None = None, clock_offset: float = 0.0) -> int:
    """Record a capture made elsewhere (the access point); `echo`: the one Echo it holds."""
    if not path.is_file():
        raise TrafficError(f"{path}: not a file")
    device_id = None
    if echo is not None:
        device_id = _device(engine, echo)
    return record_capture(engine, path, source="import", device_id=device_id, clock_offset=clock_offset)


def _device(engine: Engine, name: str) -> int:
    with engine.connect() as connection:
        row = connection.execute(select(log.Device.id, log.Device.mac, log.Device.ip)
                                 .where(log.Device.name == name)).one_or_none()
        known = connection.execute(select(log.Device.name).order_by(log.Device.name)).scalars().all()
    if row is None:
        raise TrafficError(f"no Echo called {name!r} in the log (known: {', '.join(known) or 'none'}); an Echo "
                           "enters the log with its first run or rig check")
    if row.mac is None and row.ip is None:
        raise TrafficError(f"Echo {name!r} has no network identity in the log: give it `mac` or `ip` in the lab "
                           "file; the log takes them at its next run or `orchestrator lab check`")
    return int(row.id)


@dataclass(frozen=True)
class AnalysisResult:
    capture_id: int
    flows: int
    linked: int
    background: int
    error: str | None


def analyze(engine: Engine, capture_ids: Sequence[int] | None = None, *, again: bool = False,
            tail: float = DEFAULT_TAIL, trackers: frozenset[str] | None = None) -> list[AnalysisResult]:
    """Read captures into `flows`: the given ones, else every capture not analyzed yet (all with `again`)."""
    c = log.Capture
    with engine.connect() as connection:
        query = select(c.id, c.path, c.device_id, c.clock_offset_seconds).order_by(c.id)
        if capture_ids:
            query = query.where(c.id.in_(capture_ids))
        elif not again:
            query = query.where(c.analyzed_at.is_(None))
        captures = [CaptureToRead(*row) for row in connection.execute(query)]
        devices = [(row.id, row.mac, row.ip) for row in connection.execute(
            select(log.Device.id, log.Device.mac, log.Device.ip))]
    missing = set(capture_ids or ()) - {capture.id for capture in captures}
    if missing:
        raise TrafficError(f"no capture with id {', '.join(map(str, sorted(missing)))} in the log")
    return [_analyze_one(engine, capture, devices, tail, trackers) for capture in captures]


@dataclass(frozen=True)
class CaptureToRead:
    id: int
    path: str
    device_id: int | None  # the one Echo it holds; None: every Echo with an identity
    clock_offset_seconds: float


DeviceIdentity = tuple[int, str | None, str | None]  # id, mac, ip


def _identities(capture: CaptureToRead, devices: Iterable[DeviceIdentity]) -> list[Identity]:
    chosen = [d for d in devices if capture.device_id in (None, d[0])]
    return [Identity.of(device_id, mac, ip) for device_id, mac, ip in chosen if mac or ip]


def _analyze_one(engine: Engine, capture: CaptureToRead, devices: Sequence[DeviceIdentity], tail: float,
                 trackers: frozenset[str] | None) -> AnalysisResult:
    capture_id = capture.id
    offset = capture.clock_offset_seconds or 0.0
    identities = _identities(capture, devices)
    try:
        flows, summary = read_flows(Path(capture.path), identities)
        error = summary.error
    except (OSError, CaptureFileError) as exc:
        flows, error = [], f"cannot read {capture.path}: {exc}"
    if not identities:
        error = "no Echo in the log has a network identity (mac or ip): no packet could be told apart"
    windows = _windows(engine, flows, offset, {i.device_id for i in identities}, tail)
    rows = [_flow_row(capture_id, flow, offset, windows, trackers) for flow in flows]
    with log.write_session(engine) as session:
        session.execute(delete(log.Flow).where(log.Flow.capture_id == capture_id))
        if rows:
            session.execute(insert(log.Flow), rows)
        session.execute(update(log.Capture).where(log.Capture.id == capture_id)
                        .values(analyzed_at=log.utcnow(), error=error))
    linked = sum(1 for r in rows if r["interaction_id"] is not None)
    return AnalysisResult(capture_id, len(rows), linked, len(rows) - linked, error)


def _windows(engine: Engine, flows: list[FlowRecord], offset: float, device_ids: set[int], tail: float) -> Windows:
    if not flows:
        return Windows([], tail)
    first = moment(min(f.first for f in flows), offset)
    last = moment(max(f.last for f in flows), offset)
    assert first is not None and last is not None
    i = log.Interaction
    start = i.prompt_started_at
    with engine.connect() as connection:
        rows = connection.execute(
            select(i.id, i.device_id, i.started_at, i.prompt_started_at, i.prompt_ended_at, i.response_ended_at,
                   i.finished_at)
            .where(i.device_id.in_(device_ids), start.is_not(None),
                   start >= first - WINDOW_MARGIN, start <= last + WINDOW_MARGIN)
        ).all()
    windows = []
    for row in rows:
        begin = row.prompt_started_at or row.started_at
        end = row.response_ended_at or row.prompt_ended_at or row.finished_at or begin
        windows.append(Window(row.device_id, row.id, begin.timestamp(), max(end, begin).timestamp()))
    return Windows(windows, tail)


def _flow_row(capture_id: int, flow: FlowRecord, offset: float, windows: Windows,
              trackers: frozenset[str] | None) -> dict[str, object]:
    first = flow.first + offset
    interaction = windows.step_at(flow.device_id, first)
    domain = registrable_domain(flow.name)
    return {
        "capture_id": capture_id, "device_id": flow.device_id, "interaction_id": interaction,
        "link": "interaction" if interaction is not None else "background", "protocol": flow.protocol,
        "echo_address": flow.echo_address, "echo_port": flow.echo_port, "remote_address": flow.remote_address,
        "remote_port": flow.remote_port, "first_packet_at": moment(flow.first, offset),
        "last_packet_at": moment(flow.last, offset), "packets_out": flow.packets_out, "bytes_out": flow.bytes_out,
        "packets_in": flow.packets_in, "bytes_in": flow.bytes_in, "name": flow.name,
        "name_source": flow.name_source, "domain": domain,
        "tracker": None if trackers is None else (is_tracker(flow.name, trackers) or is_tracker(domain, trackers)),
    }
