"""The lab file: which Echos exist, the speaker and microphone beside each, and how to listen.

    audio_backend: sounddevice          # or pyaudio
    echos:
      - name: kitchen
        room: a                          # Echos of one room never speak at the same time
        speaker: "USB Audio Device"      # PortAudio device name, or a unique part of it
        microphone: "Blue Yeti"
    endpointing:
      no_answer_timeout: 8.0             # seconds to wait for a reply to start
      max_reply: 30.0                    # streams (music, radio) are cut here
      hangover: 0.7                      # silence that ends a reply; pauses inside one reach 0.6 s
    rig_check:                           # the probe before every night (`orchestrator lab check`)
      before_night: true
      min_level: -40                     # dBFS an Echo's own microphone must hear its probe at
      max_crosstalk: -50                 # dBFS a microphone of another room must stay below
    speech_model: pocketsphinx-en-us     # what transcribes the replies (`orchestrator models list`);
                                         # --model and ORCHESTRATOR_ASR_MODEL win over it
    transcription_servers: 2             # processes decoding the replies the plan waits for; default:
                                         # one per core for pocketsphinx, one for Vosk (docs/operations.md)
    capture:                             # optional: the night's network traffic (docs/traffic.md)
      interface: eth1                    # where the Echos' packets pass (the access point's side)
      snap_length: 0                     # bytes kept of each packet; 0 keeps them whole
      rotate_megabytes: 100              # a new file after this many MB
      rotate_seconds: null               # and/or after this many seconds
      optional: false                    # true: a capture that cannot start is a warning, not an error

An Echo may carry its network identity, `mac: "f0:27:2d:12:34:56"` and `ip: 192.168.4.21`: the log
keeps them with the device, and the night's capture and `orchestrator traffic analyze` find the
Echo's packets by them.

A virtual lab writes the same file with `virtual_lab:` set to its folder; the runner then calls
the virtual lab's hooks (lab/hooks.py) instead of a physical lab's empty ones.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.audio.vad import EndpointConfig
from orchestrator.core import config_files
from orchestrator.core.config_files import CleanText

Backend = Literal["sounddevice", "pyaudio"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAC_PATTERN = re.compile(r"[0-9a-f]{2}([:-][0-9a-f]{2}){5}")
#: Interface names as Linux allows them (IFNAMSIZ - 1 characters, no slash or space).
INTERFACE_PATTERN = r"^[A-Za-z0-9_.:@-]{1,15}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceRow(TypedDict):
    """An Echo as the log's `devices` table records it."""

    name: str
    room: str | None
    speaker_device: str
    microphone_device: str
    audio_backend: str
    mac: str | None
    ip: str | None


class EchoConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    room: CleanText | None = None
    speaker: CleanText = Field(min_length=1)
    microphone: CleanText = Field(min_length=1)
    backend: Backend | None = None
    #: The Echo's network identity: how its packets are found in a capture.
    mac: str | None = None
    ip: str | None = None

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip().lower()
        if not MAC_PATTERN.fullmatch(text):
            raise ValueError(f"{value!r} is not a MAC address; write six pairs of hex digits, "
                             "as in f0:27:2d:12:34:56")
        return text.replace("-", ":")

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address (IPv4 as 192.168.4.21, or IPv6)") from None

    @property
    def has_network_identity(self) -> bool:
        return self.mac is not None or self.ip is not None

    @property
    def room_key(self) -> str:
        return self.room or f"echo:{self.name}"


class Endpointing(Strict):
    no_answer_timeout: float = Field(8.0, gt=0, le=120)
    max_reply: float = Field(30.0, gt=0, le=3600)
    hangover: float = Field(0.7, gt=0.1, le=5)
    aggressiveness: int = Field(2, ge=0, le=3)

    def config(self, **overrides: float) -> EndpointConfig:
        values = self.model_dump() | overrides
        return EndpointConfig(**values)


class RigCheck(Strict):
    """The rig self-test: each speaker plays a tone its own microphone must hear, and no other room may."""

    before_night: bool = True
    probe_level: float = Field(-12.0, ge=-40, le=-3)
    min_level: float = Field(-40.0, ge=-90, le=-3)
    max_crosstalk: float = Field(-50.0, ge=-100, le=-3)
    #: The probe must also stand this far above the microphone's noise in its band.
    min_snr: float = Field(10.0, ge=3, le=60)


class Capture(Strict):
    """The night's traffic capture: one tcpdump on `interface`, filtered to the lab's Echos."""

    interface: str = Field(pattern=INTERFACE_PATTERN)
    #: Bytes kept of each packet (tcpdump -s); 0 keeps whole packets.
    snap_length: int = Field(0, ge=0, le=262144)
    #: A new file after this many megabytes (tcpdump -C, millions of bytes) ...
    rotate_megabytes: int | None = Field(100, ge=1, le=100_000)
    #: ... or this many seconds (tcpdump -G).
    rotate_seconds: int | None = Field(None, ge=10, le=86_400)
    #: True: a capture that cannot start is reported and the night goes on without it.
    optional: bool = False
    #: Where the files go (default: the captures folder beside the log).
    folder: Path | None = None


class LabConfig(Strict):
    audio_backend: Backend = "sounddevice"
    echos: list[EchoConfig] = Field(min_length=1)
    endpointing: Endpointing = Endpointing()
    rig_check: RigCheck = RigCheck()
    speech_model: str | None = Field(None, min_length=1)
    transcription_servers: int | None = Field(None, ge=1, le=64)
    capture: Capture | None = None
    virtual_lab: Path | None = None

    def echo(self, name: str) -> EchoConfig:
        for echo in self.echos:
            if echo.name == name:
                return echo
        raise KeyError(name)

    def backend_of(self, echo: EchoConfig) -> Backend:
        return echo.backend or self.audio_backend

    def device_row(self, echo: EchoConfig) -> DeviceRow:
        """The Echo as the log's `devices` table records it (`log.upsert_device`)."""
        return {"name": echo.name, "room": echo.room, "speaker_device": echo.speaker,
                "microphone_device": echo.microphone, "audio_backend": self.backend_of(echo),
                "mac": echo.mac, "ip": echo.ip}


#: Where a new lab file comes from.
EXAMPLE = "lab.example.yaml"


def load_lab(path: Path) -> LabConfig:
    if not path.exists() and not path.is_symlink():
        raise config_files.ConfigError([config_files.Issue(
            path, None, "", f"file not found: a lab file names each Echo's speaker and microphone; copy {EXAMPLE} to "
                            f"{path.name} and put in the device names `orchestrator devices` lists")])
    document = config_files.read_document(path)
    lab = config_files.validate(document, LabConfig)
    issues = []
    for field, what in (("name", "Echo name"), ("speaker", "speaker"), ("microphone", "microphone"),
                        ("mac", "MAC address"), ("ip", "IP address")):
        issues += _used_twice(document, lab, field, what)
    if lab.capture is not None and not any(echo.has_network_identity for echo in lab.echos):
        issues.append(document.issue(("capture",), "a capture is filtered to the Echos' packets: give at least "
                                                   "one Echo its `mac` or `ip`"))
    if issues:
        raise config_files.ConfigError(issues)
    return lab


def _used_twice(document: config_files.Document, lab: LabConfig, field: str, what: str) -> list[config_files.Issue]:
    """An Echo's name, speaker or microphone that another Echo has too: one device cannot serve two rooms."""
    first: dict[str, int] = {}
    issues = []
    for index, echo in enumerate(lab.echos):
        value = getattr(echo, field)
        if value is None:
            continue
        if value in first:
            issues.append(document.issue(("echos", index, field),
                                         f"{what} {value!r} is used twice (also echos[{first[value]}])"))
        first.setdefault(value, index)
    return issues
