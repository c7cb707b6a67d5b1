"""The other process of scenario h: a bare trio TCP peer, no trioclust.

``python raw_peer.py MODE [ARGS]`` listens on 127.0.0.1, prints its port on
stdout, serves one connection and exits:

* ``echo SIZE``: sends back every SIZE-byte message it receives, until EOF.
* ``sink TOTAL``: reads frames (an 8-byte little-endian length, then a
  msgpack-encoded list of small messages), decodes each, and once TOTAL
  messages have arrived answers with their count (8 bytes).
* ``source TOTAL CHUNK``: after one byte from the peer, streams TOTAL bytes
  out of one preallocated CHUNK-byte buffer.
"""

from __future__ import annotations

import struct
import sys

import msgpack
import trio


async def recv_exactly(sock: trio.socket.SocketType, view: memoryview) -> bool:
    got = 0
    while got < len(view):
        n = await sock.recv_into(view[got:])
        if n == 0:
            return False
        got += n
    return True


async def send_all(sock: trio.socket.SocketType, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = await sock.send(view)
        view = view[n:]


async def echo(sock: trio.socket.SocketType, size: int) -> None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    while await recv_exactly(sock, view):
        await send_all(sock, view)


async def sink(sock: trio.socket.SocketType, total: int) -> None:
    header = bytearray(8)
    count = 0
    while count < total:
        if not await recv_exactly(sock, memoryview(header)):
            raise RuntimeError(f"the sender stopped after {count} of {total} messages")
        (length,) = struct.unpack("<Q", header)
        body = bytearray(length)
        if not await recv_exactly(sock, memoryview(body)):
            raise RuntimeError("the sender stopped inside a frame")
        count += len(msgpack.unpackb(body))
    await send_all(sock, struct.pack("<Q", count))


async def source(sock: trio.socket.SocketType, total: int, chunk: int) -> None:
    go = bytearray(1)
    await recv_exactly(sock, memoryview(go))
    buffer = memoryview(bytearray(chunk))
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        await send_all(sock, buffer[:n])
        sent += n


async def main(mode: str, *args: int) -> None:
    listener = trio.socket.socket()
    listener.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    print(listener.getsockname()[1], flush=True)
    sock, _ = await listener.accept()
    listener.close()
    sock.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, 1)
    with sock:
        if mode == "echo":
            await echo(sock, *args)
        elif mode == "sink":
            await sink(sock, *args)
        elif mode == "source":
            await source(sock, *args)
        else:
            raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    trio.run(main, sys.argv[1], *(int(a) for a in sys.argv[2:]))
