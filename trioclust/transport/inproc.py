"""``inproc://NAME``: connections inside one process and one event loop.

Used by ``LocalCluster(processes=False)`` and by tests: no sockets, no
kernel, the same framing and comms on top. A connection is a pair of anyio
memory object streams carrying ``bytes``, wrapped as byte streams that behave
like TCP where it matters: data sent before a close is still delivered, then
the reader sees ``anyio.EndOfStream``; writing to a peer that closed raises
``anyio.BrokenResourceError``; closing a stream wakes a task of the same side
blocked in ``receive`` with ``anyio.ClosedResourceError``.

Each ``send`` copies its data (``bytes(item)``), as a socket would, so the
sender may reuse its buffer as soon as ``send`` returns. Like a socket buffer,
each direction holds up to 4 MiB unread before ``send`` waits for the reader.

Names live in a process-wide table, but the streams are bound to the event
loop that uses them: both ends must run in the same loop.
"""

from __future__ import annotations

import errno
import itertools
import math
import os
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import ByteStream
from anyio.lowlevel import checkpoint
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from trioclust.transport.registry import (
    ConnectionHandler,
    TransportAttribute,
    accept_loop,
    register_backend,
)

if TYPE_CHECKING:
    from trioclust.security import Security

__all__ = ["InprocBackend", "InprocListener", "InprocStream"]

_NAME = re.compile(r"[A-Za-z0-9._~/-]+")
# bytes one direction may hold before send() waits for the reader (like a
# socket buffer: big enough that a burst of small messages never blocks)
_STREAM_BUFFER_BYTES = 4 * 2**20
# connections waiting to be accepted before connect() is refused
_BACKLOG = 128

_listeners: dict[str, InprocListener] = {}
_ids = itertools.count()


class _Flow:
    """Bytes queued in one direction, and a wakeup for a sender waiting for room."""

    __slots__ = ("nbytes", "room")

    def __init__(self) -> None:
        self.nbytes = 0
        self.room: anyio.Event | None = None

    def wake(self) -> None:
        if self.room is not None:
            self.room.set()
            self.room = None


class InprocStream(ByteStream):
    """One end of an in-process connection."""

    def __init__(
        self,
        send: MemoryObjectSendStream[bytes],
        receive: MemoryObjectReceiveStream[bytes],
        *,
        out_flow: _Flow,
        in_flow: _Flow,
        local: str,
        peer: str,
    ) -> None:
        self._send = send
        self._receive = receive
        self._out_flow = out_flow
        self._in_flow = in_flow
        self._local = local
        self._peer = peer
        self._leftover = b""  # of a chunk longer than a receive's max_bytes
        self._offset = 0
        self._closed = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._offset < len(self._leftover):
            await checkpoint()
            chunk = self._leftover
        else:
            chunk = await self._receive.receive()
            self._in_flow.nbytes -= len(chunk)
            self._in_flow.wake()
            self._leftover, self._offset = chunk, 0
            if len(chunk) <= max_bytes:
                self._leftover = b""
                return chunk
        start = self._offset
        self._offset = min(start + max_bytes, len(chunk))
        return chunk[start : self._offset]

    async def send(self, item: bytes | bytearray | memoryview) -> None:  # type: ignore[override]
        await checkpoint()
        flow = self._out_flow
        while flow.nbytes >= _STREAM_BUFFER_BYTES and not self._closed:
            if flow.room is None:
                flow.room = anyio.Event()
            await flow.room.wait()
        if self._closed:
            raise anyio.ClosedResourceError
        data = bytes(item)
        if data:
            self._send.send_nowait(data)  # unbounded: _Flow provides the backpressure
            flow.nbytes += len(data)

    async def send_eof(self) -> None:
        await checkpoint()
        self._send.close()

    def close(self) -> None:
        """Close both directions at once (the synchronous form of :meth:`aclose`)."""
        self._closed = True
        self._send.close()
        self._receive.close()
        self._out_flow.wake()  # our own sender, if waiting for room
        self._in_flow.wake()  # the peer's sender: its next send finds us gone

    async def aclose(self) -> None:
        self.close()
        await checkpoint()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return {
            TransportAttribute.local_address: lambda: self._local,
            TransportAttribute.peer_address: lambda: self._peer,
        }

    def __repr__(self) -> str:
        return f"<InprocStream {self._local} -> {self._peer}>"


def _stream_pair(server: str, client: str) -> tuple[InprocStream, InprocStream]:
    to_server, from_client = anyio.create_memory_object_stream[bytes](math.inf)
    to_client, from_server = anyio.create_memory_object_stream[bytes](math.inf)
    upstream, downstream = _Flow(), _Flow()
    return (
        InprocStream(
            to_client, from_client, out_flow=downstream, in_flow=upstream, local=server, peer=client
        ),
        InprocStream(
            to_server, from_server, out_flow=upstream, in_flow=downstream, local=client, peer=server
        ),
    )


class InprocListener:
    """A registered name that accepts in-process connections."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._incoming, self._accepted = anyio.create_memory_object_stream[InprocStream](_BACKLOG)

    @property
    def contact_address(self) -> str:
        """``inproc://NAME``."""
        return f"inproc://{self.name}"

    def _connect(self) -> InprocStream:
        server, client = _stream_pair(self.contact_address, f"inproc://{os.getpid()}/c{next(_ids)}")
        try:
            self._incoming.send_nowait(server)
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            server.close()
            client.close()
            raise ConnectionRefusedError(
                f"inproc listener {self.contact_address} is not accepting connections"
            ) from None
        return client

    async def _accept(self) -> tuple[ByteStream, str]:
        stream = await self._accepted.receive()
        return stream, stream.extra(TransportAttribute.peer_address)

    async def serve(self, handler: ConnectionHandler) -> None:
        """Accept connections until :meth:`aclose`; each runs ``handler`` in its own task."""
        async with anyio.create_task_group() as tg:
            await accept_loop(self._accept, handler, tg)

    async def aclose(self) -> None:
        """Unregister the name; connections not yet accepted are closed."""
        if _listeners.get(self.name) is self:
            del _listeners[self.name]
        self._incoming.close()
        while True:
            try:
                self._accepted.receive_nowait().close()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
        self._accepted.close()
        await checkpoint()

    def __repr__(self) -> str:
        return f"<InprocListener {self.contact_address}>"


class InprocBackend:
    """The ``inproc://`` backend."""

    def parse_location(self, location: str) -> str:
        """A name of letters, digits and ``._~/-``; empty means "pick one" (listen only)."""
        if location and not _NAME.fullmatch(location):
            raise ValueError(f"inproc name {location!r} may only use letters, digits and ._~/-")
        return location

    async def connect(
        self, location: str, *, security: Security | None = None, role: str = "client"
    ) -> ByteStream:
        """Connect to a listener of this process.

        ``security`` is not needed: nothing leaves the process.

        Raises:
            ConnectionRefusedError: no listener has that name (yet).
        """
        await checkpoint()
        if not location:
            raise ValueError("inproc:// needs a name to connect to, as in inproc://1234/0")
        listener = _listeners.get(location)
        if listener is None:
            raise ConnectionRefusedError(
                f"no inproc listener at inproc://{location} in this process"
            )
        return listener._connect()

    async def listen(
        self, location: str, *, security: Security | None = None, role: str = "scheduler"
    ) -> InprocListener:
        """Register ``location`` (or a fresh ``PID/N`` name when empty).

        ``security`` is not needed: nothing leaves the process.

        Raises:
            OSError: the name is taken (``EADDRINUSE``).
        """
        await checkpoint()
        name = location or f"{os.getpid()}/{next(_ids)}"
        if name in _listeners:
            raise OSError(errno.EADDRINUSE, f"inproc://{name} is already in use")
        listener = _listeners[name] = InprocListener(name)
        return listener


register_backend("inproc", InprocBackend())
