"""The error a peer causes by sending something that is not trioclust's protocol."""

from __future__ import annotations

__all__ = ["ProtocolError"]


class ProtocolError(Exception):
    """A peer sent bytes that are not trioclust's wire protocol.

    Raised for malformed framing (a declared size over a limit, garbage
    headers), messages that reference frames they do not carry, and failed
    handshakes. The connection that produced it cannot be trusted any more and
    is closed; other connections are unaffected.
    """
