"""Scenario h: what two Python processes can do over TCP loopback, without any framework.

Both sides are bare trio sockets (``raw_peer.py`` in a child process, this
process on the other end), so these are the ceilings the runtimes work under:

* ping-pong: a 16-byte message sent and echoed back, one at a time; the
  median round trip.
* batched small messages: small dicts shaped like runtime messages
  (``{"op", "key", "nbytes", "stimulus_id"}``), msgpack-encoded
  ``RAW_BATCH`` to a frame with a length prefix, decoded on the other side;
  messages per second from the first send to the receiver's acknowledgement
  of the last one. Encoding and decoding are counted: any runtime pays them.
* bulk: a stream of bytes received into one reused, preallocated buffer
  (``recv_into``); GB/s of the fastest buffer-full (the buffer is as large as
  scenario e's array, and e reports its fastest fetch too), and the mean over
  the whole stream.

And within this process, the hand-offs between threads that a round trip
(scenario b) makes besides its four hops between processes:

* thread ping-pong: two threads handing a turn back and forth through
  ``threading.Event`` (a worker's event loop giving a task to its thread, and
  the thread giving the result back); the median round trip.
* loop ping-pong: a plain thread waking a trio event loop
  (``TrioToken.run_sync_soon``) that wakes it back (``threading.Event``): what
  a submission handed to a client's loop thread costs on top (a synchronous
  client writes its own submissions when its link is idle; see
  ``trioclust/client/core.py``); the median round trip.

``handoff_floor_us`` adds up what b's round trip spends waking things up,
before any of the work: two process ping-pongs (client -> scheduler ->
worker -> scheduler -> client is four one-way hops), one thread ping-pong
(the worker's loop handing the task to its thread and back) and half of one
(the client's loop waking the user's thread with the result).
"""

from __future__ import annotations

import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import trio
from clusters import record_process
from sizes import Sizes

RAW_BATCH = 1000  # messages per frame
PING_BYTES = 16
PEER = str(Path(__file__).resolve().parent / "raw_peer.py")


async def _with_peer(mode: str, *args: int) -> Any:
    """Start ``raw_peer.py``, connect, and return (process, socket)."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, PEER, mode, *map(str, args)], stdout=subprocess.PIPE
    )
    record_process(proc.pid, f"raw peer ({mode})")
    data = b""
    with trio.fail_after(30):
        while b"\n" not in data:
            chunk = await proc.stdout.receive_some()
            if not chunk:
                raise RuntimeError("the raw peer exited before reporting its port")
            data += chunk
    port = int(data.split(b"\n", 1)[0])
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", port))
    sock.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, 1)
    return proc, sock


async def _finish(proc: Any, sock: trio.socket.SocketType) -> None:
    sock.close()
    with trio.move_on_after(10):
        await proc.wait()
    if proc.returncode is None:
        proc.kill()
        await proc.wait()
    await proc.stdout.aclose()
    if proc.returncode != 0:
        raise RuntimeError(f"the raw peer exited with {proc.returncode}")


async def _recv_exactly(sock: trio.socket.SocketType, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = await sock.recv_into(view[got:])
        if n == 0:
            raise RuntimeError("the raw peer closed early")
        got += n


async def _send_all(sock: trio.socket.SocketType, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = await sock.send(view)
        view = view[n:]


async def ping_pong(n: int) -> dict[str, Any]:
    proc, sock = await _with_peer("echo", PING_BYTES)
    try:
        message = b"x" * PING_BYTES
        reply = memoryview(bytearray(PING_BYTES))
        samples = []
        for i in range(n + n // 10):  # the first tenth warms up
            start = time.perf_counter()
            await _send_all(sock, message)
            await _recv_exactly(sock, reply)
            if i >= n // 10:
                samples.append(time.perf_counter() - start)
    finally:
        await _finish(proc, sock)
    return {"n": n, "median_us": statistics.median(samples) * 1e6, "min_us": min(samples) * 1e6}


async def batched(total: int) -> dict[str, Any]:
    total -= total % RAW_BATCH
    messages = [
        {"op": "task-finished", "key": f"inc-{i:032x}", "nbytes": 28, "stimulus_id": f"s-{i}"}
        for i in range(RAW_BATCH)
    ]
    proc, sock = await _with_peer("sink", total)
    try:
        ack = memoryview(bytearray(8))
        start = time.perf_counter()
        for _ in range(total // RAW_BATCH):
            body = msgpack.packb(messages)
            await _send_all(sock, struct.pack("<Q", len(body)) + body)
        await _recv_exactly(sock, ack)
        seconds = time.perf_counter() - start
        (count,) = struct.unpack("<Q", ack)
        assert count == total, f"the peer counted {count} of {total} messages"
    finally:
        await _finish(proc, sock)
    return {"messages": total, "batch": RAW_BATCH, "messages_per_s": total / seconds}


async def bulk(total: int, buffer_bytes: int) -> dict[str, Any]:
    proc, sock = await _with_peer("source", total, buffer_bytes)
    try:
        buffer = memoryview(bytearray(buffer_bytes))
        segments = []  # seconds per buffer-full
        start = segment_start = time.perf_counter()
        await _send_all(sock, b"g")
        got = position = 0
        while got < total:
            # fill the buffer to its end, then start over at its beginning
            want = min(buffer_bytes - position, total - got)
            n = await sock.recv_into(buffer[position : position + want])
            if n == 0:
                raise RuntimeError("the raw peer closed early")
            got += n
            position = (position + n) % buffer_bytes
            if position == 0:
                now = time.perf_counter()
                segments.append(now - segment_start)
                segment_start = now
        seconds = time.perf_counter() - start
    finally:
        await _finish(proc, sock)
    return {
        "bytes": total,
        "buffer_bytes": buffer_bytes,
        "gb_per_s": buffer_bytes / min(segments) / 1e9,
        "mean_gb_per_s": total / seconds / 1e9,
    }


def _event_round_trips(n: int, kick: Any, back: threading.Event) -> list[float]:
    """``n + n // 10`` timed ``kick()`` then wait for ``back``; the first tenth warms up."""
    samples = []
    for i in range(n + n // 10):
        start = time.perf_counter()
        kick()
        back.wait()
        back.clear()
        if i >= n // 10:
            samples.append(time.perf_counter() - start)
    return samples


def thread_ping_pong(n: int) -> dict[str, Any]:
    turn, back = threading.Event(), threading.Event()
    rounds = n + n // 10

    def peer() -> None:
        for _ in range(rounds):
            turn.wait()
            turn.clear()
            back.set()

    thread = threading.Thread(target=peer, name="raw-thread-peer")
    thread.start()
    try:
        samples = _event_round_trips(n, turn.set, back)
    finally:
        thread.join()
    return {"n": n, "median_us": statistics.median(samples) * 1e6}


async def loop_ping_pong(n: int) -> dict[str, Any]:
    token = trio.lowlevel.current_trio_token()
    back = threading.Event()
    samples = await trio.to_thread.run_sync(
        lambda: _event_round_trips(n, lambda: token.run_sync_soon(back.set), back)
    )
    return {"n": n, "median_us": statistics.median(samples) * 1e6}


async def _all(sizes: Sizes) -> dict[str, Any]:
    results = {
        "ping_pong": await ping_pong(sizes.raw_pings),
        "batched": await batched(sizes.raw_messages),
        "bulk": await bulk(sizes.raw_bulk_bytes, sizes.raw_bulk_buffer),
        "thread_ping_pong": await trio.to_thread.run_sync(thread_ping_pong, sizes.raw_pings),
        "loop_ping_pong": await loop_ping_pong(sizes.raw_pings),
    }
    results["handoff_floor_us"] = (
        2 * results["ping_pong"]["median_us"] + 1.5 * results["thread_ping_pong"]["median_us"]
    )
    return results


def run(system: str, sizes: Sizes, n_workers: int) -> dict[str, Any]:
    return trio.run(_all, sizes)
