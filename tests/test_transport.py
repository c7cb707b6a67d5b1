"""Transports: address parsing, the registry, tcp and inproc specifics, connect retries."""

from __future__ import annotations

import logging
import socket
from typing import Any

import anyio
import anyio.to_thread
import pytest
from anyio.abc import ByteStream, SocketAttribute

from trioclust import transport
from trioclust.errors import ConnectTimeout
from trioclust.loop_thread import LoopThread
from trioclust.transport import (
    TransportAttribute,
    normalize_address,
    parse_address,
    parse_host_port,
    register_backend,
    unparse_host_port,
)
from trioclust.transport.inproc import InprocBackend
from trioclust.transport.registry import _backends


def _ipv6_works() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


# ---------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:8786", ("tcp", "127.0.0.1:8786")),
        ("tcp://127.0.0.1:8786", ("tcp", "127.0.0.1:8786")),
        ("TCP://localhost:0", ("tcp", "localhost:0")),
        ("tcp://[::1]:8786", ("tcp", "[::1]:8786")),
        ("tcp://my-host.example.com:65535", ("tcp", "my-host.example.com:65535")),
        ("inproc://", ("inproc", "")),
        ("inproc://1234/0", ("inproc", "1234/0")),
    ],
)
def test_parse_address(address: str, expected: tuple[str, str]) -> None:
    assert parse_address(address) == expected
    assert normalize_address(address) == f"{expected[0]}://{expected[1]}"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("tcp://", "no host"),
        ("tcp://host:notaport", "port 'notaport' is not a number"),
        ("foo:bar:baz", "too many ':'"),
        ("tcp://host:70000", "out of range"),
        ("tcp://host:-1", "not a number"),
        ("tcp://ho st:1", "characters"),
        ("tcp://host$:1", "characters"),
        ("tcp://host", "no port"),
        ("tcp://[::1", "without a closing"),
        ("tcp://[nothex]:1", "not an IPv6 address"),
        ("tcp://[::1]x", "unexpected"),
        ("", "empty address"),
        (" tcp://h:1", "whitespace"),
        ("1nvalid-scheme://x:1", "not a URL scheme"),
        ("inproc://bad name", "inproc name"),
    ],
)
def test_malformed_addresses(address: str, reason: str) -> None:
    with pytest.raises(ValueError, match="Invalid address") as info:
        parse_address(address)
    message = str(info.value)
    assert repr(address) in message
    assert reason in message
    assert "tcp://127.0.0.1:8786" in message


@pytest.mark.parametrize("address", [None, 8786, b"tcp://127.0.0.1:1"])
def test_non_string_address(address: Any) -> None:
    with pytest.raises(ValueError, match="an address is a string"):
        parse_address(address)


def test_unknown_scheme_lists_registered_ones() -> None:
    with pytest.raises(ValueError, match="Unknown transport scheme 'foo'") as info:
        parse_address("foo://127.0.0.1:1")
    assert "inproc, tcp" in str(info.value)


@pytest.mark.parametrize(
    ("location", "default_port", "expected"),
    [
        ("127.0.0.1:8786", None, ("127.0.0.1", 8786)),
        ("localhost:0", None, ("localhost", 0)),
        ("[::1]:8786", None, ("::1", 8786)),
        ("[fe80::1%eth0]:1", None, ("fe80::1%eth0", 1)),
        ("example.com", 8786, ("example.com", 8786)),
        ("[::1]", 5, ("::1", 5)),
    ],
)
def test_parse_host_port(
    location: str, default_port: int | None, expected: tuple[str, int]
) -> None:
    assert parse_host_port(location, default_port) == expected


def test_parse_host_port_errors() -> None:
    with pytest.raises(
        ValueError, match=r"Invalid host:port 'h:x': port 'x' is not a number.*127\.0\.0\.1:8786"
    ):
        parse_host_port("h:x")
    with pytest.raises(ValueError, match="no port"):
        parse_host_port("host")


def test_unparse_host_port() -> None:
    assert unparse_host_port("127.0.0.1", 1) == "127.0.0.1:1"
    assert unparse_host_port("::1", 8786) == "[::1]:8786"
    assert unparse_host_port("[::1]", 8786) == "[::1]:8786"


# ------------------------------------------------------------------- tcp


@pytest.mark.anyio
async def test_tcp_listener_port_zero_and_nodelay() -> None:
    listener = await transport.listen("tcp://127.0.0.1:0")
    try:
        scheme, location = parse_address(listener.contact_address)
        host, port = parse_host_port(location)
        assert (scheme, host) == ("tcp", "127.0.0.1")
        assert port != 0
        served = anyio.Event()
        seen: dict[str, Any] = {}

        async def handler(stream: ByteStream) -> None:
            raw = stream.extra(SocketAttribute.raw_socket)
            seen["nodelay"] = raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            seen["local"] = stream.extra(TransportAttribute.local_address)
            seen["peer"] = stream.extra(TransportAttribute.peer_address)
            await stream.send(await stream.receive())
            served.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handler)
            stream = await transport.connect(listener.contact_address, timeout=5)
            async with stream:
                raw = stream.extra(SocketAttribute.raw_socket)
                assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                await stream.send(b"ping")
                assert await stream.receive() == b"ping"
                await served.wait()
                assert seen["nodelay"]
                assert seen["local"] == listener.contact_address
                assert seen["peer"] == stream.extra(TransportAttribute.local_address)
                assert stream.extra(TransportAttribute.peer_address) == listener.contact_address
            tg.cancel_scope.cancel()
    finally:
        await listener.aclose()


@pytest.mark.skipif(not _ipv6_works(), reason="no IPv6 loopback here")
@pytest.mark.anyio
async def test_tcp_ipv6() -> None:
    listener = await transport.listen("tcp://[::1]:0")
    assert listener.contact_address.startswith("tcp://[::1]:")
    async with anyio.create_task_group() as tg:

        async def handler(stream: ByteStream) -> None:
            await stream.send(b"hi6")

        tg.start_soon(listener.serve, handler)
        stream = await transport.connect(listener.contact_address, timeout=5)
        async with stream:
            assert await stream.receive() == b"hi6"
        await listener.aclose()


@pytest.mark.anyio
async def test_a_failing_handler_is_logged_and_the_listener_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="trioclust.transport")
    listener = await transport.listen("tcp://127.0.0.1:0")

    async def handler(stream: ByteStream) -> None:
        if await stream.receive() == b"bad":
            raise ValueError("handler bug")
        await stream.send(b"fine")

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        bad = await transport.connect(listener.contact_address, timeout=5)
        async with bad:
            await bad.send(b"bad")
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await bad.receive()  # the stream is closed after the handler fails
        good = await transport.connect(listener.contact_address, timeout=5)
        async with good:
            await good.send(b"good")
            assert await good.receive() == b"fine"
        await listener.aclose()
    assert [r.getMessage() for r in caplog.records if r.name == "trioclust.transport"] == [
        f"Connection handler for {bad.extra(TransportAttribute.local_address)} failed"
    ]
    assert "handler bug" in caplog.text


# ------------------------------------------------------------- connecting


@pytest.mark.anyio
async def test_connect_refused_times_out_with_a_clear_error() -> None:
    listener = await transport.listen("tcp://127.0.0.1:0")
    address = listener.contact_address
    await listener.aclose()
    start = anyio.current_time()
    with pytest.raises(ConnectTimeout) as info:
        await transport.connect(address, timeout=0.5)
    assert anyio.current_time() - start < 2.5
    message = str(info.value)
    assert message.startswith(f"Timed out trying to connect to {address} after 0.5 s: ")
    assert "Connection refused" in message
    assert message.endswith("Is the scheduler running at that address?")
    assert isinstance(info.value, OSError)
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value.last_error, OSError)


@pytest.mark.anyio
async def test_malformed_address_fails_at_once_without_retrying() -> None:
    with anyio.fail_after(5):
        with pytest.raises(ValueError, match="Invalid address"):
            await transport.connect("tcp://127.0.0.1:notaport", timeout=60)
        with pytest.raises(ValueError, match="Unknown transport scheme"):
            await transport.listen("nope://x")


class FlakyBackend(InprocBackend):
    """Refuses the first ``failures`` attempts, then connects through inproc."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0

    async def connect(self, location: str, **kwargs: Any) -> ByteStream:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionRefusedError(111, "Connection refused")
        return await super().connect(location, **kwargs)


@pytest.mark.anyio
async def test_connect_retries_refused_connections() -> None:
    backend = FlakyBackend(failures=3)
    register_backend("flaky", backend)
    try:
        listener = await transport.listen("inproc://")
        name = listener.contact_address.removeprefix("inproc://")

        async def handler(stream: ByteStream) -> None:
            await stream.send(b"hello")

        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handler)
            stream = await transport.connect(f"flaky://{name}", timeout=10)
            async with stream:
                assert await stream.receive() == b"hello"
            await listener.aclose()
        assert backend.attempts == 4
    finally:
        del _backends["flaky"]


# ----------------------------------------------------------------- inproc


@pytest.mark.anyio
async def test_inproc_names() -> None:
    a = await transport.listen("inproc://")
    b = await transport.listen("inproc://")
    named = await transport.listen("inproc://my-cluster/scheduler")
    try:
        assert a.contact_address != b.contact_address
        assert a.contact_address.startswith("inproc://")
        assert named.contact_address == "inproc://my-cluster/scheduler"
        with pytest.raises(OSError, match="already in use"):
            await transport.listen("inproc://my-cluster/scheduler")
    finally:
        for listener in (a, b, named):
            await listener.aclose()
    again = await transport.listen("inproc://my-cluster/scheduler")  # the name is free again
    await again.aclose()
    with pytest.raises(ConnectTimeout, match="no inproc listener at inproc://my-cluster/scheduler"):
        await transport.connect("inproc://my-cluster/scheduler", timeout=0.05)
    with pytest.raises(ValueError, match="needs a name"):
        await transport.connect("inproc://", timeout=1)


@pytest.mark.anyio
async def test_inproc_stream_semantics() -> None:
    listener = await transport.listen("inproc://")
    got: list[ByteStream] = []
    arrived = anyio.Event()
    done = anyio.Event()

    async def handler(stream: ByteStream) -> None:
        got.append(stream)
        arrived.set()
        await done.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        client = await transport.connect(listener.contact_address, timeout=5)
        await arrived.wait()
        server = got[0]
        assert client.extra(TransportAttribute.peer_address) == listener.contact_address
        assert server.extra(TransportAttribute.peer_address) == client.extra(
            TransportAttribute.local_address
        )
        # receive(max_bytes) splits a chunk; the sender's buffer is copied
        buf = bytearray(b"abcdef")
        await client.send(buf)
        buf[:] = b"XXXXXX"
        assert await server.receive(4) == b"abcd"
        assert await server.receive(4) == b"ef"
        # a local close wakes a receive blocked on the same stream
        async with anyio.create_task_group() as inner:

            async def blocked_receive() -> None:
                with pytest.raises(anyio.ClosedResourceError):
                    await client.receive()

            inner.start_soon(blocked_receive)
            await anyio.wait_all_tasks_blocked()
            await client.aclose()
        # the peer sees end of stream, then writing to it is a broken pipe
        with pytest.raises(anyio.EndOfStream):
            await server.receive()
        with pytest.raises(anyio.BrokenResourceError):
            await server.send(b"anyone?")
        done.set()
        await listener.aclose()


@pytest.mark.anyio
async def test_inproc_send_eof_and_backpressure() -> None:
    listener = await transport.listen("inproc://")
    got: list[ByteStream] = []
    arrived = anyio.Event()
    done = anyio.Event()

    async def handler(stream: ByteStream) -> None:
        got.append(stream)
        arrived.set()
        await done.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        client = await transport.connect(listener.contact_address, timeout=5)
        await arrived.wait()
        server = got[0]
        chunk = b"x" * 2**20
        sent = 0

        async def writer() -> None:
            nonlocal sent
            for _ in range(8):
                await client.send(chunk)
                sent += 1
            await client.send_eof()

        tg.start_soon(writer)
        await anyio.wait_all_tasks_blocked()
        assert sent == 4, "send() should wait once 4 MiB are unread"
        total = 0
        while total < 8 * 2**20:
            total += len(await server.receive(2**20))
        assert total == 8 * 2**20
        with pytest.raises(anyio.EndOfStream):
            await server.receive()
        await client.aclose()
        done.set()
        await listener.aclose()



async def _echo(stream: ByteStream) -> None:
    while True:
        try:
            data = await stream.receive()
        except anyio.EndOfStream:
            return
        await stream.send(data)


async def _hang_up(stream: ByteStream) -> None:
    await stream.aclose()


@pytest.mark.anyio
async def test_inproc_connects_from_another_event_loop() -> None:
    # the listener and its handlers run in a trio loop on a thread of their
    # own; the test's loop (trio or asyncio) connects to it, as a second
    # Client does to an in-process cluster
    loop = LoopThread(name="inproc-other-loop")
    portal = loop.start()
    try:
        echo = await anyio.to_thread.run_sync(portal.call, transport.listen, "inproc://")
        hang_up = await anyio.to_thread.run_sync(portal.call, transport.listen, "inproc://")
        await anyio.to_thread.run_sync(portal.start_task_soon, echo.serve, _echo)
        await anyio.to_thread.run_sync(portal.start_task_soon, hang_up.serve, _hang_up)

        # 8 MiB each way through 4 MiB buffers: both sides wait for room and
        # are woken from the other loop
        client = await transport.connect(echo.contact_address, timeout=5)
        chunk = bytes(range(256)) * 4096  # 1 MiB
        received = bytearray()

        async def read_all() -> None:
            while True:
                try:
                    received.extend(await client.receive(2**20))
                except anyio.EndOfStream:
                    return

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_all)
                for _ in range(8):
                    await client.send(chunk)
                await client.send_eof()  # the echo ends, and its stream closes
        assert received == chunk * 8
        await client.aclose()

        # a receive blocked here is woken by a close in the other loop
        other = await transport.connect(hang_up.contact_address, timeout=5)
        with anyio.fail_after(30):
            with pytest.raises(anyio.EndOfStream):
                await other.receive()
            with pytest.raises(anyio.BrokenResourceError):
                await other.send(b"anyone?")
        await other.aclose()

        for listener in (echo, hang_up):
            await anyio.to_thread.run_sync(portal.call, listener.aclose)
    finally:
        assert loop.stop()
