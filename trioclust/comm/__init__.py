"""Connections that carry whole messages: :class:`Comm`, :class:`Link`, connect, serve.

Built on :mod:`trioclust.protocol` (encoding, framing) and
:mod:`trioclust.transport` (byte streams by scheme); uses anyio only, so it
runs under trio and asyncio alike.
"""

from __future__ import annotations

from trioclust.comm.comm import Comm, CommHandler, connect, handle_stream, serve
from trioclust.comm.link import Handler, Link, LinkStatistics, writes_deferred
from trioclust.errors import CommClosedError, HandshakeTimeout, RemoteError

__all__ = [
    "Comm",
    "CommClosedError",
    "CommHandler",
    "Handler",
    "HandshakeTimeout",
    "Link",
    "LinkStatistics",
    "RemoteError",
    "connect",
    "handle_stream",
    "serve",
    "writes_deferred",
]
