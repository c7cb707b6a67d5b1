"""Links: batching, ordering, request/reply, handler errors, closing."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import pytest
from anyio.abc import ByteStream

from trioclust.comm import Comm, Handler, Link, writes_deferred
from trioclust.errors import CommClosedError, RemoteError
from trioclust.protocol import Serialized
from trioclust.testing import comm_pair, stream_pair

ADDRESSES = {"tcp": "tcp://127.0.0.1:0", "inproc": "inproc://"}


@pytest.fixture(params=sorted(ADDRESSES))
def address(request: pytest.FixtureRequest) -> str:
    return ADDRESSES[request.param]


@asynccontextmanager
async def link_pair(
    server_handlers: Mapping[str, Handler],
    client_handlers: Mapping[str, Handler] | None = None,
    address: str = "inproc://",
    **client_kwargs: Any,
) -> AsyncIterator[tuple[Link, Link]]:
    """``(client, server)`` links, running; closed on exit."""
    async with comm_pair(address) as (a, b), anyio.create_task_group() as tg:
        client = Link(a, client_handlers or {}, name="client", **client_kwargs)
        server = Link(b, server_handlers, name="server")
        await tg.start(client.run)
        await tg.start(server.run)
        try:
            yield client, server
        finally:
            await client.aclose()
            await server.aclose()


@asynccontextmanager
async def lingering_link() -> AsyncIterator[tuple[Link, Comm]]:
    """A running link whose ``comm.linger`` and ``comm.lazy-linger`` (60 s)
    outlast any test, and its peer's comm; the task group ends when the link does."""
    from trioclust import config

    with config.set(**{"comm.linger": 60.0, "comm.lazy-linger": 60.0}):
        async with stream_pair("inproc://") as (client_stream, server_stream):
            link = Link(Comm(client_stream), {})
            peer = Comm(server_stream)
            async with anyio.create_task_group() as tg:
                await tg.start(link.run)
                yield link, peer
            await peer.aclose()


def _boom(msg: dict[str, Any]) -> None:
    raise ZeroDivisionError("division by zero")


async def _async_double(msg: dict[str, Any]) -> int:
    await anyio.lowlevel.checkpoint()
    return int(msg["x"]) * 2


async def _async_fail(msg: dict[str, Any]) -> None:
    await anyio.lowlevel.checkpoint()
    raise ValueError("async handler failed")


HANDLERS: dict[str, Handler] = {
    "double": lambda msg: msg["x"] * 2,
    "async-double": _async_double,
    "boom": _boom,
    "async-fail": _async_fail,
    "unpicklable": lambda msg: threading.Lock(),
}


@pytest.mark.anyio
async def test_request_reply(address: str) -> None:
    async with link_pair(HANDLERS, address=address) as (client, _server):
        assert await client.request("double", x=21) == 42
        assert await client.request("async-double", x=4) == 8


@pytest.mark.anyio
async def test_messages_arrive_in_send_order() -> None:
    received: list[int] = []
    handlers: dict[str, Handler] = {
        "seq": lambda msg: received.append(msg["i"]),
        "count": lambda msg: len(received),
    }
    async with link_pair(handlers) as (client, server):
        for i in range(500):
            client.send({"op": "seq", "i": i})
            if i % 7 == 0:
                await anyio.lowlevel.checkpoint()
        assert await client.request("count") == 500
        assert received == list(range(500))
        stats = server.statistics()
        assert stats.messages_received == 501
        assert stats.batches_received < 501


class GatedStream(ByteStream):
    """Wraps a stream; ``send`` waits for the gate once ``hold`` is set."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.hold = False
        self.gate = anyio.Event()
        self.blocked = anyio.Event()

    async def send(self, item: bytes) -> None:
        if self.hold:
            self.blocked.set()
            await self.gate.wait()
        await self.stream.send(item)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self.stream.receive(max_bytes)

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()


@pytest.mark.anyio
async def test_sends_during_a_write_coalesce_into_one_batch() -> None:
    async with stream_pair("inproc://") as (client_stream, server_stream):
        gated = GatedStream(client_stream)
        link = Link(Comm(gated), {})
        peer = Comm(server_stream)
        async with anyio.create_task_group() as tg:
            await tg.start(link.run)
            link.send({"op": "first"})  # idle link: goes at once
            assert await peer.recv() == [{"op": "first"}]
            gated.hold = True
            link.send({"op": "stuck"})
            await gated.blocked.wait()  # that write is now in flight
            for i in range(100):
                link.send({"op": "later", "i": i})
                await anyio.lowlevel.checkpoint()
            gated.gate.set()
            assert await peer.recv() == [{"op": "stuck"}]
            batch = await peer.recv()
            assert [m["i"] for m in batch] == list(range(100)), "not one batch, in order"
            stats = link.statistics()
            assert (stats.messages_sent, stats.batches_sent) == (102, 3)
            await link.aclose()
        await peer.aclose()


@pytest.mark.anyio
async def test_concurrent_requests(address: str) -> None:
    results: dict[int, Any] = {}
    async with link_pair(HANDLERS, address=address) as (client, _server):

        async def one(i: int) -> None:
            op = "double" if i % 2 else "async-double"
            results[i] = await client.request(op, x=i)

        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(one, i)
        assert results == {i: 2 * i for i in range(100)}
        assert client.statistics().batches_sent < 50
        assert client.statistics().pending_requests == 0


@pytest.mark.anyio
async def test_handler_exceptions_become_remote_errors() -> None:
    async with link_pair(HANDLERS) as (client, _server):
        with pytest.raises(RemoteError) as info:
            await client.request("boom")
        assert info.value.text == "ZeroDivisionError: division by zero"
        assert isinstance(info.value.exception, Serialized)
        original = info.value.exception.deserialize()
        assert isinstance(original, ZeroDivisionError)
        assert "ZeroDivisionError" in (info.value.traceback or "")

        with pytest.raises(RemoteError, match="ValueError: async handler failed"):
            await client.request("async-fail")
        with pytest.raises(RemoteError, match="TypeError: cannot pickle"):
            await client.request("unpicklable")
        assert await client.request("double", x=1) == 2, "the link survived"


@pytest.mark.anyio
async def test_one_way_handler_errors_and_unknown_ops_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="trioclust.comm")
    async with link_pair(HANDLERS) as (client, _server):
        client.send({"op": "boom"})
        client.send({"op": "no-such-op"})
        with pytest.raises(RemoteError, match="ValueError: unknown operation 'other-op'"):
            await client.request("other-op")
        assert await client.request("double", x=3) == 6
    messages = [r.getMessage() for r in caplog.records if r.name == "trioclust.comm"]
    assert "server: handler for 'boom' failed" in messages
    assert any("unknown operation 'no-such-op'" in m for m in messages)


@pytest.mark.anyio
async def test_unencodable_request_raises_locally() -> None:
    async with link_pair(HANDLERS) as (client, _server):
        with pytest.raises(TypeError, match="cannot pickle"):
            await client.request("double", x=threading.Lock())
        assert await client.request("double", x=5) == 10


@pytest.mark.anyio
async def test_peer_close_fails_pending_requests(address: str) -> None:
    reasons: list[str] = []
    started = anyio.Event()

    async def hang(msg: dict[str, Any]) -> None:
        started.set()
        await anyio.sleep_forever()

    async with link_pair({"hang": hang}, address=address, on_close=reasons.append) as (
        client,
        server,
    ):
        async with anyio.create_task_group() as tg:

            async def pending() -> None:
                with pytest.raises(CommClosedError) as info:
                    await client.request("hang")
                assert f"Connection to {client.comm.peer_address} closed" in str(info.value)
                assert "the peer closed the connection" in str(info.value)

            tg.start_soon(pending)
            await started.wait()
            await server.aclose()
        assert client.closed
        with pytest.raises(CommClosedError):
            client.send({"op": "late"})
        with pytest.raises(CommClosedError):
            await client.request("hang")
    assert reasons == ["the peer closed the connection"]


@pytest.mark.anyio
async def test_aclose_flushes_what_was_sent() -> None:
    received: list[int] = []
    async with comm_pair("tcp://127.0.0.1:0") as (a, b):
        client = Link(a, {})
        server = Link(b, {"n": lambda msg: received.append(msg["i"])})
        async with anyio.create_task_group() as tg:
            await tg.start(client.run)
            await tg.start(server.run)
            for i in range(1000):
                client.send({"op": "n", "i": i})
            await client.aclose()
            with pytest.raises(CommClosedError, match="this side closed"):
                client.send({"op": "n", "i": -1})
        # server.run returned by itself when the client's close reached it
        assert server.closed
        assert server.close_reason == "the peer closed the connection"
    assert received == list(range(1000))


@pytest.mark.anyio
async def test_non_batch_message_closes_the_link(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="trioclust.comm")
    async with comm_pair("inproc://") as (a, b):
        link = Link(b, {}, name="victim")
        async with anyio.create_task_group() as tg:
            await tg.start(link.run)
            await a.send({"op": "not-in-a-list"})
        assert link.closed
    assert "victim: closing the connection" in caplog.text
    assert "not a batch" in caplog.text


@pytest.mark.anyio
async def test_run_twice_is_an_error() -> None:
    async with link_pair({}) as (client, _server):
        with pytest.raises(RuntimeError, match="already running"):
            await client.run()


@pytest.mark.anyio
async def test_messages_sent_before_run_go_out_first() -> None:
    received: list[str] = []
    async with comm_pair("inproc://") as (a, b):
        client = Link(a, {})
        client.send({"op": "early"})
        server = Link(
            b, {"early": lambda msg: received.append("early"), "ping": lambda msg: "pong"}
        )
        async with anyio.create_task_group() as tg:
            await tg.start(server.run)
            await tg.start(client.run)
            assert await client.request("ping") == "pong"
            assert received == ["early"]
            await client.aclose()


@pytest.mark.anyio
async def test_heavy_messages_close_a_batch() -> None:
    async with stream_pair("inproc://") as (client_stream, server_stream):
        gated = GatedStream(client_stream)
        link = Link(Comm(gated), {})
        peer = Comm(server_stream)
        async with anyio.create_task_group() as tg:
            await tg.start(link.run)
            gated.hold = True
            link.send({"op": "first"})
            await gated.blocked.wait()  # queue behind a write in flight
            for i in range(3):
                link.send({"op": "graph", "i": i}, weight=600)
            link.send({"op": "light"})
            gated.gate.set()
            assert await peer.recv() == [{"op": "first"}]
            # 600 + 600 reaches the batch weight (1,000): the rest is a batch of its own
            assert [m.get("i") for m in await peer.recv()] == [0, 1]
            assert [m.get("i") for m in await peer.recv()] == [2, None]
            assert link.statistics().batches_sent == 3
            await link.aclose()
        await peer.aclose()


@pytest.mark.anyio
async def test_messages_that_are_not_urgent_gather_until_an_urgent_one() -> None:
    async with lingering_link() as (link, peer):
        link.send({"op": "first"}, urgent=False)  # an idle link writes at once
        with anyio.fail_after(10):
            assert await peer.recv() == [{"op": "first"}]
        for i in range(3):  # a moment after a write: these wait
            link.send({"op": "more", "i": i}, urgent=False)
            await anyio.lowlevel.checkpoint()
        assert link.statistics().queued == 3
        link.send({"op": "now"})  # ends the wait: all four in one batch
        with anyio.fail_after(10):
            batch = await peer.recv()
        assert [m.get("i") for m in batch] == [0, 1, 2, None]
        await link.aclose()


@pytest.mark.anyio
async def test_sends_in_writes_deferred_leave_as_one_batch(address: str, anyio_backend: str) -> None:
    written: list[str] = []
    all_written = anyio.Event()

    def on_written(i: int) -> None:
        written.append(f"m{i}")
        if i == 2:
            all_written.set()

    async with comm_pair(address) as (a, b), anyio.create_task_group() as tg:
        link = Link(a, {}, name="client")
        await tg.start(link.run)
        await anyio.wait_all_tasks_blocked()  # its writer is idle
        with writes_deferred():
            for i in range(3):
                link.send({"op": "m", "i": i}, on_written=partial(on_written, i))
            assert link.statistics().batches_sent == 0, "nothing leaves inside the block"
        # trio's TCP sockets take the batch from here, without a task switch;
        # elsewhere the link's writer sends it
        direct = anyio_backend == "trio" and address.startswith("tcp")
        assert (link.statistics().batches_sent == 1) is direct
        assert (written == ["m0", "m1", "m2"]) is direct
        with anyio.fail_after(10):
            assert await b.recv() == [{"op": "m", "i": i} for i in range(3)]
        assert link.statistics().batches_sent == 1
        with anyio.fail_after(10):
            await all_written.wait()
        assert written == ["m0", "m1", "m2"]
        await link.aclose()


@pytest.mark.anyio
async def test_on_written_runs_when_the_link_ends_first() -> None:
    called: list[str] = []
    async with lingering_link() as (link, peer):
        link.send({"op": "first"}, on_written=lambda: called.append("first"))
        with anyio.fail_after(10):
            assert await peer.recv() == [{"op": "first"}]
        # not urgent, a moment after a write: it waits for the linger
        link.send({"op": "later"}, urgent=False, on_written=lambda: called.append("later"))
        await peer.aclose()  # the link ends before it writes "later"
    assert called == ["first", "later"]


@pytest.mark.anyio
async def test_a_lazy_message_waits_for_company_even_on_an_idle_link() -> None:
    async with lingering_link() as (link, peer):
        link.send({"op": "release"}, lazy=True)  # idle link, yet it waits
        for _ in range(10):
            await anyio.lowlevel.checkpoint()
        assert link.statistics().queued == 1
        link.send({"op": "submit"})  # urgent: both leave together
        with anyio.fail_after(10):
            assert await peer.recv() == [{"op": "release"}, {"op": "submit"}]
        link.send({"op": "release", "last": True}, lazy=True)
        await link.aclose()  # flushes it rather than waiting out the linger
        with anyio.fail_after(10):
            assert await peer.recv() == [{"op": "release", "last": True}]


@pytest.mark.anyio
async def test_send_from_thread_writes_only_on_an_idle_link(anyio_backend: str) -> None:
    got: list[dict[str, Any]] = []
    arrived = anyio.Event()

    def on_msg(msg: dict[str, Any]) -> None:
        got.append(msg)
        arrived.set()

    async with link_pair({"m": on_msg}, address="tcp://127.0.0.1:0") as (client, _):
        await anyio.wait_all_tasks_blocked()  # the client's writer waits for work
        batch = [{"op": "m", "i": 0}, {"op": "m", "i": 1}]
        written = await anyio.to_thread.run_sync(client.send_from_thread, batch)
        # only where the comm writes without waiting: TCP under trio
        assert written is (anyio_backend == "trio")
        if written:
            with anyio.fail_after(10):
                await arrived.wait()
            assert [m["i"] for m in got] == [0, 1]
            assert client.statistics().batches_sent == 1
            assert client.statistics().messages_sent == 2
    async with lingering_link() as (link, peer):
        link.send({"op": "release"}, lazy=True)  # queued: the thread must not pass it
        assert await anyio.to_thread.run_sync(link.send_from_thread, [{"op": "submit"}]) is False
        await link.aclose()  # flushes what was queued; nothing else was written
        with anyio.fail_after(10):
            assert await peer.recv() == [{"op": "release"}]
        assert await anyio.to_thread.run_sync(link.send_from_thread, [{"op": "late"}]) is False


@pytest.mark.anyio
async def test_a_large_message_from_writes_deferred_reaches_the_peer(address: str) -> None:
    """Over trio's TCP the direct write holds a large message for the writer
    (and its callback until it is written); nothing else has to follow."""
    written = anyio.Event()
    big = {"op": "data", "value": bytes(range(256)) * 20_000}  # ~5 MB
    async with comm_pair(address) as (a, b), anyio.create_task_group() as tg:
        link = Link(a, {}, name="client")
        await tg.start(link.run)
        await anyio.wait_all_tasks_blocked()  # its writer is idle
        with writes_deferred():
            link.send(big, on_written=written.set)
        with anyio.fail_after(30):
            assert await b.recv() == [big]
            await written.wait()
        await link.aclose()


@pytest.mark.anyio
async def test_on_batch_runs_after_each_received_batch_handlers(anyio_backend: str) -> None:
    seen: list[Any] = []
    async with stream_pair("inproc://") as (link_stream, peer_stream):
        link = Link(
            Comm(link_stream),
            {"note": lambda msg: seen.append(msg["i"])},
            on_batch=lambda: seen.append("end"),
        )
        peer = Comm(peer_stream)
        async with anyio.create_task_group() as tg:
            await tg.start(link.run)
            await peer.send([{"op": "note", "i": 1}, {"op": "note", "i": 2}])
            await peer.send([{"op": "note", "i": 3}])
            await peer.send([{"op": "ping", "id": 7}])  # unknown: answered with an error
            reply = await peer.recv()
            assert reply[0]["status"] == "error"
            assert seen == [1, 2, "end", 3, "end", "end"]
            await link.aclose()
        await peer.aclose()
