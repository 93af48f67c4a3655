"""The host clock's state, as chrony and timedatectl report it."""

from __future__ import annotations

from orchestrator.core.clock import ClockState, host_clock, parse_chrony, parse_timedatectl

CHRONY = """Reference ID    : C0A80101 (192.168.1.1)
Stratum         : 3
Ref time (UTC)  : Sun Nov 29 21:00:00 2026
System time     : 0.000012345 seconds slow of NTP time
Last offset     : -0.000001234 seconds
Leap status     : Normal
"""


def test_chrony_tracking_gives_state_and_signed_offset():
    assert parse_chrony(CHRONY) == ClockState("synchronized", "chrony", -0.000012345)
    fast = CHRONY.replace("slow", "fast").replace("Normal", "Not synchronised")
    assert parse_chrony(fast) == ClockState("unsynchronized", "chrony", 0.000012345)
    assert parse_chrony("506 Cannot talk to daemon\n") is None


def test_timedatectl():
    assert parse_timedatectl("NTPSynchronized=yes\n") == ClockState("synchronized", "timedatectl")
    assert parse_timedatectl("NTPSynchronized=no\n") == ClockState("unsynchronized", "timedatectl")
    assert parse_timedatectl("") is None


def test_this_host_answers_with_one_of_the_three_states():
    assert host_clock().sync in {"synchronized", "unsynchronized", "unknown"}
