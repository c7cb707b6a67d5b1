"""Websocket comms on the dashboard's port: the route ``/trioclust-comm``.

A scheduler that speaks ``ws://`` also takes connections here, so a single
port (the dashboard's) can sit behind a reverse proxy:
``Client("ws://HOST:DASHBOARD_PORT/trioclust-comm")`` works like
``Client(scheduler.address)``. A ``wss://`` scheduler's dashboard speaks HTTPS
with the scheduler's own TLS context, which requires a certificate of the
cluster's CA: there it is ``wss://HOST:DASHBOARD_PORT/trioclust-comm`` with the
client's ``security=``. hypercorn does the websocket protocol; the
ASGI messages are adapted to a byte stream (:class:`ASGIWebSocketStream`) and
handed to the scheduler's comm handler, which does the trioclust handshake
and serves the link exactly as for its own listener.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import anyio
from anyio.abc import ByteStream
from starlette.websockets import WebSocket

from trioclust.transport import ConnectionHandler, TransportAttribute
from trioclust.transport.addresses import unparse_host_port
from trioclust.transport.websocket import MAX_MESSAGE_BYTES, MessageChunks

__all__ = ["COMM_PATH", "ASGIWebSocketStream", "comm_endpoint"]

#: Where the dashboard accepts websocket comms.
COMM_PATH = "/trioclust-comm"

_CLOSE_SECONDS = 0.5


class ASGIWebSocketStream(ByteStream):
    """An accepted ASGI websocket (binary messages) as a byte stream.

    Like :class:`~trioclust.transport.websocket.WebSocketStream`: each
    ``send`` is one message (split at :data:`MAX_MESSAGE_BYTES`), ``receive``
    returns message data with no regard for message boundaries, the peer's
    close is the end of the stream, and a text message breaks it.
    """

    def __init__(self, websocket: WebSocket, *, local: str, peer: str) -> None:
        self._ws = websocket
        self._local = local
        self._peer = peer
        self._chunks = MessageChunks()
        self._eof = False
        self._closed = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._closed:
            raise anyio.ClosedResourceError
        while not self._chunks:
            if self._eof:
                raise anyio.EndOfStream
            message = await self._ws.receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                self._eof = True
            elif kind == "websocket.receive":
                data = message.get("bytes")
                if data is None:
                    raise anyio.BrokenResourceError(
                        f"{self._peer} sent a text websocket message; trioclust speaks binary messages"
                    )
                if data:
                    self._chunks.append(data)
        return self._chunks.take(max_bytes)

    async def send(self, item: bytes) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        view = memoryview(item)
        try:
            for start in range(0, max(len(view), 1), MAX_MESSAGE_BYTES):
                await self._ws.send(
                    {"type": "websocket.send", "bytes": bytes(view[start : start + MAX_MESSAGE_BYTES])}
                )
        except Exception as exc:  # what ASGI servers raise once the client is gone varies
            raise anyio.BrokenResourceError(f"the websocket to {self._peer} is closed") from exc

    async def send_eof(self) -> None:
        raise NotImplementedError("a websocket cannot close one direction only")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.move_on_after(_CLOSE_SECONDS):
            try:
                await self._ws.close(code=1000)
            except Exception:  # already closed by the peer: nothing to say
                pass

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return {
            TransportAttribute.local_address: lambda: self._local,
            TransportAttribute.peer_address: lambda: self._peer,
        }

    def __repr__(self) -> str:
        return f"<ASGIWebSocketStream {self._local} -> {self._peer}>"


def comm_endpoint(handler: ConnectionHandler) -> Callable[[WebSocket], Any]:
    """The Starlette websocket endpoint that hands each connection to ``handler``.

    Args:
        handler: takes the stream (the scheduler's: handshake, then its link);
            the websocket is closed when it returns.
    """

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        server = websocket.scope.get("server") or ("127.0.0.1", 0)
        client = websocket.client
        scheme = "wss" if websocket.scope.get("scheme") == "wss" else "ws"
        local = f"{scheme}://{unparse_host_port(str(server[0]), int(server[1] or 0))}{COMM_PATH}"
        peer = (
            f"{scheme}://{unparse_host_port(client.host, client.port)}"
            if client
            else f"{scheme}://<unknown peer>"
        )
        stream = ASGIWebSocketStream(websocket, local=local, peer=peer)
        try:
            await handler(stream)
        finally:
            await stream.aclose()

    return endpoint
