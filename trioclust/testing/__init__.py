"""Test helpers that ship with trioclust: the transport conformance suite."""

from __future__ import annotations

from trioclust.testing.transport_conformance import (
    check_abort_mid_message,
    check_close_from_either_side,
    check_connect_refused,
    check_large_message,
    check_small_messages,
    comm_pair,
    run_conformance_suite,
    stream_pair,
)

__all__ = [
    "check_abort_mid_message",
    "check_close_from_either_side",
    "check_connect_refused",
    "check_large_message",
    "check_small_messages",
    "comm_pair",
    "run_conformance_suite",
    "stream_pair",
]
