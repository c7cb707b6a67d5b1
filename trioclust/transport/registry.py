"""Transport backends by URL scheme, and the interfaces they implement.

A backend turns the *location* part of an address (``127.0.0.1:8786`` in
``tcp://127.0.0.1:8786``) into connected anyio byte streams. Adding a scheme is
one new module that defines a :class:`Backend` and calls
:func:`register_backend` at import time, plus an import line in
``trioclust/transport/__init__.py``.

Every stream a backend returns provides :class:`TransportAttribute`, so layers
above learn the local and peer addresses without knowing the scheme.

Backends get the :class:`~trioclust.Security` in use (or None) and the role
of the side calling (``"scheduler"``, ``"worker"``, ``"client"``): a TLS
backend picks that role's certificate from it, and an unencrypted one calls
:func:`refuse_unencrypted`, which raises when the Security requires
encryption.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import anyio
from anyio import TypedAttributeSet, typed_attribute
from anyio.abc import ByteStream, TaskGroup

from trioclust.errors import EncryptionRequiredError

if TYPE_CHECKING:
    from trioclust.security import Security

__all__ = [
    "Backend",
    "ConnectionHandler",
    "Listener",
    "TransportAttribute",
    "accept_loop",
    "get_backend",
    "refuse_unencrypted",
    "register_backend",
    "registered_schemes",
    "run_handler",
]

logger = logging.getLogger("trioclust.transport")

# accept() failures that mean "out of resources, try again later"
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# how long the accept loop pauses after one of them, seconds
_ACCEPT_PAUSE = 0.1

#: What a listener calls for each accepted connection.
ConnectionHandler = Callable[[ByteStream], Awaitable[None]]


class TransportAttribute(TypedAttributeSet):
    """Facts every trioclust stream exposes through ``stream.extra(...)``."""

    #: this end's address, as a full URL (``tcp://127.0.0.1:41234``)
    local_address: str = typed_attribute()
    #: the other end's address, as a full URL
    peer_address: str = typed_attribute()


@runtime_checkable
class Listener(Protocol):
    """A bound, listening endpoint, as returned by :meth:`Backend.listen`."""

    @property
    def contact_address(self) -> str:
        """The full URL peers connect to, with the real bound port."""
        ...

    async def serve(self, handler: ConnectionHandler) -> None:
        """Accept connections forever, each handled in its own task.

        The stream passed to ``handler`` is closed when ``handler`` returns.
        An exception from one handler is logged and never stops the listener.
        """
        ...

    async def aclose(self) -> None:
        """Stop listening; connections already accepted are not affected."""
        ...


@runtime_checkable
class Backend(Protocol):
    """Connects to and listens on the locations of one URL scheme."""

    def parse_location(self, location: str) -> str:
        """Check a location and return its normal form.

        Raises:
            ValueError: the location is malformed for this scheme; the message
                says why without repeating the address.
        """
        ...

    async def connect(
        self, location: str, *, security: Security | None = None, role: str = "client"
    ) -> ByteStream:
        """Open a stream to ``location``, as ``role``, with ``security``'s certificates.

        Raises:
            OSError: the peer refused or could not be reached (the caller may
                retry).
        """
        ...

    async def listen(
        self, location: str, *, security: Security | None = None, role: str = "scheduler"
    ) -> Listener:
        """Bind ``location`` and return the listener, not yet serving.

        ``security`` and ``role`` are as for :meth:`connect`.
        """
        ...


_backends: dict[str, Backend] = {}


def refuse_unencrypted(
    security: Security | None, scheme: str, location: str, *, use: str
) -> None:
    """What an unencrypted backend calls first in ``connect`` and ``listen``.

    Args:
        security: the Security in use, if any.
        scheme: this backend's scheme (``"tcp"``).
        location: the location asked for.
        use: the encrypted scheme to suggest instead (``"tls"``).

    Raises:
        EncryptionRequiredError: ``security.require_encryption`` is set.
    """
    if security is not None and security.require_encryption:
        raise EncryptionRequiredError(
            f"{scheme}://{location} is not encrypted, and this Security requires encryption "
            f"(require_encryption=True): use {use}://{location} instead"
        )


def register_backend(scheme: str, backend: Backend) -> None:
    """Make ``scheme://`` addresses use ``backend``; replaces an earlier one."""
    _backends[scheme.lower()] = backend


def registered_schemes() -> list[str]:
    """The schemes that have a backend, sorted."""
    return sorted(_backends)


def get_backend(scheme: str) -> Backend:
    """The backend for ``scheme``.

    Raises:
        ValueError: no backend is registered for the scheme; the message
            lists the ones that are.
    """
    try:
        return _backends[scheme.lower()]
    except KeyError:
        raise ValueError(
            f"Unknown transport scheme {scheme!r}; registered schemes: "
            f"{', '.join(registered_schemes())}"
        ) from None


async def run_handler(handler: ConnectionHandler, stream: ByteStream, peer: str) -> None:
    """Run ``handler(stream)`` the way every listener must.

    The stream is closed afterwards, and an exception from the handler is
    logged instead of propagating, so one bad connection never takes the
    listener (and every other connection) down with it.
    """
    try:
        await handler(stream)
    except Exception:
        logger.exception("Connection handler for %s failed", peer)
    finally:
        await anyio.aclose_forcefully(stream)


async def accept_loop(
    accept: Callable[[], Awaitable[tuple[ByteStream, str]]],
    handler: ConnectionHandler,
    task_group: TaskGroup,
) -> None:
    """The accept loop listeners share: accept until the listener is closed.

    Running out of file descriptors (or memory for sockets) is logged and
    retried after a pause instead of ending the loop, as established servers do.

    Args:
        accept: returns the next accepted stream and its peer address; raises
            ``anyio.ClosedResourceError`` once the listener is closed.
        handler: run for each stream with :func:`run_handler`.
        task_group: where the per-connection tasks run.
    """
    while True:
        try:
            stream, peer = await accept()
        except anyio.ClosedResourceError:
            return
        except OSError as exc:
            if exc.errno not in _RESOURCE_ERRNOS:
                raise
            logger.error("Cannot accept connections (%s); retrying in %.1f s", exc, _ACCEPT_PAUSE)
            await anyio.sleep(_ACCEPT_PAUSE)
            continue
        task_group.start_soon(run_handler, handler, stream, peer, name=f"connection from {peer}")
