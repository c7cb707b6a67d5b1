"""Byte streams by URL scheme: ``tcp://``, ``tls://``, ``ws://``, ``wss://``, ``inproc://``, ``ucx://``.

:func:`connect` and :func:`listen` are the front end: they parse the address,
pick the scheme's backend from the registry, and (for ``connect``) retry while
the peer refuses, so a worker may start before its scheduler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
from anyio.abc import ByteStream

from trioclust import config
from trioclust.errors import (
    ConnectTimeout,
    EncryptionRequiredError,
    TLSConnectionError,
    TransportHandshakeError,
    WebSocketHandshakeError,
)
from trioclust.transport import inproc, tcp, tls, ucx, websocket
from trioclust.transport.addresses import (
    EXAMPLE_ADDRESS,
    normalize_address,
    parse_address,
    parse_host_port,
    unparse_host_port,
)
from trioclust.transport.registry import (
    Backend,
    ConnectionHandler,
    Listener,
    TransportAttribute,
    get_backend,
    refuse_unencrypted,
    register_backend,
    registered_schemes,
)

if TYPE_CHECKING:
    from trioclust.security import Security

__all__ = [
    "EXAMPLE_ADDRESS",
    "Backend",
    "ConnectTimeout",
    "ConnectionHandler",
    "EncryptionRequiredError",
    "Listener",
    "TLSConnectionError",
    "TransportAttribute",
    "TransportHandshakeError",
    "WebSocketHandshakeError",
    "connect",
    "get_backend",
    "inproc",
    "listen",
    "normalize_address",
    "parse_address",
    "parse_host_port",
    "refuse_unencrypted",
    "register_backend",
    "registered_schemes",
    "tcp",
    "tls",
    "ucx",
    "unparse_host_port",
    "websocket",
]

# retry delays while a peer refuses: start short, double, cap
_FIRST_RETRY_DELAY = 0.01
_MAX_RETRY_DELAY = 1.0


async def connect(
    address: str,
    *,
    timeout: float | None = None,
    security: Security | None = None,
    role: str = "client",
) -> ByteStream:
    """Open a byte stream to ``address``, retrying while the peer refuses.

    Refused or unreachable peers (any ``OSError``) are retried with short
    exponential backoff until ``timeout``; a peer that answers but fails the
    transport's handshake (:class:`TransportHandshakeError`: a refused TLS
    certificate, say) is not.

    Args:
        address: ``scheme://location``; a bare ``host:port`` means ``tcp``.
        timeout: seconds; defaults to ``comm.timeouts.connect``.
        security: the :class:`~trioclust.Security` to connect with: required
            for ``tls://`` and ``wss://``; with ``require_encryption`` it
            refuses ``tcp://`` and ``ws://``.
        role: whose certificate to present (``"client"``, ``"worker"``,
            ``"scheduler"``).

    Returns:
        The connected stream; it provides :class:`TransportAttribute`.

    Raises:
        ValueError: the address is malformed or its scheme unknown, or
            ``security`` does not fit it (at once, without retrying);
            :class:`EncryptionRequiredError` for an unencrypted address under
            ``require_encryption``.
        TransportHandshakeError: the peer answered but refused the
            transport's handshake, or this side refused the peer's
            (:class:`TLSConnectionError`, :class:`WebSocketHandshakeError`).
        ConnectTimeout: no connection before ``timeout``; the message names the
            address and the last underlying error.
    """
    scheme, location = parse_address(address)
    backend = get_backend(scheme)
    url = f"{scheme}://{location}"
    if timeout is None:
        timeout = config.get_float("comm.timeouts.connect")
    deadline = anyio.current_time() + timeout
    delay = _FIRST_RETRY_DELAY
    last_error: BaseException | None = None
    while True:
        remaining = deadline - anyio.current_time()
        if remaining <= 0:
            break
        with anyio.move_on_after(remaining):
            try:
                return await backend.connect(location, security=security, role=role)
            except TransportHandshakeError:
                raise
            except OSError as exc:
                last_error = exc
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                break
            await anyio.sleep(min(delay, remaining))
            delay = min(delay * 2, _MAX_RETRY_DELAY)
    raise ConnectTimeout(url, timeout, last_error)


async def listen(
    address: str, *, security: Security | None = None, role: str = "scheduler"
) -> Listener:
    """Bind ``address`` and return its listener (call ``serve`` to accept).

    Args:
        address: ``tcp://127.0.0.1:0`` (port 0 picks a free port),
            ``inproc://`` (picks a name), ...
        security: as for :func:`connect`; a ``tls://`` or ``wss://`` listener
            requires a certificate from every peer, checked against its CA.
        role: whose certificate the listener presents (``"scheduler"``, ``"worker"``).

    Raises:
        ValueError: the address is malformed or its scheme unknown, or
            ``security`` does not fit it (:class:`EncryptionRequiredError`
            for an unencrypted address under ``require_encryption``).
        OSError: the address cannot be bound (in use, not local).
    """
    scheme, location = parse_address(address)
    return await get_backend(scheme).listen(location, security=security, role=role)
