"""Comms: the handshake, connect/serve, and bad input sent to real listeners."""

from __future__ import annotations

import logging
import random
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import pytest
from anyio.abc import ByteStream

from trioclust import config, transport
from trioclust.comm import Comm, connect, serve
from trioclust.errors import CommClosedError, ConnectTimeout, HandshakeTimeout, ProtocolError
from trioclust.protocol import PROTOCOL_VERSION, dumps, frame_prefix
from trioclust.testing import comm_pair, stream_pair
from trioclust.transport import Listener, TransportAttribute

ADDRESSES = {"tcp": "tcp://127.0.0.1:0", "inproc": "inproc://"}


@pytest.fixture(params=sorted(ADDRESSES))
def address(request: pytest.FixtureRequest) -> str:
    return ADDRESSES[request.param]


class LogWaiter(logging.Handler):
    """Collects ``trioclust.comm`` records and lets a test wait for one, without sleeping."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._event: anyio.Event | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self._event is not None:
            self._event.set()

    async def wait_for(self, text: str) -> logging.LogRecord:
        with anyio.fail_after(10):
            while True:
                for record in self.records:
                    if text in record.getMessage():
                        return record
                self._event = anyio.Event()
                await self._event.wait()


@pytest.fixture
def comm_log(caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.INFO, logger="trioclust.comm")
    waiter = LogWaiter()
    logger = logging.getLogger("trioclust.comm")
    logger.addHandler(waiter)
    yield waiter
    logger.removeHandler(waiter)


async def echo(comm: Comm) -> None:
    while True:
        await comm.send(await comm.recv())


@asynccontextmanager
async def serving(
    address: str, handler: Callable[[Comm], Awaitable[None]] = echo
) -> AsyncIterator[Listener]:
    async with anyio.create_task_group() as tg:
        listener = await tg.start(partial(serve, address, handler, role="scheduler", name="sched"))
        try:
            yield listener
        finally:
            tg.cancel_scope.cancel()


def wire(msg: Any) -> bytes:
    frames = dumps(msg)
    return frame_prefix(frames) + b"".join(bytes(f) for f in frames)


def hello(protocol: int = PROTOCOL_VERSION, role: str = "client") -> dict[str, Any]:
    return {"op": "handshake", "protocol": protocol, "role": role, "name": "raw"}


# --------------------------------------------------------------- handshake


@pytest.mark.anyio
async def test_connect_and_serve_handshake(address: str) -> None:
    seen: list[dict[str, Any]] = []

    async def handler(comm: Comm) -> None:
        seen.append(comm.peer_info)
        await echo(comm)

    async with serving(address, handler) as listener:
        comm = await connect(listener.contact_address, role="client", name="alice", timeout=5)
        try:
            assert comm.peer_info == {"protocol": PROTOCOL_VERSION, "role": "scheduler", "name": "sched"}
            assert comm.peer_address == listener.contact_address
            await comm.send({"op": "echo", "x": [1, 2]})
            assert await comm.recv() == {"op": "echo", "x": [1, 2]}
            assert seen == [{"protocol": PROTOCOL_VERSION, "role": "client", "name": "alice"}]
        finally:
            await comm.aclose()
        assert comm.closed
        assert comm.closed_cleanly


@asynccontextmanager
async def raw_server(
    address: str, behaviour: Callable[[ByteStream], Awaitable[None]]
) -> AsyncIterator[str]:
    """A listener that is not a trioclust server: ``behaviour`` gets the raw stream."""
    listener = await transport.listen(address)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, behaviour)
        try:
            yield listener.contact_address
        finally:
            await listener.aclose()
            tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_connect_refuses_another_protocol_version(address: str) -> None:
    async def newer_server(stream: ByteStream) -> None:
        await stream.send(wire(hello(protocol=PROTOCOL_VERSION + 1, role="scheduler")))
        await anyio.sleep_forever()

    async with raw_server(address, newer_server) as contact:
        with pytest.raises(ProtocolError) as info:
            await connect(contact, role="client", timeout=5)
    assert str(info.value) == (
        f"protocol version mismatch: this side speaks {PROTOCOL_VERSION}, the peer "
        f"(scheduler, {contact}) speaks {PROTOCOL_VERSION + 1}; install the same trioclust "
        "version on both"
    )


@pytest.mark.anyio
async def test_connect_refuses_a_peer_that_is_not_trioclust(address: str) -> None:
    async def http_server(stream: ByteStream) -> None:
        await stream.send(wire({"hello": "world"}))
        await anyio.sleep_forever()

    async with raw_server(address, http_server) as contact:
        with pytest.raises(ProtocolError, match="is not a trioclust peer: its first message was"):
            await connect(contact, role="client", timeout=5)

    async def garbage_server(stream: ByteStream) -> None:
        await stream.send(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await anyio.sleep_forever()

    async with raw_server(address, garbage_server) as contact:
        with pytest.raises(ProtocolError, match="not trioclust's protocol"):
            await connect(contact, role="client", timeout=5)


@pytest.mark.anyio
async def test_connect_handshake_timeout(address: str) -> None:
    async def silent_server(stream: ByteStream) -> None:
        await anyio.sleep_forever()

    async with raw_server(address, silent_server) as contact:
        with config.set(**{"comm.timeouts.handshake": 0.1}):
            with pytest.raises(
                HandshakeTimeout, match=r"did not complete the trioclust handshake within 0\.1 s"
            ) as info:
                await connect(contact, role="client", timeout=5)
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, ProtocolError)


@pytest.mark.anyio
async def test_connect_to_nothing_is_a_connect_timeout() -> None:
    with pytest.raises(ConnectTimeout, match="Is the scheduler running"):
        await connect("inproc://nobody-here", role="client", timeout=0.05)


# ------------------------------------------------- bad input to serve()

PETABYTE_HEADER = struct.pack("<2Q", 1, 2**50)


async def _send_random_bytes(stream: ByteStream) -> None:
    await stream.send(random.Random(0).randbytes(4096))


async def _send_petabyte_header(stream: ByteStream) -> None:
    await stream.send(PETABYTE_HEADER)


async def _send_newer_version(stream: ByteStream) -> None:
    await stream.send(wire(hello(protocol=PROTOCOL_VERSION + 1)))


async def _send_not_a_handshake(stream: ByteStream) -> None:
    await stream.send(wire(["GET", "/"]))


async def _cut_mid_message(stream: ByteStream) -> None:
    await Comm(stream).handshake(role="client", name="cutter", timeout=5)
    data = wire({"op": "echo", "payload": b"p" * 100_000})
    await stream.send(data[: len(data) // 3])
    await stream.aclose()


BAD_INPUTS = {
    "random-bytes": (
        _send_random_bytes,
        "sent data that is not trioclust's protocol: message declares",
    ),
    "petabyte-header": (
        _send_petabyte_header,
        "frame declares 1125899906842624 bytes, over the limit of 65536 (comm.max-handshake-bytes",
    ),
    "wrong-version": (
        _send_newer_version,
        f"protocol version mismatch: this side speaks {PROTOCOL_VERSION}, the peer "
        f"(client, {{peer}}) speaks {PROTOCOL_VERSION + 1}",
    ),
    "not-a-handshake": (_send_not_a_handshake, "{peer} is not a trioclust peer"),
    "cut-mid-message": (
        _cut_mid_message,
        "the peer closed the connection in the middle of a message",
    ),
}


@pytest.mark.parametrize("bad", sorted(BAD_INPUTS))
@pytest.mark.anyio
async def test_bad_input_closes_only_that_connection(
    bad: str, address: str, comm_log: LogWaiter, caplog: pytest.LogCaptureFixture
) -> None:
    send_bad, expected = BAD_INPUTS[bad]
    async with serving(address) as listener:
        good = await connect(listener.contact_address, role="client", name="good", timeout=5)
        try:
            await good.send({"n": 1})
            assert await good.recv() == {"n": 1}

            stream = await transport.connect(listener.contact_address, timeout=5)
            peer = stream.extra(TransportAttribute.local_address)
            try:
                await send_bad(stream)
                record = await comm_log.wait_for(peer)
            finally:
                await stream.aclose()

            assert record.levelno >= logging.WARNING
            assert expected.format(peer=peer) in record.getMessage()
            await good.send({"n": 2})  # the good connection never noticed
            assert await good.recv() == {"n": 2}
        finally:
            await good.aclose()
    about_peer = [r for r in caplog.records if peer in r.getMessage()]
    assert len(about_peer) == 1, [r.getMessage() for r in about_peer]
    assert not [r for r in caplog.records if r.name == "trioclust.transport"]


@pytest.mark.anyio
async def test_silent_peer_times_out_the_handshake(comm_log: LogWaiter) -> None:
    with config.set(**{"comm.timeouts.handshake": 0.1}):
        async with serving("tcp://127.0.0.1:0") as listener:
            stream = await transport.connect(listener.contact_address, timeout=5)
            peer = stream.extra(TransportAttribute.local_address)
            async with stream:
                record = await comm_log.wait_for(peer)
    assert record.levelno == logging.WARNING
    assert (
        f"Refused connection from {peer}: {peer} did not complete the trioclust handshake"
        in record.getMessage()
    )


@pytest.mark.anyio
async def test_orderly_disconnect_is_not_a_warning(comm_log: LogWaiter) -> None:
    async with serving("inproc://") as listener:
        comm = await connect(listener.contact_address, role="client", timeout=5)
        peer = comm.local_address
        await comm.aclose()
        record = await comm_log.wait_for(peer)
    assert record.levelno == logging.INFO
    assert "the peer closed the connection" in record.getMessage()


@pytest.mark.anyio
async def test_a_handler_bug_is_logged_with_its_traceback(comm_log: LogWaiter) -> None:
    async def buggy(comm: Comm) -> None:
        raise KeyError("oops")

    async with serving("inproc://", buggy) as listener:
        comm = await connect(listener.contact_address, role="worker", timeout=5)
        try:
            record = await comm_log.wait_for("Handler for connection from worker")
            with pytest.raises(CommClosedError):  # the server closed it after the failure
                await comm.recv()
        finally:
            await comm.aclose()
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None


# -------------------------------------------------------------- comm basics


@pytest.mark.anyio
async def test_comm_closed_errors(address: str) -> None:
    async with comm_pair(address) as (a, b):
        assert not a.closed
        assert "open" in repr(a)
        await a.aclose()
        await a.aclose()  # idempotent
        with pytest.raises(
            CommClosedError, match=f"Connection to {b.local_address} closed: this side closed"
        ):
            await a.send({"x": 1})
        with pytest.raises(CommClosedError, match="this side closed"):
            await a.recv()
        with pytest.raises(CommClosedError, match="the peer closed the connection"):
            await b.recv()
        assert "closed" in repr(a)


@pytest.mark.anyio
async def test_concurrent_recv_is_refused(address: str) -> None:
    async with comm_pair(address) as (a, b), anyio.create_task_group() as tg:
        tg.start_soon(a.recv)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(anyio.BusyResourceError):
            await a.recv()
        await b.send("unblock")
        await anyio.wait_all_tasks_blocked()


@pytest.mark.anyio
async def test_local_close_wakes_a_blocked_recv(address: str) -> None:
    async with comm_pair(address) as (a, _b):
        async with anyio.create_task_group() as tg:

            async def blocked() -> None:
                with pytest.raises(CommClosedError, match="this side closed"):
                    await a.recv()

            tg.start_soon(blocked)
            await anyio.wait_all_tasks_blocked()
            await a.aclose()


@pytest.mark.anyio
async def test_unencodable_message_leaves_the_comm_usable() -> None:
    async with comm_pair("inproc://") as (a, b):
        with pytest.raises(TypeError, match="dict keys"):
            await a.send({frozenset({"key"}): b"x" * 10_000})
        await a.send({"fine": True})
        assert await b.recv() == {"fine": True}


class GatedStream(ByteStream):
    """Wraps a stream; while the gate is shut, ``send`` waits after its first call."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.gate = anyio.Event()
        self.sends = 0

    async def send(self, item: bytes) -> None:
        self.sends += 1
        if self.sends > 1:
            await self.gate.wait()
        await self.stream.send(item)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self.stream.receive(max_bytes)

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()


@pytest.mark.anyio
async def test_send_cancelled_mid_message_closes_the_comm() -> None:
    async with stream_pair("inproc://") as (client, server):
        comm = Comm(GatedStream(client))
        async with anyio.create_task_group() as tg:
            tg.start_soon(comm.send, {"big": b"x" * 200_000})  # prefix goes, the frame waits
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
        assert comm.closed
        assert comm.close_reason == "a send was interrupted in the middle of a message"
        with pytest.raises(CommClosedError, match="middle of a message"):
            await Comm(server).recv()


@pytest.mark.anyio
async def test_send_cancelled_before_writing_keeps_the_comm() -> None:
    async with comm_pair("inproc://") as (a, b):
        with anyio.CancelScope() as scope:
            scope.cancel()
            await a.send({"never": "sent"})
        assert not a.closed
        await a.send({"sent": True})
        assert await b.recv() == {"sent": True}


@pytest.mark.anyio
async def test_send_nowait_holds_what_the_kernel_does_not_take(anyio_backend: str) -> None:
    """Writes from ``send_nowait`` stay whole and in order when the peer reads
    nothing for a while: what the kernel refuses, or takes only part of, is
    held for ``flush``/the next send, and nothing else is written meanwhile."""
    async with comm_pair("tcp://127.0.0.1:0") as (a, b):
        msgs = [{"i": i, "data": bytes([i % 256]) * 40_000} for i in range(400)]
        if anyio_backend != "trio":  # asyncio's transport owns the socket
            assert a.send_nowait(msgs[0]) is False
            return
        taken = 0
        for msg in msgs:  # the peer reads nothing: the buffers fill up
            assert a.send_nowait(msg)
            taken += 1
            if a.unsent:
                break
        assert a.unsent, "the socket buffers never filled"
        assert taken < len(msgs)
        assert a.send_nowait({"i": -1}) is False, "a held message waits: nothing may pass it"

        async def rest() -> None:
            await a.flush()
            for msg in msgs[taken:]:
                await a.send(msg)

        async with anyio.create_task_group() as tg:
            tg.start_soon(rest)
            with anyio.fail_after(30):
                for msg in msgs:
                    assert await b.recv() == msg
        assert not a.unsent


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])  # send_nowait writes on trio's sockets only
async def test_send_nowait_holds_a_large_message_for_flush(anyio_backend: str) -> None:
    """A large message is encoded once and written from its own buffers by
    ``flush`` (the next send would do it too), not joined into one copy."""
    async with comm_pair("tcp://127.0.0.1:0") as (a, b):
        big = {"op": "data", "value": bytes(range(256)) * 40_000}  # ~10 MB: out of band
        assert a.send_nowait(big)
        assert a.unsent
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.flush)
            with anyio.fail_after(30):
                assert await b.recv() == big
        assert not a.unsent


@pytest.mark.anyio
async def test_send_nowait_from_another_thread_never_writes_into_another_write(anyio_backend: str) -> None:
    """``send_nowait`` is safe from any thread: it does nothing while another
    writer holds the comm's write lock, and writes whole messages otherwise."""
    async with comm_pair("tcp://127.0.0.1:0") as (a, b):
        if anyio_backend != "trio":  # asyncio's transport writes; nothing to do here
            assert await anyio.to_thread.run_sync(a.send_nowait, {"op": "x"}) is False
            return
        with a._write_mutex:  # a write in progress elsewhere
            assert await anyio.to_thread.run_sync(a.send_nowait, {"op": "x"}) is False
        assert await anyio.to_thread.run_sync(a.send_nowait, {"op": "y"}) is True
        assert not a.unsent
        await a.send({"op": "z"})  # the loop's own send after it
        with anyio.fail_after(10):
            assert await b.recv() == {"op": "y"}
            assert await b.recv() == {"op": "z"}
