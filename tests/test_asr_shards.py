"""Several transcription servers of one model: Echos assigned in turn, each server decoding its own.

Real servers with the bundled pocketsphinx model, hearing the simulated Echo's voice.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.asr import SpeechModel, TranscriptionClient
from orchestrator.asr.shards import TranscriptionShards, default_count
from orchestrator.audio.clip import MIC_FORMAT, Clip, read_wav
from orchestrator.sim import voice

SAID = "Okay. Cat Facts is now enabled."
AUTHKEY = b"k" * 16


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    cache = tmp_path_factory.mktemp("voice")
    return read_wav(voice.render_many([SAID], cache)[SAID])


@pytest.fixture()
def shards(tmp_path: Path, english_model: SpeechModel) -> Iterator[TranscriptionShards]:
    group = TranscriptionShards(english_model, tmp_path, AUTHKEY, count=2)
    group.start()
    try:
        yield group
    finally:
        group.stop()


def _hear(socket: Path, clip: Clip) -> set[str]:
    with TranscriptionClient(socket, AUTHKEY) as client:
        stream = client.stream()
        for start in range(0, len(clip.pcm), MIC_FORMAT.nbytes(0.1)):
            stream.feed(clip.pcm[start:start + MIC_FORMAT.nbytes(0.1)])
        return set(stream.finish(timeout=60).text.split())


def _cpu_ticks(pid: int | None) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_one_server_for_an_engine_that_decodes_in_parallel_else_one_per_core(english_model: SpeechModel) -> None:
    vosk = SpeechModel("vosk", Path("model"), "model")
    assert default_count(vosk, cores=8) == 1
    assert default_count(english_model, cores=2) == 2
    assert default_count(english_model, cores=1) == 1
    assert default_count(english_model) == len(os.sched_getaffinity(0))


def test_echos_take_the_servers_in_turn_and_each_server_decodes_its_own(
        shards: TranscriptionShards, speech: Clip) -> None:
    sockets = [shards.socket_for(echo) for echo in range(5)]
    assert sockets[0] == sockets[2] == sockets[4] != sockets[1] == sockets[3]
    pids = shards.pids
    assert len(set(pids)) == 2 and None not in pids
    for echo, pid in enumerate(pids):
        before = _cpu_ticks(pid)
        heard = _hear(shards.socket_for(echo), speech)
        assert len(heard & {"okay", "cat", "facts", "now", "enabled"}) >= 3, heard
        assert _cpu_ticks(pid) > before  # this Echo's server did the decoding


def test_a_dead_server_is_brought_back_alone(shards: TranscriptionShards, speech: Clip) -> None:
    first, second = shards.pids
    assert second is not None
    os.kill(second, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while shards.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not shards.running
    assert shards.ensure_running() == [1]
    assert shards.running
    assert shards.pids[0] == first and shards.pids[1] not in (None, second)
    assert "facts" in _hear(shards.socket_for(1), speech)


def test_each_server_warms_the_recognizers_of_its_own_echos(
        tmp_path: Path, english_model: SpeechModel, monkeypatch: pytest.MonkeyPatch) -> None:
    group = TranscriptionShards(english_model, tmp_path, AUTHKEY, count=3)
    warmed: dict[Path, int] = {}
    for server in group.servers:
        monkeypatch.setattr(server, "warm", lambda count, path=server.socket_path: warmed.__setitem__(path, count))
    group.warm(7)
    assert [warmed[server.socket_path] for server in group.servers] == [3, 2, 2]
    group.warm(1)
    assert [warmed[server.socket_path] for server in group.servers] == [1, 0, 0]
