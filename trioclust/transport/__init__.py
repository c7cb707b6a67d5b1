"""Byte streams by URL scheme: ``tcp://``, ``inproc://`` (``tls``, ``ws``, ``ucx`` to come).

:func:`connect` and :func:`listen` are the front end: they parse the address,
pick the scheme's backend from the registry, and (for ``connect``) retry while
the peer refuses, so a worker may start before its scheduler.
"""

from __future__ import annotations

import os

import anyio
from anyio.abc import ByteStream

from trioclust import config
from trioclust.transport import inproc, tcp
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
    register_backend,
    registered_schemes,
)

__all__ = [
    "EXAMPLE_ADDRESS",
    "Backend",
    "ConnectTimeout",
    "ConnectionHandler",
    "Listener",
    "TransportAttribute",
    "connect",
    "get_backend",
    "inproc",
    "listen",
    "normalize_address",
    "parse_address",
    "parse_host_port",
    "register_backend",
    "registered_schemes",
    "tcp",
    "unparse_host_port",
]

# retry delays while a peer refuses: start short, double, cap
_FIRST_RETRY_DELAY = 0.01
_MAX_RETRY_DELAY = 1.0


class ConnectTimeout(TimeoutError):
    """No connection could be made before the timeout (an ``OSError`` too).

    Attributes:
        address: the address that was tried.
        last_error: the last underlying failure, if any attempt completed.
    """

    def __init__(self, address: str, timeout: float, last_error: BaseException | None) -> None:
        reason = _describe(last_error) if last_error is not None else "no attempt completed"
        super().__init__(
            f"Timed out trying to connect to {address} after {timeout:g} s: {reason}. "
            f"Is the scheduler running at that address?"
        )
        self.address = address
        self.last_error = last_error


def _describe(exc: BaseException) -> str:
    """The root cause of a connect failure, as ``[Errno 111] Connection refused``."""
    cause = exc.__cause__
    if isinstance(exc, OSError) and exc.errno is None and isinstance(cause, OSError):
        return _describe(cause)
    if isinstance(cause, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in cause.exceptions)
    if isinstance(exc, OSError) and exc.errno is not None:
        # the same words under every event loop (asyncio says "Connect call failed")
        return f"[Errno {exc.errno}] {os.strerror(exc.errno)}"
    return str(exc) or type(exc).__name__


async def connect(address: str, *, timeout: float | None = None) -> ByteStream:
    """Open a byte stream to ``address``, retrying while the peer refuses.

    Refused or unreachable peers (any ``OSError``) are retried with short
    exponential backoff until ``timeout``.

    Args:
        address: ``scheme://location``; a bare ``host:port`` means ``tcp``.
        timeout: seconds; defaults to ``comm.timeouts.connect``.

    Returns:
        The connected stream; it provides :class:`TransportAttribute`.

    Raises:
        ValueError: the address is malformed or its scheme unknown (at once,
            without retrying).
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
                return await backend.connect(location)
            except OSError as exc:
                last_error = exc
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                break
            await anyio.sleep(min(delay, remaining))
            delay = min(delay * 2, _MAX_RETRY_DELAY)
    raise ConnectTimeout(url, timeout, last_error)


async def listen(address: str) -> Listener:
    """Bind ``address`` and return its listener (call ``serve`` to accept).

    Args:
        address: ``tcp://127.0.0.1:0`` (port 0 picks a free port),
            ``inproc://`` (picks a name), ...

    Raises:
        ValueError: the address is malformed or its scheme unknown.
        OSError: the address cannot be bound (in use, not local).
    """
    scheme, location = parse_address(address)
    return await get_backend(scheme).listen(location)
