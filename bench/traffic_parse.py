"""Benchmark reading a night's capture into flows: parse time and peak memory for a 1 GB capture.

    .venv/bin/python bench/traffic_parse.py [--gigabytes 1.0] [--flows 5000] [--keep DIR]

Writes a synthetic pcap of the size asked for: Echos (by MAC) talking to many servers, each flow a
DNS exchange, a real TLS ClientHello with its server name, then full-size data packets both ways,
flows interleaved as a night's are. Then, each in a fresh interpreter, reads it with
`orchestrator.traffic.flows.read_flows` (what `orchestrator traffic analyze` does per file) and
reports wall time, packets per second and the child's peak resident memory; the same for a file a
tenth the size shows that memory does not grow with the file. Figures go to
bench/results/traffic_parse.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(PROJECT / "tests"))

from traffic_pcap import PcapWriter  # noqa: E402

ECHOS = 10
DATA_BYTES = 1400
READ = """
import json, resource, sys, time
from pathlib import Path
from orchestrator.traffic.flows import Identity, read_flows
identities = [Identity.of(i, "02:00:00:00:0a:%02x" % (i + 1), None) for i in range({echos})]
started = time.perf_counter()
flows, summary = read_flows(Path({path!r}), identities)
elapsed = time.perf_counter() - started
print(json.dumps({{"seconds": elapsed, "packets": summary.packets, "flows": len(flows),
                  "named": sum(1 for f in flows if f.name), "peak_rss_mb": resource.getrusage(
                      resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def templates(flows: int) -> list[list[bytes]]:
    """Per flow, its frames (DNS, ClientHello, one data packet each way), as Ethernet bytes."""
    out = []
    for n in range(flows):
        echo = n % ECHOS
        w = PcapWriter(Path("/dev/null"), echo_ip=f"10.77.0.{echo + 2}",
                       echo_mac=bytes.fromhex(f"020000000a{echo + 1:02x}"))
        remote = f"10.{78 + n // 60000}.{(n // 250) % 240}.{n % 250 + 1}"
        name = f"api{n}.skill{n % 300}.example"
        w.dns(0.0, "10.77.0.53", 20000 + n % 40000, name, remote)
        w.tls(0.1, remote, 30000 + n % 30000, name, replies=0)
        w.tcp(0.2, remote, 30000 + n % 30000, 443, b"d" * DATA_BYTES)
        w.tcp(0.3, remote, 30000 + n % 30000, 443, b"d" * DATA_BYTES, outbound=False)
        out.append([frame for _ts, frame in w.frames])
    return out


def write_capture(path: Path, size: int, flows: int) -> int:
    """A pcap of about `size` bytes; returns its packet count."""
    frames = templates(flows)
    record = struct.Struct("<IIII")
    count = 0
    written = 24
    ts = 1_772_658_000.0
    with open(path, "wb") as handle:
        handle.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        round_ = 0
        while written < size:
            for flow in frames:
                # The first round opens each flow (DNS, hello); later rounds carry its data both ways.
                chosen = flow if round_ == 0 else flow[-2:]
                for frame in chosen:
                    ts += 0.0001
                    seconds = int(ts)
                    handle.write(record.pack(seconds, int((ts - seconds) * 1e6), len(frame), len(frame)))
                    handle.write(frame)
                    written += record.size + len(frame)
                    count += 1
                if written >= size:
                    break
            round_ += 1
    return count


def measure(path: Path) -> dict[str, float]:
    code = READ.format(echos=ECHOS, path=str(path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--flows", type=int, default=5000)
    parser.add_argument("--keep", type=Path, default=None, help="write the captures here and keep them")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="traffic-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    results = {}
    try:
        for label, fraction in (("tenth", 0.1), ("full", 1.0)):
            path = folder / f"{label}.pcap"
            started = time.perf_counter()
            packets = write_capture(path, int(args.gigabytes * fraction * 1e9), args.flows)
            made = time.perf_counter() - started
            figures = measure(path)
            figures.update(file_mb=path.stat().st_size / 1e6, written_packets=packets, write_seconds=made,
                           packets_per_second=figures["packets"] / figures["seconds"],
                           mb_per_second=path.stat().st_size / 1e6 / figures["seconds"])
            results[label] = figures
            print(f"{label}: {figures['file_mb']:.0f} MB, {figures['packets']:,} packets, {figures['flows']:,} flows "
                  f"({figures['named']:,} named): {figures['seconds']:.1f} s "
                  f"({figures['packets_per_second']:,.0f} packets/s, {figures['mb_per_second']:.0f} MB/s), "
                  f"peak memory {figures['peak_rss_mb']:.0f} MB")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    out = PROJECT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    results["command"] = " ".join(sys.argv)  # type: ignore[assignment]
    results["self_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # type: ignore[assignment]
    (out / "traffic_parse.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
