"""Errors of the comm layer: a connection that closed, a failed handshake, a remote error."""

from __future__ import annotations

from trioclust.protocol.errors import ProtocolError
from trioclust.protocol.serialize import Serialized

__all__ = ["CommClosedError", "HandshakeTimeout", "RemoteError"]


class CommClosedError(ConnectionError):
    """The connection is closed, or closed while this call used it.

    The message names the peer's address and why the connection ended
    ("the peer closed the connection", "this side closed the connection",
    "connection lost: [Errno 104] Connection reset by peer", ...).
    """


class HandshakeTimeout(ProtocolError, TimeoutError):
    """The peer did not complete the handshake in time (``comm.timeouts.handshake``).

    Both a :class:`~trioclust.protocol.ProtocolError` (whatever is at the other
    end does not speak trioclust's protocol promptly) and a ``TimeoutError``.
    """


class RemoteError(Exception):
    """A request's handler raised on the peer.

    The original exception arrives pickled and is *not* unpickled here
    (unpickling runs code); the client layer does that where it trusts the
    peer, and re-raises the original type.

    Attributes:
        text: ``"TypeName: message"`` of the remote exception.
        exception: the pickled exception, or ``None`` when the peer sent none.
        traceback: the remote traceback as text, when the peer sent one.
    """

    def __init__(
        self, text: str, exception: Serialized | None = None, traceback: str | None = None
    ) -> None:
        super().__init__(text)
        self.text = text
        self.exception = exception
        self.traceback = traceback
