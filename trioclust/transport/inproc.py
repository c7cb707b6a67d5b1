"""``inproc://NAME``: connections inside one process, between any of its event loops.

Used by ``LocalCluster(processes=False)`` and by tests: no sockets, no
kernel, the same framing and comms on top. The two ends of a connection
may run in one event loop or in two (each on its thread, trio or asyncio),
so that a second client on a loop of its own reaches an in-process cluster.
A connection behaves like TCP where it matters: data sent before a close is
still delivered, then the reader sees ``anyio.EndOfStream``; writing to a
peer that closed raises ``anyio.BrokenResourceError``; closing a stream wakes
a task of the same side blocked in ``receive`` with ``anyio.ClosedResourceError``.

Each direction is a :class:`_Pipe`: a deque of ``bytes`` chunks under a
lock, and at most one task of either side waiting for the other (the reader
for data, the writer for room). A waiting task is woken by setting its
``anyio.Event``: directly when the waker runs in the same thread (the common,
one-loop case, which costs no more than before), else by handing ``set`` to
the waiter's own loop through that loop's thread-safe "call soon". The
listener's queue of connections not yet accepted works the same way.

Each ``send`` copies its data (``bytes(item)``), as a socket would, so the
sender may reuse its buffer as soon as ``send`` returns. Like a socket buffer,
each direction holds up to 4 MiB unread before ``send`` waits for the reader.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import ByteStream
from anyio.lowlevel import checkpoint

from trioclust.loop_thread import CallSoon, call_soon_here, wake_soon
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


class _Waiter:
    """A task waiting in some event loop, and how to wake it from any thread."""

    __slots__ = ("call_soon", "event", "thread")

    def __init__(self, thread: int, call_soon: CallSoon) -> None:
        self.event = anyio.Event()
        self.thread = thread
        self.call_soon = call_soon

    def wake(self) -> None:
        if threading.get_ident() == self.thread:
            self.event.set()
        else:
            wake_soon(self.call_soon, self.event.set)


class _Home:
    """The loop one end waits in: its "call soon" is looked up once per thread, not per wait."""

    __slots__ = ("_call_soon", "_thread")

    def __init__(self) -> None:
        self._thread = 0
        self._call_soon: CallSoon | None = None

    def waiter(self) -> _Waiter:
        thread = threading.get_ident()
        if thread != self._thread or self._call_soon is None:
            self._thread, self._call_soon = thread, call_soon_here()
        return _Waiter(thread, self._call_soon)


def _wake(*waiters: _Waiter | None) -> None:
    for waiter in waiters:
        if waiter is not None:
            waiter.wake()


async def _wait(waiter: _Waiter, lock: threading.Lock, clear: Callable[[], None]) -> None:
    """Wait to be woken; on the way out (woken or cancelled), ``clear()`` under ``lock``."""
    try:
        await waiter.event.wait()
    finally:
        with lock:
            clear()


class _Pipe:
    """One direction of a connection: chunks from a writer to a reader, and who waits."""

    __slots__ = ("chunks", "eof", "lock", "nbytes", "reader", "reader_gone", "writer")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.chunks: deque[bytes] = deque()
        self.nbytes = 0
        self.eof = False  # the writer sent EOF, or closed
        self.reader_gone = False  # the reader closed
        self.reader: _Waiter | None = None  # waiting for data
        self.writer: _Waiter | None = None  # waiting for room


class InprocStream(ByteStream):
    """One end of an in-process connection."""

    def __init__(self, outgoing: _Pipe, incoming: _Pipe, *, local: str, peer: str) -> None:
        self._out = outgoing
        self._in = incoming
        self._local = local
        self._peer = peer
        self._home = _Home()
        self._leftover = b""  # of a chunk longer than a receive's max_bytes
        self._offset = 0
        self._closed = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await checkpoint()
        if self._closed:
            raise anyio.ClosedResourceError
        if self._offset < len(self._leftover):
            chunk = self._leftover
        else:
            chunk = await self._next_chunk()
            self._leftover, self._offset = chunk, 0
            if len(chunk) <= max_bytes:
                self._leftover = b""
                return chunk
        start = self._offset
        self._offset = min(start + max_bytes, len(chunk))
        return chunk[start : self._offset]

    async def _next_chunk(self) -> bytes:
        pipe = self._in
        while True:
            with pipe.lock:
                if pipe.chunks:
                    chunk = pipe.chunks.popleft()
                    pipe.nbytes -= len(chunk)
                    writer = None
                    if pipe.writer is not None and pipe.nbytes < _STREAM_BUFFER_BYTES:
                        writer, pipe.writer = pipe.writer, None
                    break
                if pipe.eof:
                    raise anyio.EndOfStream
                waiter = pipe.reader = self._home.waiter()

            def clear(waiter: _Waiter = waiter) -> None:
                if pipe.reader is waiter:
                    pipe.reader = None

            await _wait(waiter, pipe.lock, clear)
            if self._closed:
                raise anyio.ClosedResourceError
        _wake(writer)
        return chunk

    async def send(self, item: bytes | bytearray | memoryview) -> None:  # type: ignore[override]
        await checkpoint()
        pipe = self._out
        data = bytes(item)
        while True:
            with pipe.lock:
                if self._closed or pipe.eof:
                    raise anyio.ClosedResourceError
                if pipe.reader_gone:
                    raise anyio.BrokenResourceError
                if pipe.nbytes < _STREAM_BUFFER_BYTES:
                    reader = None
                    if data:
                        pipe.chunks.append(data)
                        pipe.nbytes += len(data)
                        reader, pipe.reader = pipe.reader, None
                    break
                waiter = pipe.writer = self._home.waiter()

            def clear(waiter: _Waiter = waiter) -> None:
                if pipe.writer is waiter:
                    pipe.writer = None

            await _wait(waiter, pipe.lock, clear)
        _wake(reader)

    async def send_eof(self) -> None:
        await checkpoint()
        pipe = self._out
        with pipe.lock:
            pipe.eof = True
            reader, pipe.reader = pipe.reader, None
        _wake(reader)

    def close(self) -> None:
        """Close both directions at once (the synchronous form of :meth:`aclose`)."""
        self._closed = True
        out, into = self._out, self._in
        with out.lock:
            out.eof = True  # the peer reads what was sent, then the end of the stream
            peer_reader, out.reader = out.reader, None
            own_writer, out.writer = out.writer, None
        with into.lock:
            into.reader_gone = True  # the peer's next send is a broken pipe
            into.chunks.clear()
            into.nbytes = 0
            own_reader, into.reader = into.reader, None
            peer_writer, into.writer = into.writer, None
        _wake(peer_reader, own_writer, own_reader, peer_writer)

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
    upstream, downstream = _Pipe(), _Pipe()
    return (
        InprocStream(downstream, upstream, local=server, peer=client),
        InprocStream(upstream, downstream, local=client, peer=server),
    )


class InprocListener:
    """A registered name that accepts in-process connections, from any event loop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._pending: deque[InprocStream] = deque()
        self._acceptor: _Waiter | None = None
        self._home = _Home()
        self._closed = False

    @property
    def contact_address(self) -> str:
        """``inproc://NAME``."""
        return f"inproc://{self.name}"

    def _connect(self) -> InprocStream:
        server, client = _stream_pair(self.contact_address, f"inproc://{os.getpid()}/c{next(_ids)}")
        with self._lock:
            refused = self._closed or len(self._pending) >= _BACKLOG
            if not refused:
                self._pending.append(server)
                acceptor, self._acceptor = self._acceptor, None
        if refused:
            server.close()
            client.close()
            raise ConnectionRefusedError(
                f"inproc listener {self.contact_address} is not accepting connections"
            )
        _wake(acceptor)
        return client

    async def _accept(self) -> tuple[ByteStream, str]:
        await checkpoint()
        while True:
            with self._lock:
                if self._pending:
                    stream = self._pending.popleft()
                    break
                if self._closed:
                    raise anyio.ClosedResourceError
                waiter = self._acceptor = self._home.waiter()

            def clear(waiter: _Waiter = waiter) -> None:
                if self._acceptor is waiter:
                    self._acceptor = None

            await _wait(waiter, self._lock, clear)
        return stream, stream.extra(TransportAttribute.peer_address)

    async def serve(self, handler: ConnectionHandler) -> None:
        """Accept connections until :meth:`aclose`; each runs ``handler`` in its own task."""
        async with anyio.create_task_group() as tg:
            await accept_loop(self._accept, handler, tg)

    async def aclose(self) -> None:
        """Unregister the name; connections not yet accepted are closed."""
        if _listeners.get(self.name) is self:
            del _listeners[self.name]
        with self._lock:
            self._closed = True
            pending = list(self._pending)
            self._pending.clear()
            acceptor, self._acceptor = self._acceptor, None
        for stream in pending:
            stream.close()
        _wake(acceptor)
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
        """Connect to a listener of this process, in this event loop or another.

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
