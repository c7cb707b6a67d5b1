"""A :class:`Comm` sends and receives whole messages over a transport byte stream.

Theory of operation
-------------------
``send`` encodes a message (:func:`~trioclust.protocol.dumps`) and writes the
frame prefix and the frames. A small message goes out as one write of the
joined bytes; a large one writes the prefix, then each large frame in
slices of the caller's own memory (no concatenated copy of a 200 MB array).
A send interrupted after its first byte left (cancelled, or failed) leaves the
stream mid-message, so the comm closes itself: no later message could be
parsed anyway.

``recv`` feeds whatever the stream returns to a sans-IO
:class:`~trioclust.protocol.FrameReader`, which keeps the bytes that belong to
the next message, so a burst of small messages costs one read, and a large
frame is copied once into a buffer of its declared size: by the kernel, when
the transport offers ``receive_into`` (TCP under trio), which reads straight
into that buffer. ``recv`` is safe to cancel: bytes already read stay in the
reader.

Every way a connection ends surfaces as :class:`CommClosedError` naming the
peer and the reason; bytes that are not the protocol surface as
:class:`~trioclust.protocol.ProtocolError`, after which the comm is closed.

:func:`connect` and :func:`serve` add the handshake (protocol version, role,
name) on top of :mod:`trioclust.transport`, passing the
:class:`~trioclust.Security` in use down to it; :func:`handle_stream` does a
listener's part for a stream accepted elsewhere (the dashboard's websocket
route). The first bytes a peer sends are checked for being TLS or HTTP
instead of trioclust, so that a ``tcp://`` peer of a ``tls://`` or ``ws://``
one hears which scheme to use.

Writes happen in the event loop's thread, except one: :meth:`Comm.send_nowait`
may also be called from another thread (a synchronous client's user thread
writing its submission itself). A thread lock held for every write of bytes
keeps two writers from interleaving: ``send_nowait`` only tries it (and does
nothing when it is taken), ``send_frames`` takes it in the loop thread for
its writes, which waits at most for another thread's one ``send_nowait``
(an encoding and a non-blocking write).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from trioclust import config, transport
from trioclust.errors import (
    CommClosedError,
    HandshakeTimeout,
    ProtocolError,
    TransportHandshakeError,
)
from trioclust.protocol import PROTOCOL_VERSION
from trioclust.protocol.codec import dumps, loads
from trioclust.protocol.framing import FrameReader, frame_prefix, frames_nbytes
from trioclust.transport import TransportAttribute
from trioclust.transport.tls import looks_like_tls

if TYPE_CHECKING:
    from trioclust.security import Security

__all__ = ["LOCAL_CLOSE", "PEER_CLOSE", "Comm", "CommHandler", "connect", "handle_stream", "serve"]

logger = logging.getLogger("trioclust.comm")

#: What :func:`serve` calls for each connection that passed the handshake.
CommHandler = Callable[["Comm"], Awaitable[None]]

# Messages up to this size are joined into one write; bigger frames are
# written from the caller's memory, in slices of _WRITE_CHUNK bytes (bounded
# so a transport that buffers, like asyncio's, never holds a whole copy).
_JOIN_LIMIT = 64 * 1024
_WRITE_CHUNK = 4 * 2**20
_TRANSPORT_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)

#: most frames a message may declare before the handshake is complete (a
#: handshake is one frame)
_HANDSHAKE_MAX_FRAMES = 16

#: :attr:`Comm.close_reason` of the two orderly ends of a connection
PEER_CLOSE = "the peer closed the connection"
LOCAL_CLOSE = "this side closed the connection"


class Comm:
    """One connection that carries whole messages.

    Args:
        stream: a connected transport stream (from :func:`trioclust.transport.connect`
            or a listener); the comm owns it and closes it.
        max_frames, max_frame_bytes, max_message_bytes: limits on what the peer
            may send; default to the ``comm.*`` settings.

    Attributes:
        local_address: this end's address (``tcp://127.0.0.1:41234``).
        peer_address: the other end's address.
        peer_info: the peer's handshake (``role``, ``name``, ``protocol``);
            empty until :meth:`handshake` completes.
    """

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        *,
        max_frames: int | None = None,
        max_frame_bytes: int | None = None,
        max_message_bytes: int | None = None,
    ) -> None:
        self._stream = stream
        self.local_address: str = stream.extra(TransportAttribute.local_address, "")
        self.peer_address: str = stream.extra(TransportAttribute.peer_address, "<unknown peer>")
        self.peer_info: dict[str, Any] = {}
        self._reader = FrameReader(
            max_frames=max_frames,
            max_frame_bytes=max_frame_bytes,
            max_message_bytes=max_message_bytes,
        )
        self._oob_threshold = config.get_int("comm.out-of-band-threshold")
        # reads straight into a large frame's buffer, where the transport can
        self._receive_into = getattr(stream, "receive_into", None)
        # writes without waiting, where the transport can (see send_nowait)
        self._send_nowait: Callable[[bytes], int] | None = getattr(stream, "send_nowait", None)
        # what send_nowait holds for the next send: the rest of a small message
        # the kernel did not take, or a large message's frames and lengths
        self._unsent: memoryview | tuple[list[Any], list[int]] | None = None
        self._send_lock = anyio.Lock(fast_acquire=True)
        # held while bytes are written, by whichever thread writes (module notes)
        self._write_mutex = threading.Lock()
        self._receiving = False
        self._closed = False
        self._close_reason = ""

    @property
    def closed(self) -> bool:
        """Whether the comm is closed (by either side, or after an error)."""
        return self._closed

    @property
    def close_reason(self) -> str:
        """Why the comm closed; empty while it is open."""
        return self._close_reason

    @property
    def closed_cleanly(self) -> bool:
        """Whether the comm closed in an orderly way: by either side, between messages."""
        return self._close_reason in (PEER_CLOSE, LOCAL_CLOSE)

    def __repr__(self) -> str:
        state = f"closed: {self._close_reason}" if self._closed else "open"
        return f"<Comm {self.local_address} -> {self.peer_address} ({state})>"

    def _closed_error(self) -> CommClosedError:
        return CommClosedError(f"Connection to {self.peer_address} closed: {self._close_reason}")

    async def _abort(self, reason: str) -> None:
        """Close because of ``reason``; keeps the first reason if already closed."""
        if not self._closed:
            self._closed = True
            self._close_reason = reason
        await anyio.aclose_forcefully(self._stream)

    async def aclose(self) -> None:
        """Close the connection. Idempotent; never blocks for long."""
        await self._abort(LOCAL_CLOSE)

    # ------------------------------------------------------------------ send
    async def send(self, msg: Any) -> None:
        """Encode ``msg`` and write it.

        Raises:
            CommClosedError: the comm is closed, or the connection broke
                during the write (the comm is closed afterwards).
            TypeError, pickle.PicklingError: ``msg`` cannot be encoded;
                nothing was written and the comm stays usable.
        """
        if self._closed:
            raise self._closed_error()
        await self.send_frames(dumps(msg, oob_threshold=self._oob_threshold))

    def send_nowait(self, msg: Any) -> bool:
        """Encode ``msg`` and write it now, without waiting, if possible.

        Possible when the transport offers it (TCP under trio) and no other
        send is in progress or held. A large message, or whatever part of a
        small one the kernel does not take at once, is held, encoded, and
        goes out first with the next :meth:`send_frames` or :meth:`flush`;
        call one of them soon (:attr:`unsent` says whether one is due).

        Safe from any thread (see the module's notes): from outside the event
        loop's thread, the caller has the loop flush what is held.

        Returns:
            True if the message is written or held; False if nothing was
            done (nothing encoded): send it the usual way.

        Raises:
            TypeError, pickle.PicklingError: as :meth:`send`.
        """
        send = self._send_nowait
        if send is None:
            return False
        mutex = self._write_mutex
        if not mutex.acquire(blocking=False):
            return False  # another thread is writing
        try:
            # under the lock: no other thread can write or hold something meanwhile
            if self._closed or self._unsent is not None or self._send_lock.locked():
                return False
            frames = dumps(msg, oob_threshold=self._oob_threshold)
            lengths = frames_nbytes(frames)
            if sum(lengths) > _JOIN_LIMIT:  # written from the caller's buffers, by flush
                self._unsent = (frames, lengths)
                return True
            data = b"".join([frame_prefix(frames), *frames])
            try:
                sent = send(data)
            except OSError:  # would block, or broken: flush waits, or reports it
                sent = 0
            if sent < len(data):
                self._unsent = memoryview(data)[sent:]
            return True
        finally:
            mutex.release()

    @property
    def unsent(self) -> bool:
        """Whether part of a :meth:`send_nowait` message still waits for :meth:`flush`."""
        return self._unsent is not None

    async def flush(self) -> None:
        """Write what :meth:`send_nowait` left unsent. Raises like :meth:`send`."""
        await self.send_frames([])

    async def send_frames(self, frames: list[Any]) -> None:
        """Write already-encoded frames as one message (see :meth:`send`); an
        empty list writes only what :meth:`send_nowait` left unsent."""
        lengths = frames_nbytes(frames)
        total = sum(lengths)
        async with self._send_lock:
            if self._closed:
                raise self._closed_error()
            # Cancelled here, nothing is written and the comm stays usable.
            await anyio.lowlevel.checkpoint_if_cancelled()
            finished = False
            # another thread's send_nowait holds it for one encoding and write at most
            self._write_mutex.acquire()
            try:
                unsent = self._unsent
                if unsent is not None:
                    if isinstance(unsent, memoryview):
                        await self._stream.send(unsent)  # type: ignore[arg-type]
                    else:
                        await self._send_large(*unsent)
                    self._unsent = None
                if not frames:
                    finished = True
                    return
                if total <= _JOIN_LIMIT:
                    await self._stream.send(b"".join([frame_prefix(frames), *frames]))
                else:
                    await self._send_large(frames, lengths)
                finished = True
            except _TRANSPORT_ERRORS as exc:
                await self._abort(_describe_loss(exc))
                raise self._closed_error() from exc
            finally:
                self._write_mutex.release()
                if not finished and not self._closed:
                    await self._abort("a send was interrupted in the middle of a message")

    async def _send_large(self, frames: list[Any], lengths: list[int]) -> None:
        pending: list[Any] = [frame_prefix(frames)]
        for frame, length in zip(frames, lengths, strict=True):
            if length < _JOIN_LIMIT:
                pending.append(frame)
                continue
            if pending:
                await self._stream.send(b"".join(pending))
                pending = []
            view = memoryview(frame)
            if view.ndim != 1 or view.itemsize != 1:
                view = view.cast("B")
            for start in range(0, length, _WRITE_CHUNK):
                await self._stream.send(view[start : start + _WRITE_CHUNK])  # type: ignore[arg-type]
        if pending:
            await self._stream.send(b"".join(pending))

    # ------------------------------------------------------------------ recv
    async def recv(self) -> Any:
        """Read the next message.

        Returns:
            The decoded message; pickled values inside it stay
            :class:`~trioclust.protocol.Serialized`.

        Raises:
            CommClosedError: the connection closed or broke (naming the peer
                and whether it happened in the middle of a message).
            ProtocolError: the peer sent bytes that are not the protocol; the
                comm is closed.
            anyio.BusyResourceError: another task is already receiving.
        """
        if self._receiving:
            raise anyio.BusyResourceError("receiving from")
        self._receiving = True
        try:
            return await self._recv()
        finally:
            self._receiving = False

    async def _recv(self) -> Any:
        reader = self._reader
        while True:
            if self._closed:
                raise self._closed_error()
            try:
                frames = reader.next_message()
                if frames is not None:
                    return loads(frames)
            except ProtocolError as exc:
                await self._abort(f"it sent invalid data ({exc})")
                raise ProtocolError(
                    f"{self.peer_address} sent data that is not trioclust's protocol: {exc}"
                ) from None
            receive_into = self._receive_into
            try:
                if receive_into is not None and (target := reader.large_target()) is not None:
                    with target:
                        reader.advance(await receive_into(target))
                    continue
                data = await self._stream.receive(reader.read_size)
            except (anyio.EndOfStream, *_TRANSPORT_ERRORS) as exc:
                raise await self._receive_failed(exc) from _breakage(exc)
            reader.feed(data)

    async def _receive_failed(self, exc: BaseException) -> CommClosedError:
        """Close the comm after a read ended with ``exc``; the error to raise."""
        if isinstance(exc, anyio.EndOfStream):
            if self._reader.in_message:
                reason = "the peer closed the connection in the middle of a message"
            else:
                reason = PEER_CLOSE
        elif isinstance(exc, anyio.ClosedResourceError):
            reason = LOCAL_CLOSE
        else:
            reason = _describe_loss(exc)
        await self._abort(reason)
        return self._closed_error()

    # ------------------------------------------------------------- handshake
    async def handshake(self, *, role: str, name: str, timeout: float) -> dict[str, Any]:
        """Exchange versions, roles and names with the peer (both send first).

        Args:
            role: what this side is (``"scheduler"``, ``"worker"``, ``"client"``...).
            name: this side's name, for the peer's logs.
            timeout: seconds the peer has to send its handshake.

        Returns:
            :attr:`peer_info`: the peer's ``role``, ``name`` and ``protocol``.

        Raises:
            ProtocolError: the peer is not a trioclust peer, or speaks another
                protocol version (the message says which).
            HandshakeTimeout: no handshake from the peer within ``timeout``.
            CommClosedError: the connection closed during the handshake.
        """
        hello = {"op": "handshake", "protocol": PROTOCOL_VERSION, "role": role, "name": name}
        # until the peer has said who it is, it may send only small messages:
        # a stranger cannot make this process allocate a large frame's buffer
        reader = self._reader
        limits = reader.max_frames, reader.max_frame_bytes, reader.max_message_bytes
        small = config.get_int("comm.max-handshake-bytes")
        reader.max_frames = min(limits[0], _HANDSHAKE_MAX_FRAMES)
        reader.max_frame_bytes, reader.max_message_bytes = min(limits[1], small), min(limits[2], small)
        reader.limits_key = "comm.max-handshake-bytes: the peer has not completed the handshake"
        try:
            with anyio.fail_after(timeout):
                await self.send(hello)
                await self._check_first_bytes()
                msg = await self.recv()
        except TimeoutError:
            await self._abort("handshake timed out")
            raise HandshakeTimeout(
                f"{self.peer_address} did not complete the trioclust handshake "
                f"within {timeout:g} s (comm.timeouts.handshake)"
            ) from None
        try:
            self.peer_info = self._check_hello(msg)
        except ProtocolError:
            await self._abort("handshake failed")
            raise
        reader.max_frames, reader.max_frame_bytes, reader.max_message_bytes = limits
        reader.limits_key = ""
        return self.peer_info

    async def _check_first_bytes(self) -> None:
        """Read the peer's first bytes and refuse TLS or HTTP with a message
        that names the scheme to use (the bytes stay for :meth:`recv`)."""
        if self._closed or self._reader.in_message:
            return
        try:
            data = await self._stream.receive(self._reader.read_size)
        except (anyio.EndOfStream, *_TRANSPORT_ERRORS) as exc:
            raise await self._receive_failed(exc) from _breakage(exc)
        foreign = None
        if looks_like_tls(data):
            foreign = "TLS (one side uses tls:// or wss:// and the other does not"
        elif bytes(data[:5]) in (b"GET /", b"HTTP/"):
            foreign = "HTTP (one side uses ws:// or is a web client, and the other does not"
        if foreign is not None:
            await self._abort("handshake failed")
            raise ProtocolError(
                f"{self.peer_address} sent data that is not trioclust's protocol: it speaks "
                f"{foreign}; use the scheme the listener was started with on both sides)"
            )
        self._reader.feed(data)

    def _check_hello(self, msg: Any) -> dict[str, Any]:
        if (
            not isinstance(msg, dict)
            or msg.get("op") != "handshake"
            or not isinstance(msg.get("role"), str)
            or "protocol" not in msg
        ):
            shown = repr(msg)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise ProtocolError(
                f"{self.peer_address} is not a trioclust peer: its first message was "
                f"{shown}, not a handshake"
            )
        if msg["protocol"] != PROTOCOL_VERSION:
            raise ProtocolError(
                f"protocol version mismatch: this side speaks {PROTOCOL_VERSION}, the peer "
                f"({msg['role']}, {self.peer_address}) speaks {msg['protocol']!r}; "
                f"install the same trioclust version on both"
            )
        info = {k: v for k, v in msg.items() if k != "op"}
        info.setdefault("name", "")
        return info


def _breakage(exc: BaseException) -> BaseException | None:
    """What a read's failure is caused by: nothing for an orderly end (the
    peer's or ours), the error itself for a broken connection."""
    return None if isinstance(exc, anyio.EndOfStream | anyio.ClosedResourceError) else exc


def _describe_loss(exc: BaseException) -> str:
    if isinstance(exc, anyio.ClosedResourceError):
        return LOCAL_CLOSE
    return f"connection lost: {exc or type(exc).__name__}"


async def connect(
    address: str,
    *,
    role: str,
    name: str = "",
    timeout: float | None = None,
    security: Security | None = None,
) -> Comm:
    """Connect to ``address`` and complete the handshake.

    Args:
        address: ``tcp://host:port``, ``tls://host:port``, ``inproc://name``, ...
        role: this side's role, sent in the handshake; with ``security`` it
            also picks the certificate presented.
        name: this side's name, sent in the handshake.
        timeout: seconds to keep retrying a refused connection; defaults to
            ``comm.timeouts.connect``. The handshake has
            ``comm.timeouts.handshake`` on top.
        security: the :class:`~trioclust.Security` to connect with (needed
            for ``tls://`` and ``wss://``).

    Raises:
        ValueError: the address is malformed, or ``security`` does not fit it
            (``EncryptionRequiredError``).
        trioclust.transport.ConnectTimeout: no connection within ``timeout``.
        TLSConnectionError: either side refused the other's certificate, or
            the peer does not speak TLS; the message says which.
        ProtocolError: the peer is not a trioclust peer (a TLS or HTTP server
            on a ``tcp://`` address, say: the message names the scheme) or
            speaks another version.
        HandshakeTimeout: the peer accepted but never completed the handshake.
        CommClosedError: the peer hung up during the handshake.
    """
    stream = await transport.connect(address, timeout=timeout, security=security, role=role)
    comm = Comm(stream)
    try:
        await comm.handshake(
            role=role, name=name, timeout=config.get_float("comm.timeouts.handshake")
        )
    except CommClosedError as exc:
        await comm.aclose()
        if isinstance(exc.__cause__, TransportHandshakeError):
            # a TLS 1.3 server checks the client's certificate after the client's
            # handshake is done: its verdict arrives here, and is the real error
            raise exc.__cause__ from None
        raise
    except BaseException:
        await comm.aclose()
        raise
    return comm


async def serve(
    address: str,
    handler: CommHandler,
    *,
    role: str,
    name: str = "",
    security: Security | None = None,
    task_status: anyio.abc.TaskStatus[Any] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``address`` and run ``handler(comm)`` for each handshaken connection.

    Start it with ``listener = await task_group.start(serve, address, handler, role=...)``;
    ``listener.contact_address`` is the address peers should use. Runs until
    cancelled; the listener is closed on the way out.

    A connection that fails the handshake, sends bytes that are not the
    protocol, or drops mid-message gets one log line on ``trioclust.comm``
    naming the peer and what was wrong, and is closed; other connections are
    not affected. The comm is closed when ``handler`` returns.

    Args:
        address: where to listen (``tcp://127.0.0.1:0``, ``inproc://``...).
        handler: called with each :class:`Comm`, ``peer_info`` filled in.
        role: this side's role, sent in the handshake; with ``security`` it
            also picks the certificate the listener presents.
        name: this side's name, sent in the handshake.
        security: the :class:`~trioclust.Security` to listen with (needed for
            ``tls://`` and ``wss://``, whose peers must then present a
            certificate signed by its CA before anything is read from them).
        task_status: receives the :class:`~trioclust.transport.Listener`.
    """
    listener = await transport.listen(address, security=security, role=role)
    handshake_timeout = config.get_float("comm.timeouts.handshake")
    most_handshaking = config.get_int("comm.max-handshaking-connections")
    handshaking = [0]  # connections accepted whose peer has not completed the handshake

    def handshake_over() -> None:
        handshaking[0] -= 1

    async def on_connection(stream: anyio.abc.ByteStream) -> None:
        if handshaking[0] >= most_handshaking:
            peer = stream.extra(TransportAttribute.peer_address, "<unknown peer>")
            logger.warning(
                "Refused connection from %s: %d connections have not completed the handshake "
                "yet (comm.max-handshaking-connections)", peer, handshaking[0],
            )
            await anyio.aclose_forcefully(stream)
            return
        handshaking[0] += 1
        await handle_stream(
            stream, handler, role=role, name=name, handshake_timeout=handshake_timeout,
            on_handshake_over=handshake_over,
        )

    try:
        task_status.started(listener)
        await listener.serve(on_connection)
    finally:
        with anyio.CancelScope(shield=True):
            await listener.aclose()


async def handle_stream(
    stream: anyio.abc.ByteStream,
    handler: CommHandler,
    *,
    role: str,
    name: str = "",
    handshake_timeout: float | None = None,
    on_handshake_over: Callable[[], object] | None = None,
) -> None:
    """A listener's part for one accepted stream: the handshake, then ``handler(comm)``.

    :func:`serve` calls it for each connection; a server that accepts streams
    some other way (the dashboard's websocket route) calls it the same way.
    Failures are logged as :func:`serve` describes, and the comm is closed
    when this returns.

    Args:
        stream: the accepted stream, already authenticated where the
            transport does that.
        handler: called with the :class:`Comm`, ``peer_info`` filled in.
        role: this side's role, sent in the handshake.
        name: this side's name, sent in the handshake.
        handshake_timeout: seconds the peer has for its handshake; default
            ``comm.timeouts.handshake``.
        on_handshake_over: called once the handshake has succeeded or failed.
    """
    if handshake_timeout is None:
        handshake_timeout = config.get_float("comm.timeouts.handshake")
    comm = Comm(stream)
    try:
        try:
            await comm.handshake(role=role, name=name, timeout=handshake_timeout)
        except (ProtocolError, CommClosedError) as exc:
            logger.warning("Refused connection from %s: %s", comm.peer_address, exc)
            return
        finally:
            if on_handshake_over is not None:
                on_handshake_over()
        try:
            await handler(comm)
        except Exception as exc:
            _log_handler_failure(comm, exc)
    finally:
        await comm.aclose()


def _log_handler_failure(comm: Comm, exc: Exception) -> None:
    """One warning for a peer's fault, info for an orderly close, a traceback for a bug."""
    expected = (ProtocolError, CommClosedError)
    if isinstance(exc, BaseExceptionGroup):
        matched, rest = exc.split(expected)
        if rest is None and matched is not None:
            inner: BaseException = matched
            while isinstance(inner, BaseExceptionGroup):
                inner = inner.exceptions[0]
            exc = inner  # type: ignore[assignment]
    peer = f"{comm.peer_info.get('role', 'peer')} {comm.peer_address}"
    if isinstance(exc, CommClosedError) and comm.closed_cleanly:
        logger.info("Connection from %s ended: %s", peer, exc)
    elif isinstance(exc, expected):
        logger.warning("Closed connection from %s: %s", peer, exc)
    else:
        logger.error("Handler for connection from %s failed", peer, exc_info=exc)
