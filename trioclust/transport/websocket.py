"""``ws://host:port[/path]`` and ``wss://``: trioclust's bytes as binary websocket messages.

Theory of operation
-------------------
A websocket connection is an HTTP/1.1 upgrade on a TCP stream (``wss``: on a
:class:`~trioclust.transport.tls.TLSStream`, with the same mutual
authentication as ``tls://``), after which both sides exchange framed
messages. :class:`WebSocketStream` makes that a byte stream: each ``send``
becomes one binary message (or several of at most :data:`MAX_MESSAGE_BYTES`,
so that servers with a message size limit, hypercorn's included, take them),
and ``receive`` returns message data as it arrives, with no regard for
message boundaries: trioclust's framing inside carries its own. The
protocol is wsproto's sans-IO state machine, driven over an anyio byte
stream, so the same code runs under trio and asyncio.

A reader also answers pings and the peer's close, so, as in ``tls://``,
every write to the stream underneath takes one lock. The peer's close (or a
bare end of the TCP stream) is the end of the stream; a text message is a
protocol violation (the stream breaks).

The listener accepts an upgrade on any path. A scheduler with a dashboard
accepts websocket comms on the dashboard's port too, at
:data:`trioclust.dashboard.COMM_PATH` (see :mod:`trioclust.dashboard.websocket_comm`),
so one port can sit behind a reverse proxy.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import ByteStream
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from trioclust import config
from trioclust.errors import TLSConnectionError, WebSocketHandshakeError
from trioclust.transport.addresses import split_host_port, unparse_host_port
from trioclust.transport.registry import (
    ConnectionHandler,
    TransportAttribute,
    refuse_unencrypted,
    register_backend,
)
from trioclust.transport.tcp import TCPBackend, TCPListener
from trioclust.transport.tls import (
    client_handshake,
    linger,
    looks_like_tls,
    require_security,
    server_handshake,
)

if TYPE_CHECKING:
    import ssl

    from trioclust.security import Security

__all__ = [
    "MAX_MESSAGE_BYTES",
    "WebSocketBackend",
    "WebSocketListener",
    "WebSocketStream",
    "client_upgrade",
    "server_upgrade",
    "split_location",
]

logger = logging.getLogger("trioclust.transport")

#: The largest websocket message a ``send`` makes; longer data is split.
MAX_MESSAGE_BYTES = 1 << 20
_MAX_TRANSPORT_READ = 1 << 20
_CLOSE_SECONDS = 0.5
_PATH = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*")
_TRANSPORT_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


def split_location(location: str) -> tuple[str, int, str]:
    """``host:port/path`` as ``(host, port, "/path")``; no path means ``"/"``.

    Raises:
        ValueError: the host, port or path is malformed.
    """
    hostport, _, path = location.partition("/")
    host, port = split_host_port(hostport)
    if not _PATH.fullmatch(path):
        raise ValueError(f"path {'/' + path!r} has characters a URL path cannot have")
    return host, port, "/" + path


def _with_scheme(scheme: str, url: str) -> str:
    return f"{scheme}://" + url.partition("://")[2]


class MessageChunks:
    """Received websocket message data, handed out as a byte stream.

    ``take(max_bytes)`` returns at most ``max_bytes`` from the oldest message,
    without regard for message boundaries; whole messages are returned
    uncopied. Shared by the websocket streams over wsproto and over ASGI.
    """

    __slots__ = ("_chunks", "_offset")

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # into self._chunks[0]

    def __bool__(self) -> bool:
        return bool(self._chunks)

    def append(self, data: bytes) -> None:
        """Queue a message's (non-empty) data."""
        self._chunks.append(data)

    def take(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of the queued data; there must be some."""
        chunk = self._chunks[0]
        start = self._offset
        end = start + max_bytes
        if end >= len(chunk):
            self._chunks.popleft()
            self._offset = 0
            return chunk[start:] if start else chunk
        self._offset = end
        return chunk[start:end]


class WebSocketStream(ByteStream):
    """Binary websocket messages over a byte stream, as a byte stream.

    Made by :func:`client_upgrade` or :func:`server_upgrade` once the upgrade
    is done. Provides :class:`TransportAttribute` and whatever the stream
    underneath provides (a ``wss`` stream's TLS attributes among them).
    """

    def __init__(self, transport: ByteStream, ws: WSConnection, *, local: str, peer: str) -> None:
        self._transport = transport
        self._ws = ws
        self._local = local
        self._peer = peer
        self._chunks = MessageChunks()
        self._outgoing: list[bytes] = []  # control replies the reader owes the peer
        self._send_lock = anyio.Lock()
        self._eof = False
        self._closed = False

    async def _send_raw(self, data: bytes) -> None:
        async with self._send_lock:
            await self._transport.send(data)

    def _process_events(self) -> None:
        for event in self._ws.events():
            if isinstance(event, BytesMessage):
                if event.data:
                    self._chunks.append(bytes(event.data))
            elif isinstance(event, CloseConnection):
                self._eof = True
                if self._ws.state == ConnectionState.REMOTE_CLOSING:
                    self._outgoing.append(self._ws.send(event.response()))
            elif isinstance(event, Ping):
                self._outgoing.append(self._ws.send(event.response()))
            elif isinstance(event, TextMessage):
                raise anyio.BrokenResourceError(
                    f"{self._peer} sent a text websocket message; trioclust speaks binary messages"
                )

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._closed:
            raise anyio.ClosedResourceError
        while not self._chunks:
            self._process_events()
            if self._outgoing:
                data, self._outgoing = b"".join(self._outgoing), []
                try:
                    await self._send_raw(data)
                except _TRANSPORT_ERRORS:
                    pass  # the peer is gone; what it sent is still read
            if self._chunks:
                break
            if self._eof:
                raise anyio.EndOfStream
            try:
                received: bytes | None = await self._transport.receive(_MAX_TRANSPORT_READ)
            except anyio.EndOfStream:
                received = None
            try:
                self._ws.receive_data(received)
            except (RemoteProtocolError, LocalProtocolError) as exc:
                raise anyio.BrokenResourceError(
                    f"{self._peer} broke the websocket protocol: {exc}"
                ) from None
        return self._chunks.take(max_bytes)

    async def send(self, item: bytes) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        view = memoryview(item)
        try:
            for start in range(0, max(len(view), 1), MAX_MESSAGE_BYTES):
                data = self._ws.send(BytesMessage(data=bytes(view[start : start + MAX_MESSAGE_BYTES])))
                await self._send_raw(data)
        except LocalProtocolError as exc:  # the websocket is closing
            raise anyio.BrokenResourceError(f"the websocket to {self._peer} is closed") from exc

    async def send_eof(self) -> None:
        raise NotImplementedError("a websocket cannot close one direction only")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._ws.state == ConnectionState.OPEN and not self._send_lock.locked():
                with anyio.move_on_after(_CLOSE_SECONDS):
                    try:
                        await self._send_raw(self._ws.send(CloseConnection(code=1000)))
                    except (*_TRANSPORT_ERRORS, LocalProtocolError):
                        pass
        finally:
            await self._transport.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return {
            **self._transport.extra_attributes,
            TransportAttribute.local_address: lambda: self._local,
            TransportAttribute.peer_address: lambda: self._peer,
        }

    def __repr__(self) -> str:
        return f"<WebSocketStream {self._local} -> {self._peer}>"


def _timeout(timeout: float | None) -> float:
    return config.get_float("comm.timeouts.handshake") if timeout is None else timeout


async def client_upgrade(
    transport: ByteStream,
    *,
    host: str,
    target: str,
    local: str,
    peer: str,
    timeout: float | None = None,
    secure: bool = False,
) -> WebSocketStream:
    """Upgrade a connected stream to a websocket, as the client.

    Args:
        transport: the connected stream (TCP, or TLS for ``wss``).
        host: the ``Host`` header (``host:port``).
        target: the path asked for (``"/"``, ``"/trioclust-comm"``).
        local, peer: the addresses the websocket stream reports.
        timeout: seconds for the upgrade; default ``comm.timeouts.handshake``.
        secure: ``transport`` is TLS (``wss``): a close without an answer
            then most likely means the server refused our certificate.

    Raises:
        WebSocketHandshakeError: the server refused the upgrade (the HTTP
            status and the start of its answer are in the message), answered
            with something that is not HTTP, closed, or took too long.
    """
    ws = WSConnection(ConnectionType.CLIENT)
    seconds = _timeout(timeout)
    status: int | None = None
    body = bytearray()
    first = True
    try:
        with anyio.fail_after(seconds):
            await transport.send(ws.send(Request(host=host, target=target)))
            while True:
                for event in ws.events():
                    if isinstance(event, AcceptConnection):
                        return WebSocketStream(transport, ws, local=local, peer=peer)
                    if isinstance(event, RejectConnection):
                        status = event.status_code
                        if not event.has_body:
                            raise _refused(peer, status, body)
                    elif isinstance(event, RejectData):
                        body += event.data[: 200 - len(body)] if len(body) < 200 else b""
                        if event.body_finished:
                            raise _refused(peer, status, body)
                try:
                    data = await transport.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    # closed or reset (a refusing TLS server does either)
                    if status is not None:
                        raise _refused(peer, status, body) from None
                    if secure:
                        raise WebSocketHandshakeError(
                            f"websocket connection to {peer} failed: it closed the TLS connection "
                            f"without answering the upgrade, which a wss:// server does when it "
                            f"refuses the client's certificate: give a Security with a certificate "
                            f"signed by the cluster's CA"
                        ) from None
                    raise WebSocketHandshakeError(
                        f"websocket connection to {peer} failed: it closed the connection without "
                        f"answering the upgrade (is it a ws:// address? tcp://, tls:// and wss:// "
                        f"listeners close plain HTTP connections)"
                    ) from None
                if first and looks_like_tls(data):
                    raise WebSocketHandshakeError(
                        f"websocket connection to {peer} failed: it answered with TLS; "
                        f"use a wss:// (or tls://) address and a Security"
                    )
                first = False
                try:
                    ws.receive_data(data)
                except RemoteProtocolError as exc:
                    raise WebSocketHandshakeError(
                        f"websocket connection to {peer} failed: its answer to the upgrade is not "
                        f"HTTP ({exc}): is it a ws:// address?"
                    ) from None
    except TimeoutError:
        raise WebSocketHandshakeError(
            f"websocket connection to {peer} failed: no answer to the upgrade within "
            f"{seconds:g} s (comm.timeouts.handshake)"
        ) from None


def _refused(peer: str, status: int | None, body: bytes | bytearray) -> WebSocketHandshakeError:
    text = bytes(body).decode("utf-8", errors="replace").strip()
    hint = ""
    if status in (403, 404):
        hint = (
            " (is the path right? A scheduler's dashboard accepts comms at /trioclust-comm, "
            "and only when the scheduler itself speaks ws:// or wss://)"
        )
    return WebSocketHandshakeError(
        f"websocket connection to {peer} failed: the server refused the upgrade with HTTP "
        f"{status}{': ' + text if text else ''}{hint}"
    )


async def server_upgrade(
    transport: ByteStream, *, local: str, peer: str, timeout: float | None = None
) -> WebSocketStream:
    """Accept a websocket upgrade on an accepted stream, on any path.

    A request that is not a websocket upgrade is answered with HTTP 400.

    Raises:
        WebSocketHandshakeError: the peer is not a websocket client, closed,
            or took too long; the message says which, about the peer.
    """
    ws = WSConnection(ConnectionType.SERVER)
    seconds = _timeout(timeout)
    first = True
    try:
        with anyio.fail_after(seconds):
            while True:
                for event in ws.events():
                    if isinstance(event, Request):
                        await transport.send(ws.send(AcceptConnection()))
                        return WebSocketStream(transport, ws, local=local, peer=peer)
                try:
                    data = await transport.receive()
                except anyio.EndOfStream:
                    raise WebSocketHandshakeError(
                        "it closed the connection before the websocket upgrade"
                    ) from None
                if first and looks_like_tls(data):
                    raise WebSocketHandshakeError(
                        "it speaks TLS: a wss:// or tls:// client connected to this ws:// address"
                    )
                first = False
                try:
                    ws.receive_data(data)
                except RemoteProtocolError as exc:
                    if ws.state == ConnectionState.CONNECTING:
                        try:
                            await transport.send(ws.send(RejectConnection(status_code=400)))
                        except (*_TRANSPORT_ERRORS, LocalProtocolError):
                            pass
                    raise WebSocketHandshakeError(
                        f"it is not a websocket client: {exc}"
                    ) from None
    except TimeoutError:
        raise WebSocketHandshakeError(
            f"it sent no websocket upgrade within {seconds:g} s (comm.timeouts.handshake)"
        ) from None


class WebSocketListener:
    """TCP listening sockets that accept websocket upgrades (after TLS, for ``wss``)."""

    def __init__(
        self, tcp: TCPListener, *, scheme: str, tls_context: ssl.SSLContext | None = None
    ) -> None:
        self._tcp = tcp
        self._scheme = scheme
        self._tls_context = tls_context
        self._contact_address = _with_scheme(scheme, tcp.contact_address)

    @property
    def contact_address(self) -> str:
        """``ws://HOST:PORT`` (``wss://``) with the real bound port; any path works."""
        return self._contact_address

    async def _accept(self, raw: ByteStream) -> ByteStream | None:
        peer = _with_scheme(self._scheme, raw.extra(TransportAttribute.peer_address, "tcp://?"))
        local = _with_scheme(self._scheme, raw.extra(TransportAttribute.local_address, "tcp://?"))
        stream: ByteStream = raw
        try:
            if self._tls_context is not None:
                stream = await server_handshake(raw, self._tls_context, local=local, peer=peer)
            return await server_upgrade(stream, local=local, peer=peer)
        except TLSConnectionError as exc:
            logger.warning("Refused TLS connection from %s: %s", peer, exc)
            await linger(raw)
        except WebSocketHandshakeError as exc:
            logger.warning("Refused websocket connection from %s: %s", peer, exc)
            await linger(stream)
        except _TRANSPORT_ERRORS as exc:
            logger.info("Websocket connection from %s broke during the upgrade: %s", peer, exc)
        await anyio.aclose_forcefully(stream)
        return None

    async def serve(self, handler: ConnectionHandler) -> None:
        """Accept connections until :meth:`aclose`; each is upgraded, then handled, in its own task."""
        await self._tcp.serve_upgraded(self._accept, handler)

    async def aclose(self) -> None:
        """Close the listening sockets; accepted connections stay open."""
        await self._tcp.aclose()

    def __repr__(self) -> str:
        return f"<WebSocketListener {self._contact_address}>"


class WebSocketBackend:
    """The ``ws://`` backend, or with ``secure=True`` the ``wss://`` one."""

    def __init__(self, *, secure: bool) -> None:
        self._secure = secure
        self._scheme = "wss" if secure else "ws"
        self._tcp = TCPBackend()

    def parse_location(self, location: str) -> str:
        """``host:port`` with an optional ``/path``; IPv6 hosts in brackets."""
        host, port, target = split_location(location)
        return unparse_host_port(host, port) + (target if target != "/" else "")

    async def connect(
        self, location: str, *, security: Security | None = None, role: str = "client"
    ) -> ByteStream:
        """Connect, (``wss``: complete TLS as ``role``,) and upgrade to a websocket.

        Raises:
            EncryptionRequiredError: ``ws://`` while ``security`` requires encryption.
            ValueError: ``wss://`` without a ``security`` fit for TLS.
            OSError: the peer refused or could not be reached (retried by the caller).
            TransportHandshakeError: TLS or the upgrade failed (not retried).
        """
        context = None
        if self._secure:
            context = require_security(security, "wss", "connect").client_context(role)
        else:
            refuse_unencrypted(security, "ws", location, use="wss")
        host, port, target = split_location(location)
        hostport = unparse_host_port(host, port)
        raw = await self._tcp.connect(hostport)
        local = _with_scheme(self._scheme, raw.extra(TransportAttribute.local_address, "tcp://?"))
        peer = f"{self._scheme}://{location}"
        stream: ByteStream = raw
        try:
            if context is not None:
                stream = await client_handshake(raw, context, local=local, peer=peer)
            return await client_upgrade(
                stream, host=hostport, target=target, local=local, peer=peer, secure=context is not None
            )
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise

    async def listen(
        self, location: str, *, security: Security | None = None, role: str = "scheduler"
    ) -> WebSocketListener:
        """Bind ``host:port`` (port 0 picks a free one); the path, if any, is ignored.

        Raises:
            EncryptionRequiredError: ``ws://`` while ``security`` requires encryption.
            ValueError: ``wss://`` without a ``security`` fit for TLS.
            OSError: the address cannot be bound.
        """
        context = None
        if self._secure:
            context = require_security(security, "wss", "listen").server_context(role)
        else:
            refuse_unencrypted(security, "ws", location, use="wss")
        host, port, _ = split_location(location)
        tcp = await self._tcp.listen(unparse_host_port(host, port))
        return WebSocketListener(tcp, scheme=self._scheme, tls_context=context)


register_backend("ws", WebSocketBackend(secure=False))
register_backend("wss", WebSocketBackend(secure=True))
