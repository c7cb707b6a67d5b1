"""``ucx://host:port``: UCX through ``ucxx``, under trio or asyncio.

Needs the ``ucx`` extra (``pip install 'trioclust[ucx]'``, which installs
``ucxx-cu12``). ``ucxx`` is imported on the first connect or listen, never by
``import trioclust``; without it both raise :class:`ModuleNotFoundError` saying
what to install. On a machine without a GPU, ``UCX_TLS=tcp,self,sm`` (set
before the first use) keeps UCX from looking for CUDA transports.

A listener binds its port on every interface (UCX's listeners take no
address); its contact address names the host it was given. UCX does not
report the connecting side's port, so that side's address is ``ucx://IP:0``.

Theory of operation
-------------------
ucxx speaks asyncio. Every ucxx call runs on the process's *UCX loop*
(:mod:`trioclust.transport._ucx_runtime`): an asyncio loop on a thread of
its own that owns one UCX worker. A caller in any trio or asyncio loop
submits a coroutine there and is woken back in its own loop, so no thread of
the caller's blocks, and a pending receive costs no CPU (ucxx's notifier
thread completes requests).

The UCX loop starts on the first connect or listen and serves the process
until it exits (an ``atexit`` hook stops it), as ucxx's own global context
does. It is not stopped when the last connection closes: starting UCX takes
about half a second, and tearing a UCX worker down after a refused
connection was seen to leave it, and its sockets, alive (ucxx requests on a
failed endpoint hold it from C++). So a process that has used ``ucx://``
keeps two daemon threads, ``trioclust-ucx`` and ucxx's ``UCX-Py Async
Notifier Thread``, and the UCX worker's own sockets, whatever it has closed;
a closed connection or listener leaves nothing else.

UCX carries messages, not bytes, so each ``send(data)`` is one *record*: an
8-byte little-endian length, then the data, in the same UCX tag message when
the data fits in :data:`_INLINE_BYTES`, else as a second message of exactly
that length, which the receiver takes by UCX's rendezvous protocol straight
into a buffer of that size. UCX delivers one endpoint's messages in order.
A record of length :data:`_EOF` ends the stream, so a peer gets everything
sent before a close, then ``anyio.EndOfStream``; a connection lost without
it (a killed process) gives ``anyio.BrokenResourceError``. The first record
of a connection is a hello from the connecting side naming its address.

``send`` copies its data, as a socket does, and returns once UCX has the
record, with up to :data:`_SEND_AHEAD_BYTES` still on its way, so the next
record is posted while UCX moves this one; a send that fails after that
breaks the stream, and the next ``send`` raises. A closing stream waits
(boundedly) for what is on its way before it closes the endpoint. On each
stream a *pump* task on the UCX loop receives records and queues them for
``receive``, holding at most :data:`_BUFFER_BYTES` unread before it stops
receiving (a sender then waits, as with TCP). ``receive`` is safe to
cancel: the pump keeps what arrives. A cancelled ``send`` leaves the stream
mid-record, as with TCP.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import ipaddress
import logging
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import anyio
import anyio.lowlevel
from anyio.abc import ByteStream

from trioclust.transport._ucx_runtime import (
    CLOSE_TIMEOUT,
    HANDSHAKE_TIMEOUT,
    INSTALL_HINT,
    CallSoon,
    Endpoint,
    UCXLoop,
    call_soon_here,
    create_endpoint,
    forget,
    start_ucx,
    ucx_available,
    wait_for,
    wake,
)
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

__all__ = ["UCXBackend", "UCXListener", "UCXStream", "start_ucx", "ucx_available"]

logger = logging.getLogger("trioclust.transport.ucx")

T = TypeVar("T")

#: data up to this size travels in the same UCX message as its length
_INLINE_BYTES = 64 * 1024
#: unread bytes one stream buffers before its pump stops receiving
_BUFFER_BYTES = 4 * 2**20
#: bytes one stream may have posted to UCX and not yet sent before ``send`` waits
_SEND_AHEAD_BYTES = 8 * 2**20
#: the length that marks the end of the stream
_EOF = 2**64 - 1
_LENGTH = struct.Struct("<Q")
_HELLO = b"trioclust-ucx/1 "


# -------------------------------------------------------------- addresses


async def _resolve(host: str, port: int) -> str:
    """An IP address for ``host`` (UCX connects to addresses)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if not infos:
            raise ConnectionRefusedError(f"ucx://{host}: no address") from None
        return str(infos[0][4][0])
    return host


def _local_ip(ip: str, port: int) -> str:
    """The local address the kernel routes to ``ip`` from (no packet is sent)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((ip, port or 1))
            return str(probe.getsockname()[0])
        except OSError:
            return "0.0.0.0" if family == socket.AF_INET else "::"


def _url(host: str, port: int) -> str:
    return "ucx://" + unparse_host_port(host, port)


# ----------------------------------------------------------------- streams


class UCXStream(ByteStream):
    """One end of a ``ucx://`` connection (see the module's theory of operation)."""

    def __init__(self, runtime: UCXLoop, endpoint: Endpoint, *, local: str, peer: str) -> None:
        self._runtime = runtime  # the UCX loop its endpoint lives on
        self._ep = endpoint  # used on the UCX loop only
        self._local = local
        self._peer = peer
        # received data, filled by the pump on the UCX loop, taken by receive()
        self._lock = threading.Lock()
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # into _chunks[0]
        self._nbytes = 0
        self._end: BaseException | None = None  # raised by receive() once _chunks is empty
        self._receiver: tuple[CallSoon, anyio.Event] | None = None
        self._pump_blocked = False
        self._closed = False
        self._eof_sent = False
        self._broken: str | None = None  # why sending failed
        # UCX-loop side, made there by _start_on_loop
        self._room: asyncio.Event | None = None
        self._send_lock: asyncio.Lock | None = None
        self._sent: asyncio.Event | None = None  # set as sends complete
        self._sending: set[asyncio.Task[None]] = set()
        self._in_flight = 0  # bytes posted and not yet sent
        self._pump: asyncio.Task[None] | None = None
        self._close_future: concurrent.futures.Future[None] | None = None

    def _start_on_loop(self) -> None:
        self._room = asyncio.Event()
        self._sent = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._pump = asyncio.get_running_loop().create_task(self._pump_records())

    # ---------------------------------------------------------- receiving
    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._closed:
            raise anyio.ClosedResourceError
        while True:
            with self._lock:
                if self._chunks:
                    data = self._take(max_bytes)
                    wake_pump = self._pump_blocked and self._nbytes < _BUFFER_BYTES
                    if wake_pump:
                        self._pump_blocked = False
                    break
                if self._end is not None:
                    raise self._end
                event = anyio.Event()
                self._receiver = (call_soon_here(), event)
            try:
                await event.wait()
            finally:
                with self._lock:
                    self._receiver = None
            if self._closed:
                raise anyio.ClosedResourceError
        if wake_pump:
            self._wake_pump()
        await anyio.lowlevel.checkpoint()
        return data

    def _take(self, max_bytes: int) -> bytes:
        chunk = self._chunks[0]
        start = self._offset
        end = min(len(chunk), start + max_bytes)
        if start == 0 and end == len(chunk):
            data = chunk
        else:
            data = chunk[start:end]
        if end == len(chunk):
            self._chunks.popleft()
            self._offset = 0
        else:
            self._offset = end
        self._nbytes -= len(data)
        return data

    def _deliver(self, chunk: bytes | None, end: BaseException | None = None) -> None:
        """Queue received data, or the end of the stream (on the UCX loop)."""
        with self._lock:
            if chunk:
                self._chunks.append(chunk)
                self._nbytes += len(chunk)
            if end is not None and self._end is None:
                self._end = end
            receiver, self._receiver = self._receiver, None
        if receiver is not None:
            wake(*receiver)

    def _wake_pump(self) -> None:
        room = self._room
        if room is not None:
            try:
                self._runtime.loop.call_soon_threadsafe(room.set)
            except RuntimeError:
                pass

    async def _pump_records(self) -> None:
        """Receive records until the end of the stream (on the UCX loop)."""
        assert self._room is not None
        head = bytearray(_LENGTH.size + _INLINE_BYTES)
        try:
            while True:
                while True:
                    with self._lock:
                        if self._nbytes < _BUFFER_BYTES:
                            break
                        self._pump_blocked = True
                        self._room.clear()
                    await self._room.wait()
                await self._ep.recv(head)
                (length,) = _LENGTH.unpack_from(head)
                if length == _EOF:
                    self._deliver(None, anyio.EndOfStream())
                    return
                if length <= _INLINE_BYTES:
                    chunk = bytes(head[_LENGTH.size : _LENGTH.size + length])
                else:
                    buffer = bytearray(length)
                    await self._ep.recv(buffer)
                    # Handed on as is: copying it into bytes would cost a third of
                    # the throughput, and what reads it (FrameReader.feed) takes
                    # any buffer.
                    chunk = cast(bytes, buffer)
                self._deliver(chunk)
        except asyncio.CancelledError:
            self._deliver(None, anyio.ClosedResourceError())
            raise
        except Exception as exc:
            reason = forget(exc)
            if self._closed:
                self._deliver(None, anyio.ClosedResourceError())
                return
            self._deliver(
                None, anyio.BrokenResourceError(f"ucx connection to {self._peer} was lost: {reason}")
            )

    # ------------------------------------------------------------ sending
    async def send(self, item: bytes | bytearray | memoryview) -> None:  # type: ignore[override]
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self._closed or self._eof_sent:
            raise anyio.ClosedResourceError
        if self._broken is not None:
            raise anyio.BrokenResourceError(self._broken)
        view = memoryview(item)
        if view.nbytes == 0:
            return
        # A copy of our own, as a socket takes one: the caller may reuse its
        # buffer as soon as send returns, and UCX may still be reading ours.
        if view.nbytes <= _INLINE_BYTES:
            record = _LENGTH.pack(view.nbytes) + view.tobytes()
            await self._submit_send((record,))
        else:
            await self._submit_send((_LENGTH.pack(view.nbytes), view.tobytes()))

    async def send_eof(self) -> None:
        """Send the end-of-stream mark; the peer's ``receive`` then raises ``EndOfStream``."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise anyio.ClosedResourceError
        if not self._eof_sent:
            self._eof_sent = True
            await self._submit_send((_LENGTH.pack(_EOF),))

    async def _submit_send(self, messages: tuple[bytes, ...]) -> None:
        try:
            await wait_for(self._runtime.submit(self._send_record(messages)), cancel=False)
        except anyio.BrokenResourceError:
            if self._closed:
                raise anyio.ClosedResourceError from None
            raise

    async def _send_record(self, messages: tuple[bytes, ...]) -> None:
        """Post one record's messages, then wait for room to send more (on the UCX loop).

        Up to :data:`_SEND_AHEAD_BYTES` may be in flight, so the next record is
        posted while UCX still moves this one. A send that fails afterwards
        breaks the stream: the next ``send`` raises, as with TCP.
        """
        assert self._send_lock is not None
        assert self._sent is not None
        async with self._send_lock:
            if self._broken is not None:
                raise anyio.BrokenResourceError(self._broken)
            try:
                requests = self._ep.post(*messages)
            except ConnectionResetError as exc:
                self._broken = f"ucx connection to {self._peer} was lost: {exc}"
                raise anyio.BrokenResourceError(self._broken) from None
            nbytes = sum(len(m) for m in messages)
            self._in_flight += nbytes
            task = asyncio.get_running_loop().create_task(self._finish(requests, messages, nbytes))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
            while self._in_flight > _SEND_AHEAD_BYTES and self._broken is None:
                self._sent.clear()
                await self._sent.wait()

    async def _finish(self, requests: list[Any], messages: tuple[bytes, ...], nbytes: int) -> None:
        """Wait for one record's requests; ``messages`` stays alive until then."""
        assert self._sent is not None
        try:
            await self._ep.wait(requests)
        except ConnectionResetError as exc:
            if self._broken is None:
                self._broken = f"ucx connection to {self._peer} was lost: {exc}"
        finally:
            self._in_flight -= nbytes
            self._sent.set()

    # ------------------------------------------------------------ closing
    async def aclose(self) -> None:
        """Close the stream: the peer receives what was sent, then ``EndOfStream``.

        Waits (shielded, bounded) until the end mark is sent and the UCX
        endpoint closed, so a closed stream holds nothing open.
        """
        if self._close_future is None:
            self._closed = True
            self._deliver(None, anyio.ClosedResourceError())  # wakes our own receiver
            self._close_future = self._runtime.submit(self._close_endpoint())
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT + 1):
            await wait_for(self._close_future, cancel=False)

    async def _close_endpoint(self) -> None:
        """Send the end mark after any send in flight, then close (on the UCX loop)."""
        if not self._eof_sent and self._broken is None:
            self._eof_sent = True
            try:
                await asyncio.wait_for(self._send_record((_LENGTH.pack(_EOF),)), CLOSE_TIMEOUT)
            except Exception as exc:  # lost or stuck: the peer sees a broken connection
                forget(exc)
        if self._sending:  # closing now would cancel what is still on its way
            await asyncio.wait(self._sending, timeout=CLOSE_TIMEOUT)
        self._ep.close()
        if self._pump is not None:
            # Closing the endpoint cancels its pending receive, which ends the pump;
            # cancelling the pump instead would leave that receive posted in UCX.
            await asyncio.wait([self._pump], timeout=CLOSE_TIMEOUT)
            self._pump.cancel()

    # ----------------------------------------------------------- the rest
    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return {
            TransportAttribute.local_address: lambda: self._local,
            TransportAttribute.peer_address: lambda: self._peer,
        }

    def __repr__(self) -> str:
        return f"<UCXStream {self._local} -> {self._peer}>"


async def _send_hello(endpoint: Endpoint, local: str) -> None:
    hello = _HELLO + local.encode()
    record = _LENGTH.pack(len(hello)) + hello
    await endpoint.wait(endpoint.post(record))


async def _receive_hello(endpoint: Endpoint) -> str:
    head = bytearray(_LENGTH.size + _INLINE_BYTES)
    await asyncio.wait_for(endpoint.recv(head), HANDSHAKE_TIMEOUT)
    (length,) = _LENGTH.unpack_from(head)
    hello = bytes(head[_LENGTH.size : _LENGTH.size + min(length, _INLINE_BYTES)])
    if not hello.startswith(_HELLO):
        raise ValueError(f"not a trioclust ucx peer (it sent {hello[:40]!r})")
    return hello[len(_HELLO) :].decode(errors="replace")


# --------------------------------------------------------------- listener


class _Accepted(Generic[T]):
    """Accepted connections, put by the UCX loop, taken in the listener's loop."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: deque[T] = deque()
        self.closed = False
        self.waiter: tuple[CallSoon, anyio.Event] | None = None

    def put(self, item: T) -> bool:
        with self.lock:
            if self.closed:
                return False
            self.items.append(item)
            waiter, self.waiter = self.waiter, None
        if waiter is not None:
            wake(*waiter)
        return True

    def close(self) -> list[T]:
        with self.lock:
            self.closed = True
            items = list(self.items)
            self.items.clear()
            waiter, self.waiter = self.waiter, None
        if waiter is not None:
            wake(*waiter)
        return items

    async def get(self) -> T:
        while True:
            with self.lock:
                if self.items:
                    return self.items.popleft()
                if self.closed:
                    raise anyio.ClosedResourceError
                event = anyio.Event()
                self.waiter = (call_soon_here(), event)
            await event.wait()


class UCXListener:
    """A UCX listener on one port (UCX binds it on every interface)."""

    def __init__(self, runtime: UCXLoop, host: str) -> None:
        self._runtime = runtime
        self._host = host
        self._listener: Any = None  # ucxx's Listener, used on the UCX loop only
        self._port = 0
        self._accepted: _Accepted[UCXStream] = _Accepted()
        self._close_future: concurrent.futures.Future[None] | None = None

    @property
    def contact_address(self) -> str:
        """``ucx://HOST:PORT``: the host as given to :meth:`UCXBackend.listen`, the port as bound."""
        return _url(self._host, self._port)

    async def _create(self, port: int) -> str | None:
        """Start listening (on the UCX loop); returns why it cannot, or None."""
        try:
            self._listener = self._runtime.ctx.create_listener(
                self._on_endpoint, port=port, connect_timeout=HANDSHAKE_TIMEOUT
            )
        except Exception as exc:
            return forget(exc)
        self._port = int(self._listener.port)
        return None

    async def _on_endpoint(self, wrapper: Any) -> None:
        """ucxx's callback for each new connection (on the UCX loop)."""
        endpoint = Endpoint(wrapper, self._runtime.ctx.worker)
        del wrapper
        reason = None
        try:
            peer = await _receive_hello(endpoint)
        except Exception as exc:
            reason = forget(exc)
        if reason is not None:
            logger.warning("Refused a ucx connection to %s: %s", self.contact_address, reason)
            endpoint.close()
            return
        if self._accepted.closed:
            endpoint.close()
            return
        stream = UCXStream(self._runtime, endpoint, local=self.contact_address, peer=peer)
        stream._start_on_loop()
        if not self._accepted.put(stream):
            await stream._close_endpoint()

    async def _accept(self) -> tuple[ByteStream, str]:
        stream = await self._accepted.get()
        return stream, stream.extra(TransportAttribute.peer_address)

    async def serve(self, handler: ConnectionHandler) -> None:
        """Accept connections until :meth:`aclose`; each runs ``handler`` in its own task."""
        async with anyio.create_task_group() as tg:
            await accept_loop(self._accept, handler, tg)

    async def aclose(self) -> None:
        """Stop listening; connections not yet accepted are closed, accepted ones stay open."""
        if self._close_future is None:
            pending = self._accepted.close()
            self._close_future = self._runtime.submit(self._close(pending))
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT + 1):
            await wait_for(self._close_future, cancel=False)

    async def _close(self, pending: list[UCXStream]) -> None:
        """Close the UCX listener (on the UCX loop)."""
        for stream in pending:
            stream._closed = True
            await stream._close_endpoint()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def __repr__(self) -> str:
        return f"<UCXListener {self.contact_address}>"


# ---------------------------------------------------------------- backend


class UCXBackend:
    """The ``ucx://`` backend."""

    def parse_location(self, location: str) -> str:
        """``host:port``, IPv6 hosts in brackets; the port is required."""
        return unparse_host_port(*split_host_port(location))

    async def connect(
        self, location: str, *, security: Security | None = None, role: str = "client"
    ) -> ByteStream:
        """Connect to a UCX listener at ``host:port``.

        Raises:
            EncryptionRequiredError: ``security`` requires encryption (UCX
                does not encrypt).
            ConnectionRefusedError: nothing accepted the connection in
                :data:`HANDSHAKE_TIMEOUT` (an ``OSError``: the caller retries).
            ModuleNotFoundError: ``ucxx`` is not installed.
        """
        refuse_unencrypted(security, "ucx", location, use="tls")
        host, port = split_host_port(location)
        ip = await _resolve(host, port)
        local = _url(_local_ip(ip, port), 0)  # UCX does not report the local port
        peer = _url(host, port)
        runtime = await _ucx_loop()
        future = runtime.submit(_open_stream(runtime, ip, port, local=local, peer=peer))
        try:
            return await wait_for(future, cancel=True)
        except BaseException:
            future.add_done_callback(_discard_stream)
            raise

    async def listen(
        self, location: str, *, security: Security | None = None, role: str = "scheduler"
    ) -> UCXListener:
        """Listen on ``port`` (0 picks a free one), on every interface.

        Raises:
            EncryptionRequiredError: ``security`` requires encryption.
            OSError: the port cannot be bound.
            ModuleNotFoundError: ``ucxx`` is not installed.
        """
        refuse_unencrypted(security, "ucx", location, use="tls")
        host, port = split_host_port(location)
        runtime = await _ucx_loop()
        listener = UCXListener(runtime, host)
        future = runtime.submit(listener._create(port))
        try:
            failure = await wait_for(future, cancel=False)
        except BaseException:  # cancelled: close the listener once it is made
            future.add_done_callback(lambda _: runtime.submit(listener._close([])))
            raise
        if failure is not None:
            raise OSError(errno.EADDRINUSE, f"cannot listen on {_url(host, port)}: {failure}")
        return listener


async def _ucx_loop() -> UCXLoop:
    """The process's UCX loop, or the error saying what to install."""
    if not ucx_available():
        raise ModuleNotFoundError(INSTALL_HINT, name="ucxx")
    return await UCXLoop.get()


async def _open_stream(runtime: UCXLoop, ip: str, port: int, *, local: str, peer: str) -> UCXStream:
    """Connect, say hello, start the stream's pump (on the UCX loop)."""
    endpoint = await create_endpoint(runtime.ctx, ip, port)
    if isinstance(endpoint, str):
        # raised here, not where a frame holds the UCX context: a traceback would keep it
        raise ConnectionRefusedError(f"ucx connection to {_url(ip, port)} failed: {endpoint}")
    failure = None
    try:
        await _send_hello(endpoint, local)
    except Exception as exc:
        failure = forget(exc)
    except BaseException:
        endpoint.close()
        raise
    if failure is not None:
        endpoint.close()
        raise ConnectionRefusedError(f"ucx connection to {_url(ip, port)} failed: {failure}")
    stream = UCXStream(runtime, endpoint, local=local, peer=peer)
    stream._start_on_loop()
    return stream


def _discard_stream(future: concurrent.futures.Future[UCXStream]) -> None:
    """After an abandoned connect: close the stream it made after all."""
    if future.cancelled() or future.exception() is not None:
        return
    stream = future.result()
    stream._closed = True
    stream._runtime.submit(stream._close_endpoint())


register_backend("ucx", UCXBackend())
