"""``tls://host:port``: TCP with TLS and mutual authentication, under trio or asyncio.

Theory of operation
-------------------
A connection is a TCP stream (:mod:`trioclust.transport.tcp`, so
``TCP_NODELAY`` too) wrapped in :class:`TLSStream`, which runs OpenSSL over
two memory buffers (``ssl.MemoryBIO``): what OpenSSL writes goes out on the
TCP stream, what arrives is fed to it. The contexts come from the
:class:`~trioclust.Security` in use: the server requires a client certificate
signed by the cluster's CA, the client checks the server's against the same
CA, and both present the certificate of their role.

The handshake completes inside ``connect`` and before a listener hands the
stream to its handler, so no trioclust message, let alone a pickle, is read
from a peer that did not authenticate. A refused handshake gives one log
line on the listener's side (``trioclust.transport``) saying why: no
certificate, a certificate from another CA, not TLS at all; and a
:class:`~trioclust.errors.TLSConnectionError` on the connecting
side saying the same, from its point of view. For that, the side that fails
sends the TLS alert OpenSSL wrote (anyio's TLS stream drops it, which leaves
the peer guessing), and a listener that refuses a peer shuts its side down
and lets the peer's last bytes drain, bounded, before closing, so that the
alert is read rather than lost to a TCP reset. A peer that sends something
other than TLS gets a TLS ``protocol_version`` alert, which a ``tcp://``
client of trioclust recognises and reports.

Under TLS 1.3 a client's handshake completes before the server has checked
the client's certificate; the server's verdict arrives with the first
read. :class:`TLSStream` turns such an alert into a ``TLSConnectionError``
too, and :func:`trioclust.comm.connect` raises it from the trioclust
handshake that follows.

Both sides write concurrently with reading (a reader answers TLS control
messages), so every write to the TCP stream takes one lock: OpenSSL's
records leave in the order it wrote them. Closing sends ``close_notify`` when
that can be done at once, but a bare TCP end of file is accepted as the end
of the stream too: trioclust's framing already tells a whole message from a
truncated one.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import ByteStream
from anyio.streams.tls import TLSAttribute

from trioclust import config
from trioclust.errors import TLSConnectionError
from trioclust.transport.addresses import split_host_port, unparse_host_port
from trioclust.transport.registry import (
    ConnectionHandler,
    TransportAttribute,
    register_backend,
)
from trioclust.transport.tcp import TCPBackend, TCPListener

if TYPE_CHECKING:
    from trioclust.security import Security

__all__ = [
    "NOT_TLS_ALERT",
    "TLSBackend",
    "TLSListener",
    "TLSStream",
    "client_handshake",
    "describe_failure",
    "linger",
    "looks_like_tls",
    "require_security",
    "server_handshake",
]

logger = logging.getLogger("trioclust.transport")

# What a listener answers a peer that does not speak TLS: a fatal
# protocol_version alert (RFC 8446, 6.2), in a TLS 1.2 record.
NOT_TLS_ALERT = b"\x15\x03\x03\x00\x02\x02\x46"
# after refusing a peer, how long its last bytes may drain before the socket
# closes (closing with unread bytes would reset the connection, alert and all)
_LINGER_SECONDS = 1.0
# how long closing may spend sending close_notify
_CLOSE_NOTIFY_SECONDS = 0.5
# largest read from the TCP stream at once
_MAX_TRANSPORT_READ = 1 << 20

_NOT_TLS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "HTTP_REQUEST",
        "HTTPS_PROXY_REQUEST",
        "UNKNOWN_PROTOCOL",
        "RECORD_LAYER_FAILURE",
        "PACKET_LENGTH_TOO_LONG",
        "RECORD_LENGTH_MISMATCH",
        "UNEXPECTED_RECORD",
    }
)
_NO_SHARED_VERSION = frozenset(
    {"UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "NO_PROTOCOLS_AVAILABLE"}
)


def looks_like_tls(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` starts like a TLS record (a handshake or an alert)."""
    head = bytes(data[:3])
    return len(head) == 3 and head[0] in (0x15, 0x16) and head[1] == 0x03 and head[2] <= 0x04


def _tls_url(url: str) -> str:
    return "tls://" + url.partition("://")[2]


def describe_failure(exc: BaseException, *, server_side: bool) -> str:
    """Why a TLS handshake (or the first read after it) failed, in words.

    Args:
        exc: what OpenSSL (or the stream under it) raised.
        server_side: whether this side is the listener; the words are from
            this side's point of view, about "the peer".
    """
    if isinstance(exc, TLSConnectionError):
        return str(exc)
    if isinstance(exc, ssl.SSLEOFError | anyio.EndOfStream):
        if server_side:
            return "it closed the connection during the TLS handshake"
        return (
            "it closed the connection during the TLS handshake (is it listening on tls://? "
            "a tcp:// or ws:// listener closes TLS connections)"
        )
    if not isinstance(exc, ssl.SSLError):
        return f"the connection broke during the TLS handshake: {exc or type(exc).__name__}"
    reason = exc.reason or ""
    if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return (
            "it presented no certificate (TLS here requires a certificate signed by the "
            "cluster's CA)"
        )
    if reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED":
        return (
            "it requires a certificate and this side presented none (give the Security a "
            "certificate signed by the cluster's CA: tls_client_cert and tls_client_key)"
        )
    if isinstance(exc, ssl.SSLCertVerificationError) or reason == "CERTIFICATE_VERIFY_FAILED":
        detail = getattr(exc, "verify_message", "") or reason
        return (
            f"its certificate failed verification ({detail}): it is not signed by the CA "
            f"this side trusts (tls_ca_file)"
        )
    if reason in ("TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE", "TLSV1_ALERT_DECRYPT_ERROR"):
        return (
            f"it does not trust this side's certificate (TLS alert: "
            f"{reason.split('ALERT_')[-1].lower().replace('_', ' ')}): the two sides' "
            f"certificates come from different CAs"
        )
    if reason in _NOT_TLS:
        return f"it does not speak TLS ({reason.lower().replace('_', ' ')}): is it a tcp:// or ws:// peer?"
    if reason in _NO_SHARED_VERSION:
        return f"the two sides share no TLS version ({reason.lower().replace('_', ' ')}; see tls_min_version)"
    if "ALERT_" in reason:
        return f"it ended the TLS handshake with the alert {reason.split('ALERT_')[-1].lower().replace('_', ' ')!r}"
    return f"the TLS handshake failed: {exc}"


class TLSStream(ByteStream):
    """A byte stream encrypted with TLS over another byte stream.

    Made by :func:`client_handshake` or :func:`server_handshake`, which
    complete the handshake first. Provides :class:`TransportAttribute` (with
    the ``scheme`` of the connection) and anyio's ``TLSAttribute`` (the peer's
    certificate, the cipher, the TLS version...).
    """

    def __init__(
        self,
        transport: ByteStream,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        local: str,
        peer: str,
    ) -> None:
        self._transport = transport
        self._read_bio = ssl.MemoryBIO()
        self._write_bio = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._read_bio, self._write_bio, server_side=server_side)
        self._server_side = server_side
        self._local = local
        self._peer = peer
        self._send_lock = anyio.Lock()
        self._broken = False
        self._closed = False

    # ----------------------------------------------------------- plumbing
    async def _flush(self) -> None:
        """Send what OpenSSL wrote, in order, under the write lock."""
        async with self._send_lock:
            if not self._write_bio.pending:
                return
            data = self._write_bio.read()
            try:
                await self._transport.send(data)
            except BaseException:
                self._broken = True  # a record went half out: nothing after it can be read
                raise

    async def _fill(self) -> None:
        """Read from the transport into OpenSSL (end of file included)."""
        try:
            data = await self._transport.receive(_MAX_TRANSPORT_READ)
        except anyio.EndOfStream:
            self._read_bio.write_eof()
        else:
            self._read_bio.write(data)

    async def _handshake(self) -> None:
        while True:
            try:
                self._ssl.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()
            except ssl.SSLError:
                # OpenSSL wrote an alert saying why: deliver it, so the peer knows too
                await self._flush_quietly()
                self._broken = True
                raise
        await self._flush()

    async def _flush_quietly(self) -> None:
        try:
            await self._flush()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass

    # ------------------------------------------------------- ByteStream
    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._broken:
            raise anyio.BrokenResourceError
        data = await self._read(max_bytes)
        if len(data) < max_bytes and (self._read_bio.pending or self._ssl.pending()):
            # more records already arrived: hand them over in the same call
            chunks = [data]
            size = len(data)
            while size < max_bytes:
                try:
                    more = self._ssl.read(max_bytes - size)
                except ssl.SSLError:
                    break  # WantRead, or an error the next receive reports
                if not more:
                    break
                chunks.append(more)
                size += len(more)
            data = b"".join(chunks)
        if self._write_bio.pending:
            await self._flush()
        return data

    async def _read(self, max_bytes: int) -> bytes:
        """At least one byte of plaintext, reading from the transport as needed."""
        while True:
            try:
                data = self._ssl.read(max_bytes)
            except ssl.SSLWantReadError:
                if self._write_bio.pending:
                    await self._flush()
                await self._fill()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                raise anyio.EndOfStream from None
            except ssl.SSLError as exc:
                if "UNEXPECTED_EOF" in (exc.reason or "") or "UNEXPECTED_EOF" in str(exc):
                    raise anyio.EndOfStream from None
                self._broken = True
                why = describe_failure(exc, server_side=self._server_side)
                side = "from" if self._server_side else "to"
                raise TLSConnectionError(f"TLS connection {side} {self._peer} failed: {why}") from exc
            if not data:
                raise anyio.EndOfStream
            return data

    async def send(self, item: bytes) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._broken:
            raise anyio.BrokenResourceError
        try:
            self._ssl.write(item)  # whole: a memory buffer never pushes back
        except ssl.SSLError as exc:
            self._broken = True
            raise anyio.BrokenResourceError from exc
        await self._flush()

    async def send_eof(self) -> None:
        raise NotImplementedError("TLS cannot close one direction only")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if not self._broken and not self._send_lock.locked():
                with anyio.move_on_after(_CLOSE_NOTIFY_SECONDS):
                    try:
                        self._ssl.unwrap()  # writes close_notify; the peer's is not awaited
                    except ssl.SSLError:
                        pass
                    await self._flush_quietly()
        finally:
            await self._transport.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        ssl_object = self._ssl
        return {
            **self._transport.extra_attributes,
            TransportAttribute.local_address: lambda: self._local,
            TransportAttribute.peer_address: lambda: self._peer,
            TLSAttribute.alpn_protocol: ssl_object.selected_alpn_protocol,
            TLSAttribute.cipher: ssl_object.cipher,
            TLSAttribute.peer_certificate: lambda: ssl_object.getpeercert(False),
            TLSAttribute.peer_certificate_binary: lambda: ssl_object.getpeercert(True),
            TLSAttribute.server_side: lambda: self._server_side,
            TLSAttribute.shared_ciphers: lambda: ssl_object.shared_ciphers() if self._server_side else None,
            TLSAttribute.ssl_object: lambda: ssl_object,
            TLSAttribute.standard_compatible: lambda: False,
            TLSAttribute.tls_version: ssl_object.version,
        }

    def __repr__(self) -> str:
        return f"<TLSStream {self._local} -> {self._peer}>"


async def client_handshake(
    transport: ByteStream,
    context: ssl.SSLContext,
    *,
    local: str,
    peer: str,
    timeout: float | None = None,
) -> TLSStream:
    """Wrap a connected stream in TLS, as the connecting side.

    Args:
        transport: the connected stream (closed here if the handshake fails).
        context: from :meth:`Security.client_context`.
        local, peer: the addresses the TLS stream reports.
        timeout: seconds for the handshake; default ``comm.timeouts.handshake``.

    Raises:
        TLSConnectionError: the handshake failed or timed out; the message
            says why from this side's point of view.
    """
    stream = TLSStream(transport, context, server_side=False, local=local, peer=peer)
    if timeout is None:
        timeout = config.get_float("comm.timeouts.handshake")
    try:
        with anyio.fail_after(timeout):
            await stream._handshake()
    except TimeoutError:
        await anyio.aclose_forcefully(transport)
        raise TLSConnectionError(
            f"TLS connection to {peer} failed: no TLS handshake within {timeout:g} s "
            f"(comm.timeouts.handshake): is it a tls:// address?"
        ) from None
    except (ssl.SSLError, anyio.BrokenResourceError, anyio.EndOfStream, OSError) as exc:
        await anyio.aclose_forcefully(transport)
        cause = exc.__cause__ if isinstance(exc, anyio.BrokenResourceError) and exc.__cause__ else exc
        why = describe_failure(cause, server_side=False)
        raise TLSConnectionError(f"TLS connection to {peer} failed: {why}") from exc
    except BaseException:
        await anyio.aclose_forcefully(transport)
        raise
    return stream


async def server_handshake(
    transport: ByteStream,
    context: ssl.SSLContext,
    *,
    local: str,
    peer: str,
    timeout: float | None = None,
) -> TLSStream:
    """Wrap an accepted stream in TLS, as the listening side.

    A peer that does not speak TLS gets a ``protocol_version`` alert.

    Raises:
        TLSConnectionError: the handshake failed or timed out; the message
            says why, about the peer. The caller logs that, then calls
            :func:`linger` and closes ``transport``, so that the peer reads
            the alert.
    """
    stream = TLSStream(transport, context, server_side=True, local=local, peer=peer)
    if timeout is None:
        timeout = config.get_float("comm.timeouts.handshake")
    try:
        with anyio.fail_after(timeout):
            await stream._handshake()
    except TimeoutError:
        raise TLSConnectionError(f"it sent no TLS handshake within {timeout:g} s") from None
    except (ssl.SSLError, anyio.BrokenResourceError, anyio.EndOfStream, OSError) as exc:
        cause = exc.__cause__ if isinstance(exc, anyio.BrokenResourceError) and exc.__cause__ else exc
        why = describe_failure(cause, server_side=True)
        if isinstance(cause, ssl.SSLError) and (cause.reason or "") in _NOT_TLS:
            await _send_quietly(transport, NOT_TLS_ALERT)
        raise TLSConnectionError(why) from exc
    return stream


async def _send_quietly(transport: ByteStream, data: bytes) -> None:
    try:
        await transport.send(data)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass


async def linger(transport: ByteStream) -> None:
    """Shut this direction, then read until the peer closes (at most a second).

    Closing a socket with unread bytes resets the connection, and a reset
    can overtake the alert the peer is about to read.
    """
    with anyio.move_on_after(_LINGER_SECONDS):
        try:
            with contextlib.suppress(NotImplementedError):  # TLS cannot half-close
                await transport.send_eof()
            while True:
                await transport.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass


class TLSListener:
    """TCP listening sockets whose connections pass a TLS handshake before they are handled."""

    def __init__(self, tcp: TCPListener, context: ssl.SSLContext, *, scheme: str = "tls") -> None:
        self._tcp = tcp
        self._context = context
        self._scheme = scheme
        self._contact_address = f"{scheme}://" + tcp.contact_address.partition("://")[2]

    @property
    def contact_address(self) -> str:
        """``tls://HOST:PORT`` with the real bound port."""
        return self._contact_address

    async def accept_tls(self, raw: ByteStream) -> TLSStream | None:
        """The TLS handshake on an accepted TCP stream; None (and a log line) when refused."""
        tcp_peer = raw.extra(TransportAttribute.peer_address, "tcp://<unknown>")
        peer = f"{self._scheme}://" + tcp_peer.partition("://")[2]
        local = f"{self._scheme}://" + raw.extra(TransportAttribute.local_address, "").partition("://")[2]
        try:
            return await server_handshake(raw, self._context, local=local, peer=peer)
        except TLSConnectionError as exc:
            logger.warning("Refused TLS connection from %s: %s", peer, exc)
            await linger(raw)
            return None

    async def serve(self, handler: ConnectionHandler) -> None:
        """Accept connections until :meth:`aclose`; each is handshaken, then handled, in its own task."""
        await self._tcp.serve_upgraded(self.accept_tls, handler)

    async def aclose(self) -> None:
        """Close the listening sockets; accepted connections stay open."""
        await self._tcp.aclose()

    def __repr__(self) -> str:
        return f"<TLSListener {self._contact_address}>"


def require_security(security: Security | None, scheme: str, what: str) -> Security:
    """``security``, or a ``ValueError`` saying that ``scheme://`` needs one."""
    if security is None:
        raise ValueError(
            f"{scheme}:// needs certificates to {what}: pass security=Security(tls_ca_file=..., "
            f"...cert=..., ...key=...) (or Security.temporary()) to the Scheduler, Worker, "
            f"Nanny, Client or LocalCluster"
        )
    return security


class TLSBackend:
    """The ``tls://`` backend."""

    def __init__(self) -> None:
        self._tcp = TCPBackend()

    def parse_location(self, location: str) -> str:
        """``host:port``, IPv6 hosts in brackets; the port is required."""
        return unparse_host_port(*split_host_port(location))

    async def connect(
        self, location: str, *, security: Security | None = None, role: str = "client"
    ) -> ByteStream:
        """Connect to ``host:port`` and complete the TLS handshake as ``role``.

        Raises:
            ValueError: no ``security``, or it lacks what TLS needs.
            OSError: the peer refused or could not be reached (retried by the caller).
            TLSConnectionError: the handshake failed (not retried).
        """
        context = require_security(security, "tls", "connect").client_context(role)
        raw = await self._tcp.connect(location)
        local = _tls_url(raw.extra(TransportAttribute.local_address, ""))
        return await client_handshake(raw, context, local=local, peer=f"tls://{location}")

    async def listen(
        self, location: str, *, security: Security | None = None, role: str = "scheduler"
    ) -> TLSListener:
        """Bind ``host:port`` (port 0 picks a free one) for TLS as ``role``.

        Raises:
            ValueError: no ``security``, or it lacks a CA or ``role``'s certificate.
            OSError: the address cannot be bound.
        """
        context = require_security(security, "tls", "listen").server_context(role)
        return TLSListener(await self._tcp.listen(location), context)


register_backend("tls", TLSBackend())
