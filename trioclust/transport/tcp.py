"""``tcp://host:port``: plain TCP through anyio's sockets, under trio or asyncio.

Both ends set ``TCP_NODELAY``: trioclust batches messages itself and a 40 ms
Nagle delay on a request would dwarf the round trip. A listener on port 0
reports the port the kernel picked, and a host that resolves to several
addresses (``localhost``) is bound on all of them with the same port.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import sniffio
from anyio.abc import ByteStream, SocketAttribute, SocketListener, SocketStream

from trioclust.transport.addresses import split_host_port, unparse_host_port
from trioclust.transport.registry import (
    ConnectionHandler,
    TransportAttribute,
    accept_loop,
    refuse_unencrypted,
    register_backend,
)

if TYPE_CHECKING:
    from trioclust.security import Security

__all__ = ["TCPBackend", "TCPListener", "TCPStream"]


_T = TypeVar("_T")


def _url(sockaddr: Any) -> str:
    return "tcp://" + unparse_host_port(str(sockaddr[0]), int(sockaddr[1]))


class TCPStream(ByteStream):
    """An anyio socket stream that also reports its addresses as URLs.

    Under trio it also offers :attr:`receive_into`, which reads straight into
    the caller's buffer: a large frame is then filled by the kernel's one copy,
    with no temporary ``bytes`` per read (anyio's ``receive`` allocates one).
    Under asyncio the socket belongs to asyncio's transport, which reads it
    itself, so ``receive_into`` is ``None`` there.
    """

    #: ``await stream.receive_into(buffer)`` -> bytes read (>= 1), or None
    #: where unsupported. Raises like :meth:`receive`.
    receive_into: Callable[[memoryview], Awaitable[int]] | None
    #: ``stream.send_nowait(data)`` -> bytes the kernel took at once (raises
    #: ``BlockingIOError`` when none; other ``OSError`` when broken), or None
    #: where unsupported. Not a checkpoint; the caller keeps writes in order.
    send_nowait: Callable[[bytes], int] | None

    def __init__(self, stream: SocketStream) -> None:
        self._stream = stream
        raw = stream.extra(SocketAttribute.raw_socket)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._raw: socket.socket = raw
        self._local = _url(stream.extra(SocketAttribute.local_address))
        self._peer = _url(stream.extra(SocketAttribute.remote_address))
        try:
            trio_loop = sniffio.current_async_library() == "trio"
        except sniffio.AsyncLibraryNotFoundError:
            trio_loop = False
        self._drained = False  # the last read (under trio) took less than it asked for
        self.receive_into = self._receive_into_trio if trio_loop else None
        self.send_nowait = raw.send if trio_loop else None
        if trio_loop:
            self.receive = self._receive_trio  # type: ignore[method-assign]

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self._stream.receive(max_bytes)

    async def _receive_trio(self, max_bytes: int = 65536) -> bytes:
        data = await self._read(self._raw.recv, max_bytes)
        if not data:
            raise anyio.EndOfStream
        self._drained = len(data) < max_bytes
        return data

    async def _receive_into_trio(self, buffer: memoryview) -> int:
        n = await self._read(self._raw.recv_into, buffer)
        if n == 0:
            raise anyio.EndOfStream
        # a large frame streams in: more is likely there by the next read
        self._drained = False
        return n

    async def _read(self, read: Callable[[Any], _T], arg: Any) -> _T:
        """``read(arg)`` on the socket, waiting until it is readable.

        trio's pattern for a socket operation, shorter: a cancellation point
        before the read, and after it only a scheduling point that cannot be
        cancelled (bytes taken from the kernel must not be lost) -- which the
        wait for the socket already was, if there was one. anyio's stream
        always adds it: one more pass through the event loop per message on an
        idle connection. And after a read of small messages that took less
        than it asked for (``_drained``) the socket is almost surely empty: it
        waits first rather than trying a read that fails with ``EAGAIN``. Not
        while a large frame streams in (``receive_into``): by the next read
        more of it has usually arrived.
        """
        raw = self._raw
        try:
            if self._drained:
                await anyio.wait_readable(raw)  # ClosedResourceError if closed meanwhile
                waited = True
            else:
                await anyio.lowlevel.checkpoint_if_cancelled()
                waited = False
            while True:
                try:
                    result = read(arg)
                    break
                except BlockingIOError:
                    await anyio.wait_readable(raw)
                    waited = True
        except OSError as exc:
            if raw.fileno() == -1 or exc.errno == errno.EBADF:
                raise anyio.ClosedResourceError from None
            raise anyio.BrokenResourceError(exc) from exc
        if not waited:
            await anyio.lowlevel.cancel_shielded_checkpoint()
        return result

    async def send(self, item: bytes) -> None:
        await self._stream.send(item)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return {
            **self._stream.extra_attributes,
            TransportAttribute.local_address: lambda: self._local,
            TransportAttribute.peer_address: lambda: self._peer,
        }

    def __repr__(self) -> str:
        return f"<TCPStream {self._local} -> {self._peer}>"


async def _wrap(stream: SocketStream) -> TCPStream | None:
    """``TCPStream(stream)``, or ``None`` (and the socket closed) when the peer
    already hung up and its address cannot be read."""
    try:
        return TCPStream(stream)
    except OSError:
        await anyio.aclose_forcefully(stream)
        return None


class TCPListener:
    """TCP sockets bound to one host (all its addresses) and port."""

    def __init__(self, listeners: list[SocketListener], host: str) -> None:
        self._listeners = listeners
        port = listeners[0].extra(SocketAttribute.local_port)
        self._contact_address = "tcp://" + unparse_host_port(host, port)

    @property
    def contact_address(self) -> str:
        """``tcp://HOST:PORT``: the host as given to :meth:`TCPBackend.listen`, the
        port as bound (a wildcard host such as ``0.0.0.0`` is reported as is)."""
        return self._contact_address

    async def serve(self, handler: ConnectionHandler) -> None:
        """Accept connections until :meth:`aclose`; each runs ``handler`` in its own task."""
        async with anyio.create_task_group() as tg:
            for listener in self._listeners:
                tg.start_soon(accept_loop, self._accepter(listener), handler, tg)

    @staticmethod
    def _accepter(listener: SocketListener) -> Callable[[], Any]:
        async def accept() -> tuple[ByteStream, str]:
            while True:
                stream = await _wrap(await listener.accept())
                if stream is not None:
                    return stream, stream.extra(TransportAttribute.peer_address)

        return accept

    async def serve_upgraded(
        self,
        upgrade: Callable[[ByteStream], Awaitable[ByteStream | None]],
        handler: ConnectionHandler,
    ) -> None:
        """:meth:`serve`, with each connection first passed through ``upgrade``
        (a TLS or websocket handshake): ``handler`` gets the upgraded stream,
        which is closed when it returns; None from ``upgrade`` drops the
        connection (``upgrade`` has closed it and said why)."""

        async def on_connection(raw: ByteStream) -> None:
            stream = await upgrade(raw)
            if stream is None:
                return
            try:
                await handler(stream)
            finally:
                await anyio.aclose_forcefully(stream)

        await self.serve(on_connection)

    async def aclose(self) -> None:
        """Close the listening sockets; accepted connections stay open."""
        for listener in self._listeners:
            await listener.aclose()

    def __repr__(self) -> str:
        return f"<TCPListener {self._contact_address}>"


class TCPBackend:
    """The ``tcp://`` backend."""

    def parse_location(self, location: str) -> str:
        """``host:port``, IPv6 hosts in brackets; the port is required."""
        return unparse_host_port(*split_host_port(location))

    async def connect(
        self, location: str, *, security: Security | None = None, role: str = "client"
    ) -> ByteStream:
        """Connect to ``host:port`` (happy eyeballs over its addresses).

        Raises:
            EncryptionRequiredError: ``security`` requires encryption.
        """
        refuse_unencrypted(security, "tcp", location, use="tls")
        host, port = split_host_port(location)
        stream = await _wrap(await anyio.connect_tcp(host, port))
        if stream is None:
            raise ConnectionResetError(f"connection to tcp://{location} was reset at once")
        return stream

    async def listen(
        self, location: str, *, security: Security | None = None, role: str = "scheduler"
    ) -> TCPListener:
        """Bind ``host:port``; port 0 picks a free port.

        Raises:
            EncryptionRequiredError: ``security`` requires encryption.
        """
        refuse_unencrypted(security, "tcp", location, use="tls")
        host, port = split_host_port(location)
        multi = await anyio.create_tcp_listener(local_host=host, local_port=port)
        return TCPListener(list(multi.listeners), host)  # type: ignore[arg-type]


register_backend("tcp", TCPBackend())
