"""Before the handshake, nothing big: real bytes sent to real listeners.

A peer that has not completed the handshake may send frames and messages
of at most ``comm.max-handshake-bytes`` (64 KiB); a larger declared length
closes its connection before anything is allocated for it, and the listener
keeps serving everyone else. At most ``comm.max-handshaking-connections``
connections may be waiting for their handshake at once; more are closed as
they come.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial

import anyio
import pytest

from trioclust import Scheduler, config, transport
from trioclust.comm import Comm, connect, serve
from trioclust.transport import Listener, TransportAttribute

pytestmark = pytest.mark.anyio


class Records(logging.Handler):
    """Collects ``trioclust.comm`` warnings; a test waits for one without sleeping."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.changed = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.changed.set()

    async def wait_for(self, text: str) -> str:
        with anyio.fail_after(10):
            while True:
                for message in self.messages:
                    if text in message:
                        return message
                self.changed = anyio.Event()
                await self.changed.wait()


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("trioclust.comm")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


async def echo(comm: Comm) -> None:
    while True:
        await comm.send(await comm.recv())


@asynccontextmanager
async def serving() -> AsyncIterator[Listener]:
    async with anyio.create_task_group() as tg:
        listener = await tg.start(partial(serve, "tcp://127.0.0.1:0", echo, role="scheduler"))
        try:
            yield listener
        finally:
            tg.cancel_scope.cancel()


async def send_until_cut(address: str, header: bytes, total: int) -> int:
    """Send ``header`` then up to ``total`` real bytes; how many went before the cut."""
    stream = await transport.connect(address, timeout=5)
    sent = 0
    chunk = bytes(2**20)
    async with stream:
        try:
            with anyio.fail_after(10):
                await stream.send(header)
                while sent < total:
                    await stream.send(chunk)
                    sent += len(chunk)
        except (anyio.BrokenResourceError, OSError):
            pass
    return sent


async def test_a_large_frame_before_the_handshake_closes_that_connection(records: Records) -> None:
    async with serving() as listener:
        good = await connect(listener.contact_address, role="client", timeout=5)
        try:
            # 1 GiB declared (under comm.max-frame-bytes), then real bytes
            sent = await send_until_cut(listener.contact_address, struct.pack("<2Q", 1, 2**30), 2**30)
            message = await records.wait_for("comm.max-handshake-bytes")
            assert "frame declares 1073741824 bytes, over the limit of 65536" in message
            assert sent < 2**30  # cut off long before the gigabyte
            # after its handshake, a peer may send large messages again
            payload = b"x" * (2 * 2**20)
            await good.send({"op": "echo", "payload": payload})
            assert (await good.recv())["payload"] == payload
        finally:
            await good.aclose()


async def test_the_bound_is_configurable(records: Records) -> None:
    with config.set(**{"comm.max-handshake-bytes": 1024}):
        async with serving() as listener:
            await send_until_cut(listener.contact_address, struct.pack("<2Q", 1, 4096), 4096)
            message = await records.wait_for("comm.max-handshake-bytes")
            assert "over the limit of 1024" in message


async def test_a_scheduler_refuses_a_gigabyte_before_the_handshake(records: Records) -> None:
    async with Scheduler() as s:
        sent = await send_until_cut(s.address, struct.pack("<2Q", 1, 2**30), 2**30)
        await records.wait_for("comm.max-handshake-bytes")
        assert sent < 2**30
        comm = await connect(s.address, role="client", timeout=5)  # still serving
        await comm.aclose()


async def test_connections_waiting_for_their_handshake_are_bounded(records: Records) -> None:
    with config.set(**{"comm.max-handshaking-connections": 2}):
        async with serving() as listener:
            address = listener.contact_address
            silent = [await transport.connect(address, timeout=5) for _ in range(2)]
            try:
                for stream in silent:  # accepted: the listener sent its own handshake
                    with anyio.fail_after(5):
                        assert await stream.receive()
                third = await transport.connect(address, timeout=5)
                async with third:
                    peer = third.extra(TransportAttribute.local_address)
                    with anyio.fail_after(5), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                        await third.receive()
                message = await records.wait_for(peer)
                assert "comm.max-handshaking-connections" in message
            finally:
                for stream in silent:
                    await stream.aclose()
            for stream in silent:  # their slots come free as their handshakes fail
                await records.wait_for(f"Refused connection from {stream.extra(TransportAttribute.local_address)}: ")
            comm = await connect(address, role="client", timeout=5)
            await comm.aclose()
