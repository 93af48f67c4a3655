"""The night's transcription servers: one per core for an engine that decodes on one core.

pocketsphinx holds Python's GIL while it decodes, so one server process decodes on one core,
however many Echos stream to it at once. The enable and open replies of ten Echos come in bursts,
and in such a burst one core is not enough: the transcripts the plans wait for came seconds late.
Vosk (Kaldi, called through cffi) decodes each connection on its own thread in parallel, so one
server is enough for it, and a second would cost a second copy of a model that can be gigabytes.

Each Echo keeps to one server for the night (`socket_for`): its recognizer stays warm there, and
each server holds recognizers only for its own Echos, so splitting costs one more model load, not
one more recognizer per Echo. Assigning Echos in turn spreads them evenly; their bursts are what
is random, and they are spread as evenly as the Echos.

    shards = TranscriptionShards(model, folder, authkey, count=default_count(model))
    shards.start()
    shards.warm(echos=10)                 # five recognizers on each of two servers
    request.asr_socket = shards.socket_for(echo_index)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from orchestrator.asr.engine import SpeechModel, engine_for
from orchestrator.asr.server import ModelLoadReport, TranscriptionServer

T = TypeVar("T")


def default_count(model: SpeechModel, cores: int | None = None) -> int:
    """One server for an engine that decodes connections in parallel; else one per core."""
    if engine_for(model).decodes_in_parallel:
        return 1
    return max(1, cores if cores is not None else len(os.sched_getaffinity(0)))


class TranscriptionShards:
    """Several `TranscriptionServer`s of one model, each with its own socket; Echos assigned in turn."""

    def __init__(self, model: SpeechModel, folder: Path, authkey: bytes, count: int) -> None:
        if count < 1:
            raise ValueError(f"at least one transcription server is needed, not {count}")
        self.servers = [TranscriptionServer(model, Path(folder) / f"asr-{index}.sock", authkey=authkey)
                        for index in range(count)]

    def __len__(self) -> int:
        return len(self.servers)

    def start(self) -> ModelLoadReport:
        """Start every server, loading the model in all of them at once; the first one's report."""
        reports: list[ModelLoadReport] = self._each(TranscriptionServer.start)
        return reports[0]

    def stop(self) -> None:
        self._each(lambda server: server.stop())

    def ensure_running(self, max_rss_bytes: int | None = None) -> list[int]:
        """Bring back every server that died (or grew past `max_rss_bytes`); the indexes of those started."""
        started = self._each(lambda server: server.ensure_running(max_rss_bytes))
        return [index for index, restarted in enumerate(started) if restarted]

    def warm(self, echos: int) -> None:
        """Make and warm the recognizers of `echos` Echos, each on the server it is assigned to."""
        counts = [len(range(index, echos, len(self.servers))) for index in range(len(self.servers))]
        self._each(lambda server, count: server.warm(count), counts)

    def socket_for(self, echo_index: int) -> Path:
        return self.servers[echo_index % len(self.servers)].socket_path

    @property
    def running(self) -> bool:
        return all(server.running for server in self.servers)

    @property
    def pids(self) -> list[int | None]:
        return [server.pid for server in self.servers]

    @property
    def report(self) -> ModelLoadReport | None:
        return self.servers[0].report

    def _each(self, action: Callable[..., T], *args: Iterable[object]) -> list[T]:
        # In threads: each server is its own process, so loading and warming them overlap.
        with ThreadPoolExecutor(len(self.servers), thread_name_prefix="asr-shard") as pool:
            return list(pool.map(action, self.servers, *args))
