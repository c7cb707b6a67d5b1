"""``ucx://host:port``: UCX through ``ucxx``, under trio or asyncio.

Needs the ``ucx`` extra (``pip install 'trioclust[ucx]'``, which installs
``ucxx-cu12``). ``ucxx`` is imported on the first connect or listen, never by
``import trioclust``; without it both raise :class:`ModuleNotFoundError` saying
what to install. On a machine without a GPU, set ``UCX_TLS=tcp,self,sm``
before the first use, so UCX does not look for CUDA transports.

Theory of operation
-------------------
ucxx speaks asyncio. The backend runs it on a *UCX loop*: an asyncio loop on
a thread of its own (``trioclust-ucx``) that owns one ucxx application context,
that is one UCX worker, progressed by ucxx's own progress thread, with
completions delivered by ucxx's notifier thread (a pending receive costs no
CPU). Every ucxx call runs on the UCX loop: a caller in any trio or asyncio
loop submits a coroutine there (:func:`asyncio.run_coroutine_threadsafe`) and
is woken back in its own loop through that loop's token
(:func:`anyio.lowlevel.current_token`), so no thread of the caller's blocks.

The UCX loop starts on the first connect or listen and serves the process
until it exits (an ``atexit`` hook stops it and ucxx's threads), as ucxx's
own global context does. It is not stopped when the last connection closes:
starting UCX takes about half a second, and a UCX worker torn down after a
refused connection leaves its sockets open (ucxx requests on a failed
endpoint keep the worker alive from C++). So a process that has used
``ucx://`` keeps two daemon threads, ``trioclust-ucx`` and ucxx's
``UCX-Py Async Notifier Thread``, and the UCX worker's own listening sockets,
whatever it has closed; a connection or listener closed leaves nothing else.

UCX carries messages, not bytes, so each ``send(data)`` is one *record*: an
8-byte little-endian length, then the data, in the same UCX tag message when
the data fits in :data:`_INLINE_BYTES`, else as a second message of exactly
that length, received in place (a 4 MiB slice of a NumPy array arrives by
UCX's rendezvous protocol straight into its buffer). UCX delivers one
endpoint's messages in order. A record of length :data:`_EOF` ends the
stream, so a peer sees everything sent before a close, then
``anyio.EndOfStream``; a connection lost without it (a killed process) gives
``anyio.BrokenResourceError``. The first record of a connection is a hello
from the connecting side naming its address, as UCX does not report it.

On each stream a *pump* task on the UCX loop receives records and queues
them for ``receive``, holding at most :data:`_BUFFER_BYTES` unread before it
stops receiving (a sender of large records then waits, as with TCP).
``receive`` and ``send`` are safe to cancel: the UCX operation they started
finishes on the UCX loop, and only the wait for it is abandoned (for
``send``, as with TCP, the stream is then mid-record and should be closed).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import errno
import importlib
import importlib.util
import ipaddress
import itertools
import logging
import os
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import anyio
import anyio.lowlevel
from anyio.abc import ByteStream

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

__all__ = ["UCXBackend", "UCXListener", "UCXStream", "ucx_available"]

logger = logging.getLogger("trioclust.transport.ucx")

T = TypeVar("T")

#: data up to this size travels in the same UCX message as its length
_INLINE_BYTES = 64 * 1024
#: unread bytes one stream buffers before its pump stops receiving
_BUFFER_BYTES = 4 * 2**20
#: the length that marks the end of the stream
_EOF = 2**64 - 1
_LENGTH = struct.Struct("<Q")
_HELLO = b"trioclust-ucx/1 "
#: seconds for ucxx's peer-info exchange on connect and accept, and for the hello
_HANDSHAKE_TIMEOUT = 2.0
#: seconds a close waits for sends in flight before it aborts the endpoint
_CLOSE_TIMEOUT = 2.0
#: seconds the UCX loop may take to start (context creation) or stop
_LOOP_TIMEOUT = 60.0
_THREAD_NAME = "trioclust-ucx"
_INSTALL_HINT = (
    "the ucx:// transport needs the ucxx package: pip install 'trioclust[ucx]' "
    "(and, on a machine without a GPU, set UCX_TLS=tcp,self,sm)"
)


def ucx_available() -> bool:
    """Whether ``ucxx`` is installed (checked without importing it)."""
    return importlib.util.find_spec("ucxx") is not None


# --------------------------------------------------------- crossing threads

CallSoon = Callable[[Callable[[], object]], object]


def _call_soon_here() -> CallSoon:
    """A thread-safe, non-blocking "run this soon" into the running trio or asyncio loop."""
    native = anyio.lowlevel.current_token().native_token
    call_soon: CallSoon | None = getattr(native, "run_sync_soon", None)  # a TrioToken
    if call_soon is None:
        call_soon = native.call_soon_threadsafe  # type: ignore[attr-defined]  # an asyncio loop
    return call_soon


def _wake(call_soon: CallSoon, event: anyio.Event) -> None:
    try:
        call_soon(event.set)
    except RuntimeError:  # that loop has ended (trio.RunFinishedError, or a closed asyncio loop)
        pass


async def _wait_for(future: concurrent.futures.Future[T], *, cancel: bool) -> T:
    """The result of ``future`` (done on the UCX loop), awaited in the caller's loop.

    Args:
        future: from :meth:`_UCXLoop.submit`.
        cancel: whether to cancel the UCX-side task when the caller is
            cancelled; without it that task runs on and only the wait ends.
    """
    done = anyio.Event()
    call_soon = _call_soon_here()
    future.add_done_callback(lambda _: _wake(call_soon, done))
    try:
        await done.wait()
    except BaseException:
        if cancel:
            future.cancel()
        raise
    return future.result()


# ------------------------------------------------------------- the UCX loop


class _UCXLoop:
    """The asyncio loop thread that owns the process's UCX worker, from first use to exit."""

    _lock = threading.Lock()
    _instance: _UCXLoop | None = None

    def __init__(self) -> None:
        self.ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.loop = asyncio.new_event_loop()
        self.ctx: Any = None  # ucxx's ApplicationContext, only touched on the UCX loop
        # A daemon thread, so is ucxx's notifier thread it starts: neither holds
        # up the interpreter's exit, and _stop_at_exit closes both.
        self._thread = threading.Thread(target=self._run, name=_THREAD_NAME, daemon=True)
        self._thread.start()

    @classmethod
    async def get(cls) -> _UCXLoop:
        """The process's UCX loop, started on the first call.

        Raises:
            ModuleNotFoundError: ``ucxx`` is not installed.
            OSError: UCX could not be initialized (the next call tries again).
        """
        if not ucx_available():
            raise ModuleNotFoundError(_INSTALL_HINT, name="ucxx")
        with cls._lock:
            runtime = cls._instance
            if runtime is None or (runtime.ready.done() and runtime.ready.exception()):
                runtime = cls._instance = _UCXLoop()
        with anyio.fail_after(_LOOP_TIMEOUT):
            await _wait_for(runtime.ready, cancel=False)
        return runtime

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the UCX loop (from any thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self, timeout: float) -> None:
        """Stop the loop, close ucxx's threads, wait for them up to ``timeout`` seconds."""
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:  # already closed
            return
        self._thread.join(timeout)

    # ---------------------------------------------------- on the loop thread
    def _run(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:
                if not isinstance(exc, ImportError):
                    exc = OSError(f"UCX could not be initialized: {_forget(exc)}")
                self.ready.set_exception(exc)
            else:
                self.ready.set_result(None)
                loop.run_forever()
            self._stop(loop)
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    async def _start(self) -> None:
        os.environ.setdefault("UCX_WARN_UNUSED_ENV_VARS", "n")  # ucxx sets one UCX ignores
        importlib.import_module("ucxx")
        lib_async = importlib.import_module("ucxx._lib_async")
        # A context of our own (not ucxx's global one), bound to this loop:
        # thread progress, and Python futures so a pending receive does not spin.
        self.ctx = lib_async.ApplicationContext(
            progress_mode="thread",
            enable_python_future=True,
            connect_timeout=_HANDSHAKE_TIMEOUT,
        )

    def _stop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Finish the loop's tasks, then stop ucxx's notifier and progress threads."""
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        ctx, self.ctx = self.ctx, None
        if ctx is not None:
            ctx.worker.stop_request_notifier_thread()  # wakes the notifier at once
            ctx.stop_notifier_thread()
            ctx.worker.stop_progress_thread()


def _stop_at_exit() -> None:
    """Stop the UCX loop when the interpreter exits, before UCX's threads could call into it."""
    runtime = _UCXLoop._instance
    if runtime is not None:
        runtime.stop(_CLOSE_TIMEOUT + 3)


atexit.register(_stop_at_exit)


async def start_ucx() -> None:
    """Start the process's UCX runtime now, rather than on the first connect or listen.

    It takes UCX about half a second to start; the runtime then serves every
    ``ucx://`` connection of the process until it exits.

    Raises:
        ModuleNotFoundError: ``ucxx`` is not installed.
        OSError: UCX could not be initialized.
    """
    await _UCXLoop.get()


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


def _forget(exc: BaseException) -> str:
    """``exc``'s message, its traceback (and its chain's) dropped.

    A ucxx request keeps the exception it failed with, and a traceback's
    frames keep the endpoint and the UCX worker: kept past the UCX loop's
    end, they would hold UCX's sockets open. So no ucxx exception is kept or
    passed on, only its message.
    """
    message = str(exc) or type(exc).__name__
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__
    return message


# --------------------------------------------------------------- endpoints


class _Endpoint:
    """One UCX endpoint, driven through ucxx's lower-level calls (on the UCX loop only).

    ucxx's ``Endpoint.send`` and ``recv`` do the same, but they swallow some
    failures whose tracebacks a ucxx request then keeps (see :func:`_forget`).
    Here every failure is a ``ConnectionResetError`` carrying UCX's message
    and nothing else. Receiving follows ucxx: once the endpoint has closed,
    messages that arrived before are still taken from the worker.
    """

    def __init__(self, wrapper: Any, worker: Any) -> None:
        types = importlib.import_module("ucxx.types")
        self._array = importlib.import_module("ucxx._lib.arr").Array
        self._canceled = importlib.import_module("ucxx._lib.libucxx").UCXCanceled
        self._wrapper = wrapper  # ucxx's Endpoint: it owns the UCX endpoint
        self._raw = wrapper._ep
        self._worker = worker
        self._send_tag = types.Tag(wrapper._tags["msg_send"])
        self._recv_tag = types.Tag(wrapper._tags["msg_recv"])
        self._mask = types.TagMaskFull

    async def send(self, *messages: Any) -> None:
        """Send each of ``messages`` (buffers) as one tag message, all posted at once."""
        failure = None
        try:
            self._raw.raise_on_error()
            requests = [self._raw.tag_send(self._array(m), self._send_tag) for m in messages]
            for request in requests:
                await request.wait()
        except Exception as exc:
            failure = _forget(exc)
        if failure is not None:  # raised out here, where no ucxx exception is its context
            raise ConnectionResetError(failure)

    async def recv(self, buffer: bytearray) -> None:
        """Receive the next tag message into ``buffer`` (which may be longer)."""
        failure = None
        try:
            await self._recv(buffer)
        except Exception as exc:
            failure = _forget(exc)
        if failure is not None:
            raise ConnectionResetError(failure)

    async def _recv(self, buffer: bytearray) -> None:
        array = self._array(buffer)
        try:
            self._raw.raise_on_error()
            open_ = bool(self._raw.alive)
        except Exception as exc:
            _forget(exc)
            open_ = False
        if open_:
            request = self._raw.tag_recv(array, self._recv_tag, self._mask)
            try:
                await request.wait()
                return
            except self._canceled as exc:  # the endpoint closed while we waited
                _forget(exc)
        probe = self._worker.tag_probe(self._recv_tag, remove=True)
        if not probe.matched:
            raise ConnectionResetError("the connection was closed")
        await self._worker.tag_recv_with_handle(array, probe).wait()

    def close(self) -> None:
        """Close the UCX endpoint now (pending operations on it are cancelled)."""
        try:
            self._wrapper.abort(period=10**9, max_attempts=1)
        except Exception as exc:
            _forget(exc)


# ----------------------------------------------------------------- streams

_stream_ids = itertools.count()


class UCXStream(ByteStream):
    """One end of a ``ucx://`` connection (see the module's theory of operation)."""

    def __init__(self, runtime: _UCXLoop, endpoint: _Endpoint, *, local: str, peer: str) -> None:
        self._runtime = runtime  # one of its users: released when the endpoint is closed
        self._ep = endpoint  # used on the UCX loop only
        self._local = local
        self._peer = peer
        self._id = next(_stream_ids)
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
        self._pump: asyncio.Task[None] | None = None
        self._close_future: concurrent.futures.Future[None] | None = None

    def _start_on_loop(self) -> None:
        self._room = asyncio.Event()
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
                self._receiver = (_call_soon_here(), event)
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
            _wake(*receiver)

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
            reason = _forget(exc)
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
        if view.ndim != 1 or view.itemsize != 1 or not view.c_contiguous:
            view = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
        await self._submit_send(view)

    async def send_eof(self) -> None:
        """Send the end-of-stream mark; the peer's ``receive`` then raises ``EndOfStream``."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise anyio.ClosedResourceError
        if not self._eof_sent:
            self._eof_sent = True
            await self._submit_send(None)

    async def _submit_send(self, view: memoryview | None) -> None:
        try:
            await _wait_for(self._runtime.submit(self._send_record(view)), cancel=False)
        except anyio.BrokenResourceError:
            if self._closed:
                raise anyio.ClosedResourceError from None
            raise

    async def _send_record(self, view: memoryview | None) -> None:
        """Send one record, or the end mark when ``view`` is None (on the UCX loop)."""
        assert self._send_lock is not None
        async with self._send_lock:
            if self._broken is not None:
                raise anyio.BrokenResourceError(self._broken)
            failure = None
            try:
                if view is None:
                    await self._ep.send(_LENGTH.pack(_EOF))
                elif view.nbytes <= _INLINE_BYTES:
                    await self._ep.send(_LENGTH.pack(view.nbytes) + view)
                else:
                    await self._ep.send(_LENGTH.pack(view.nbytes), view)
            except Exception as exc:
                failure = _forget(exc)
            if failure is not None:
                self._broken = f"ucx connection to {self._peer} was lost: {failure}"
                raise anyio.BrokenResourceError(self._broken)

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
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_TIMEOUT + 1):
            await _wait_for(self._close_future, cancel=False)

    async def _close_endpoint(self) -> None:
        """Send the end mark after any send in flight, then close (on the UCX loop)."""
        if not self._eof_sent and self._broken is None:
            self._eof_sent = True
            try:
                await asyncio.wait_for(self._send_record(None), _CLOSE_TIMEOUT)
            except Exception as exc:  # lost or stuck: the peer sees a broken connection
                _forget(exc)
        self._ep.close()
        if self._pump is not None:
            # Closing the endpoint cancels its pending receive, which ends the pump;
            # cancelling the pump instead would leave that receive posted in UCX.
            await asyncio.wait([self._pump], timeout=_CLOSE_TIMEOUT)
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


async def _send_hello(endpoint: _Endpoint, local: str) -> None:
    hello = _HELLO + local.encode()
    await endpoint.send(_LENGTH.pack(len(hello)) + hello)


async def _receive_hello(endpoint: _Endpoint) -> str:
    head = bytearray(_LENGTH.size + _INLINE_BYTES)
    await asyncio.wait_for(endpoint.recv(head), _HANDSHAKE_TIMEOUT)
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
            _wake(*waiter)
        return True

    def close(self) -> list[T]:
        with self.lock:
            self.closed = True
            items = list(self.items)
            self.items.clear()
            waiter, self.waiter = self.waiter, None
        if waiter is not None:
            _wake(*waiter)
        return items

    async def get(self) -> T:
        while True:
            with self.lock:
                if self.items:
                    return self.items.popleft()
                if self.closed:
                    raise anyio.ClosedResourceError
                event = anyio.Event()
                self.waiter = (_call_soon_here(), event)
            await event.wait()


class UCXListener:
    """A UCX listener on one port (UCX binds it on every interface)."""

    def __init__(self, runtime: _UCXLoop, host: str) -> None:
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
                self._on_endpoint, port=port, connect_timeout=_HANDSHAKE_TIMEOUT
            )
        except Exception as exc:
            return _forget(exc)
        self._port = int(self._listener.port)
        return None

    async def _on_endpoint(self, wrapper: Any) -> None:
        """ucxx's callback for each new connection (on the UCX loop)."""
        endpoint = _Endpoint(wrapper, self._runtime.ctx.worker)
        del wrapper
        reason = None
        try:
            peer = await _receive_hello(endpoint)
        except Exception as exc:
            reason = _forget(exc)
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
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_TIMEOUT + 1):
            await _wait_for(self._close_future, cancel=False)

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
                :data:`_HANDSHAKE_TIMEOUT` (an ``OSError``: the caller retries).
            ModuleNotFoundError: ``ucxx`` is not installed.
        """
        refuse_unencrypted(security, "ucx", location, use="tls")
        host, port = split_host_port(location)
        ip = await _resolve(host, port)
        local = _url(_local_ip(ip, port), 0)  # UCX does not report the local port
        peer = _url(host, port)
        runtime = await _UCXLoop.get()
        future = runtime.submit(_open_stream(runtime, ip, port, local=local, peer=peer))
        try:
            return await _wait_for(future, cancel=True)
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
        runtime = await _UCXLoop.get()
        listener = UCXListener(runtime, host)
        failure = await _wait_for(runtime.submit(listener._create(port)), cancel=False)
        if failure is not None:
            raise OSError(errno.EADDRINUSE, f"cannot listen on {_url(host, port)}: {failure}")
        return listener


async def _open_stream(runtime: _UCXLoop, ip: str, port: int, *, local: str, peer: str) -> UCXStream:
    """Connect, say hello, start the stream's pump (on the UCX loop)."""
    endpoint = await _create_endpoint(runtime.ctx, ip, port)
    if isinstance(endpoint, str):
        # raised here, not where a frame holds the UCX context: a traceback would keep it
        raise ConnectionRefusedError(f"ucx connection to {_url(ip, port)} failed: {endpoint}")
    failure = None
    try:
        await _send_hello(endpoint, local)
    except Exception as exc:
        failure = _forget(exc)
    except BaseException:
        endpoint.close()
        raise
    if failure is not None:
        endpoint.close()
        raise ConnectionRefusedError(f"ucx connection to {_url(ip, port)} failed: {failure}")
    stream = UCXStream(runtime, endpoint, local=local, peer=peer)
    stream._start_on_loop()
    return stream


async def _create_endpoint(ctx: Any, ip: str, port: int) -> Any:
    """``ctx.create_endpoint(ip, port)``, but refused at once, and leaving nothing behind.

    Returns:
        The ucxx ``Endpoint``; or, when UCX could not connect or the exchange
        failed, UCX's reason as a string.

    ucxx's own waits out its exchange timeout when the peer refuses, and the
    UCX endpoint it drops then keeps the UCX worker alive. Here the endpoint's
    close callback (UCX reports a refusal within milliseconds) ends the
    exchange, and a failed endpoint is closed before it is dropped.
    """
    lib = importlib.import_module("ucxx._lib.libucxx")
    lib_async = importlib.import_module("ucxx._lib_async")
    peer_info = importlib.import_module("ucxx._lib_async.exchange_peer_info")
    utils = importlib.import_module("ucxx._lib_async.utils")
    loop = asyncio.get_running_loop()
    ucx_ep = lib.UCXEndpoint.create(ctx.worker, ip, port, True)
    lost = asyncio.Event()
    failure = ""
    try:
        try:
            ucx_ep.set_close_callback(loop.call_soon_threadsafe, (lost.set,))
        except RuntimeError:  # already closed: refused before we could listen for it
            lost.set()
        msg_tag = utils.hash64bits("msg_tag", os.urandom(16), ucx_ep.handle)
        exchange = loop.create_task(
            peer_info.exchange_peer_info(
                endpoint=ucx_ep, msg_tag=msg_tag, listener=False, connect_timeout=_HANDSHAKE_TIMEOUT
            )
        )
        watch = loop.create_task(lost.wait())
        try:
            await asyncio.wait([exchange, watch], return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            if not exchange.done():
                exchange.cancel()
                await asyncio.gather(exchange, return_exceptions=True)
        error = None if exchange.cancelled() else exchange.exception()
        if error is not None:
            failure = _forget(error)
        if lost.is_set() or exchange.cancelled():
            failure = "the peer refused or could not be reached"
        elif error is None:
            info = exchange.result()
            ucx_ep.remove_close_callback()
            tags = {"msg_send": info["msg_tag"], "msg_recv": msg_tag}
            return _Endpoint(lib_async.Endpoint(endpoint=ucx_ep, ctx=ctx, tags=tags), ctx.worker)
    except BaseException:
        _close_raw(ucx_ep)
        raise
    _close_raw(ucx_ep)
    del exchange
    return failure


def _close_raw(ucx_ep: Any) -> None:
    """Close a ucxx ``UCXEndpoint`` that no ``Endpoint`` wraps yet."""
    try:
        ucx_ep.close_blocking(period=10**9, max_attempts=1)
        ucx_ep.remove_close_callback()
    except Exception as exc:  # already closed
        _forget(exc)


def _discard_stream(future: concurrent.futures.Future[UCXStream]) -> None:
    """After an abandoned connect: close the stream it made after all."""
    if future.cancelled() or future.exception() is not None:
        return
    stream = future.result()
    stream._closed = True
    stream._runtime.submit(stream._close_endpoint())


register_backend("ucx", UCXBackend())
