"""Errors of the transport layer that retrying cannot fix.

:func:`trioclust.transport.connect` retries a peer that refuses or cannot be
reached (any ``OSError``) until its timeout. A peer that *was* reached but
failed the transport's own handshake (TLS, the websocket upgrade) is another
matter: the same certificate will be refused again. Those failures are
:class:`TransportHandshakeError` and are raised at once. Asking for an
unencrypted address where encryption is required is a mistake in the address,
so it is a ``ValueError``.
"""

from __future__ import annotations

__all__ = [
    "EncryptionRequiredError",
    "TLSConnectionError",
    "TransportHandshakeError",
    "WebSocketHandshakeError",
]


class TransportHandshakeError(ConnectionError):
    """The peer answered, but the transport's handshake failed; retrying will not help."""


class TLSConnectionError(TransportHandshakeError):
    """A TLS connection was refused by either side.

    The message names the peer and says what failed: this side presented no
    certificate, the certificate is not signed by the CA the other side
    trusts, the peer does not speak TLS at all, or the two sides share no
    TLS version.
    """


class WebSocketHandshakeError(TransportHandshakeError):
    """The websocket upgrade failed: the server answered with an HTTP error
    (a wrong path, say), or with something that is not HTTP."""


class EncryptionRequiredError(ValueError):
    """An unencrypted address (``tcp://``, ``ws://``) was asked for while the
    :class:`~trioclust.Security` in use says ``require_encryption=True``.

    The message names the address and the encrypted one to use instead.
    """
